"""Training: instruction tuning (`babeltune train`) and the loop other training recipes reuse.

Instruction tuning::

    from babeltune.train import TrainConfig, train, train_sweep
    result = train(TrainConfig(data="mixes/pinch40.jsonl", method="lora", lr=1e-4, out=Path("runs/p40")))
    result.weights, result.final_loss, result.log_path   # RUN/final, last step's loss, RUN/log.jsonl

`train_sweep(config)` runs one model per value of `config.lr_sweep` (RUN/lr-1e-04/, ...).

Reusing the loop with another loss (Lens manipulation training does)::

    from babeltune.train import (LossOutput, MicroBatch, StepPlan, build_optimizer, build_scheduler,
                                 run_training, save_checkpoint, load_checkpoint, MetricsLogger)

    class MyLoss(torch.nn.Module):          # forward returns a loss SUM over the batch's items
        def forward(self, **inputs): ...

    def loss_fn(model, batch: MicroBatch) -> LossOutput:   # call model(...), never its submodules
        total, parts = model(**batch.inputs)                # so DDP/FSDP hooks run
        return LossOutput(total, metrics={"retain": parts[0]})

    def plan(step: int) -> StepPlan:        # a pure function of the step: resumable, process-aware
        return StepPlan(step, epoch, [MicroBatch(inputs, n_items, n_tokens, n_padded)], global_items, ...)

    model, optimizer = accelerator.prepare(MyLoss(...), build_optimizer(module, lr=..., ...))
    run_training(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=build_scheduler(...),
                 plan=plan, loss_fn=loss_fn, start_step=0, total_steps=25, logger=MetricsLogger(run_dir, ...),
                 autocast_dtype=torch.bfloat16, save=lambda step: save_checkpoint(run_dir, step, ...))

The loop divides each micro-batch's loss sum by the step's global item count (`StepPlan.global_items`),
so gradient accumulation and data parallelism give the one-big-batch update; it clips, steps the
optimizer and schedule, logs loss / lr / grad norm / tokens/s / MFU (`FlopsModel`, measured matmul
peak) to JSONL + TensorBoard + a progress bar, checkpoints every N steps and on SIGINT/SIGTERM.

Pieces for speed, usable on their own: `collate` (packing without attention between examples),
`linear_cross_entropy` (LM-head logits only at supervised positions, chunked, gradients computed in
the forward), `SupervisedLMLoss` (a causal LM whose forward returns that loss).

(The names below load lazily, so `babeltune --help` does not import torch.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from babeltune.lazy import lazy_getattr

if TYPE_CHECKING:
    from babeltune.train.batching import DataSchedule, MicroBatch, StepPlan, StepPlanner, collate, pack_rows
    from babeltune.train.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
    from babeltune.train.config import LoraSettings, TrainConfig
    from babeltune.train.data import DataReport, TrainDataError, TrainExample, prepare_examples
    from babeltune.train.loop import (
        LossOutput,
        StepOutput,
        StepRecord,
        TrainingInterrupted,
        build_optimizer,
        build_scheduler,
        call_module_loss,
        lr_factor,
        run_training,
        stop_signals,
        train_step,
    )
    from babeltune.train.losses import SupervisedLMLoss, linear_cross_entropy, reference_loss
    from babeltune.train.metrics import FlopsModel, MetricsLogger, measure_matmul_peak, peak_memory_bytes, read_log
    from babeltune.train.recipe import TrainResult, make_accelerator, resolve_precision, train, train_sweep

_EXPORTS: dict[str, str] = {
    "CheckpointError": "babeltune.train.checkpoint",
    "DataReport": "babeltune.train.data",
    "DataSchedule": "babeltune.train.batching",
    "FlopsModel": "babeltune.train.metrics",
    "LoraSettings": "babeltune.train.config",
    "LossOutput": "babeltune.train.loop",
    "MetricsLogger": "babeltune.train.metrics",
    "MicroBatch": "babeltune.train.batching",
    "StepOutput": "babeltune.train.loop",
    "StepPlan": "babeltune.train.batching",
    "StepPlanner": "babeltune.train.batching",
    "StepRecord": "babeltune.train.loop",
    "SupervisedLMLoss": "babeltune.train.losses",
    "TrainConfig": "babeltune.train.config",
    "TrainDataError": "babeltune.train.data",
    "TrainExample": "babeltune.train.data",
    "TrainResult": "babeltune.train.recipe",
    "TrainingInterrupted": "babeltune.train.loop",
    "build_optimizer": "babeltune.train.loop",
    "build_scheduler": "babeltune.train.loop",
    "call_module_loss": "babeltune.train.loop",
    "collate": "babeltune.train.batching",
    "find_checkpoint": "babeltune.train.checkpoint",
    "linear_cross_entropy": "babeltune.train.losses",
    "load_checkpoint": "babeltune.train.checkpoint",
    "lr_factor": "babeltune.train.loop",
    "make_accelerator": "babeltune.train.recipe",
    "measure_matmul_peak": "babeltune.train.metrics",
    "pack_rows": "babeltune.train.batching",
    "peak_memory_bytes": "babeltune.train.metrics",
    "prepare_examples": "babeltune.train.data",
    "read_log": "babeltune.train.metrics",
    "reference_loss": "babeltune.train.losses",
    "resolve_precision": "babeltune.train.recipe",
    "run_training": "babeltune.train.loop",
    "save_checkpoint": "babeltune.train.checkpoint",
    "stop_signals": "babeltune.train.loop",
    "train": "babeltune.train.recipe",
    "train_step": "babeltune.train.loop",
    "train_sweep": "babeltune.train.recipe",
}


__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = [
    "CheckpointError",
    "DataReport",
    "DataSchedule",
    "FlopsModel",
    "LoraSettings",
    "LossOutput",
    "MetricsLogger",
    "MicroBatch",
    "StepOutput",
    "StepPlan",
    "StepPlanner",
    "StepRecord",
    "SupervisedLMLoss",
    "TrainConfig",
    "TrainDataError",
    "TrainExample",
    "TrainResult",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "call_module_loss",
    "collate",
    "find_checkpoint",
    "linear_cross_entropy",
    "load_checkpoint",
    "lr_factor",
    "make_accelerator",
    "measure_matmul_peak",
    "pack_rows",
    "peak_memory_bytes",
    "prepare_examples",
    "read_log",
    "reference_loss",
    "resolve_precision",
    "run_training",
    "save_checkpoint",
    "stop_signals",
    "train",
    "train_step",
    "train_sweep",
]
