"""The training loop, reusable by any recipe that brings its own loss.

Read top to bottom: `build_optimizer` and `build_scheduler` make AdamW and the learning-rate schedule;
`train_step` runs one optimizer step (micro-batches with gradient accumulation, bf16 autocast, loss
normalised by the step's global item count, gradient clipping); `run_steps` repeats it from a start
step, logs every step, writes checkpoints every N steps and on SIGINT/SIGTERM, and stops cleanly.

A recipe supplies:

- `plan(step) -> StepPlan`: this process's micro-batches of a step, a pure function of the step number
  (so a resumed run sees the same data);
- `loss_fn(model, micro_batch) -> LossOutput`: the summed loss of a micro-batch (and optional summed
  extra metrics). It must call `model(...)` itself, not its submodules, so DDP/FSDP hooks run.

Recipes reach it through `babeltune.train.routine.fit`, which also builds the optimizer, prepares
`accelerate`, restores a checkpoint and keeps the log.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from babeltune.interrupts import TrainingInterrupted as TrainingInterrupted  # raised here; light for the CLI
from babeltune.train.batching import MicroBatch, StepPlan
from babeltune.train.metrics import MetricsLogger, peak_memory_bytes


@dataclass
class LossOutput:
    """What a loss closure returns for one micro-batch."""

    loss_sum: torch.Tensor
    """The loss summed over the micro-batch's items (normalised by the loop)."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """Optional extra sums (e.g. loss components), logged divided by the step's global item count."""


LossFn = Callable[[nn.Module, MicroBatch], LossOutput]


def call_module_loss(model: nn.Module, batch: MicroBatch) -> LossOutput:
    """The default loss closure: the module's forward returns the summed loss."""
    return LossOutput(model(**batch.inputs))


# 1. Optimizer and schedule ------------------------------------------------------------------------

def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights (1-D tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates each tensor in one pass: on CPU it took 0.12 s per step for 239M float32
    # parameters against 0.82 s for the default multi-tensor one (2 cores; gemma-3-270m full tuning).
    fused = next(iter(decay or no_decay)).device.type in ("cuda", "cpu")
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps, fused=fused)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier for 0-based optimizer step `step`.

    1. warm-up: linear from 1/(warmup+1) up to 1 over `warmup_steps` steps;
    2. then `constant`, or `linear` / `cosine` decay towards 0 at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine, linear or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int,
                    schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, total_steps=total_steps, warmup_steps=warmup_steps, schedule=schedule)  # validates
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, warmup_steps=warmup_steps,
                                          schedule=schedule))


# 2. One optimizer step ----------------------------------------------------------------------------

@dataclass
class StepOutput:
    loss: float
    """Mean loss per item over the whole step (all micro-batches, all processes)."""
    grad_norm: float
    lr: float
    metrics: dict[str, float]


def train_step(
    accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any, plan: StepPlan, loss_fn: LossFn, *,
    max_grad_norm: float | None, autocast_dtype: torch.dtype | None,
) -> StepOutput:
    """Forward/backward every micro-batch of `plan`, then clip, step the optimizer and the schedule.

    Each micro-batch's summed loss is divided by the step's global item count (and multiplied by the
    number of processes, which DDP averages over), so the update equals that of one big batch.
    """
    model.train()
    device = accelerator.device
    scale = accelerator.num_processes / max(plan.global_items, 1)
    total = torch.zeros((), dtype=torch.float32, device=device)
    extra: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(plan.micro_batches):
        last = i == len(plan.micro_batches) - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync:
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                out = loss_fn(model, _to_device(batch, device))
            accelerator.backward(out.loss_sum * scale)
        total += out.loss_sum.detach().float()
        for key, value in out.metrics.items():
            extra[key] = extra.get(key, torch.zeros((), device=device)) + value.detach().float()
    lr = float(scheduler.get_last_lr()[0])
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_norm = accelerator.clip_grad_norm_(trainable, max_grad_norm if max_grad_norm else float("inf"))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    sums = torch.stack([total, *extra.values()])
    sums = accelerator.reduce(sums, reduction="sum") if accelerator.num_processes > 1 else sums
    values = (sums / max(plan.global_items, 1)).tolist()
    return StepOutput(loss=values[0], grad_norm=float(grad_norm), lr=lr,
                      metrics=dict(zip(extra, values[1:], strict=True)))


def _to_device(batch: MicroBatch, device: torch.device) -> MicroBatch:
    if all(t.device == device for t in batch.inputs.values()):
        return batch
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
    return MicroBatch(inputs, batch.n_items, batch.n_tokens, batch.n_padded)


# 3. The loop ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Catch SIGINT/SIGTERM while training: the loop finishes its step, checkpoints, then stops.
    The previous handlers come back on exit, whatever happens."""
    caught: list[int] = []
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)

    with contextlib.suppress(ValueError):  # not the main thread: no handlers, the loop just runs
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@dataclass
class StepRecord:
    """One logged step (also passed to `on_step` callbacks)."""

    step: int
    """Optimizer steps completed (1-based)."""
    values: dict[str, Any]


@dataclass
class LoopResult:
    last_step: int
    final_loss: float | None
    records: list[StepRecord]


def run_steps(
    *, accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any, plan: Callable[[int], StepPlan],
    loss_fn: LossFn, start_step: int, total_steps: int, logger: MetricsLogger,
    max_grad_norm: float | None = 1.0, autocast_dtype: torch.dtype | None = None,
    flops: Callable[[StepPlan], float] | None = None, peak_flops: float | None = None, log_every: int = 1,
    save_every: int = 0, save: Callable[[int], None] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> LoopResult:
    """Run optimizer steps `start_step`..`total_steps`-1; returns the last step's loss.

    `save(step)` writes a checkpoint after `step` completed steps: every `save_every` steps, at the end,
    and when SIGINT/SIGTERM arrives (then `TrainingInterrupted` is raised).
    """
    records: list[StepRecord] = []
    final_loss: float | None = None
    started = time.perf_counter()
    device = accelerator.device
    with stop_signals() as caught:
        for step in range(start_step, total_steps):
            t0 = time.perf_counter()
            step_plan = plan(step)
            out = train_step(accelerator, model, optimizer, scheduler, step_plan, loss_fn,
                             max_grad_norm=max_grad_norm, autocast_dtype=autocast_dtype)
            seconds = time.perf_counter() - t0
            done = step + 1
            final_loss = out.loss
            values: dict[str, Any] = {
                "step": done, "epoch": step_plan.epoch, "loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm,
                "examples": step_plan.global_examples, "tokens": step_plan.global_tokens,
                "supervised_tokens": step_plan.global_items, "step_s": seconds,
                "tokens_per_s": step_plan.global_tokens / seconds, **out.metrics,
            }
            if flops is not None:
                values["flops"] = flops(step_plan)
                if peak_flops:
                    values["mfu"] = values["flops"] / seconds / (peak_flops * accelerator.num_processes)
            values["elapsed_s"] = time.perf_counter() - started
            values["peak_mem_gb"] = peak_memory_bytes(device) / 2**30
            record = StepRecord(done, values)
            records.append(record)
            if done % log_every == 0 or done == total_steps:
                logger.log(values)
            if on_step is not None:
                on_step(record)
            stop = _agree(accelerator, bool(caught))
            if save is not None and (stop or done == total_steps or (save_every and done % save_every == 0)):
                save(done)
            if stop:
                raise TrainingInterrupted(done, caught[0] if caught else signal.SIGTERM)
    return LoopResult(last_step=max(start_step, total_steps), final_loss=final_loss, records=records)


def _agree(accelerator: Any, flag: bool) -> bool:
    """Whether any process caught a stop signal (all processes must stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)
