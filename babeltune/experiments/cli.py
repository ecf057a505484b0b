"""`babeltune run EXPERIMENT.yaml`: run (or resume) an experiment grid end to end."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babeltune.interrupts import TrainingInterrupted


@dataclass
class RunOptions:
    """How `babeltune run` goes through the grid (what the grid is, the experiment file says)."""

    list_only: bool = False
    """Only list the expanded conditions and exit."""
    report: bool = True
    """Write report.html at the end."""
    worker: bool = False
    """Share the grid with other workers on the same run folder (Slurm array tasks, one per GPU, several
    machines on a shared file system): claim the next unclaimed condition, run it, go on until none is
    left, then judge what is complete; afterwards a plain `babeltune run` writes results and report."""


def register(sub: Any) -> None:
    """`babeltune run`."""
    from babeltune.experiments.claims import ClaimSettings
    from babeltune.options import add_config_flags

    parser = sub.add_parser(
        "run", help="run an experiment grid: mixtures, tuning, generation, evaluation, judging, report",
        description="Expand EXPERIMENT.yaml into conditions and run mixture -> train -> generate -> evaluate -> "
                    "judge for each, then write results.{csv,json} and report.html. Re-running the same command "
                    "skips finished stages and resumes interrupted ones. Shipped experiments: "
                    + ", ".join(shipped_experiments()) + " (give the name instead of a path).")
    parser.add_argument("experiment", metavar="EXPERIMENT", help="an experiment YAML file, or a shipped one's name")
    parser.add_argument("--out", default=None, help="run directory (default runs/NAME)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="set any ExperimentConfig key, value read as YAML, e.g. --set budget=80 "
                        "--set judge.kind=none (repeatable)")
    run_flags = add_config_flags(parser, RunOptions, ("list_only", "report", "worker"), names={"list_only": "list"})
    worker = parser.add_argument_group("--worker claims")
    flags = add_config_flags(worker, ClaimSettings, ("heartbeat", "stale_after"),
                             extra={"heartbeat": {"metavar": "SECONDS"}, "stale_after": {"metavar": "SECONDS"}})
    parser.set_defaults(func=cmd_run, config_flags=flags, run_flags=run_flags)


def experiments_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / "experiments"


def shipped_experiments() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def resolve_experiment(name_or_path: str) -> Path:
    """A YAML path as given, or a shipped experiment by name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = experiments_dir() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"experiment {name_or_path!r} not found: give a YAML file or one of "
                            f"{', '.join(shipped_experiments())}")


@contextlib.contextmanager
def resumable(command: str) -> Iterator[None]:
    """Turn Ctrl-C or SIGTERM (also when training turns it into a checkpointed stop) into one line that
    says how to resume: the same command again."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(f"\ninterrupted; finished stages are kept: run `{command}` again to resume") from None
    except TrainingInterrupted as exc:
        raise SystemExit(f"\ninterrupted; training saved a checkpoint after step {exc.step} and finished stages are "
                         f"kept: run `{command}` again to resume") from None


def quiet_hub_progress() -> None:
    """The runner shows what runs and how long is left; the per-load "Loading weights" / "Writing model
    shards" bars of transformers and the hub would interleave with it dozens of times. Off unless the
    environment sets HF_HUB_DISABLE_PROGRESS_BARS (read when transformers loads, so before that)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def cmd_run(args: argparse.Namespace) -> int:
    quiet_hub_progress()
    from babeltune.cli import command_config
    from babeltune.experiments.claims import ClaimSettings
    from babeltune.experiments.config import expand_conditions, load_experiment
    from babeltune.experiments.progress import format_duration
    from babeltune.experiments.runner import run_experiment

    config = load_experiment(resolve_experiment(args.experiment), args.overrides)
    claims = command_config(ClaimSettings, args)
    opts = command_config(RunOptions, args, flags=args.run_flags)
    conditions = expand_conditions(config)
    if opts.list_only:
        for cond in conditions:
            what = (f"{cond.mixture.recipe:<12} budget={cond.mixture.budget}" if cond.method == "tune"
                    else f"method {cond.method}")
            print(f"{cond.name:<24} {what} {cond.varied or ''}")
        return 0
    from babeltune.outputs import check_output

    out = check_output(args.out or Path("runs") / config.name, "folder")
    print(f"experiment {config.name}: {len(conditions)} condition(s) -> {out}" + (" (worker)" if opts.worker else ""))
    command = f"babeltune run {args.experiment}" + (f" --out {args.out}" if args.out else "")
    with resumable(command + (" --worker" if opts.worker else "")):
        summary = run_experiment(config, out, report=opts.report, worker=opts.worker, claims=claims)
    if opts.worker:
        print(f"worker finished in {format_duration(summary.seconds)}: ran {', '.join(summary.worked) or 'nothing'}")
        if summary.pending:
            print(f"not finished yet (other workers hold or wait for them): {', '.join(summary.pending)}")
        print(f"when every worker has finished, `{command}` writes results and the report")
        return 0
    from babeltune.experiments.summary import summary_table

    print()
    print(summary_table(summary.rows, [c.name for c in conditions], config.judge.judges()))
    print()
    print(f"finished in {format_duration(summary.seconds)} ({len(summary.ran)} stage(s) run, {len(summary.skipped)} "
          f"already done); results: {out / 'results.csv'}")
    if summary.report:
        print(f"report: {summary.report}")
    return 0
