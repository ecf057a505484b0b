"""Training: instruction tuning (`babeltune train`) and `fit`, the routine every training recipe shares.

Instruction tuning::

    from babeltune.train import TrainConfig, train, train_sweep
    result = train(TrainConfig(data="mixes/pinch40.jsonl", method="lora", lr=1e-4, out=Path("runs/p40")))
    result.weights, result.final_loss, result.log_path   # RUN/final, last step's loss, RUN/log.jsonl

`train_sweep(config)` runs one model per value of `config.lr_sweep` (RUN/lr-1e-04/, ...).

Training another objective (Lens manipulation training does) goes through the same routine, `fit`::

    from babeltune.train import (LossOutput, MicroBatch, OptimSettings, RunSettings, StepPlan, TrainingPlan,
                                 fit, make_accelerator, run_status)

    class MyLoss(torch.nn.Module):          # forward returns a loss SUM over the batch's items
        def forward(self, **inputs): ...

    def loss_fn(model, batch: MicroBatch) -> LossOutput:   # call model(...), never its submodules
        total, parts = model(**batch.inputs)                # so DDP/FSDP hooks run
        return LossOutput(total, metrics={"retain": parts[0]})

    def plan(step: int) -> StepPlan:        # a pure function of the step: resumable, process-aware
        return StepPlan(step, epoch, [MicroBatch(inputs, n_items, n_tokens, n_padded)], global_items, ...)

    status = run_status(run_dir)            # fresh / resumable / finished
    checkpoint = status.resume_point(numbers)[0] if resume else None   # refused if the numbers differ
    fitted = fit(MyLoss(...), TrainingPlan(plan, total_steps=25, loss_fn=loss_fn, autocast=torch.bfloat16),
                 OptimSettings(lr=1e-5, weight_decay=0.1, betas=(0.9, 0.999), schedule="cosine", warmup_steps=2),
                 RunSettings(run_dir, numbers, save_every=5), checkpoint, accelerator=make_accelerator())

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

from babeltune.lazy import export_table, lazy_getattr

_EXPORTS: dict[str, str] = export_table({
    "babeltune.train.batching": ("DataSchedule", "MicroBatch", "StepPlan", "StepPlanner", "collate", "pack_rows"),
    "babeltune.train.checkpoint": ("load_checkpoint", "save_checkpoint"),
    "babeltune.train.config": ("LoraSettings", "TrainConfig"),
    "babeltune.train.data": ("DataReport", "TrainDataError", "TrainExample", "prepare_examples"),
    "babeltune.train.routine": (
        "Fitted", "OptimSettings", "RunSettings", "TrainingPlan", "fit", "make_accelerator", "resolve_precision",
        "set_seed",
    ),
    "babeltune.train.loop": (
        "LossOutput", "StepOutput", "StepRecord", "TrainingInterrupted", "build_optimizer", "build_scheduler",
        "call_module_loss", "lr_factor", "run_steps", "stop_signals", "train_step",
    ),
    "babeltune.train.losses": ("SupervisedLMLoss", "linear_cross_entropy", "reference_loss"),
    "babeltune.train.metrics": ("FlopsModel", "MetricsLogger", "measure_matmul_peak", "peak_memory_bytes", "read_log"),
    "babeltune.train.recipe": ("TrainResult", "train", "train_sweep"),
    "babeltune.train.runfolder": (
        "CheckpointError", "RunStatus", "find_checkpoint", "numbers_fingerprint", "run_status",
    ),
})

__getattr__ = lazy_getattr(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
