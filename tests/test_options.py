"""Flags generated from config dataclasses (babeltune.options) and the one override grammar."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from babeltune.cli import command_config
from babeltune.config import ConfigError
from babeltune.options import add_config_file_options, add_config_flags, field_docs


@dataclass
class Inner:
    rate: float = 0.5
    """How fast, in %."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """Layers, negative from the top."""


@dataclass
class Outer:
    name: str = "x"
    """The name."""
    mode: Literal["add", "project"] = "add"
    """add or project."""
    count: int | None = None
    fast: bool = False
    """Go fast."""
    keep: bool = True
    """Keep it."""
    inner: Inner = field(default_factory=Inner)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    add_config_file_options(parser, Outer, "inner.rate=1")
    flags = add_config_flags(parser, Outer, ("name", "mode", "count", "fast", "keep", "inner.rate", "inner.layers"),
                             names={"inner.layers": "inner_layers"})
    parser.set_defaults(config_flags=flags)
    return parser


def test_field_docstrings_are_read_from_the_class_source() -> None:
    assert field_docs(Outer) == {"name": "The name.", "mode": "add or project.", "fast": "Go fast.",
                                 "keep": "Keep it."}
    assert field_docs(Inner)["layers"] == "Layers, negative from the top."


def test_flags_take_type_choices_default_and_help_from_the_field() -> None:
    parser = _parser()
    text = parser.format_help()
    assert "{add,project}" in text and "The name. (default x)" in text and "How fast, in %. (default 0.5)" in text
    assert "--no-keep" in text  # a bool that defaults to true can be switched off
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "other"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "many"])
    args = parser.parse_args(["--fast", "--no-keep", "--count", "3", "--inner-layers", "0,-2", "--rate", "2"])
    cfg = command_config(Outer, args)
    assert (cfg.fast, cfg.keep, cfg.count, cfg.inner.layers, cfg.inner.rate) == (True, False, 3, [0, -2], 2.0)


def test_flags_not_given_leave_the_file_and_set_values_and_given_ones_win(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: from-file\nmode: project\n", encoding="utf-8")
    cfg = command_config(Outer, _parser().parse_args(["--config", str(config), "--set", "inner.rate=0.25"]))
    assert (cfg.name, cfg.mode, cfg.inner.rate, cfg.fast, cfg.keep) == ("from-file", "project", 0.25, False, True)
    cfg = command_config(Outer, _parser().parse_args(["--config", str(config), "--set", "name=set", "--name", "flag"]))
    assert cfg.name == "flag"


@pytest.mark.parametrize("argv, says", [
    (["--set", "inner.rate=abc"], "--set 'inner.rate=abc': inner.rate must be a number"),
    (["--rate", "nan"], "--rate: inner.rate must be a finite number"),
    (["--inner-layers", "1,x"], "--inner-layers: inner.layers[1] must be an integer, got 'x'"),
    (["--set", "nosuch=1"], "--set 'nosuch=1': unknown key(s) nosuch"),
])
def test_errors_name_the_flag_or_the_set(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        command_config(Outer, _parser().parse_args(argv))
    assert says in str(info.value)


def test_errors_of_yaml_values_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("mode: sideways\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{config}: mode must be one of"):
        command_config(Outer, _parser().parse_args(["--config", str(config)]))


def test_positional_overrides_are_an_alias_of_set_labelled_as_written() -> None:
    args = _parser().parse_args([])
    assert command_config(Outer, args, overrides=[("override", "name=y")]).name == "y"
    with pytest.raises(ConfigError, match="override 'count=x'"):
        command_config(Outer, args, overrides=[("override", "count=x")])


def test_flags_without_source_code_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class whose source cannot be read (a frozen application) gets its flags, without help."""
    import inspect

    @dataclass
    class NoSource:
        size: int = 3
        """Not readable."""

    def no_source(obj: object) -> str | None:
        return None

    monkeypatch.setattr(inspect, "getsourcefile", no_source)
    parser = argparse.ArgumentParser()
    flags = add_config_flags(parser, NoSource, ("size",))
    assert field_docs(NoSource) == {}
    assert command_config(NoSource, parser.parse_args(["--size", "5"]), flags).size == 5


@dataclass
class WithSection:
    inner: Inner = field(default_factory=lambda: Inner(rate=0.75))


def test_a_sections_own_default_is_the_one_shown() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, WithSection, ("inner.rate",))
    assert "(default 0.75)" in parser.format_help()


_HAND_WRITTEN = {"source", "out", "generations", "candidate", "baseline", "run_dir", "experiment", "overrides",
                 "resume"}
"""Flags (and positionals) a command may declare by hand: the files and folders it reads and writes,
positional overrides, and --resume. Every other option is a config field, its flag generated."""


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [path]
    return [leaf for name, sub in subs[0].choices.items() for leaf in _leaf_parsers(sub, (*path, name))]


def test_every_option_that_is_not_a_path_is_a_generated_config_flag() -> None:
    from babeltune.cli import build_parser

    parser = build_parser()
    hand_written = []
    for path in _leaf_parsers(parser):
        sub = parser
        for name in path:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        generated = {dest for name, flags in sub._defaults.items() if name.endswith("_flags") for dest in flags}
        for action in sub._actions:
            if action.dest in generated or action.dest in ("help", "config", "set", "vllm"):
                continue
            if action.dest not in _HAND_WRITTEN:
                hand_written.append(f"{' '.join(path)}: {action.option_strings or action.dest}")
    assert not hand_written, hand_written
