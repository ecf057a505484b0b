"""Steering inside babeltune generate's local backend."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.data import Message
from babeltune.generate.backends import GenerationRequest
from babeltune.generate.local import LocalBackend
from babeltune.generate.settings import DecodingSettings
from babeltune.lens.config import SteerConfig
from babeltune.lens.generation import steer_backend
from babeltune.lens.states import state_sites
from babeltune.lens.subspace import LanguageSubspace

LANGS = ("en", "es", "ru", "zh")


@pytest.fixture
def subspace_dir(tmp_path: Path) -> Path:
    means = torch.randn(2, len(LANGS), 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    LanguageSubspace.from_means(LANGS, "en", means).save(tmp_path / "s")
    return tmp_path / "s"


def _run(backend: Any) -> dict[str, str | None]:
    requests = [GenerationRequest("a", (Message("user", "¿Cómo estás?"),)),
                GenerationRequest("b", (Message("user", "Как дела?"),))]
    settings = DecodingSettings(max_new_tokens=6, repetition_penalty=1.0)
    return {r.id: r.text for r in backend.generate(requests, settings)}


def test_generate_with_steering(tiny_tok: Any, tiny_lm: Any, subspace_dir: Path) -> None:
    backend = LocalBackend(tiny_lm, tiny_tok, batch_size=2)
    plain = _run(backend)
    langs = {"a": "es", "b": "ru"}
    with ExitStack() as stack:
        zero = steer_backend(stack, backend, SteerConfig(subspace=str(subspace_dir), coefficient=0.0, layers=[0, 1]),
                             langs)
        assert _run(zero) == plain
        assert backend.identity()["steering"]["lang"] == "per prompt"
    with ExitStack() as stack:
        strong = steer_backend(stack, backend, SteerConfig(subspace=str(subspace_dir), coefficient=50.0, layers=[0]),
                               langs)
        assert _run(strong) != plain
    assert sum(len(site._forward_hooks) for site in state_sites(tiny_lm)) == 0


def test_generate_command_with_steer(tmp_path: Path, tiny_tok: Any, tiny_lm: Any) -> None:
    import json

    from babeltune.cli import main
    from tests.conftest import make_parallel, write_rows

    folder = tmp_path / "tiny"
    tiny_lm.save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    data = write_rows(tmp_path / "p.jsonl", make_parallel(8, LANGS))
    assert main(["lens", "probe", "--model", str(folder), "--data", str(data), "--min-per-language", "5",
                 "--out", str(tmp_path / "sub")]) == 0
    common = ["generate", "--model", str(folder), "--data", str(data), "--per-language", "1", "--max-new-tokens", "3"]
    assert main([*common, "--out", str(tmp_path / "plain.jsonl")]) == 0
    assert main([*common, "--out", str(tmp_path / "zero.jsonl"), "--steer", str(tmp_path / "sub"),
                 "--steer-coefficient", "0", "--steer-layers", "0,-1"]) == 0

    def texts(name: str) -> dict[str, str]:
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        return {r["id"]: r["response"] for r in rows}

    assert texts("zero.jsonl") == texts("plain.jsonl")
    assert "steering" in (tmp_path / "zero.jsonl").read_text()  # recorded with each row's identity
