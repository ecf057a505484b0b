"""`fit`: the training routine every recipe shares (instruction tuning, Lens manipulation training).

A recipe checks its run folder (`babeltune.train.runfolder`), builds its objective (a module whose forward
gives the loss summed over a micro-batch's items) and a plan of its steps, then calls

    fit(objective, plan, optim, run, resume, accelerator=make_accelerator())

which builds AdamW and the learning-rate schedule, hands both to `accelerate` (DDP/FSDP under
`accelerate launch`), restores the checkpoint `resume` names, and runs the loop
(`babeltune.train.loop.run_steps`) with its JSONL/TensorBoard log and its checkpoints (every N steps, at
the end, on SIGINT/SIGTERM). Seeding the random generators and saving the final weights stay with the
recipe: where they happen decides the numbers and the files.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from babeltune.train.batching import StepPlan
from babeltune.train.checkpoint import load_checkpoint, save_checkpoint
from babeltune.train.loop import LossFn, StepRecord, build_optimizer, build_scheduler, call_module_loss, run_steps
from babeltune.train.metrics import MetricsLogger, read_log
from babeltune.train.runfolder import numbers_fingerprint

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` (fp32 | bf16 | auto) on `device` (None: float32 throughout).
    auto on a CPU: bfloat16 only where the CPU multiplies it natively (`cpu_has_fast_bf16`); emulated
    bfloat16 trained 5x slower than float32 on a Xeon without AVX512-BF16."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    from babeltune.hardware import cpu_has_fast_bf16

    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        supported = False
    return torch.bfloat16 if supported and cpu_has_fast_bf16() else None


def make_accelerator() -> Any:
    """accelerate's Accelerator: one process by default, DDP/FSDP under `accelerate launch` (or torchrun).
    Without a GPU it must be told `cpu=True`, or launched processes would not form a (gloo) group.
    The loop does its own autocast and gradient accumulation, so accelerate's are left off."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision="no", gradient_accumulation_steps=1, step_scheduler_with_optimizer=False,
                       cpu=not torch.cuda.is_available())


@dataclass(frozen=True)
class OptimSettings:
    """AdamW (no weight decay on 1-D tensors) and its learning-rate schedule."""

    lr: float
    """Peak learning rate."""
    weight_decay: float
    betas: tuple[float, float]
    schedule: str
    """cosine, linear or constant after the warm-up."""
    warmup_steps: int
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    """Gradient clipping (None: none)."""


@dataclass(frozen=True)
class TrainingPlan:
    """What each optimizer step computes."""

    steps: Callable[[int], StepPlan]
    """This process's micro-batches of step n: a pure function of n, so a resumed run sees the same data."""
    total_steps: int
    loss_fn: LossFn = call_module_loss
    """Calls the (prepared) objective on a micro-batch; the default returns its forward's summed loss."""
    autocast: torch.dtype | None = None
    """bf16 autocast of the forward passes (None: float32)."""
    flops: Callable[[StepPlan], float] | None = None
    """FLOPs of a step, logged with MFU against `peak_flops`."""
    peak_flops: float | None = None


@dataclass(frozen=True)
class RunSettings:
    """Where and how a run is recorded."""

    folder: Path
    numbers: dict[str, Any]
    """The configuration fields that change the numbers: every checkpoint stores them and their fingerprint,
    which a resume must match."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 1
    checkpoints: bool = True
    """False: no step checkpoints at all (FSDP, whose processes hold shards)."""
    log_every: int = 1
    tensorboard: bool = False
    progress: bool = True


@dataclass
class Fitted:
    """What `fit` leaves for the recipe's final save."""

    model: nn.Module
    """The objective as `accelerate` prepared it (wrapped under DDP/FSDP)."""
    final_loss: float | None
    """The last step's loss; on a resume with no step left, the last one logged."""
    seconds: float
    """Wall time of the optimizer steps."""


def fit(objective: nn.Module, plan: TrainingPlan, optim: OptimSettings, run: RunSettings, resume: Path | None, *,
        accelerator: Any, checkpointed: nn.Module | None = None,
        on_device: Callable[[nn.Module], None] | None = None,
        on_step: Callable[[StepRecord], None] | None = None) -> Fitted:
    """Train `objective`'s trainable parameters as `plan` and `optim` say, recorded in `run.folder`, continuing
    from the checkpoint `resume` (None: from step 0).

    `checkpointed`: the module whose trainable parameters checkpoints hold, by name (default: the objective);
    `on_device(unwrapped objective)`: called once the objective is on its device, before the restore.
    """
    optimizer = build_optimizer(objective, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas,
                                eps=optim.eps)
    scheduler = build_scheduler(optimizer, total_steps=plan.total_steps, warmup_steps=optim.warmup_steps,
                                schedule=optim.schedule)
    model, optimizer = accelerator.prepare(objective, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if on_device is not None:
        on_device(unwrapped)
    saved = checkpointed if checkpointed is not None else unwrapped
    rank, world = accelerator.process_index, accelerator.num_processes
    start_step = 0
    if resume is not None:
        start_step = load_checkpoint(resume, model=saved, optimizer=optimizer, scheduler=scheduler, rank=rank,
                                     device=accelerator.device).step
        log.info("resumed from %s at step %d", resume, start_step)

    def save(step: int) -> None:
        save_checkpoint(run.folder, step, model=saved, optimizer=optimizer, scheduler=scheduler,
                        fingerprint=numbers_fingerprint(run.numbers), rank=rank, world=world,
                        barrier=accelerator.wait_for_everyone, keep=run.keep_checkpoints,
                        extra={"config": run.numbers})

    logger = MetricsLogger(run.folder, total_steps=plan.total_steps, start_step=start_step,
                           tensorboard=run.tensorboard, progress=run.progress, enabled=accelerator.is_main_process)
    started = time.perf_counter()
    try:
        result = run_steps(
            accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, plan=plan.steps,
            loss_fn=plan.loss_fn, start_step=start_step, total_steps=plan.total_steps, logger=logger,
            max_grad_norm=optim.max_grad_norm, autocast_dtype=plan.autocast, flops=plan.flops,
            peak_flops=plan.peak_flops, log_every=run.log_every, save_every=run.save_every,
            save=save if run.checkpoints else None, on_step=on_step)
    finally:
        logger.close()
    final_loss = result.final_loss
    if final_loss is None and resume is not None:  # resumed a run whose last checkpoint was its end
        final_loss = _last_logged_loss(run.folder)
    return Fitted(model=model, final_loss=final_loss, seconds=time.perf_counter() - started)


def _last_logged_loss(folder: Path) -> float | None:
    records = read_log(folder / "log.jsonl") if (folder / "log.jsonl").exists() else []
    return float(records[-1]["loss"]) if records else None
