"""The vLLM backend on the real default model, run in the vLLM environment (`.venv-vllm`, built by
`scripts/vllm_cpu_env.sh`) as subprocesses; the local engine's side runs here, in the main environment.

Engine starts cost ~40 s each on a CPU, so the checks share three: one driver process serves the base
model and two PEFT adapters on one engine (tests/vllm_driver.py), and one `babeltune generate
--backend vllm` is killed with SIGKILL mid-run and then resumed. Without the vLLM environment these
tests skip (saying how to build it), except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from babeltune.generate import DecodingSettings, GenerationRow, read_generations

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = ("en", "es", "ru", "zh", "ar", "hi", "fi", "sw")
MAX_NEW_TOKENS = 16
SETTINGS = DecodingSettings(max_new_tokens=MAX_NEW_TOKENS, repetition_penalty=1.2)  # greedy
ENGINE = {"dtype": "float32", "gpu_memory_utilization": 0.15, "max_model_len": 1024, "max_lora_rank": 8, "max_loras": 2}


def vllm_python() -> Path | None:
    """The vLLM environment's interpreter: $BABELTUNE_VLLM_PYTHON, else <repo>/.venv-vllm/bin/python."""
    path = Path(os.environ.get("BABELTUNE_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")
    return path if path.exists() else None


@pytest.fixture(scope="module")
def python() -> Path:
    found = vllm_python()
    if found is None:
        reason = ("no vLLM environment (.venv-vllm/bin/python or $BABELTUNE_VLLM_PYTHON): build it with "
                  "scripts/vllm_cpu_env.sh (CPU; a few minutes) or point BABELTUNE_VLLM_PYTHON at an "
                  "interpreter with vllm and babeltune")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def run_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm")


@pytest.fixture(scope="module")
def prompts(work: Path) -> Path:
    """The first bundled evaluation prompt of each of 8 languages (8 scripts and families)."""
    from babeltune.data import read_records

    picked: dict[str, Any] = {}
    for rec in read_records("bundled:eval"):
        if rec.lang in LANGUAGES and rec.lang not in picked:
            picked[rec.lang] = rec
    path = work / "prompts.jsonl"
    path.write_text("".join(json.dumps(picked[lang].to_dict(), ensure_ascii=False) + "\n" for lang in LANGUAGES),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(work: Path) -> dict[str, str]:
    """The default model and two PEFT LoRA adapters of it with random, non-zero weights (no training)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from babeltune.models.loading import load_model

    found = {"base": "gemma-3-270m"}
    for seed in (1, 2):
        loaded = load_model("gemma-3-270m")
        torch.manual_seed(seed)
        lora = get_peft_model(loaded.model, LoraConfig(r=8, lora_alpha=8, init_lora_weights=False,
                                                       target_modules=["q_proj", "v_proj", "down_proj"]))
        folder = work / f"adapter{seed}"
        lora.save_pretrained(folder)
        found[f"adapter{seed}"] = str(folder)
    return found


@pytest.fixture(scope="module")
def vllm_rows(python: Path, work: Path, prompts: Path, models: dict[str, str]) -> dict[str, Any]:
    """Base and both adapters through VLLMBackend in one process (one engine)."""
    out_dir = work / "vllm"
    out_dir.mkdir()
    spec = {"models": models, "data": str(prompts), "out_dir": str(out_dir),
            "decoding": SETTINGS.to_dict(), "vllm": ENGINE}
    (work / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([str(python), str(REPO / "tests" / "vllm_driver.py"), str(work / "spec.json")],
                          env=run_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out_dir / "driver.json").read_text())
    return {"report": report, **{name: read_generations(out_dir / f"{name}.jsonl") for name in models}}


@pytest.fixture(scope="module")
def local_rows(work: Path, prompts: Path, models: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The same prompts and settings through babeltune's local engine, in this environment."""
    from babeltune.data import read_records
    from babeltune.generate import LocalBackend, run_generation

    records = read_records(prompts)
    rows = {}
    for name, model in models.items():
        out = work / "local" / f"{name}.jsonl"
        run_generation(records, LocalBackend.from_pretrained(model, batch_size=8), SETTINGS, out)
        rows[name] = read_generations(out)
    return rows


def by_id(rows: list[GenerationRow], *fields: str) -> dict[str, tuple[Any, ...]]:
    return {row.id: tuple(getattr(row, f) for f in fields) for row in rows}


OUTPUT = ("response", "finish_reason", "prompt_tokens", "completion_tokens", "error")


@pytest.mark.parametrize("name", ["base", "adapter1", "adapter2"])
def test_vllm_float32_greedy_equals_the_local_engine(name: str, vllm_rows: dict[str, Any],
                                                      local_rows: dict[str, Any]) -> None:
    vllm, local = vllm_rows[name], local_rows[name]
    assert len(vllm) == len(LANGUAGES) and all(row.error is None for row in vllm)
    assert by_id(vllm, *OUTPUT) == by_id(local, *OUTPUT)
    assert all(row.completion_tokens >= 1 for row in vllm)


def test_two_adapters_share_one_engine_and_each_gives_its_own_outputs(vllm_rows: dict[str, Any]) -> None:
    assert vllm_rows["report"]["engine_starts"] == 1
    responses = {name: by_id(vllm_rows[name], "response") for name in ("base", "adapter1", "adapter2")}
    assert responses["adapter1"] != responses["adapter2"]
    assert responses["adapter1"] != responses["base"] and responses["adapter2"] != responses["base"]


def test_a_request_the_engine_refuses_fails_alone(vllm_rows: dict[str, Any]) -> None:
    too_long, answered = sorted(vllm_rows["report"]["failure_check"], key=lambda r: r[0] != "too-long")
    assert too_long[:2] == ["too-long", "error"] and "vLLM refused the request" in too_long[2]
    assert answered[1] in ("stop", "length") and answered[2] is None


def test_identity_and_cache_key_name_engine_model_and_adapter(vllm_rows: dict[str, Any],
                                                             local_rows: dict[str, Any]) -> None:
    identities = vllm_rows["report"]["identities"]
    assert identities["base"]["backend"] == "vllm" and identities["base"]["engine"].startswith("vllm ")
    assert identities["base"]["dtype"] == "float32" and identities["base"]["template"] == "gemma"
    fingerprints = {name: identities[name]["fingerprint"] for name in identities}
    assert len(set(fingerprints.values())) == 3
    keys = {name: by_id(vllm_rows[name], "key") for name in identities}
    for name in identities:  # the local backend computes the same fingerprint, but its key differs
        assert local_rows[name][0].model["fingerprint"] == fingerprints[name]
        assert vllm_rows[name][0].model == identities[name]
        assert not set(keys[name].values()) & {row.key for row in local_rows[name]}
    assert not set(keys["base"].values()) & set(keys["adapter1"].values())
    assert not set(keys["adapter1"].values()) & set(keys["adapter2"].values())


def test_generate_backend_vllm_killed_with_sigkill_resumes_with_nothing_lost_or_duplicated(
        python: Path, work: Path, prompts: Path, vllm_rows: dict[str, Any]) -> None:
    out = work / "cli" / "gen.jsonl"
    command = [str(python), "-m", "babeltune.cli", "generate", "--backend", "vllm", "--model", "gemma-3-270m",
               "--data", str(prompts), "--out", str(out), "--max-new-tokens", str(MAX_NEW_TOKENS),
               "--vllm-gpu-memory-utilization", str(ENGINE["gpu_memory_utilization"]),
               "--vllm-max-model-len", str(ENGINE["max_model_len"]), "--vllm-max-lora-rank", "8",
               "--vllm-max-num-seqs", "2"]  # rows finish two at a time, so the kill lands mid-run
    # Its own process group: SIGKILL reaches the engine's worker processes too, as `kill -9 -PGID` would.
    child = subprocess.Popen(command, env=run_env(), cwd=work, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and child.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.02)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        log = child.communicate()[0]
    assert child.returncode == -signal.SIGKILL, log[-3000:]
    done_before = out.read_bytes().count(b"\n")
    assert 2 <= done_before < len(LANGUAGES), f"the kill should land mid-run: {done_before} rows\n{log[-3000:]}"

    resumed = subprocess.run(command, env=run_env(), cwd=work, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    summary = json.loads(out.with_name("gen.summary.json").read_text())
    assert (summary["reused"], summary["generated"], summary["failed"]) == \
        (done_before, len(LANGUAGES) - done_before, 0)
    rows = read_generations(out)  # raises on a repeated id
    assert len(rows) == len(LANGUAGES)
    # The same outputs, and the same cache keys, as the driver's base run (the same identity).
    assert by_id(rows, "key", *OUTPUT) == by_id(vllm_rows["base"], "key", *OUTPUT)

