"""The experiment's generation stage on each backend (`generate.backend`): local, vllm (in-process
engines shared by a grid's adapters) and endpoint (each adapter loaded on the server by name). The
vLLM backend and the dynamic-LoRA client are replaced by fakes that keep to their contracts."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_experiments import experiment

from babeltune.data import load_records
from babeltune.experiments.pipeline import RealPipeline
from babeltune.generate import DecodingSettings, GenerationRequest, GenerationResult, read_generations


class FakeBackend:
    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model}

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        for r in requests:
            yield GenerationResult(r.id, f"{self.name} {self.model} {settings.max_new_tokens}", "stop")


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    log: dict[str, Any] = {"loaded": [], "released": 0}

    class VLLMBackend(FakeBackend):
        @classmethod
        def from_pretrained(cls, model: str, config: Any) -> VLLMBackend:
            log["loaded"].append((model, config))
            return cls("vllm", model)

    def release_engines() -> None:
        log["released"] += 1

    module = types.ModuleType("babeltune.generate.vllm")
    module.VLLMBackend = VLLMBackend  # type: ignore[attr-defined]
    module.release_engines = release_engines  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "babeltune.generate.vllm", module)
    return log


@pytest.fixture
def fake_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import babeltune.generate.endpoint as endpoint

    events: list[str] = []

    @contextlib.contextmanager
    def adapter_endpoint(config: Any, model: str) -> Iterator[Any]:
        name = Path(model).parent.name
        events.append(f"load {name}")
        try:
            yield dataclasses.replace(config, model=name)
        finally:
            events.append(f"unload {name}")

    class EndpointBackend(FakeBackend):
        def __init__(self, config: Any) -> None:
            super().__init__(f"endpoint {config.url}", config.model)

    monkeypatch.setattr(endpoint, "adapter_endpoint", adapter_endpoint, raising=False)
    monkeypatch.setattr(endpoint, "EndpointBackend", EndpointBackend)
    return events


def run_two_conditions(tmp_path: Path, generate: dict[str, Any]) -> tuple[RealPipeline, Path]:
    cfg = experiment(tmp_path, generate=generate)
    records = load_records(cfg.data.eval).records
    pipe = RealPipeline()
    out = tmp_path / "gens"
    for cond in ("mono-en", "mono-es"):
        model = str(tmp_path / cond / "final")
        for split in ("eval", "modifiers"):
            pipe.generate(cfg, model, records, out / cond / f"{split}.jsonl")
    return pipe, out


def test_vllm_backend_gets_its_settings_and_engines_are_released_once(
    tmp_path: Path, fake_vllm: dict[str, Any],
) -> None:
    pipe, out = run_two_conditions(tmp_path, {"backend": "vllm", "max_new_tokens": 9,
                                              "vllm": {"gpu_memory_utilization": 0.15}})
    assert [Path(m).parent.name for m, _ in fake_vllm["loaded"]] == ["mono-en", "mono-es"]  # once per model
    assert all(c.gpu_memory_utilization == 0.15 for _, c in fake_vllm["loaded"])
    rows = read_generations(out / "mono-es" / "modifiers.jsonl")
    assert rows and all(r.response.startswith("vllm ") and r.response.endswith(" 9") for r in rows)
    assert fake_vllm["released"] == 0
    pipe.release()
    assert fake_vllm["released"] == 1


def test_endpoint_backend_loads_each_adapter_by_name_while_it_generates(
    tmp_path: Path, fake_endpoint: list[str],
) -> None:
    pipe, out = run_two_conditions(tmp_path, {"backend": "endpoint",
                                              "endpoint": {"url": "http://127.0.0.1:8000/v1"}})
    assert fake_endpoint == ["load mono-en", "unload mono-en", "load mono-es"]  # both splits on one load
    rows = read_generations(out / "mono-en" / "eval.jsonl")
    assert {r.response for r in rows} == {"endpoint http://127.0.0.1:8000/v1 mono-en 512"}
    pipe.release()
    assert fake_endpoint[-1] == "unload mono-es"


def test_local_backend_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import babeltune.generate as generate

    loaded: list[dict[str, Any]] = []

    class LocalBackend(FakeBackend):
        @classmethod
        def from_pretrained(cls, model: str, **options: Any) -> LocalBackend:
            loaded.append(options)
            return cls("local", model)

    monkeypatch.setattr(generate, "LocalBackend", LocalBackend)
    run_two_conditions(tmp_path, {"local": {"batch_size": 3, "bf16_head": "off"}})
    assert len(loaded) == 2 and loaded[0]["batch_size"] == 3 and loaded[0]["bf16_head"] == "off"
