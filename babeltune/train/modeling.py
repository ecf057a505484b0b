"""Model setup for training and saving the result: LoRA or full fine-tuning, the bf16 storage of
frozen weights, the fused-loss check, and final weights that babeltune and plain transformers load."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babeltune.models.anatomy import decoder_layers, lm_head
from babeltune.train.config import LoraSettings
from babeltune.train.losses import SupervisedLMLoss, reference_loss

log = logging.getLogger(__name__)


class NaiveLMLoss(nn.Module):
    """Full-vocabulary logits at every position, then the loss at the supervised ones: the fallback
    for a model whose output layer the fused loss cannot reproduce. Same forward signature as
    `SupervisedLMLoss`."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, target_index: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        logits = self.lm(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits  # (R, T, V)
        selected = logits.reshape(-1, logits.shape[-1]).index_select(0, target_index).float()  # (N, V)
        return torch.nn.functional.cross_entropy(selected, targets, reduction="sum")


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the linear layers (what LoRA target_modules match), LM head excluded."""
    head = lm_head(model)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and m is not head})


def check_lora_targets(model: nn.Module, targets: list[str]) -> None:
    """Fail before any compute when a LoRA target names no module of the model."""
    if targets == ["all-linear"]:
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(
            f"lora.target_modules: {', '.join(missing)} not found in {type(model).__name__}; its linear layers "
            f"are {', '.join(linear_module_names(model))} (or use all-linear)"
        )


def apply_lora(model: nn.Module, settings: LoraSettings, base_path: str) -> Any:
    """Wrap `model` with a fresh LoRA adapter (initialised from the current torch seed)."""
    from peft import LoraConfig, get_peft_model

    from babeltune.models.loading import peft_quietly

    check_lora_targets(model, settings.target_modules)
    targets: Any = "all-linear" if settings.target_modules == ["all-linear"] else list(settings.target_modules)
    lora_config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with peft_quietly():
        peft_model = get_peft_model(model, lora_config)
    peft_model.peft_config["default"].base_model_name_or_path = base_path
    return peft_model


def store_frozen_in(model: nn.Module, dtype: torch.dtype) -> int:
    """Keep frozen linear weights in `dtype` (bf16): under autocast they would be cast to it at every
    forward anyway. Trainable weights, norms and embeddings keep float32. Returns the count."""
    count = 0
    head = lm_head(model)
    for module in model.modules():
        if isinstance(module, nn.Linear) and not module.weight.requires_grad and module.weight.dtype != dtype:
            if module is head:  # tied to the embedding table, whose lookups stay float32
                continue
            module.weight.data = module.weight.data.to(dtype)
            count += 1
    return count


def fused_loss_matches(lm: nn.Module, input_ids: list[int], targets: list[int], tolerance: float = 1e-4) -> bool:
    """Whether the fused supervised loss equals the model's own full-logits loss on one example
    (float32, no autocast): a model with an unusual output layer (scaled logits, biases) fails this.
    The example must have trained tokens, or the comparison proves nothing."""
    if all(t == -100 for t in targets):
        raise ValueError("fused_loss_matches needs an example with trained tokens")
    ids = torch.tensor([input_ids])
    tgt = torch.tensor(targets)
    index = (tgt != -100).nonzero().squeeze(1)
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            fused = float(SupervisedLMLoss(lm)(ids, torch.arange(len(input_ids))[None], index, tgt[index]))
            naive, _ = reference_loss(lm, input_ids, targets)
    except ValueError as exc:
        log.warning("fused LM-head loss unavailable: %s", exc)
        return False
    finally:
        lm.train(was_training)
    return abs(fused - naive) <= tolerance * max(1.0, abs(naive))


def compile_layers(lm: Any) -> int:
    """torch.compile every decoder layer in place (one compiled graph serves all layers of a kind;
    dynamic shapes, so varying row lengths do not recompile). Returns the number of layers."""
    try:
        layers = decoder_layers(lm)
    except ValueError as exc:
        raise ValueError(f"compile=true: {exc}") from exc
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def save_final(lm: Any, tokenizer: Any, folder: Path, *, state_dict: dict[str, torch.Tensor] | None = None,
               template: Any = None) -> Path:
    """Write the trained model (a PEFT adapter, or the whole model) + tokenizer as safetensors. The
    tokenizer config carries `template` (the chat template the model was trained with; default: the
    one `auto` picks) as its Jinja `chat_template`, so transformers, vLLM and other harnesses format
    prompts as babeltune trained them (see `babeltune.models.chat`). A full model's generation config
    lists the template's end-of-turn token(s) among its EOS ids, so `generate` and vLLM stop where
    babeltune stops (an adapter is generated with its base's config)."""
    from babeltune.models.chat import get_template, with_chat_template

    template = template or get_template(tokenizer, "auto")
    folder.mkdir(parents=True, exist_ok=True)
    with _stopping_at_turn_end(lm, template.stop_token_ids(tokenizer)):
        lm.save_pretrained(str(folder), state_dict=state_dict, safe_serialization=True)
    with with_chat_template(tokenizer, template) as tok:
        # In tokenizer_config.json itself (not a side file): every reader of the config finds it there.
        tok.save_pretrained(str(folder), save_jinja_files=False)
    return folder


@contextlib.contextmanager
def _stopping_at_turn_end(lm: Any, stop_ids: list[int]) -> Iterator[None]:
    """While saving: the model's generation config stops at `stop_ids` too (restored afterwards)."""
    config = getattr(lm, "generation_config", None)
    if config is None or hasattr(lm, "peft_config"):
        yield
        return
    before = config.eos_token_id
    eos = [] if before is None else [before] if isinstance(before, int) else list(before)
    config.eos_token_id = eos + [i for i in stop_ids if i not in eos]
    try:
        yield
    finally:
        config.eos_token_id = before


def merge_adapter(adapter_dir: Path, out_dir: Path) -> Path:
    """Load base + adapter in float32, merge the adapter into the weights and save a plain model."""
    from babeltune.models.loading import load_model

    loaded = load_model(str(adapter_dir), merge_adapter=True)
    return save_final(loaded.model, loaded.tokenizer, out_dir)
