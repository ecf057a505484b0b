"""`babeltune bench`: lm-evaluation-harness tasks on any model babeltune loads. Heavy imports happen
inside the command; the flags come from `BenchConfig` (babeltune.options)."""

from __future__ import annotations

import argparse
from typing import Any

from babeltune.cli import positive_int

_KEYS = ("model", "tasks", "include_path", "num_fewshot", "limit", "batch_size", "dtype", "device",
         "merge_adapter", "chat_template", "bootstrap_iters")


def _task_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(sub: Any) -> None:
    from babeltune.bench.config import BenchConfig
    from babeltune.lens.config import STEER_FLAGS
    from babeltune.options import add_config_file_options, add_config_flags

    parser = sub.add_parser("bench", help="standard benchmarks (lm-evaluation-harness tasks) on a model",
                            description="Run lm-evaluation-harness tasks (needs `pip install "
                                        "'babeltune[harness]'`); task data is read offline.")
    add_config_file_options(parser, BenchConfig, "num_fewshot=0")
    flags = add_config_flags(parser, BenchConfig, _KEYS,
                             extra={"tasks": {"type": _task_list}, "batch_size": {"type": positive_int}})
    parser.add_argument("--out", required=True, help="folder for results.csv, results.json, samples.jsonl")
    flags |= add_config_flags(parser.add_argument_group("steering (babeltune lens)"), BenchConfig, STEER_FLAGS,
                              names=STEER_FLAGS, extra={"steer.subspace": {"metavar": "SUBSPACE"}})
    parser.set_defaults(func=cmd_bench, config_flags=flags)


def cmd_bench(args: argparse.Namespace) -> int:
    from babeltune.bench.config import BenchConfig
    from babeltune.cli import command_config
    from babeltune.outputs import check_output

    cfg = command_config(BenchConfig, args)
    check_output(args.out, "folder")
    from babeltune.bench.harness import format_rows, require_harness, run_bench

    require_harness("babeltune bench")

    result = run_bench(cfg, args.out, cfg.steer)
    print(format_rows(result.rows))
    identity = result.identity
    print(f"lm-eval {identity.get('lm_eval_version')}; model {identity['fingerprint'][:12]} -> {args.out}")
    return 0
