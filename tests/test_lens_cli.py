"""`babeltune lens probe | steer | mc-eval` on a tiny model saved as a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from babeltune.cli import main
from tests.conftest import make_parallel, write_rows

LANGS = ("en", "es", "ru", "zh")


@pytest.fixture
def tiny_folder(tmp_path: Path, tiny_tok: Any, tiny_lm: Any) -> Path:
    folder = tmp_path / "tiny"
    tiny_lm.save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    return folder


def test_probe_then_steer_then_mc_eval(tmp_path: Path, tiny_folder: Path, capsys: Any) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(16, LANGS))
    out = tmp_path / "sub"
    assert main(["lens", "probe", "--model", str(tiny_folder), "--data", str(data), "--min-per-language", "5",
                 "--set", "holdout=0.25", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "probed 2 layers, 4 languages" in printed and "| layer | specific_acc" in printed
    assert {"subspace.safetensors", "subspace.json", "run.json", "diagnostics.md", "diagnostics.json"} <= {
        p.name for p in out.iterdir()}

    gens = tmp_path / "steer.jsonl"
    assert main(["lens", "steer", "--model", str(tiny_folder), "--steer", str(out), "--steer-coefficient", "0",
                 "--prompt", "es:¿Cómo estás?", "--max-new-tokens", "4", "--out", str(gens)]) == 0
    row = json.loads(gens.read_text())
    assert row["steered"] == row["unsteered"]  # coefficient 0

    mc = write_rows(tmp_path / "mc.jsonl", [
        {"lang": lang, "question": f"q{i}", "choices": ["yes", "no"], "label": i % 2}
        for i in range(3) for lang in ("en", "es")])
    result = tmp_path / "mc.json"
    assert main(["lens", "mc-eval", "--model", str(tiny_folder), "--data", str(mc), "--out", str(result),
                 "--steer", str(out), "--steer-mode", "project", "--steer-layers", "0,1"]) == 0
    summary = json.loads(result.read_text())
    assert summary["per_language"]["es"]["n"] == 3 and summary["steer"]["mode"] == "project"


def test_cli_errors_are_one_line(tmp_path: Path, tiny_folder: Path, capsys: Any) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(6, LANGS))
    assert main(["lens", "probe", "--model", str(tiny_folder), "--data", str(data), "--out", str(tmp_path / "s")]) == 2
    assert "too few prompts for a stable language mean" in capsys.readouterr().err
    assert main(["lens", "probe", "--model", str(tiny_folder), "--data", str(data), "--set", "holdout=2",
                 "--out", str(tmp_path / "s")]) == 2
    assert "holdout must be in [0, 1)" in capsys.readouterr().err
