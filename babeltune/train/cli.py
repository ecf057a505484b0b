"""`babeltune train`: instruction tuning from a YAML config plus key=value overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "train", help="instruction-tune a model (LoRA or full) on a mixture or any data source",
        description="Train with a YAML config (babeltune/configs/train_*.yaml) and key=value overrides, e.g. "
                    "babeltune train --config train_lora.yaml data=mix.jsonl lr=2e-4 lora.r=8. "
                    "Runs unchanged under `accelerate launch -m babeltune.cli train ...`.",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (e.g. max_steps=100)")
    parser.add_argument("--config", help="YAML config file (fields of babeltune.train.TrainConfig)")
    parser.add_argument("--model", help="base model (alias, folder or hub id); same as model=...")
    parser.add_argument("--data", help="training data (mixture .jsonl, bundled:train, hf:...); same as data=...")
    parser.add_argument("--out", help="run folder; same as out=...")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (the config must match; "
                             "without --config, the run's own config.yaml is used)")
    parser.add_argument("--merge", action="store_true", help="LoRA: also save the adapter merged into the model")
    parser.set_defaults(func=cmd_train)


def build_config(args: argparse.Namespace) -> Any:
    from babeltune.config import load_config
    from babeltune.train.config import TrainConfig

    values: dict[str, Any] = {flag: getattr(args, flag) for flag in ("model", "data", "out")
                              if getattr(args, flag) is not None}
    if args.merge:
        values["merge"] = True
    config_path = args.config
    if config_path is None and args.resume:
        config_path = str(_run_config(args.out))
    return load_config(TrainConfig, config_path, list(args.overrides), values, {k: f"--{k}" for k in values})


def _run_config(out: str | None) -> Path:
    """The config a `--resume` without `--config` continues with: the run folder's own."""
    if not out:
        raise ValueError("--resume: name the run folder to continue with --out RUN_DIR")
    run_dir = Path(out)
    if not run_dir.is_dir():
        raise ValueError(f"--resume --out {out}: no such run folder (run without --resume to start a new run)")
    for name in ("sweep-config.yaml", "config.yaml"):
        if (run_dir / name).exists():
            return run_dir / name
    raise ValueError(f"--resume --out {out}: the folder holds no config.yaml, so it is not a run written by "
                   "babeltune train (give --config, or run without --resume to start a new run)")


def cmd_train(args: argparse.Namespace) -> int:
    from babeltune.interrupts import TrainingInterrupted
    from babeltune.outputs import check_output
    from babeltune.train.recipe import train_sweep

    config = build_config(args)
    check_output(config.out, "folder", "--out" if args.out else "out")
    try:
        results = train_sweep(config, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"babeltune train: {exc}", file=sys.stderr)
        return 130
    for result in results:
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
        print(f"lr {result.lr:g}: final loss {loss}; weights {result.weights}"
              + (f"; merged {result.merged}" if result.merged else "") + f"; log {result.log_path}")
    return 0
