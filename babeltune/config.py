"""Typed configuration: dataclasses are the schema, YAML files map onto them one to one.

Every option is declared once, as a dataclass field with a docstring and validation in
`__post_init__`. `load_config(Cls, "run.yaml", ["train.lr=1e-4", "seed=3"])` reads the YAML,
applies `key.sub=value` overrides (values parsed as YAML scalars or lists), and builds the dataclass,
checking every key and type. An unknown key or a value of the wrong type is an error that names the
key and the file, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key that does not fit its schema."""


def parse_override(text: str, label: str = "--set") -> tuple[list[str], Any]:
    """Split 'train.lr=1e-4' into (['train', 'lr'], 1e-4); the value is read as YAML. `label` names
    how the user gave it in errors (`--set 'lr=abc'`)."""
    if "=" not in text:
        raise ConfigError(f"{label} {text!r} is not of the form key=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"{label} {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} {text!r}: value is not valid YAML: {exc}") from exc
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        return path, value
    # YAML reads 1e-4 as a string (it wants 1.0e-4); accept plain numbers as numbers.
    if isinstance(value, str):
        try:
            return path, float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return path, value


Override = str | tuple[str, str]
"""A `key.sub=value` text (given with `--set`), or (label, text) for one given otherwise, e.g.
("override", "lr=1e-4") for `babeltune train`'s positional KEY=VALUE."""


def _labelled(override: Override) -> tuple[str, str]:
    return ("--set", override) if isinstance(override, str) else override


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """Return a copy of `data` with every `key.sub=value` override applied."""
    result: dict[str, Any] = _deep_copy(data)
    for override in overrides:
        label, text = _labelled(override)
        path, value = parse_override(text, label)
        _set_key(result, path, value, f"{label} {text!r}")
    return result


def _set_key(data: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    """Set data[path[0]][path[1]]... = value, creating missing sections; `what` names the setting in errors."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[Override] | None = None,
                values: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> T:
    """Build `cls` from a YAML file (optional), then `key=value` overrides (text, read as YAML), then
    `values` ({"key.sub": value}, already typed: a command's own flags), each layer winning over the last.

    An error names where the offending value came from: the YAML file, the override's text
    (`--set 'lr=abc'`) or the flag (`labels`: key -> how the user wrote it, e.g. `--temperature`)."""
    where = str(path) if path else "command line"
    data = read_yaml(path) if path is not None else {}
    origins: dict[str, str] = {}
    for override in overrides or []:
        label, text = _labelled(override)
        key_path, value = parse_override(text, label)
        _set_key(data, key_path, value, f"{label} {text!r}")
        origins[".".join(key_path)] = f"{label} {text!r}"
    for key, value in (values or {}).items():
        label = (labels or {}).get(key, f"option {key!r}")
        _set_key(data, key.split("."), value, label)
        origins[key] = label
    return from_dict(cls, data, where=where, origins=origins)


def _origin(origins: dict[str, str], key: str, default: str) -> str:
    """Where the value of dotted `key` was set: the innermost setting that covers it."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:n]))
        if found is not None:
            return found
    return default


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config", prefix: str = "",
              origins: dict[str, str] | None = None) -> T:
    """Build dataclass `cls` from a mapping, checking keys and converting values to field types.

    `where` names the source of the mapping in errors; `origins` (dotted key -> source) overrides it
    for values set elsewhere (a command-line override or flag)."""
    origins = origins or {}
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_origin(origins, prefix + unknown[0], where)}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _convert(data[name], hints[name], _origin(origins, prefix + name, where), prefix + name,
                             origins) for name in data}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        named = [name for name in data if re.search(rf"\b{re.escape(name)}\b", str(exc))]  # the field it blames
        sources = dict.fromkeys(_origin(origins, prefix + name, where) for name in named or data)
        raise ConfigError(f"{', '.join(sources) or where}: {prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def _convert(value: Any, hint: Any, where: str, key: str, origins: dict[str, str] | None = None) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, key, origins)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {key}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        item_type = args[0] if args else Any
        if isinstance(value, str):  # comma-separated, from a flag: numbers as numbers
            value = [_scalar(v.strip(), item_type) for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        items = [_convert(v, item_type, where, f"{key}[{i}]", origins) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        vtype = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vtype, where, f"{key}.{k}", origins) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, where, prefix=f"{key}.", origins=origins)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if hint is float:
        number = _as_float(value)
        if number is None:
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if hint is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{where}: {key} must be a path, got {value!r}")
    return value


def _scalar(text: str, hint: Any) -> Any:
    """An item of a comma-separated list as its type wants it: '-1' is the number -1 for a list[int]."""
    if hint in (int, float):
        try:
            return int(text) if hint is int else float(text)
        except ValueError:
            return text
    return text


def _as_float(value: Any) -> float | None:
    """A number (or a string that spells one) as a float; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain, YAML-safe mapping of a config dataclass (paths as strings, tuples as lists)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"{obj!r} is not a dataclass instance")
    return typing.cast(dict[str, Any], _plain(dataclasses.asdict(obj)))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write a config dataclass (or mapping) as YAML."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
