"""`babeltune bench`: lm-evaluation-harness tasks on any model babeltune loads. Heavy imports happen
inside the command."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from babeltune.cli import positive_int

# flag -> config key; every flag is also settable as --set key=value or in the --config YAML.
_FLAGS: dict[str, str] = {
    "model": "model", "tasks": "tasks", "include_path": "include_path", "num_fewshot": "num_fewshot",
    "limit": "limit", "batch_size": "batch_size", "dtype": "dtype", "device": "device",
    "merge_adapter": "merge_adapter", "chat_template": "chat_template", "bootstrap_iters": "bootstrap_iters",
}


def _task_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(sub: Any) -> None:
    from babeltune.lens.cli import add_steer_options  # light: argparse only

    parser = sub.add_parser("bench", help="standard benchmarks (lm-evaluation-harness tasks) on a model",
                            description="Run lm-evaluation-harness tasks (needs `pip install "
                                        "'babeltune[harness]'`); task data is read offline.")
    parser.add_argument("--model", help="default alias, model / adapter folder, or cached hub id")
    parser.add_argument("--tasks", type=_task_list,
                        help="comma-separated lm-eval tasks or groups, e.g. xcopa,xstorycloze")
    parser.add_argument("--include-path", help="folder of extra lm-eval task YAMLs (local data)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    parser.add_argument("--limit", type=float, help="at most N items per task (below 1: a share)")
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", help="cpu, cuda, cuda:N")
    parser.add_argument("--merge-adapter", action="store_true", default=None, help="merge a PEFT adapter first")
    parser.add_argument("--chat-template", action="store_true", default=None,
                        help="wrap prompts in the tokenizer's chat template")
    parser.add_argument("--bootstrap-iters", type=int, help="lm-eval's bootstrap resamples for standard errors")
    parser.add_argument("--out", required=True, help="folder for results.csv, results.json, samples.jsonl")
    parser.add_argument("--config", help="YAML file of BenchConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field (repeatable)")
    add_steer_options(parser, required=False)
    parser.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from babeltune.bench.config import BenchConfig
    from babeltune.cli import CLIError, command_config
    from babeltune.lens.cli import steer_config_from_args
    from babeltune.outputs import check_output

    cfg = command_config(BenchConfig, args, _FLAGS)
    check_output(args.out, "folder")
    steering = steer_config_from_args(args)
    if importlib.util.find_spec("lm_eval") is None:
        raise CLIError("lm-evaluation-harness is not installed: pip install 'babeltune[harness]'")
    from babeltune.bench.harness import format_rows, run_bench

    result = run_bench(cfg, args.out, steering)
    print(format_rows(result.rows))
    identity = result.identity
    print(f"lm-eval {identity.get('lm_eval_version')}; model {identity['fingerprint'][:12]} -> {args.out}")
    return 0
