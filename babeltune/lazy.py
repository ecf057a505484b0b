"""Lazy package exports: a package names what it offers, and each name's module is imported on first
use, so importing the package (e.g. for `babeltune --help`) does not load torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def export_table(modules: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Name -> owning module, from each module's exported names (each name declared once)."""
    table: dict[str, str] = {}
    for module, names in modules.items():
        for name in names:
            if name in table:
                raise ValueError(f"{name!r} is exported by both {table[name]} and {module}")
            table[name] = module
    return table


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package` that resolves `exports` (name -> owning module).
    No submodule may share a name with an export: once imported, it would shadow the export."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
