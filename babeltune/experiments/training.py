"""The train stage of an experiment: the training stage's `train`, resumed or reused when possible.

The experiment's `train` mapping (with the condition's keys applied) is the training stage's
`TrainConfig`; the runner sets `data` (the mixture), `model`, `out` and `seed`. In the condition's
`train/` folder: a finished run with the same numbers is reused, an interrupted one resumes from its
last checkpoint, and a run of a different configuration is moved aside to `train.stale-N/` (kept, never
deleted) before training afresh. `train.launcher: accelerate` runs the same training as a child
`accelerate launch ... -m babeltune.cli train` (DDP / FSDP / DeepSpeed over several processes).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

from babeltune.config import from_dict
from babeltune.experiments.config import Condition, ExperimentConfig, LaunchSettings, split_train_section
from babeltune.experiments.layout import move_aside

log = logging.getLogger(__name__)


def train_config(config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> Any:
    from babeltune.train import TrainConfig

    options, _ = split_train_section(condition.train)
    data = {**options, "data": str(mixture), "model": config.model, "out": str(out_dir),
            "seed": config.seed}
    return from_dict(TrainConfig, data, where=f"experiment {config.name}, condition {condition.name}: train")


def run_training(config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> dict[str, Any]:
    """The condition's training in `out_dir`: a finished run of the same numbers is reused, an interrupted one
    resumed, one of other numbers moved aside first (the folder's `run_status` decides)."""
    from babeltune.train.runfolder import run_status

    cfg = train_config(config, condition, mixture, out_dir)
    status = run_status(out_dir)
    if not status.same_numbers(cfg.numbers_dict()):
        move_aside(out_dir, "a training run of another configuration")
        status = run_status(out_dir)
    if status.state == "finished":
        log.info("%s: training already finished in %s; reused", condition.name, out_dir)
        return _info(status.result(), cfg.method)
    resume = status.state == "resumable"
    launch = condition.launch
    if launch.launcher == "accelerate":
        launch_training(cfg, launch, resume, condition.name)
        return _info(run_status(out_dir).result(), cfg.method)
    from babeltune.train import train

    result = train(cfg, resume=resume)
    return _info(result.to_dict(), cfg.method)


def _info(result: dict[str, Any], method: str) -> dict[str, Any]:
    """The train stage's record: the model generation loads (merged if written), the LoRA adapter (what
    the vllm and endpoint backends serve on the shared base), the final loss and steps."""
    weights = str(result["weights"])
    return {"model": str(result.get("merged") or weights), "adapter": weights if method == "lora" else None,
            "final_loss": result.get("final_loss"), "steps": result.get("steps")}


def accelerate_command(config_file: Path, launch: LaunchSettings, resume: bool) -> list[str]:
    """`accelerate launch ... -m babeltune.cli train --config FILE [--resume]` as an argument list."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config:
        cmd += ["--config_file", launch.accelerate_config]
    if launch.num_processes is not None:
        cmd += ["--num_processes", str(launch.num_processes)]
    cmd += [*launch.accelerate_args, "-m", "babeltune.cli", "train", "--config", str(config_file)]
    return cmd + (["--resume"] if resume else [])


def launch_training(cfg: Any, launch: LaunchSettings, resume: bool, condition: str) -> None:
    """Run the condition's training as a child `accelerate launch` into `cfg.out` (the folder the
    in-process launcher uses, so either resumes the other's checkpoints). Its output goes to the
    terminal and to `CONDITION/train.launch.log`; a failure raises an error with its exit code and last
    lines. On Ctrl-C the child (same process group) saves a checkpoint; this waits for it."""
    from babeltune.config import dump_yaml

    folder = Path(cfg.out).parent
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "train.config.yaml"
    dump_yaml(cfg, config_file)
    cmd = accelerate_command(config_file, launch, resume)
    log_path = folder / "train.launch.log"
    log.info("%s: %s", condition, " ".join(cmd))
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _copy_output(proc, sink)
            code = proc.wait()
        except KeyboardInterrupt:
            proc.wait()
            raise
    if code == 0 and (Path(cfg.out) / "result.json").exists():
        return
    if code == 130:
        raise RuntimeError(f"condition {condition}: training under accelerate was interrupted after saving a "
                           f"checkpoint; run the same command again to resume")
    raise RuntimeError(f"condition {condition}: training under accelerate failed (exit code {code}); command: "
                       f"{' '.join(cmd)}; full output in {log_path}:\n" + _failure_lines(log_path))


def _failure_lines(log_path: Path) -> str:
    """The child's own error lines (`babeltune train: error: ...`, once each), else its last lines."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = list(dict.fromkeys(line for line in lines if line.startswith("babeltune ") and ": error:" in line))
    return "\n".join(errors or lines[-15:])


def _copy_output(proc: subprocess.Popen[bytes], sink: BinaryIO) -> None:
    """Copy the child's output to the terminal and `sink` as it comes (progress bars included)."""
    assert proc.stdout is not None
    terminal = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        sink.write(chunk)
        sink.flush()
        if terminal is not None:
            terminal.write(chunk)
            terminal.flush()
