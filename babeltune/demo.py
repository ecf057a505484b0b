"""`babeltune demo`: study A's main job in miniature, on the embedded default model and the bundled data.

It runs the shipped experiment `demo` (or `demo-quick` with `--quick`) through the experiment runner:

1. three mixtures of the same budget from `bundled:train`: English only, English + a pinch of 40
   multilingual examples spread over the other 11 languages, and uniform over the 12 languages;
2. three tuned models (one per mixture);
3. responses to the bundled evaluation and modifier prompts in all 12 languages;
4. language fidelity and modifier checks;
5. side-by-side judging of each model against the English-only model with the offline judge;
6. a summary table here and a self-contained HTML report.

Re-running the same command reuses every finished stage (and resumes an interrupted one). The sizes
of the presets (examples, epochs, prompts per language, new tokens) are in
babeltune/configs/experiments/demo*.yaml; they are chosen to finish in under 30 minutes (`--quick`:
under 10) on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class DemoOptions:
    """Which preset `babeltune demo` runs, and on what."""

    quick: bool = False
    """The smaller preset (under 10 minutes on 2 CPU cores)."""
    model: str | None = None
    """Base model (default: the embedded gemma-3-270m)."""
    seed: int | None = None
    """Seed (default: the preset's, 0)."""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="tune three models (English-only, a pinch of 40, uniform), evaluate, judge, report",
        description="Study A in miniature on the embedded default model and the bundled data; prints a summary "
                    "table and the path of the HTML report. Re-running resumes.")
    from babeltune.options import add_config_flags

    flags = add_config_flags(parser, DemoOptions, ("quick", "model", "seed"))
    parser.add_argument("--out", default=None, help="run directory (default runs/demo or runs/demo-quick)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the demo experiment, e.g. --set data.eval_per_language=4")
    parser.set_defaults(func=cmd_demo, config_flags=flags)


def demo_config(quick: bool, overrides: list[str]) -> Any:
    from babeltune.experiments.cli import resolve_experiment
    from babeltune.experiments.config import load_experiment

    return load_experiment(resolve_experiment("demo-quick" if quick else "demo"), overrides)


def cmd_demo(args: argparse.Namespace) -> int:
    from babeltune.experiments.cli import quiet_hub_progress, resumable

    quiet_hub_progress()
    from babeltune.cli import command_config
    from babeltune.experiments.config import expand_conditions
    from babeltune.experiments.progress import format_duration
    from babeltune.experiments.runner import run_experiment
    from babeltune.experiments.summary import summary_table

    opts = command_config(DemoOptions, args)
    overrides = list(args.overrides)
    if opts.model:
        overrides.append(f"model={opts.model}")
    if opts.seed is not None:
        overrides.append(f"seed={opts.seed}")
    config = demo_config(opts.quick, overrides)
    from babeltune.outputs import check_output

    out = check_output(args.out or Path("runs") / config.name, "folder")
    conditions = expand_conditions(config)
    start = time.perf_counter()
    n_eval = config.data.eval_per_language or "all"
    n_mod = config.data.modifiers_per_language or "all"
    print(f"babeltune demo{' --quick' if opts.quick else ''}: {len(conditions)} models tuned from {config.model} on "
          f"{config.budget} bundled examples each ({', '.join(c.name for c in conditions)}); evaluated on {n_eval} "
          f"eval + {n_mod} modifier prompts per language in {len(config.eval_languages)} languages; judged against "
          f"{config.judge.reference} with the offline judge. Output: {out}", flush=True)
    command = "babeltune demo" + (" --quick" if opts.quick else "") + (f" --out {args.out}" if args.out else "")
    with resumable(command):
        summary = run_experiment(config, out)
    print()
    print(summary_table(summary.rows, [c.name for c in conditions], config.judge.judges()))
    print()
    print(f"done in {format_duration(time.perf_counter() - start)} ({len(summary.ran)} stages run, "
          f"{len(summary.skipped)} reused from an earlier run)")
    print(f"results: {out / 'results.csv'}")
    print(f"report:  {summary.report}")
    return 0
