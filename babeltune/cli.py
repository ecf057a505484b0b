"""The `babeltune` command. Each stage registers its subcommands from its own small `cli` module,
which imports nothing heavy: torch and transformers load only when a command runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from babeltune import __version__

# (module, in the order shown by --help). A stage whose module is absent is simply not offered.
STAGE_CLIS: tuple[str, ...] = (
    "babeltune.data.cli",
    "babeltune.models.cli",
    "babeltune.train.cli",
    "babeltune.generate.cli",
    "babeltune.evaluate.cli",
    "babeltune.lens.cli",
    "babeltune.judge.cli",
    "babeltune.bench.cli",
    "babeltune.experiments.cli",
    "babeltune.report.cli",
    "babeltune.demo",
)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def command_config(cls: Any, args: argparse.Namespace, flags: dict[str, str] | None = None,
                   values: dict[str, Any] | None = None, overrides: list[Any] | None = None,
                   path: str | None = None) -> Any:
    """A command's typed config: its YAML file (`args.config`), then `--set key=value` overrides
    (`args.set`, then `overrides`), then `values`, then the command's own flags (`flags`, by default
    `args.config_flags` as `babeltune.options.add_config_flags` returned them: argparse attribute ->
    config key; flag values are taken as typed, not re-parsed). `path` replaces `args.config`."""
    from babeltune.config import load_config

    if flags is None:
        flags = getattr(args, "config_flags", {})
    typed = {key: getattr(args, attr) for attr, key in flags.items() if getattr(args, attr, None) is not None}
    labels = {key: "--" + attr.replace("_", "-") for attr, key in flags.items()}
    return load_config(cls, path or getattr(args, "config", None), [*getattr(args, "set", []), *(overrides or [])],
                       {**(values or {}), **typed}, labels)


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (e.g. --per-language: 0 is not "all")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def passive_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning, unless the environment says otherwise.

    On a CPU shared with other processes, spinning threads that lose their core stall every parallel
    region: training steps and float32 generation ran ~4x slower at load 7-9 on 2 cores
    (benchmarks/README.md). OpenMP reads the setting once, when torch loads; no command imports torch
    before it runs (tests/test_cli.py), so `main` sets it before dispatching.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="babeltune",
        description="Make and measure LLMs that follow instructions in many languages.",
    )
    parser.add_argument("--version", action="version", version=f"babeltune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that stage is not part of this installation
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    passive_openmp()
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        print(f"babeltune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"babeltune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
