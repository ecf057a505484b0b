"""`babeltune eval`: language fidelity, modifier checks and lengths of a generation file."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from babeltune.evaluate.runner import EvalConfig  # the package is imported with this module anyway
    from babeltune.options import add_config_file_options, add_config_flags

    parser = sub.add_parser("eval", help="score generations: language fidelity, modifier checks, lengths",
                            description="Score a generation file (from `babeltune generate`) per language and "
                                        "overall: language fidelity, language confusion (LPR/WPR/LCPR), modifier "
                                        "checks, lengths; 95% CIs (Wilson for rates, bootstrap over prompts for "
                                        "means).")
    parser.add_argument("--generations", required=True, help="FILE.jsonl written by `babeltune generate`")
    parser.add_argument("--out", required=True, help="output folder (metrics.csv/json, responses.jsonl, run.json)")
    add_config_file_options(parser, EvalConfig, "langid.min_response=20")
    flags = add_config_flags(parser, EvalConfig, ("identifier", "compare_identifier", "bootstrap", "seed"))
    parser.set_defaults(func=cmd_eval, config_flags=flags)


def cmd_eval(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.evaluate.runner import EvalConfig, evaluate

    cfg = command_config(EvalConfig, args)
    from babeltune.outputs import check_output

    check_output(args.out, "folder")
    result = evaluate(args.generations, args.out, cfg)
    print(result.table())
    print(f"\nwrote {args.out}/metrics.csv, metrics.json, responses.jsonl, table.txt, run.json")
    return 0
