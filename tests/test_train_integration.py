"""Tuning the real default model on a bundled mixture lowers the loss and changes its answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration


def _greedy(model: torch.nn.Module, prompt_ids: list[int], stop: list[int]) -> list[int]:
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             eos_token_id=stop, pad_token_id=stop[0])
    return [int(t) for t in out[0, len(prompt_ids):]]


def test_lora_tuning_on_a_bundled_mixture_lowers_loss_and_changes_answers(tmp_path: Path) -> None:
    from babeltune.data import MixtureSpec, build_mixture, bundled_path, read_records, write_jsonl
    from babeltune.models import get_template, load_model, render_prompt
    from babeltune.train import TrainConfig, read_log, train

    if not bundled_path("train").exists():
        pytest.skip("bundled:train is not installed")
    mixture = build_mixture(read_records("bundled:train"), MixtureSpec(recipe="monolingual", lang="en", budget=4))
    data = tmp_path / "en4.jsonl"
    write_jsonl(mixture.records, data)
    config = TrainConfig(data=str(data), out=tmp_path / "run", method="lora", lr=2e-3, epochs=3, batch_size=2,
                         max_length=96, overflow="truncate", precision="bf16", progress=False, tensorboard=False,
                         peak_tflops=0.2, schedule="constant")
    result = train(config)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["examples"]["kept"] == 4 and report["examples"]["truncated"] >= 1  # counted, not silent
    records = read_log(result.log_path)
    assert len(records) == 6
    first = sum(r["loss"] for r in records[:2]) / 2
    last = sum(r["loss"] for r in records[-2:]) / 2
    assert last < first - 0.2, (first, last)

    base = load_model("gemma-3-270m")
    tuned = load_model(str(result.weights))
    template = get_template(base.tokenizer)
    prompt = render_prompt(base.tokenizer, template, mixture.records[0].prompt_messages)
    stop = template.stop_token_ids(base.tokenizer)
    assert _greedy(tuned.model, prompt, stop) != _greedy(base.model, prompt, stop)
