"""The LLM judges (pairwise and rubric) run on the generation stage's backends: local | vllm | endpoint.
The vLLM backend is replaced by a fake module here (its contract: `VLLMBackend.from_pretrained(model,
VLLMConfig)`); the endpoint backend is tested against `babeltune serve` over loopback."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from babeltune.generate import DecodingSettings, GenerationRequest, GenerationResult
from babeltune.generate.config import VLLMConfig
from babeltune.judge.backends import judge_chat_backend
from tests.test_judge_cli import generation_file, parse


class FakeVLLMBackend:
    """Stands in for babeltune.generate.vllm.VLLMBackend: records how it was built, answers every
    judge prompt with a fixed reply."""

    name = "vllm"
    built: ClassVar[list[tuple[str, VLLMConfig]]] = []
    reply: ClassVar[str] = "Answer 1 is better.\n[[1]]"

    def __init__(self, model: str, config: VLLMConfig) -> None:
        self.model, self.config = model, config

    @classmethod
    def from_pretrained(cls, model: str, config: VLLMConfig) -> FakeVLLMBackend:
        cls.built.append((model, config))
        return cls(model, config)

    def identity(self) -> dict[str, Any]:
        return {"backend": "vllm", "model": self.model, "dtype": self.config.dtype}

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        assert settings.greedy and settings.repetition_penalty == 1.0
        for r in requests:
            yield GenerationResult(r.id, type(self).reply, "stop", 10, 5)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[FakeVLLMBackend]:
    module = types.ModuleType("babeltune.generate.vllm")
    module.VLLMBackend = FakeVLLMBackend  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "babeltune.generate.vllm", module)
    FakeVLLMBackend.built = []
    return FakeVLLMBackend


def test_dispatch_picks_the_backend(fake_vllm: type[FakeVLLMBackend]) -> None:
    from babeltune.generate import EndpointConfig

    chat = judge_chat_backend("vllm", model="judge-model", vllm=VLLMConfig(dtype="bfloat16"), max_new_tokens=64)
    assert fake_vllm.built == [("judge-model", VLLMConfig(dtype="bfloat16"))]
    assert chat.complete([[{"role": "user", "content": "which?"}]]) == ["Answer 1 is better.\n[[1]]"]
    assert json.loads(chat.fingerprint())["backend"] == {"backend": "vllm", "model": "judge-model",
                                                         "dtype": "bfloat16"}
    assert chat.settings.max_new_tokens == 64
    judge_chat_backend("vllm", model="m2")
    assert fake_vllm.built[-1] == ("m2", VLLMConfig())  # the default engine settings
    endpoint = EndpointConfig(url="http://127.0.0.1:9/v1", model="x", concurrency=300)
    via_endpoint = judge_chat_backend(None, endpoint=endpoint)
    assert via_endpoint.backend.name == "endpoint" and via_endpoint.backend.config.concurrency == 300
    with pytest.raises(ValueError, match="vllm backend needs the model"):
        judge_chat_backend("vllm")
    with pytest.raises(ValueError, match="endpoint backend needs an endpoint"):
        judge_chat_backend("endpoint", model="m")


def test_judge_commands_run_on_vllm(fake_vllm: type[FakeVLLMBackend], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    a = generation_file(tmp_path / "a.jsonl", {"es": "Guárdalo en una bolsa.", "it": "Conservalo."})
    b = generation_file(tmp_path / "b.jsonl", {"es": "No sé.", "it": "Boh."})
    args = parse(["judge", "sxs", "--candidate", str(a), "--baseline", str(b), "--judge", "llm", "--backend", "vllm",
                  "--local-model", "judge-model", "--set", "vllm.dtype=bfloat16", "--vllm", "tensor_parallel_size=2",
                  "--out", str(tmp_path / "sxs")])
    assert args.func(args) == 0
    assert fake_vllm.built == [("judge-model", VLLMConfig(dtype="bfloat16", tensor_parallel_size=2))]
    scores = json.loads((tmp_path / "sxs" / "scores.json").read_text())
    assert scores["all"]["n"] == 2 and scores["all"]["score"] == 50.0  # always position 1: ties, both orders
    fake_vllm.reply = json.dumps({k: 3 for k in ("language", "fluency", "helpfulness", "accuracy",
                                                 "logical_coherence", "harmlessness")})
    try:
        args = parse(["judge", "rubric", "--generations", str(a), "--backend", "vllm", "--local-model", "judge-model",
                      "--out", str(tmp_path / "rubric")])
        assert args.func(args) == 0
    finally:
        fake_vllm.reply = FakeVLLMBackend.reply
    rubric = json.loads((tmp_path / "rubric" / "scores.json").read_text())
    assert rubric["all"]["criteria"]["fluency"]["value"] == 3.0 and rubric["all"]["invalid"] == 0
    args = parse(["judge", "rubric", "--generations", str(a), "--backend", "vllm", "--local-model", "m",
                  "--vllm", "dtyp=bfloat16", "--out", str(tmp_path / "r2")])
    with pytest.raises(ValueError, match=r"--vllm 'vllm\.dtyp=bfloat16': unknown key"):
        args.func(args)


def test_experiment_judge_config_takes_the_backend(fake_vllm: type[FakeVLLMBackend]) -> None:
    from babeltune.config import ConfigError, from_dict
    from babeltune.experiments.config import JudgeSettings
    from babeltune.experiments.pipeline import make_pairwise_judge

    settings = from_dict(JudgeSettings, {"kind": "llm", "llm": {"backend": "vllm", "local_model": "judge-model",
                                                                "vllm": {"dtype": "bfloat16"}}}, where="exp.yaml judge")
    config = types.SimpleNamespace(judge=settings)
    judge = make_pairwise_judge("llm", config)  # type: ignore[arg-type]
    assert fake_vllm.built == [("judge-model", VLLMConfig(dtype="bfloat16"))]
    assert "pairwise-v1" in judge.fingerprint() and '"backend": "vllm"' in judge.fingerprint()
    with pytest.raises(ConfigError, match=r"llm\.backend must be one of"):
        from_dict(JudgeSettings, {"kind": "llm", "llm": {"backend": "vlm", "local_model": "m"}}, where="exp.yaml")
    with pytest.raises(ConfigError, match=r"needs judge\.llm\.endpoint\.url"):
        from_dict(JudgeSettings, {"kind": "llm", "llm": {"backend": "endpoint", "local_model": "m"}}, where="e")


def test_judge_over_an_endpoint_with_many_requests_in_flight(tiny_tok: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from babeltune.generate import EndpointConfig, LocalBackend
    from babeltune.judge import LLMRubricJudge, RubricItem, run_rubric
    from babeltune.testing import tiny_model
    from tests.loopback import serving

    backend = LocalBackend(tiny_model(tiny_tok), tiny_tok, batch_size=64)
    with serving(backend, served_name="t", default_max_tokens=4) as server:
        monkeypatch.delenv("BT_NO_KEY", raising=False)
        chat = judge_chat_backend("endpoint", endpoint=EndpointConfig(url=server.url, api_key_env="BT_NO_KEY",
                                                                      concurrency=64), max_new_tokens=3)
        items = [RubricItem(f"i{k}", f"p{k}", "sw", "Habari?", f"Nzuri {k}") for k in range(40)]
        judgements = run_rubric(items, LLMRubricJudge(chat), retries=0)
    # A random tiny model writes no JSON: every reply is read as invalid, none lost, none failed.
    assert len(judgements) == 40 and all(j.scores is None and j.raw != "<request failed>" for j in judgements)
