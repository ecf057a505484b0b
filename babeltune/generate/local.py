"""The local backend: any model babeltune loads (base, full fine-tune or base + PEFT adapter).

Prompts are rendered with `babeltune.models.render_prompt`, the same rendering training uses, and
generation stops at the template's end-of-turn token(s). The model stays reachable as
`backend.model`, so a context manager (e.g. a steering hook) can wrap a `generate` call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from babeltune.generate.backends import GenerationRequest, GenerationResult
from babeltune.generate.decoding import generate_token_ids
from babeltune.generate.settings import DecodingSettings, stable_hash


class LocalBackend:
    """Batched generation on a model held in this process."""

    name = "local"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        template: str = "auto",
        batch_size: int = 32,
        fingerprint: str | None = None,
        model_name: str = "",
        bf16_head: Literal["auto", "on", "off"] = "auto",
    ) -> None:
        from babeltune.models.chat import get_template

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.template = get_template(tokenizer, template)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.model_name = model_name or getattr(getattr(model, "config", None), "_name_or_path", "") or "model"
        self.fingerprint = fingerprint or _weights_fingerprint(model)
        self.bf16_head = bf16_head
        self._head: Any = None
        self.identity_extra: dict[str, Any] = {}
        """Anything that changes outputs without changing the weights (e.g. a steering hook) must be
        named here while it is active, so cached generations made without it are not reused."""

    @classmethod
    def from_pretrained(
        cls, name: str | Path, *, dtype: str = "float32", device: str = "cpu", template: str = "auto",
        batch_size: int = 32, trust_remote_code: bool = False, bf16_head: Literal["auto", "on", "off"] = "auto",
    ) -> LocalBackend:
        """Load `name` (the default alias, a folder, a PEFT adapter folder or a hub id) and wrap it."""
        from babeltune.models.loading import load_model

        loaded = load_model(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return cls(loaded.model, loaded.tokenizer, template=template, batch_size=batch_size,
                   fingerprint=loaded_fingerprint(loaded.path, loaded.adapter), model_name=str(name),
                   bf16_head=bf16_head)

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def greedy_head(self) -> Any:
        """The exact bfloat16 greedy head (see `babeltune.generate.fasthead`), or None when off or not
        applicable: 'auto' uses it for float32 models on a CPU with native bfloat16 (AVX512-BF16/AMX)."""
        from babeltune.generate.fasthead import Bf16GreedyHead, split_head
        from babeltune.hardware import cpu_has_fast_bf16

        if self.bf16_head == "off":
            return None
        usable = split_head(self.model) is not None and next(self.model.parameters()).device.type == "cpu"
        if self.bf16_head == "on" and not usable:
            raise ValueError("bf16_head=on needs a float32 model on the CPU with a plain, hook-free Linear LM head")
        if not usable or (self.bf16_head == "auto" and not cpu_has_fast_bf16()):
            return None
        if self._head is None or not self._head.is_current(self.model):
            self._head = Bf16GreedyHead(self.model)  # weights changed (e.g. trained in place): recopy
        return self._head

    def stop_ids(self, settings: DecodingSettings) -> list[int]:
        return stop_ids(self.template, self.tokenizer, settings)

    def identity(self) -> dict[str, Any]:
        return {**model_identity(self), **self.identity_extra}

    def render(self, messages: Sequence[Any]) -> list[int]:
        from babeltune.models.chat import render_prompt

        return render_prompt(self.tokenizer, self.template, messages)

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        prompts: list[list[int]] = []
        rendered: list[GenerationRequest] = []
        for req in requests:
            try:
                prompts.append(self.render(req.messages))
                rendered.append(req)
            except ValueError as exc:  # a conversation the template cannot render: a recorded failure
                yield GenerationResult.failure(req.id, f"cannot render prompt: {exc}")
        if not prompts:
            return
        seeds = [req.sampling_seed(settings) for req in rendered]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        head = self.greedy_head() if settings.greedy else None
        for out in generate_token_ids(self.model, prompts, settings, stop_ids=self.stop_ids(settings),
                                      pad_id=pad_id, batch_size=self.batch_size, seeds=seeds, head=head):
            ids = out.token_ids[:-1] if out.finish_reason == "stop" else out.token_ids
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            yield GenerationResult(rendered[out.index].id, text, out.finish_reason, out.prompt_tokens,
                                   len(out.token_ids))


def model_identity(backend: Any, **engine: str) -> dict[str, Any]:
    """What a backend that renders prompts itself with a chat template (local, vLLM) is: its name,
    `engine` (e.g. the vLLM version), the model, its weights' fingerprint, dtype and template."""
    return {
        "backend": backend.name,
        **engine,
        "model": backend.model_name,
        "fingerprint": backend.fingerprint,
        "dtype": backend.dtype,
        "template": backend.template.name,
    }


def stop_ids(template: Any, tokenizer: Any, settings: DecodingSettings) -> list[int]:
    """Where generation stops: the template's end-of-turn ids, and EOS unless `stop_on_eos` is off."""
    ids = list(template.stop_token_ids(tokenizer))
    eos = tokenizer.eos_token_id
    if settings.stop_on_eos and eos is not None and eos not in ids:
        ids.append(int(eos))
    return ids


def loaded_fingerprint(path: str, adapter: str | None) -> str:
    """Fingerprint of what `load_model` loaded: the model folder's, or base + adapter for a PEFT adapter."""
    from babeltune.models.loading import model_fingerprint

    if adapter is None:
        return model_fingerprint(path)
    base = json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    return stable_hash({"base": model_fingerprint(base), "adapter": model_fingerprint(adapter)})


def _weights_fingerprint(model: Any) -> str:
    """A fingerprint of in-memory weights (for models not loaded from a folder, e.g. in tests): sha256
    over every parameter's name, shape and a few summary statistics, cheap and order-independent."""
    import torch

    parts = []
    with torch.no_grad():
        for name, param in sorted(model.state_dict().items()):
            flat = param.detach().float().flatten()
            parts.append([name, list(param.shape), float(flat.sum()), float(flat.abs().sum()),
                          float(flat[: min(16, flat.numel())].sum())])
    return "weights:" + stable_hash(parts)
