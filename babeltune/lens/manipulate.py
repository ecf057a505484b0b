"""Lens manipulation training (study C), on babeltune.train's training routine (`fit`).

Reads top to bottom:

1. config (`babeltune.lens.config.LensTrainConfig`), the run folder (`start_point`: a finished run is
   refused, an interrupted one continues only with `resume`) and the language subspace written by
   `babeltune lens probe`, checked against the model (fingerprint and shape);
2. data: parallel prompts without responses, one training example = one parallel group (pid) with a
   prompt in every training language, rendered with the chat template and cut to `max_prompt_tokens`;
3. the model: everything frozen except the top `top_layers` decoder layers (embeddings, final norm and
   LM head frozen, as in the release);
4. the reference states: the untouched model's final-layer states of every prompt, computed once before
   training (the same numbers a frozen copy would give at every step, without a second model in memory);
5. the loss (`ManipulationLoss`), per parallel group, on the final layer's state h (after the final
   norm), pooled per loss as the release does: the retain loss on the mean over the prompt's tokens
   (`retain_pool`), the language-specific and language-agnostic losses on the last prompt token
   (`specific_pool`, `agnostic_pool`); each can be set to `last` or `mean`:
   - retain: MSE(h_central, h_central_ref);
   - language-specific, per target t: MSE(P_s h_t - P_s h_t_ref, w * delta_t), with delta_t the
     target's direction from the central language and w = `specific_target` (the release's "pull");
   - language-agnostic, per target t: MSE(P_c h_central, P_c h_t), P_c the projection on the common
     vector; both sides are trained (the release's "push");
   total = retain_weight * retain + specific_weight * sum_t specific_t + agnostic_weight * sum_t agnostic_t.
   MSE is the mean over hidden dimensions; the loop averages over the groups of a step;
6. `babeltune.train.routine.fit` (AdamW, cosine schedule, gradient accumulation, clipping, checkpoints,
   JSONL/TensorBoard logging with tokens/s), then the full model is saved to RUN/final.

The release's defaults: lr 1e-5, cosine, warm-up 5%, weight decay 0.1, batch 1 x 8 accumulation,
1 epoch (200 prompts -> 25 steps), the top 2 layers, all weights 1.0.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babeltune.config import to_dict
from babeltune.lens.config import LensTrainConfig
from babeltune.lens.prompts import render_probe_prompt
from babeltune.lens.states import PaddedBatch, Pooling, final_states, pad_batch
from babeltune.lens.subspace import LanguageSubspace
from babeltune.models.anatomy import decoder_layers
from babeltune.train.batching import DataSchedule, MicroBatch, StepPlan
from babeltune.train.loop import LossOutput

log = logging.getLogger(__name__)


# 2. Data ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParallelGroup:
    pid: str
    ids: dict[str, tuple[int, ...]]
    """Prompt token ids per language."""


def parallel_groups(records: list[Any], languages: list[str], tokenizer: Any, template: Any,
                    max_tokens: int, max_groups: int | None) -> tuple[list[ParallelGroup], dict[str, int]]:
    """Groups of `records` (by pid) that have a prompt in every language; counts what was left out."""
    by_pid: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.lang in languages:
            by_pid.setdefault(rec.pid, {})[rec.lang] = rec
    complete = [pid for pid, langs in by_pid.items() if len(langs) == len(languages)]
    report = {"pids": len(by_pid), "incomplete_pids": len(by_pid) - len(complete), "truncated_prompts": 0}
    if max_groups is not None:
        report["over_max_groups"] = max(0, len(complete) - max_groups)
        complete = complete[:max_groups]
    groups = []
    for pid in complete:
        ids: dict[str, tuple[int, ...]] = {}
        for lang in languages:
            rendered, cut = render_probe_prompt(tokenizer, template, list(by_pid[pid][lang].prompt_messages),
                                                max_tokens)
            ids[lang] = tuple(rendered)
            report["truncated_prompts"] += cut
        groups.append(ParallelGroup(pid, ids))
    if not groups:
        raise ValueError(f"no parallel prompts in all of {languages}: the data needs records sharing a pid in "
                         "every training language")
    return groups, report


# 4./5. Reference states and the loss ----------------------------------------------------------------------

@torch.no_grad()
def reference_states(model: Any, groups: list[ParallelGroup], languages: list[str], pad_id: int,
                     pools: list[Pooling], batch_size: int = 16) -> dict[Pooling, torch.Tensor]:
    """The untouched model's final-layer states pooled each way of `pools`: each (G, n_langs, D), float32."""
    out = {pool: torch.empty(len(groups), len(languages), int(model.config.hidden_size)) for pool in pools}
    for li, lang in enumerate(languages):
        for start in range(0, len(groups), batch_size):
            chunk = groups[start:start + batch_size]
            batch = pad_batch([g.ids[lang] for g in chunk], pad_id, "left")
            for pool, states in final_states(model, batch, pools).items():
                out[pool][start:start + len(chunk), li] = states.float().cpu()
    return out


class ManipulationLoss(nn.Module):
    """Study C's three losses on a micro-batch of parallel groups (see the module docstring).

    forward(...) returns (loss summed over the groups, {component: sum over the groups})."""

    basis: torch.Tensor  # (r, D), orthonormal rows: the top layer's language-specific subspace
    common: torch.Tensor  # (D,), unit common vector of the top layer
    directions: torch.Tensor  # (n_langs, D), each language's direction at the top layer

    def __init__(self, lm: nn.Module, subspace: LanguageSubspace, languages: list[str], cfg: LensTrainConfig,
                 pad_id: int) -> None:
        super().__init__()
        self.lm = lm
        self.languages = languages
        self.central = subspace.central
        self.cfg = cfg
        self.pad_id = pad_id
        top = subspace.n_layers - 1
        self.register_buffer("basis", subspace.specific[top].clone())  # (r, D), orthonormal rows
        self.register_buffer("common", subspace.common[top] / subspace.common[top].norm())  # (D,)
        self.register_buffer("directions", torch.stack([subspace.direction(lang, top) for lang in languages]))

    def specific(self, h: torch.Tensor) -> torch.Tensor:
        basis = self.basis.to(h.dtype)
        return (h @ basis.T) @ basis  # (B, D)

    def shared(self, h: torch.Tensor) -> torch.Tensor:
        unit = self.common.to(h.dtype)
        return (h @ unit)[:, None] * unit  # (B, D)

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`inputs`: `reference_{pool}` (B, n_langs, D) per pooling of `cfg.pools()`, and
        input_ids/attention_mask/position_ids/last_index per language."""
        cfg = self.cfg
        states = {lang: final_states(self.lm, _batch_of(inputs, lang), cfg.pools())
                  for lang in self.languages}  # lang -> pool -> (B, D)
        c = self.languages.index(self.central)
        h_c = states[self.central][cfg.retain_pool].float()
        retain = ((h_c - inputs[f"reference_{cfg.retain_pool}"][:, c].float()) ** 2).mean(dim=-1).sum()
        specific = h_c.new_zeros(())
        agnostic = h_c.new_zeros(())
        shared_c = self.shared(states[self.central][cfg.agnostic_pool].float())
        for i, lang in enumerate(self.languages):
            if lang == self.central:
                continue
            h_t, ref_t = states[lang][cfg.specific_pool].float(), inputs[f"reference_{cfg.specific_pool}"][:, i].float()
            moved = self.specific(h_t) - self.specific(ref_t)
            specific = specific + ((moved - cfg.specific_target * self.directions[i]) ** 2).mean(dim=-1).sum()
            shared_t = self.shared(states[lang][cfg.agnostic_pool].float())
            agnostic = agnostic + ((shared_c - shared_t) ** 2).mean(dim=-1).sum()
        total = (self.cfg.retain_weight * retain + self.cfg.specific_weight * specific
                 + self.cfg.agnostic_weight * agnostic)
        return total, {"retain": retain.detach(), "specific": specific.detach(), "agnostic": agnostic.detach()}


def _batch_of(batches: dict[str, torch.Tensor], lang: str) -> PaddedBatch:
    return PaddedBatch(batches[f"input_ids_{lang}"], batches[f"attention_mask_{lang}"],
                       batches[f"position_ids_{lang}"], batches[f"last_index_{lang}"])


def collate_groups(groups: list[ParallelGroup], rows: list[int], languages: list[str],
                   reference: dict[Pooling, torch.Tensor], pad_id: int) -> MicroBatch:
    """A micro-batch (babeltune.train's MicroBatch) of parallel groups: one padded batch per language,
    and the reference states of its groups per pooling (`reference_last`, `reference_mean`)."""
    inputs: dict[str, torch.Tensor] = {f"reference_{pool}": states[rows] for pool, states in reference.items()}
    tokens = padded = 0
    for lang in languages:
        batch = pad_batch([groups[r].ids[lang] for r in rows], pad_id, "left")
        inputs.update({f"input_ids_{lang}": batch.input_ids, f"attention_mask_{lang}": batch.attention_mask,
                       f"position_ids_{lang}": batch.position_ids, f"last_index_{lang}": batch.last_index})
        tokens += int(batch.attention_mask.sum())
        padded += batch.attention_mask.numel()
    return MicroBatch(inputs, n_items=len(rows), n_tokens=tokens, n_padded=padded)


@dataclass(frozen=True)
class GroupPlanner:
    """`plan(step)`: the micro-batches of parallel groups of an optimizer step (one process)."""

    groups: list[ParallelGroup]
    schedule: DataSchedule
    languages: list[str]
    reference: dict[Pooling, torch.Tensor]
    pad_id: int
    batch_size: int

    def __call__(self, step: int) -> StepPlan:
        epoch, indices = self.schedule.step_examples(step)
        micro = [collate_groups(self.groups, indices[i:i + self.batch_size], self.languages, self.reference,
                                self.pad_id) for i in range(0, len(indices), self.batch_size)]
        lengths = tuple(len(self.groups[i].ids[lang]) for i in indices for lang in self.languages)
        return StepPlan(step=step, epoch=epoch, micro_batches=micro, global_items=len(indices),
                        global_tokens=sum(m.n_tokens for m in micro), global_examples=len(indices),
                        example_lengths=lengths)


def manipulation_loss(module: nn.Module, batch: MicroBatch) -> LossOutput:
    """The loop's loss closure: the summed total and its three components."""
    total, parts = module(**batch.inputs)
    return LossOutput(total, parts)


def freeze_all_but_top(lm: nn.Module, top_layers: int) -> list[str]:
    """Freeze every parameter except those of the top `top_layers` decoder layers; returns their names."""
    layers = decoder_layers(lm)
    if top_layers > len(layers):
        raise ValueError(f"top_layers={top_layers} but the model has only {len(layers)} layers")
    for param in lm.parameters():
        param.requires_grad_(False)
    for layer in layers[len(layers) - top_layers:]:
        for param in layer.parameters():
            param.requires_grad_(True)
    return [name for name, p in lm.named_parameters() if p.requires_grad]


# 6. The run -------------------------------------------------------------------------------------------------

@dataclass
class ManipulationResult:
    steps: int
    seconds: float
    """Wall time of the optimizer steps."""
    tokens: int
    """Real prompt tokens of the optimizer steps (every language of every group)."""
    reference_seconds: float
    """Wall time of the one forward pass over every prompt that gives the reference states."""
    trainable_params: int
    first: dict[str, float]
    last: dict[str, float]
    run_dir: Path
    weights: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def start_point(run_dir: Path, cfg: LensTrainConfig, resume: bool) -> Path | None:
    """The checkpoint a run in `run_dir` continues from (None: a fresh start). A finished run is refused, and
    so is an interrupted one unless `resume`; a resume must match the configuration (differing fields named)."""
    from babeltune.train.runfolder import run_status

    status = run_status(run_dir, "summary.json")
    if status.state == "finished":
        raise ValueError(f"{run_dir} already holds a finished manipulation run; choose another --out folder")
    if resume:
        return status.resume_point(cfg.numbers_dict())[0]
    if status.state == "resumable":
        raise ValueError(f"{run_dir} holds an interrupted manipulation run: add --resume to continue it, or "
                         "choose another --out folder")
    return None


def manipulate(lm: Any, tokenizer: Any, subspace: LanguageSubspace, records: list[Any], cfg: LensTrainConfig,
               run_dir: Path, *, resume: bool = False) -> ManipulationResult:
    """Train `lm` in place (top layers only) and log into `run_dir`; see the module docstring.
    `resume`: continue from the run's latest checkpoint (written by the same configuration)."""
    from babeltune.models.chat import get_template
    from babeltune.train import routine
    from babeltune.train.modeling import save_final

    checkpoint = start_point(run_dir, cfg, resume)
    routine.set_seed(cfg.seed)
    languages = training_languages(cfg, subspace)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    template = get_template(tokenizer, cfg.template)
    groups, report = parallel_groups(records, languages, tokenizer, template, cfg.max_prompt_tokens, cfg.max_groups)
    log.info("manipulation data: %d parallel groups x %d languages (%s)", len(groups), len(languages), report)

    accelerator = routine.make_accelerator()
    lm.to(accelerator.device)
    lm.eval()  # reference states without dropout
    ref_start = time.perf_counter()
    reference = reference_states(lm, groups, languages, pad_id, cfg.pools())
    reference_seconds = time.perf_counter() - ref_start
    trainable = freeze_all_but_top(lm, cfg.top_layers)
    objective = ManipulationLoss(lm, subspace, languages, cfg, pad_id).to(accelerator.device)

    schedule = DataSchedule.build(len(groups), cfg.batch_size * cfg.grad_accum, cfg.epochs, cfg.max_steps,
                                  cfg.seed, shuffle=True)
    total = schedule.total_steps
    plan = routine.TrainingPlan(steps=GroupPlanner(groups, schedule, languages, reference, pad_id, cfg.batch_size),
                                total_steps=total, loss_fn=manipulation_loss,
                                autocast=routine.resolve_precision(cfg.precision, accelerator.device))
    optim = routine.OptimSettings(lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.adam_betas,
                                  schedule=cfg.optim.schedule, warmup_steps=math.ceil(cfg.optim.warmup_ratio * total),
                                  max_grad_norm=cfg.optim.max_grad_norm)
    run = routine.RunSettings(folder=run_dir, numbers=cfg.numbers_dict(), save_every=cfg.save_every,
                              tensorboard=cfg.tensorboard, progress=cfg.progress)
    try:  # checkpoints hold the model's own parameter names (not the loss module's)
        fitted = routine.fit(objective, plan, optim, run, checkpoint, accelerator=accelerator, checkpointed=lm)
    finally:
        lm.eval()
        for param in lm.parameters():
            param.requires_grad_(True)
    weights = save_final(lm, tokenizer, run_dir / "final", template=template) if cfg.save_model else None
    return _result(run_dir, fitted.seconds, reference_seconds,
                   sum(p.numel() for n, p in lm.named_parameters() if n in set(trainable)), weights)


def training_languages(cfg: LensTrainConfig, subspace: LanguageSubspace) -> list[str]:
    """The configured languages (default: the subspace's), each probed, the central one and a target among them."""
    languages = cfg.languages or list(subspace.languages)
    for lang in languages:
        subspace.lang_index(lang)
    if subspace.central not in languages:
        raise ValueError(f"training languages {languages} must include the central language {subspace.central!r}")
    if len(languages) < 2:
        raise ValueError("manipulation training needs the central language and at least one target language")
    return languages


def _result(run_dir: Path, seconds: float, reference_seconds: float, trainable_params: int,
            weights: Path | None) -> ManipulationResult:
    """The run's figures, from its whole log (the steps before a resume included)."""
    from babeltune.train.metrics import read_log

    records = read_log(run_dir / "log.jsonl")
    keys = ("loss", "retain", "specific", "agnostic")
    return ManipulationResult(
        steps=len(records), seconds=seconds, tokens=sum(int(r["tokens"]) for r in records),
        reference_seconds=reference_seconds, trainable_params=trainable_params,
        first={k: float(records[0][k]) for k in keys} if records else {},
        last={k: float(records[-1][k]) for k in keys} if records else {},
        run_dir=run_dir, weights=weights,
    )


def run_manipulation(cfg: LensTrainConfig, out: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """`babeltune lens train`: load model, subspace and data, train, write RUN/{final, log.jsonl, run.json};
    `resume` continues an interrupted run from its latest checkpoint."""
    from babeltune.data.readers import load_records
    from babeltune.models.loading import load_model, model_fingerprint
    from babeltune.runinfo import write_run_info

    if not cfg.subspace:
        raise ValueError("no subspace: set --subspace DIR (written by `babeltune lens probe`)")
    run_dir = Path(out)
    start_point(run_dir, cfg, resume)  # refused before the model is loaded
    subspace = LanguageSubspace.load(cfg.subspace)
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    fingerprint = model_fingerprint(loaded.path)
    subspace.check_model(loaded.model, None if cfg.allow_other_model else fingerprint)
    data = load_records(cfg.data)
    write_run_info(run_dir, config=cfg, seed=cfg.seed, data={cfg.data: data.report.fingerprint},
                   extra={"model_fingerprint": fingerprint, "subspace": subspace.metadata()})
    result = manipulate(loaded.model, loaded.tokenizer, subspace, data.records, cfg, run_dir, resume=resume)
    summary = {"config": to_dict(cfg), **result.to_dict()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
