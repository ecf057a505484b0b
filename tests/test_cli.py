"""The command line starts light: `babeltune --help` and every stage's `--help` must not import torch
(it takes seconds to load, and OMP_WAIT_POLICY must be set before it loads)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from babeltune.cli import build_parser

PROBE = """
import sys
from babeltune.cli import main
try:
    main({args!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def _stages() -> list[str]:
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        return sorted(action.choices)
    return []


@pytest.mark.parametrize("args", [["--help"], *[[stage, "--help"] for stage in _stages()]],
                         ids=lambda a: " ".join(a))
def test_help_does_not_import_heavy_libraries(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout, proc.stdout[-500:]


@pytest.mark.parametrize("package", ["babeltune.train", "babeltune.lens"])
def test_lazy_exports_are_not_shadowed_by_submodules(package: str) -> None:
    """A lazily exported name that is also a submodule's name would turn into the module once the
    submodule is imported (`from babeltune.lens import probe` gave a module)."""
    import importlib
    import pkgutil

    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not submodules & set(module._EXPORTS), submodules & set(module._EXPORTS)
    for name, owner in module._EXPORTS.items():
        assert getattr(importlib.import_module(owner), name) is getattr(module, name)


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_commands_let_idle_openmp_threads_sleep_unless_told_otherwise(preset: str | None, expected: str) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    probe = ("import os\nfrom babeltune.cli import main\nmain(['data', 'stats', 'bundled:modifiers'])\n"
             "print('OMP=' + os.environ.get('OMP_WAIT_POLICY', ''))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"OMP={expected}\n" in proc.stdout
