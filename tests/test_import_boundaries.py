"""Packages do not reach into each other's command lines (issue 15): checked on the source, by AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import babeltune

ROOT = Path(babeltune.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).glob("*.py")):
        hits = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[path.name] = hits
    return bad


@pytest.mark.parametrize("package, forbidden", [
    ("generate", ("babeltune.lens.cli", "babeltune.evaluate")),
    ("report", ("babeltune.experiments.runner",)),
    ("experiments", ("babeltune.judge.cli",)),
])
def test_packages_do_not_import_across_these_boundaries(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == {}


def test_the_check_sees_function_local_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from babeltune.lens.cli import add_steer_options\n", encoding="utf-8")
    assert "babeltune.lens.cli" in imported_modules(source)


def test_no_cli_module_imports_another_packages_cli() -> None:
    """A stage's command line is its own: options shared between commands live in config modules."""
    bad = {}
    for path in sorted(ROOT.glob("*/cli.py")):
        own = f"babeltune.{path.parent.name}.cli"
        hits = sorted(m for m in imported_modules(path) if m.endswith(".cli") and m not in (own, "babeltune.cli"))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert bad == {}


def test_generate_takes_steering_as_a_typed_config() -> None:
    from babeltune.cli import build_parser, command_config
    from babeltune.generate.config import GenerateConfig
    from babeltune.lens.config import SteerConfig

    args = build_parser().parse_args(["generate", "--out", "o.jsonl", "--steer", "sub", "--steer-layers", "0,-1",
                                      "--steer-mode", "project"])
    cfg = command_config(GenerateConfig, args)
    assert cfg.steer == SteerConfig(subspace="sub", mode="project", layers=[0, -1])
    assert command_config(GenerateConfig, build_parser().parse_args(["generate", "--out", "o.jsonl"])).steer is None


def test_judge_registers_from_its_own_cli_module() -> None:
    from babeltune.cli import STAGE_CLIS, build_parser

    assert "babeltune.judge.cli" in STAGE_CLIS
    args = build_parser().parse_args(["judge", "sxs", "--candidate", "a", "--baseline", "b", "--out", "o"])
    assert args.func.__module__ == "babeltune.judge.cli"


def test_resumable_recognises_the_training_interruption_by_type() -> None:
    from babeltune.experiments.cli import resumable
    from babeltune.interrupts import TrainingInterrupted

    with pytest.raises(SystemExit, match="after step 7"), resumable("babeltune run x"):
        raise TrainingInterrupted(7, 15)

    class TrainingInterruptedLookalike(Exception):  # a name alone no longer counts
        pass

    with pytest.raises(TrainingInterruptedLookalike), resumable("babeltune run x"):
        raise TrainingInterruptedLookalike()


def test_the_training_loop_raises_the_light_interruption_type() -> None:
    from babeltune.interrupts import TrainingInterrupted
    from babeltune.train.loop import TrainingInterrupted as from_loop

    assert from_loop is TrainingInterrupted
