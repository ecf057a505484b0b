"""Instruction tuning: `train(config) -> TrainResult`, and `train_sweep` for a list of learning rates.

The recipe reads top to bottom; every check that can fail does so before the model is loaded:

1. the run folder: a resume checkpoint must match this config, a fresh run must not overwrite one;
2. the data: read, rendered with the shared chat template, length policy applied and counted;
3. the model: LoRA or full fine-tuning, bf16 storage of frozen weights, the fused loss checked
   against the model's own forward once;
4. optimizer, schedule, `accelerate` (DDP/FSDP when launched with `accelerate launch`), resume;
5. the loop (`babeltune.train.loop.run_training`), logging and checkpoints;
6. the final weights (adapter or full model, optionally merged) and `result.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from babeltune.train.batching import DataSchedule, StepPlanner
from babeltune.train.checkpoint import load_checkpoint, save_checkpoint
from babeltune.train.config import TrainConfig, sweep_dir_name
from babeltune.train.data import prepare_examples
from babeltune.train.loop import (
    StepRecord,
    build_optimizer,
    build_scheduler,
    call_module_loss,
    run_training,
)
from babeltune.train.losses import SupervisedLMLoss
from babeltune.train.metrics import FlopsModel, MetricsLogger, measure_matmul_peak, peak_memory_bytes
from babeltune.train.modeling import (
    NaiveLMLoss,
    apply_lora,
    compile_layers,
    fused_loss_matches,
    merge_adapter,
    save_final,
    store_frozen_in,
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


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: float32 throughout)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        supported = False
    return torch.bfloat16 if supported else None


def peak_flops(config: TrainConfig, device: torch.device) -> float:
    """The bf16 matmul peak MFU is reported against: from the config, else measured once per process."""
    if config.peak_tflops:
        return config.peak_tflops * 1e12
    key = str(device)
    if key not in _PEAK_CACHE:
        _PEAK_CACHE[key] = measure_matmul_peak(device, torch.bfloat16)
    return _PEAK_CACHE[key]


def make_accelerator() -> Any:
    """accelerate's Accelerator: one process by default, DDP/FSDP under `accelerate launch` (or torchrun).
    Without a GPU it must be told `cpu=True`, or launched processes would not form a (gloo) group.
    The loop does its own autocast and gradient accumulation, so accelerate's are left off."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision="no", gradient_accumulation_steps=1, step_scheduler_with_optimizer=False,
                       cpu=not torch.cuda.is_available())


def _check_run_dir(config: TrainConfig, resume: bool) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its state (None: fresh run). Refuses mismatched configs and
    overwrites."""
    status = run_status(config.out)
    if resume:
        return status.resume_point(config.numbers_dict())
    if status.state != "fresh":
        raise CheckpointError(
            f"{config.out} already holds a run; pass --resume to continue it, or choose another --out folder"
        )
    return None


def train(config: TrainConfig, *, resume: bool = False, on_step: Callable[[StepRecord], None] | None = None,
          ) -> TrainResult:
    """Train one model as `config` says (see the module docstring for the order of things)."""
    from babeltune.data.readers import load_records
    from babeltune.models.chat import get_template
    from babeltune.models.loading import load_model, load_tokenizer, model_fingerprint
    from babeltune.runinfo import write_run_info

    config.require_data()
    run_dir = config.out
    accelerator = make_accelerator()
    main = accelerator.is_main_process

    # 1. The run folder.
    resumed = _check_run_dir(config, resume)
    ckpt = resumed[0] if resumed else None
    fsdp = str(accelerator.distributed_type).endswith("FSDP")
    if fsdp and ckpt is not None:
        raise CheckpointError("--resume is not supported under FSDP (checkpoints hold unsharded state); "
                              "use DDP or a single process for resumable runs")
    if resumed and resumed[1].get("world_size") != accelerator.num_processes:
        raise CheckpointError(f"{ckpt} was written by {resumed[1].get('world_size')} process(es); "
                              f"resume with as many (now {accelerator.num_processes}): the global batch depends on it")

    # 2. The data.
    loaded = load_records(config.data, on_invalid="skip" if config.skip_invalid else "error",
                          lang=config.source_lang, hf_split=config.hf_split, hf_config=config.hf_config,
                          languages=config.languages)
    if not loaded.records:
        raise ValueError(f"{config.data}: no training records ({loaded.report.summary()})")
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    template = get_template(tokenizer, config.template)
    examples, report = prepare_examples(loaded.records, tokenizer, template, max_length=config.max_length,
                                        overflow=config.overflow, train_on=config.train_on)
    world, rank = accelerator.num_processes, accelerator.process_index
    schedule = DataSchedule.build(len(examples), config.batch_size * config.grad_accum * world, config.epochs,
                                  config.max_steps, config.seed, config.shuffle)
    log.info("data: %s; %s", loaded.report.summary(), report.summary())
    log.info("%d steps of %d examples (%d per epoch)", schedule.total_steps, schedule.global_batch,
             schedule.steps_per_epoch)

    # 3. The model.
    set_seed(config.seed)
    base = load_model(config.model, trust_remote_code=config.trust_remote_code)
    lm = base.model
    lm.config.use_cache = False
    if config.method == "lora":
        lm = apply_lora(lm, config.lora, base_path=base.path)
    else:
        for param in lm.parameters():
            param.requires_grad_(True)
    device = accelerator.device
    autocast_dtype = resolve_precision(config.precision, device)
    probe = min(examples, key=len)  # every kept example has trained tokens, so the check compares real losses
    fused = fused_loss_matches(lm, list(probe.input_ids), list(probe.targets))
    if not fused:
        log.warning("the fused LM-head loss does not reproduce this model's logits: using full logits (slower)")
    if autocast_dtype is not None and config.method == "lora":
        store_frozen_in(lm, autocast_dtype)
    if config.compile:
        compile_layers(lm)
    module: torch.nn.Module = (SupervisedLMLoss(lm, chunk=config.logits_chunk, compute_dtype=autocast_dtype,
                                                sparse_embedding_grad=not fsdp)
                               if fused else NaiveLMLoss(lm))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in module.parameters())
    log.info("%s: %d of %d parameters trained; precision %s; loss %s", config.method, trainable, total_params,
             autocast_dtype or "float32", "fused (supervised positions only)" if fused else "full logits")
    flops_model = FlopsModel.from_model(lm)

    # 4. Optimizer, schedule, accelerate, resume.
    optimizer = build_optimizer(module, lr=config.lr, weight_decay=config.weight_decay, betas=config.adam_betas,
                                eps=config.adam_eps)
    scheduler = build_scheduler(optimizer, total_steps=schedule.total_steps, warmup_steps=config.warmup_steps,
                                schedule=config.schedule)
    model, optimizer = accelerator.prepare(module, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if isinstance(unwrapped, SupervisedLMLoss):
        unwrapped.cache_frozen_head()
    start_step = 0
    if ckpt is not None:
        restored = load_checkpoint(ckpt, model=unwrapped, optimizer=optimizer, scheduler=scheduler, rank=rank,
                                   device=device)
        start_step = restored.step
        log.info("resumed from %s at step %d", ckpt, start_step)
    peak = peak_flops(config, device)
    if fsdp:
        log.warning("FSDP: no step checkpoints are written (resume needs DDP or a single process); "
                    "the final weights are gathered and saved")

    if main:
        write_run_info(run_dir, config=config, seed=config.seed, data={
            "source": config.data, "read": loaded.report.to_dict(), "examples": report.to_dict(),
            "model": base.path, "model_fingerprint": model_fingerprint(base.path),
        }, extra={"train": {
            "processes": world, "distributed": str(accelerator.distributed_type).split(".")[-1],
            "device": str(device), "precision": str(autocast_dtype or "float32"),
            "fused_loss": fused, "trainable_parameters": trainable, "parameters": total_params,
            "peak_flops": peak, "global_batch": schedule.global_batch, "total_steps": schedule.total_steps,
            "steps_per_epoch": schedule.steps_per_epoch, "template": template.describe(),
            "resumed_from": str(ckpt) if ckpt else None,
        }})
        (run_dir / "data_report.json").write_text(json.dumps(
            {"read": loaded.report.to_dict(), "examples": report.to_dict()}, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8")

    # 5. The loop.
    planner = StepPlanner(examples, schedule, batch_size=config.batch_size, grad_accum=config.grad_accum,
                          rank=rank, world=world, pack=config.pack, capacity=config.row_capacity,
                          pad_id=int(tokenizer.pad_token_id))

    def save(step: int) -> None:
        save_checkpoint(run_dir, step, model=unwrapped, optimizer=optimizer, scheduler=scheduler,
                        fingerprint=config.numbers_fingerprint(), rank=rank, world=world,
                        barrier=accelerator.wait_for_everyone, keep=config.keep_checkpoints,
                        extra={"config": config.numbers_dict()})

    logger = MetricsLogger(run_dir, total_steps=schedule.total_steps, start_step=start_step,
                           tensorboard=config.tensorboard, progress=config.progress, enabled=main)
    try:
        result = run_training(
            accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, plan=planner,
            loss_fn=call_module_loss, start_step=start_step, total_steps=schedule.total_steps, logger=logger,
            max_grad_norm=config.max_grad_norm, autocast_dtype=autocast_dtype,
            flops=lambda p: flops_model.step_flops(p.example_lengths, p.global_items), peak_flops=peak,
            log_every=config.log_every, save_every=config.save_every, save=None if fsdp else save,
            on_step=on_step,
        )
    finally:
        logger.close()
    final_loss = result.final_loss
    if final_loss is None and ckpt is not None:  # resumed a run whose last checkpoint was its end
        final_loss = _last_logged_loss(run_dir)

    # 6. The final weights.
    accelerator.wait_for_everyone()
    weights, merged = run_dir / "final", None
    # A full model, or any model under FSDP, is gathered first (every process takes part); a LoRA
    # adapter is saved from the main process's copy.
    state = accelerator.get_state_dict(model) if config.method == "full" or fsdp else None
    if main:
        lm_state = {k.removeprefix("lm."): v for k, v in state.items()} if state is not None else None
        save_final(unwrapped.lm, tokenizer, weights, state_dict=lm_state, template=template)
        if config.method == "lora" and config.merge:
            merged = merge_adapter(weights, run_dir / "merged")
    accelerator.wait_for_everyone()
    outcome = TrainResult(run_dir=run_dir, weights=weights, merged=merged, final_loss=final_loss,
                          log_path=run_dir / "log.jsonl", steps=schedule.total_steps, lr=config.lr)
    if main:
        summary = {**outcome.to_dict(), "fingerprint": config.numbers_fingerprint(),
                   "peak_memory_gb": peak_memory_bytes(device) / 2**30, "data": report.to_dict()}
        (run_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        log.info("done: final loss %.4f; weights in %s", final_loss or float("nan"), weights)
    return outcome


def _last_logged_loss(run_dir: Path) -> float | None:
    from babeltune.train.metrics import read_log

    records = read_log(run_dir / "log.jsonl") if (run_dir / "log.jsonl").exists() else []
    return float(records[-1]["loss"]) if records else None


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
