"""The train stage of an experiment: the training stage's `train`, resumed or reused when possible.

The experiment's `train` mapping (with the condition's keys applied) is the training stage's
`TrainConfig`; the runner sets `data` (the mixture), `model`, `out` and `seed`. In the condition's
`train/` folder: a finished run with the same numbers is reused, an interrupted one resumes from its
last checkpoint, and a run of a different configuration is moved aside to `train.stale-N/` (kept, never
deleted) before training afresh.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from babeltune.config import from_dict
from babeltune.experiments.config import Condition, ExperimentConfig, split_train_section
from babeltune.experiments.layout import move_aside

log = logging.getLogger(__name__)


def train_config(config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> Any:
    from babeltune.train import TrainConfig

    options, _ = split_train_section(condition.train)
    data = {**options, "data": str(mixture), "model": config.model, "out": str(out_dir),
            "seed": config.seed}
    return from_dict(TrainConfig, data, where=f"experiment {config.name}, condition {condition.name}: train")


def run_training(config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> dict[str, Any]:
    from babeltune.train import train

    cfg = train_config(config, condition, mixture, out_dir)
    fingerprint = cfg.numbers_fingerprint()
    result_file = out_dir / "result.json"
    if result_file.exists():
        saved = json.loads(result_file.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == fingerprint:
            log.info("%s: training already finished in %s; reused", condition.name, out_dir)
            return _info(saved.get("merged") or saved["weights"], saved.get("final_loss"), saved.get("steps"))
        move_aside(out_dir, "a training run of another configuration")
    resume = False
    if (out_dir / "checkpoints").exists():
        from babeltune.train import find_checkpoint
        from babeltune.train.checkpoint import read_checkpoint_state

        try:
            state = read_checkpoint_state(find_checkpoint(out_dir))
            resume = state.get("fingerprint") == fingerprint
        except (OSError, ValueError):
            resume = False
        if not resume:
            move_aside(out_dir, "a training run of another configuration")
    result = train(cfg, resume=resume)
    return _info(str(result.merged or result.weights), result.final_loss, result.steps)


def _info(model: str, final_loss: float | None, steps: int | None) -> dict[str, Any]:
    return {"model": str(model), "final_loss": final_loss, "steps": steps}
