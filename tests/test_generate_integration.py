"""The real default model (gemma-3-270m): batched greedy decoding equals transformers' generate, all 12
languages of the bundled evaluation and modifier splits generate locally and through `babeltune serve`,
and `evaluate` reports every language."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.data import read_records
from babeltune.data.readers import bundled_path
from babeltune.generate import (
    DecodingSettings,
    EndpointBackend,
    EndpointConfig,
    LocalBackend,
    read_generations,
    run_generation,
)
from babeltune.generate.decoding import generate_token_ids
from babeltune.languages import STUDY_A_LANGUAGES
from tests.loopback import serving

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not bundled_path("modifiers").exists(), reason="bundled data not present"),
]


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return LocalBackend.from_pretrained("gemma-3-270m", batch_size=12)


@pytest.fixture(scope="module")
def records() -> list[Any]:
    """One evaluation and one modifier prompt per language."""
    picked: list[Any] = []
    for split in ("eval", "modifiers"):
        seen: set[str] = set()
        for rec in read_records(f"bundled:{split}"):
            if rec.lang not in seen:
                seen.add(rec.lang)
                picked.append(rec)
    return picked


def test_batched_greedy_equals_generate_on_the_default_model(backend: LocalBackend, records: list[Any]) -> None:
    prompts = [backend.render(rec.prompt_messages) for rec in (records[0], records[7], records[14])]
    stop = backend.stop_ids(DecodingSettings())
    settings = DecodingSettings(max_new_tokens=8)
    ours = {g.index: g.token_ids for g in generate_token_ids(backend.model, prompts, settings, stop_ids=stop,
                                                             pad_id=backend.tokenizer.pad_token_id, batch_size=3)}
    for i, ids in enumerate(prompts):
        with torch.inference_mode():
            out = backend.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                         dtype=torch.long), max_new_tokens=8, do_sample=False,
                                         repetition_penalty=1.2, eos_token_id=stop, pad_token_id=0)
        assert ours[i] == out[0, len(ids):].tolist()[: len(ours[i])], f"prompt {i}"


@pytest.fixture(scope="module")
def local_file(backend: LocalBackend, records: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "local.jsonl"
    return Path(run_generation(records, backend, DecodingSettings(max_new_tokens=8), out).path)


def test_all_languages_generate_and_evaluate(local_file: Path, records: list[Any], tmp_path: Path) -> None:
    from babeltune.evaluate import evaluate

    rows = read_generations(local_file)
    assert len(rows) == len(records) == 2 * len(STUDY_A_LANGUAGES)
    assert {r.lang for r in rows} == set(STUDY_A_LANGUAGES)
    assert all(r.error is None and isinstance(r.response, str) for r in rows)
    assert all(r.finish_reason in ("stop", "length") and 1 <= r.completion_tokens <= 8 for r in rows)
    result = evaluate(local_file, tmp_path / "ev")
    assert {m.lang for m in result.metrics} == {*STUDY_A_LANGUAGES, "overall"}
    assert result.value("responses") == len(rows) and result.value("failed_rate") == 0.0
    assert result.row("modifier_pass_rate", "overall", "all") is not None


@pytest.fixture(scope="module")
def served(backend: LocalBackend) -> Iterator[str]:
    with serving(backend) as server:
        yield server.url


def test_generation_through_the_server_equals_local(served: str, local_file: Path, records: list[Any],
                                                   tmp_path: Path) -> None:
    client = EndpointBackend(EndpointConfig(url=served, api_key_env="", concurrency=6))
    subset = records[::3]  # eval and modifier prompts, 8 languages
    remote = read_generations(run_generation(subset, client, DecodingSettings(max_new_tokens=8),
                                             tmp_path / "remote.jsonl").path)
    local = {r.id: r for r in read_generations(local_file)}
    assert len(remote) == len(subset)
    for row in remote:
        assert row.error is None
        assert row.response == local[row.id].response, row.id
