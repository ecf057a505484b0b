"""`babeltune generate` and `babeltune serve` from the command line, on a tiny model saved to a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from babeltune.cli import main
from babeltune.generate import read_generations
from tests.conftest import make_parallel, write_rows


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from babeltune.testing import tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-model")
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    rows = make_parallel(2, ("en", "es", "zh"))
    rows[1]["meta"] = {"split": "modifiers", "modifier": {"kind": "list_items", "n": 3}}
    return write_rows(tmp_path / "prompts.jsonl", rows)


def test_generate_then_resume_then_eval(tiny_dir: Path, prompts: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen.jsonl"
    args = ["generate", "--model", str(tiny_dir), "--data", str(prompts), "--out", str(out), "--max-new-tokens", "4",
            "--batch-size", "4", "--set", "decoding.repetition_penalty=1.0"]
    assert main([*args, "--languages", "en,es"]) == 0
    assert "4 generated, 0 failed" in capsys.readouterr().out
    rows = read_generations(out)
    assert sorted(r.lang for r in rows) == ["en", "en", "es", "es"]
    assert rows[0].settings["repetition_penalty"] == 1.0 and rows[0].settings["max_new_tokens"] == 4
    assert rows[0].model["fingerprint"] and rows[0].model["dtype"] == "float32"
    assert [r.modifier for r in rows if r.id == "p000-es"] == [{"kind": "list_items", "n": 3}]
    assert main([*args, "--per-language", "2"]) == 0  # all languages now: en/es reused, zh generated
    assert "4 reused, 2 generated" in capsys.readouterr().out
    assert main(["eval", "--generations", str(out), "--out", str(tmp_path / "ev"), "--bootstrap", "50"]) == 0
    assert (tmp_path / "ev" / "metrics.csv").exists()


def test_bad_prompt_files_are_clear_errors(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unlabelled = tmp_path / "alpaca.jsonl"
    unlabelled.write_text(json.dumps({"instruction": "Say hi", "output": "Hi"}) + "\n")
    base = ["generate", "--model", str(tiny_dir), "--max-new-tokens", "2", "--out", str(tmp_path / "o.jsonl")]
    assert main([*base, "--data", str(unlabelled)]) == 2
    assert "alpaca.jsonl:1" in capsys.readouterr().err
    assert main([*base, "--data", str(unlabelled), "--source-lang", "en"]) == 0
    capsys.readouterr()
    rows = make_parallel(1, ("en",))
    rows[0]["meta"]["modifier"] = {"kind": "sonnet"}
    bad = write_rows(tmp_path / "bad.jsonl", rows)
    assert main([*base[:-1], str(tmp_path / "o2.jsonl"), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "record 'p000-en'" in err and "unknown modifier kind 'sonnet'" in err
    assert main([*base, "--data", str(unlabelled), "--source-lang", "en", "--set", "decoding.top_p=2"]) == 2
    assert "top_p" in capsys.readouterr().err


@pytest.fixture
def serve_process(tiny_dir: Path) -> Iterator[tuple[str, Any]]:
    env = {**os.environ, "BT_SERVE_TOKEN": "tok-123", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "babeltune.cli", "serve", "--model", str(tiny_dir), "--port", "0",
                             "--api-key-env", "BT_SERVE_TOKEN", "--served-name", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        assert line.startswith("serving tiny at http://127.0.0.1:"), line + (proc.stderr.read() if proc.stderr else "")
        yield line.split(" at ")[1].split(" ")[0], proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_generate_through_babeltune_serve(serve_process: tuple[str, Any], tiny_dir: Path, prompts: Path,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = serve_process
    monkeypatch.setenv("BT_CLIENT_KEY", "tok-123")
    common = ["--data", str(prompts), "--max-new-tokens", "5", "--languages", "zh,en"]
    assert main(["generate", "--endpoint", url, "--api-key-env", "BT_CLIENT_KEY", "--out",
                 str(tmp_path / "remote.jsonl"), *common]) == 0
    assert main(["generate", "--model", str(tiny_dir), "--out", str(tmp_path / "local.jsonl"), *common]) == 0
    capsys.readouterr()
    remote = {r.id: r for r in read_generations(tmp_path / "remote.jsonl")}
    local = {r.id: r for r in read_generations(tmp_path / "local.jsonl")}
    assert sorted(remote) == sorted(local) and len(local) == 4
    assert all(remote[k].response == local[k].response for k in local)
    assert remote["p000-zh"].model == {"backend": "endpoint", "url": url, "model": "tiny"}
    monkeypatch.delenv("BT_CLIENT_KEY")  # no token: every request refused, recorded, exit status 1
    assert main(["generate", "--endpoint", url, "--api-key-env", "BT_CLIENT_KEY", "--endpoint-model", "tiny",
                 "--out", str(tmp_path / "refused.jsonl"), *common]) == 1
    assert "0 generated, 4 failed" in capsys.readouterr().out


def test_a_peft_adapter_generates_and_has_its_own_fingerprint(tiny_dir: Path, prompts: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from babeltune.generate import LocalBackend

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():  # a visibly different model
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 5.0)
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    base_backend = LocalBackend.from_pretrained(tiny_dir)
    tuned = LocalBackend.from_pretrained(adapter)
    assert tuned.fingerprint != base_backend.fingerprint and len(tuned.fingerprint) == 64
    args = ["generate", "--data", str(prompts), "--max-new-tokens", "6", "--languages", "es"]
    assert main([*args, "--model", str(adapter), "--out", str(tmp_path / "tuned.jsonl")]) == 0
    assert main([*args, "--model", str(tiny_dir), "--out", str(tmp_path / "base.jsonl")]) == 0
    capsys.readouterr()
    tuned_rows = read_generations(tmp_path / "tuned.jsonl")
    base_rows = read_generations(tmp_path / "base.jsonl")
    assert tuned_rows[0].model["fingerprint"] == tuned.fingerprint
    assert [r.response for r in tuned_rows] != [r.response for r in base_rows]
    # The adapter's LoRA layers sit inside the decoder: the bf16 greedy head sees them.
    from babeltune.data.records import Message
    from babeltune.generate import DecodingSettings, GenerationRequest

    requests = [GenerationRequest("a", (Message("user", "Habari za leo?"),))]
    on = LocalBackend(tuned.model, tuned.tokenizer, bf16_head="on")
    off = LocalBackend(tuned.model, tuned.tokenizer, bf16_head="off")
    settings = DecodingSettings(max_new_tokens=8)
    assert [r.text for r in on.generate(requests, settings)] == [r.text for r in off.generate(requests, settings)]
