"""`babeltune model info | render` on the tiny model: flags generated from the model configs give the
same output as their fields say (defaults, --per-language, --template)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from babeltune.cli import main
from babeltune.languages import STUDY_A_LANGUAGES
from tests.train_helpers import save_tiny_model, tiny_data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_model_info_describes_the_model(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "info", "--model", str(model_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(model_dir) and info["architecture"].startswith("Gemma3")
    assert info["parameters"] > 0 and info["layers"] >= 1 and len(info["fingerprint"]) > 8


@pytest.mark.parametrize("per_language", [1, 2])
def test_model_render_shows_samples_per_language(model_dir: Path, tmp_path: Path, per_language: int,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_data(tmp_path / "data.jsonl", n_pids=3)
    args = ["model", "render", "--model", str(model_dir), "--data", str(data), "--template", "gemma"]
    assert main(args + (["--per-language", str(per_language)] if per_language != 1 else [])) == 0
    out = capsys.readouterr().out
    samples = [line for line in out.splitlines() if line.startswith("--- ")]
    assert len(samples) == per_language * len(STUDY_A_LANGUAGES)
    assert all(" tokens, " in line and " trained" in line for line in samples)
    assert out.count("[trained] ") == len(samples)
