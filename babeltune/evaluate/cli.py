"""`babeltune eval`: language fidelity, modifier checks and lengths of a generation file."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("eval", help="score generations: language fidelity, modifier checks, lengths",
                            description="Score a generation file (from `babeltune generate`) per language and "
                                        "overall: language fidelity, language confusion (LPR/WPR/LCPR), modifier "
                                        "checks, lengths; 95% CIs (Wilson for rates, bootstrap over prompts for "
                                        "means).")
    parser.add_argument("--generations", required=True, help="FILE.jsonl written by `babeltune generate`")
    parser.add_argument("--out", required=True, help="output folder (metrics.csv/json, responses.jsonl, run.json)")
    parser.add_argument("--config", help="YAML file of EvalConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. langid.min_response=20 (repeatable)")
    parser.add_argument("--identifier", help="language identifier: py3langid (default) or fasttext (lid.176, the "
                                             "Language Confusion Benchmark's)")
    parser.add_argument("--compare-identifier", help="a second identifier to report agreement with (e.g. fasttext)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples per interval (default 1000)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    parser.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.evaluate.runner import EvalConfig, evaluate

    cfg = command_config(EvalConfig, args, {"identifier": "identifier", "compare_identifier": "compare_identifier",
                                                  "bootstrap": "bootstrap", "seed": "seed"})
    from babeltune.outputs import check_output

    check_output(args.out, "folder")
    result = evaluate(args.generations, args.out, cfg)
    print(result.table())
    print(f"\nwrote {args.out}/metrics.csv, metrics.json, responses.jsonl, table.txt, run.json")
    return 0
