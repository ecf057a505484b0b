"""Instruction tuning: `train(config) -> TrainResult`, and `train_sweep` for a list of learning rates.

`train` reads as its steps; every check that can fail does so before the model is loaded:

1. the run folder (`runfolder.run_status`): a resume checkpoint must match this config, a fresh run
   must not overwrite one;
2. the data: read, rendered with the shared chat template, length policy applied and counted;
3. the model: LoRA or full fine-tuning, bf16 storage of frozen weights, the fused loss checked
   against the model's own forward once; `run.json` and `data_report.json` record it all;
4. `babeltune.train.routine.fit`: optimizer, schedule, `accelerate` (DDP/FSDP when launched with
   `accelerate launch`), the checkpoint restored, the loop, its log and checkpoints;
5. the final weights (adapter or full model, optionally merged) and `result.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babeltune.train.batching import DataSchedule, StepPlanner
from babeltune.train.config import TrainConfig, sweep_dir_name
from babeltune.train.data import DataReport, TrainExample, prepare_examples
from babeltune.train.loop import StepRecord
from babeltune.train.losses import SupervisedLMLoss
from babeltune.train.metrics import FlopsModel, measure_matmul_peak, peak_memory_bytes
from babeltune.train.modeling import (
    NaiveLMLoss,
    apply_lora,
    compile_layers,
    fused_loss_matches,
    merge_adapter,
    save_final,
    store_frozen_in,
)
from babeltune.train.routine import (
    OptimSettings,
    RunSettings,
    TrainingPlan,
    fit,
    make_accelerator,
    resolve_precision,
    set_seed,
)
from babeltune.train.runfolder import CheckpointError, RunStatus, run_status

log = logging.getLogger(__name__)

_PEAK_CACHE: dict[str, float] = {}


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    weights: Path
    """RUN/final: the adapter (LoRA) or the full model, safetensors + tokenizer."""
    merged: Path | None
    """RUN/merged: the adapter merged into the base model (LoRA with merge=true)."""
    final_loss: float | None
    """Loss of the last optimizer step."""
    log_path: Path
    """RUN/log.jsonl: one record per step."""
    steps: int
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def peak_flops(config: TrainConfig, device: torch.device) -> float:
    """The bf16 matmul peak MFU is reported against: from the config, else measured once per process."""
    if config.peak_tflops:
        return config.peak_tflops * 1e12
    key = str(device)
    if key not in _PEAK_CACHE:
        _PEAK_CACHE[key] = measure_matmul_peak(device, torch.bfloat16)
    return _PEAK_CACHE[key]


def train(config: TrainConfig, *, resume: bool = False, on_step: Callable[[StepRecord], None] | None = None,
          ) -> TrainResult:
    """Train one model as `config` says (see the module docstring for the order of things)."""
    config.require_data()
    accelerator = make_accelerator()
    fsdp = str(accelerator.distributed_type).endswith("FSDP")
    checkpoint = _start_point(config, resume, accelerator.num_processes, fsdp)
    data = _prepare_data(config, accelerator.num_processes)
    set_seed(config.seed)
    model = _build_model(config, data, accelerator.device, fsdp)
    peak = peak_flops(config, accelerator.device)
    if fsdp:
        log.warning("FSDP: no step checkpoints are written (resume needs DDP or a single process); "
                    "the final weights are gathered and saved")
    if accelerator.is_main_process:
        _write_run_info(config, data, model, accelerator, peak, checkpoint)
    planner = StepPlanner(data.examples, data.schedule, batch_size=config.batch_size, grad_accum=config.grad_accum,
                          rank=accelerator.process_index, world=accelerator.num_processes, pack=config.pack,
                          capacity=config.row_capacity, pad_id=int(data.tokenizer.pad_token_id))
    plan = TrainingPlan(steps=planner, total_steps=data.schedule.total_steps, autocast=model.autocast,
                        flops=lambda p: model.flops.step_flops(p.example_lengths, p.global_items), peak_flops=peak)
    optim = OptimSettings(lr=config.lr, weight_decay=config.weight_decay, betas=config.adam_betas,
                          eps=config.adam_eps, schedule=config.schedule, warmup_steps=config.warmup_steps,
                          max_grad_norm=config.max_grad_norm)
    run = RunSettings(folder=config.out, numbers=config.numbers_dict(), save_every=config.save_every,
                      keep_checkpoints=config.keep_checkpoints, checkpoints=not fsdp, log_every=config.log_every,
                      tensorboard=config.tensorboard, progress=config.progress)
    fitted = fit(model.objective, plan, optim, run, checkpoint, accelerator=accelerator,
                 on_device=_cache_frozen_head, on_step=on_step)
    weights, merged = _save_weights(config, data, fitted.model, accelerator, fsdp)
    outcome = TrainResult(run_dir=config.out, weights=weights, merged=merged, final_loss=fitted.final_loss,
                          log_path=config.out / "log.jsonl", steps=data.schedule.total_steps, lr=config.lr)
    if accelerator.is_main_process:
        summary = {**outcome.to_dict(), "fingerprint": config.numbers_fingerprint(),
                   "peak_memory_gb": peak_memory_bytes(accelerator.device) / 2**30, "data": data.report.to_dict()}
        (config.out / "result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        log.info("done: final loss %.4f; weights in %s", fitted.final_loss or float("nan"), weights)
    return outcome


# 1. The run folder ---------------------------------------------------------------------------------------

def _start_point(config: TrainConfig, resume: bool, world: int, fsdp: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run). Refuses mismatched configs, another number of
    processes, a resume under FSDP, and a fresh run over an existing one."""
    status = run_status(config.out)
    if not resume:
        if status.state != "fresh":
            raise CheckpointError(f"{config.out} already holds a run; pass --resume to continue it, or choose "
                                  "another --out folder")
        return None
    checkpoint, state = status.resume_point(config.numbers_dict())
    if fsdp:
        raise CheckpointError("--resume is not supported under FSDP (checkpoints hold unsharded state); "
                              "use DDP or a single process for resumable runs")
    if state.get("world_size") != world:
        raise CheckpointError(f"{checkpoint} was written by {state.get('world_size')} process(es); "
                              f"resume with as many (now {world}): the global batch depends on it")
    return checkpoint


# 2. The data -----------------------------------------------------------------------------------------------

@dataclass
class _Data:
    """The prepared training data and the schedule it makes."""

    read: Any
    """What the reader reported (rows read, kept, rejected per reason)."""
    tokenizer: Any
    template: Any
    examples: list[TrainExample]
    report: DataReport
    schedule: DataSchedule


def _prepare_data(config: TrainConfig, world: int) -> _Data:
    from babeltune.data.readers import load_records
    from babeltune.models.chat import get_template
    from babeltune.models.loading import load_tokenizer

    loaded = load_records(config.data, on_invalid="skip" if config.skip_invalid else "error",
                          lang=config.source_lang, hf_split=config.hf_split, hf_config=config.hf_config,
                          languages=config.languages)
    if not loaded.records:
        raise ValueError(f"{config.data}: no training records ({loaded.report.summary()})")
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    template = get_template(tokenizer, config.template)
    examples, report = prepare_examples(loaded.records, tokenizer, template, max_length=config.max_length,
                                        overflow=config.overflow, train_on=config.train_on)
    schedule = DataSchedule.build(len(examples), config.batch_size * config.grad_accum * world, config.epochs,
                                  config.max_steps, config.seed, config.shuffle)
    log.info("data: %s; %s", loaded.report.summary(), report.summary())
    log.info("%d steps of %d examples (%d per epoch)", schedule.total_steps, schedule.global_batch,
             schedule.steps_per_epoch)
    return _Data(loaded.report, tokenizer, template, examples, report, schedule)


# 3. The model ----------------------------------------------------------------------------------------------

@dataclass
class _Model:
    """The objective `fit` trains and what the run records about it."""

    path: str
    """The base model's folder."""
    objective: nn.Module
    """The LM inside a loss module whose forward returns the summed loss of a micro-batch."""
    autocast: torch.dtype | None
    fused: bool
    """Whether the fused LM-head loss reproduced the model's logits (else full logits)."""
    trainable: int
    parameters: int
    flops: FlopsModel


def _build_model(config: TrainConfig, data: _Data, device: torch.device, fsdp: bool) -> _Model:
    from babeltune.models.loading import load_model

    base = load_model(config.model, trust_remote_code=config.trust_remote_code)
    lm = base.model
    lm.config.use_cache = False
    if config.method == "lora":
        lm = apply_lora(lm, config.lora, base_path=base.path)
    else:
        for param in lm.parameters():
            param.requires_grad_(True)
    autocast_dtype = resolve_precision(config.precision, device)
    probe = min(data.examples, key=len)  # every kept example has trained tokens, so the check compares real losses
    fused = fused_loss_matches(lm, list(probe.input_ids), list(probe.targets))
    if not fused:
        log.warning("the fused LM-head loss does not reproduce this model's logits: using full logits (slower)")
    if autocast_dtype is not None and config.method == "lora":
        store_frozen_in(lm, autocast_dtype)
    if config.compile:
        compile_layers(lm)
    objective: nn.Module = (SupervisedLMLoss(lm, chunk=config.logits_chunk, compute_dtype=autocast_dtype,
                                             sparse_embedding_grad=not fsdp)
                            if fused else NaiveLMLoss(lm))
    trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    total = sum(p.numel() for p in objective.parameters())
    log.info("%s: %d of %d parameters trained; precision %s; loss %s", config.method, trainable, total,
             autocast_dtype or "float32", "fused (supervised positions only)" if fused else "full logits")
    return _Model(base.path, objective, autocast_dtype, fused, trainable, total, FlopsModel.from_model(lm))


def _cache_frozen_head(objective: nn.Module) -> None:
    if isinstance(objective, SupervisedLMLoss):
        objective.cache_frozen_head()


def _write_run_info(config: TrainConfig, data: _Data, model: _Model, accelerator: Any, peak: float,
                    checkpoint: Path | None) -> None:
    from babeltune.models.loading import model_fingerprint
    from babeltune.runinfo import write_run_info

    write_run_info(config.out, config=config, seed=config.seed, data={
        "source": config.data, "read": data.read.to_dict(), "examples": data.report.to_dict(),
        "model": model.path, "model_fingerprint": model_fingerprint(model.path),
    }, extra={"train": {
        "processes": accelerator.num_processes, "distributed": str(accelerator.distributed_type).split(".")[-1],
        "device": str(accelerator.device), "precision": str(model.autocast or "float32"),
        "fused_loss": model.fused, "trainable_parameters": model.trainable, "parameters": model.parameters,
        "peak_flops": peak, "global_batch": data.schedule.global_batch, "total_steps": data.schedule.total_steps,
        "steps_per_epoch": data.schedule.steps_per_epoch, "template": data.template.describe(),
        "resumed_from": str(checkpoint) if checkpoint else None,
    }})
    (config.out / "data_report.json").write_text(json.dumps(
        {"read": data.read.to_dict(), "examples": data.report.to_dict()}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8")


# 5. The final weights --------------------------------------------------------------------------------------

def _save_weights(config: TrainConfig, data: _Data, model: nn.Module, accelerator: Any,
                  fsdp: bool) -> tuple[Path, Path | None]:
    """RUN/final (and RUN/merged with `merge`). A full model, or any model under FSDP, is gathered first
    (every process takes part); a LoRA adapter is saved from the main process's copy."""
    accelerator.wait_for_everyone()
    weights, merged = config.out / "final", None
    state = accelerator.get_state_dict(model) if config.method == "full" or fsdp else None
    if accelerator.is_main_process:
        lm_state = {k.removeprefix("lm."): v for k, v in state.items()} if state is not None else None
        save_final(accelerator.unwrap_model(model).lm, data.tokenizer, weights, state_dict=lm_state,
                   template=data.template)
        if config.method == "lora" and config.merge:
            merged = merge_adapter(weights, config.out / "merged")
    accelerator.wait_for_everyone()
    return weights, merged


def train_sweep(config: TrainConfig, *, resume: bool = False,
                on_step: Callable[[StepRecord], None] | None = None) -> list[TrainResult]:
    """One run per learning rate of `config.lr_sweep` (each in OUT/lr-X), or the single run of
    `config.lr`. With `resume`, finished runs are kept, interrupted ones continue, missing ones start."""
    if not config.lr_sweep:
        return [train(config, resume=resume, on_step=on_step)]
    from babeltune.config import dump_yaml

    config.out.mkdir(parents=True, exist_ok=True)
    dump_yaml(config, config.out / "sweep-config.yaml")
    results: list[TrainResult] = []
    for lr in config.lr_sweep:
        sub = dataclasses.replace(config, lr=lr, lr_sweep=[], out=config.out / sweep_dir_name(lr))
        status = run_status(sub.out)
        if resume and status.state == "finished":
            log.info("lr %g: already finished in %s", lr, sub.out)
            results.append(_finished(sub, status))
            continue
        results.append(train(sub, resume=resume and status.state == "resumable", on_step=on_step))
    summary = [{"lr": r.lr, "final_loss": r.final_loss, "run_dir": str(r.run_dir), "weights": str(r.weights)}
               for r in results]
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return results


def _finished(config: TrainConfig, status: RunStatus) -> TrainResult:
    """The finished run in `config.out`, refused if a configuration with other numbers wrote it."""
    if not status.same_numbers(config.numbers_dict()):
        raise CheckpointError(f"{status.result_file} was written by a different configuration; use another --out "
                              "folder")
    saved = status.result()
    return TrainResult(run_dir=Path(saved["run_dir"]), weights=Path(saved["weights"]),
                       merged=Path(saved["merged"]) if saved.get("merged") else None,
                       final_loss=saved["final_loss"], log_path=Path(saved["log_path"]), steps=saved["steps"],
                       lr=saved["lr"])
