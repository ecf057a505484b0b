from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from babeltune.config import ConfigError, dump_yaml, load_config, parse_override, to_dict


@dataclass
class Optim:
    lr: float = 1e-5
    """learning rate"""
    betas: tuple[float, ...] = (0.9, 0.95)


@dataclass
class Job:
    name: str = "job"
    steps: int = 10
    mode: Literal["full", "lora"] = "full"
    lrs: list[float] = field(default_factory=list)
    out: Path | None = None
    optim: Optim = field(default_factory=Optim)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError("steps must be positive")


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: demo\nsteps: 5\noptim:\n  lr: 0.001\n")
    job = load_config(Job, path, ["optim.lr=1e-4", "mode=lora", "lrs=[1e-5, 1e-4]", "out=/tmp/x"])
    assert job.name == "demo" and job.steps == 5 and job.mode == "lora"
    assert job.optim.lr == pytest.approx(1e-4)
    assert job.lrs == [1e-5, 1e-4]
    assert job.out == Path("/tmp/x")
    assert job.optim.betas == (0.9, 0.95)


def test_round_trip(tmp_path: Path) -> None:
    job = load_config(Job, None, ["steps=3", "optim.lr=0.5"])
    dump_yaml(job, tmp_path / "c.yaml")
    assert load_config(Job, tmp_path / "c.yaml") == job
    assert to_dict(job)["optim"]["betas"] == [0.9, 0.95]


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*optim\.lrr"):
        load_config(Job, path)


@pytest.mark.parametrize("override, message", [
    ("steps=abc", "steps must be an integer"),
    ("mode=half", "mode must be one of"),
    ("steps=0", "steps must be positive"),
    ("steps", "key=value"),
])
def test_bad_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Job, None, [override])


def test_parse_override_numbers() -> None:
    assert parse_override("a.b=1e-4") == (["a", "b"], 1e-4)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=en,es") == (["a"], "en,es")
