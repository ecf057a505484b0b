"""Command-line flags generated from config dataclasses: an option is declared once, as a field.

`add_config_flags(parser, GenerateConfig, ["decoding.temperature", "local.dtype"])` adds
`--temperature` and `--dtype`, each with the field's type (a `Literal` gives the choices, a bool a
switch, a list comma-separated values), its default and its docstring as the help. The flag's
argparse default is None, so a flag that is not given leaves the YAML file's or `--set`'s value
alone; `command_config` then applies the flags given last, labelled by flag in errors.

Docstrings are read from the class's source file (parsed with `ast` once per file, cached); a class
whose source is not available (a frozen application) still gets its flags, without help text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

SET_METAVAR = "KEY=VALUE"


@functools.cache
def _module_field_docs(filename: str) -> dict[str, dict[str, str]]:
    """Class name -> {field: docstring} for the top-level classes of one source file (parsed once)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    found: dict[str, dict[str, str]] = {}
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        docs = found.setdefault(cls.name, {})
        for node, after in itertools.pairwise(cls.body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return found


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass `cls` (and of the dataclasses it inherits from)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            filename = inspect.getsourcefile(klass)
        except TypeError:
            filename = None
        if filename:
            docs.update(_module_field_docs(filename).get(klass.__qualname__, {}))
    return docs


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_field(cls: type, key: str) -> tuple[type, dataclasses.Field[Any], Any, Any]:
    """(owning dataclass, field, resolved type, default) of dotted `key` in `cls`; KeyError for an unknown
    key. The default is the one `cls()` has: a section's own default wins over its class's
    (TranslateConfig's decoding has max_new_tokens=1024, DecodingSettings alone 512)."""
    owner, default, parts = cls, None, key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if part not in fields:
            raise KeyError(f"{cls.__name__} has no field {key!r}")
        field, hint = fields[part], _hints(owner)[part]
        default = getattr(default, part) if dataclasses.is_dataclass(default) else _default(field)
        if depth == len(parts) - 1:
            return owner, field, hint, default
        owner = _without_none(hint)
    raise KeyError(key)  # pragma: no cover (an empty key)


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _shown(value: Any) -> str | None:
    """A default as the help shows it; None when there is nothing worth showing."""
    if value is None or isinstance(value, bool) or value in ("", []) or dataclasses.is_dataclass(value):
        return None
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def flag_kwargs(cls: type, key: str) -> dict[str, Any]:
    """argparse keyword arguments of the flag for dotted field `key` of dataclass `cls`."""
    owner, field, hint, default = config_field(cls, key)
    hint = _without_none(hint)
    doc = field_docs(owner).get(field.name, "")
    shown = _shown(default)
    help_text = " ".join(part for part in (doc, f"(default {shown})" if shown is not None else "") if part)
    kwargs: dict[str, Any] = {"default": None, "help": help_text.replace("%", "%%")}
    origin = typing.get_origin(hint)
    if hint is bool:
        kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
    elif origin is Literal:
        kwargs["choices"] = list(typing.get_args(hint))
        kwargs["type"] = type(kwargs["choices"][0])
    elif origin in (list, tuple):
        kwargs["metavar"] = "A,B,..."
    elif hint is int:
        kwargs["type"] = int
    elif hint is float:
        kwargs["type"] = float
    elif hint in (str, Path):
        kwargs["type"] = str
    return kwargs


def add_config_flags(target: Any, cls: type, keys: Iterable[str], *, names: Mapping[str, str] | None = None,
                     extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """Add a flag for each dotted field `key` of `cls` to `target` (a parser or an argument group).

    The flag is named after the field's last part (`decoding.top_p` -> `--top-p`) unless `names`
    says otherwise (key -> flag name without dashes, e.g. {"endpoint.url": "endpoint"}); `extra`
    (key -> argparse keyword arguments) adds to or replaces what the field implies, e.g.
    `action="append"` for a repeatable flag. Returns argparse dest -> config key, for `command_config`."""
    flags: dict[str, str] = {}
    for key in keys:
        name = (names or {}).get(key, key.rsplit(".", 1)[-1])
        dest = name.replace("-", "_")
        kwargs = {**flag_kwargs(cls, key), **(extra or {}).get(key, {})}
        target.add_argument("--" + dest.replace("_", "-"), dest=dest, **kwargs)
        flags[dest] = key
    return flags


def add_config_file_options(parser: argparse.ArgumentParser, cls: type, example: str) -> None:
    """`--config FILE.yaml` and `--set key.sub=value` (repeatable): the two ways to set any field."""
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} fields")
    parser.add_argument("--set", action="append", default=[], metavar=SET_METAVAR,
                        help=f"set any {cls.__name__} field, value read as YAML, e.g. {example} (repeatable)")
