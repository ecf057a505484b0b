"""`babeltune train`: instruction tuning from a YAML config plus key=value overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    from babeltune.options import add_config_file_options, add_config_flags
    from babeltune.train.config import TrainConfig

    parser = sub.add_parser(
        "train", help="instruction-tune a model (LoRA or full) on a mixture or any data source",
        description="Train with a YAML config (babeltune/configs/train_*.yaml) and --set overrides, e.g. "
                    "babeltune train --config train_lora.yaml --set data=mix.jsonl --set lr=2e-4 --set lora.r=8 "
                    "(or the same as positional KEY=VALUE: ... data=mix.jsonl lr=2e-4). "
                    "Runs unchanged under `accelerate launch -m babeltune.cli train ...`.",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="the same as --set KEY=VALUE (e.g. max_steps=100)")
    add_config_file_options(parser, TrainConfig, "lora.r=8")
    flags = add_config_flags(parser, TrainConfig, ("model", "data", "out", "merge"))
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (the config must match; "
                             "without --config, the run's own config.yaml is used)")
    parser.set_defaults(func=cmd_train, config_flags=flags)


def build_config(args: argparse.Namespace) -> Any:
    from babeltune.cli import command_config
    from babeltune.train.config import TrainConfig

    config_path = args.config
    if config_path is None and args.resume:
        config_path = str(_run_config(args.out))
    # positional KEY=VALUE: an alias of --set, through the same parser (labelled as written in errors)
    return command_config(TrainConfig, args, overrides=[("override", text) for text in args.overrides],
                          path=config_path)


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
