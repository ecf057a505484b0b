"""Multiple-choice evaluation: reading, scoring against a hand computation, intervals, padding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.lens.mc import MCItem, evaluate_mc, read_mc_items, summarize


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


ITEMS = [
    {"lang": "en", "premise": "The man broke his toe.", "question": "What was the cause?",
     "choices": ["He dropped a hammer on his foot.", "He got a hole in his sock."], "label": 0},
    {"lang": "es", "question": "¿Cuál es la capital de España?", "choices": ["Madrid", "Roma", "París"], "label": "A"},
    {"lang": "swh_Latn", "question": "Mbwa ni nini?", "choices": ["mnyama", "gari"], "label": 1, "id": "sw-1"},
]


def test_read_items(tmp_path: Path) -> None:
    items = read_mc_items(_write(tmp_path / "mc.jsonl", ITEMS))
    assert [i.lang for i in items] == ["en", "es", "sw"]
    assert items[0].question == "The man broke his toe.\nWhat was the cause?"
    assert items[1].label == 0 and items[2].id == "sw-1"
    assert len(read_mc_items(tmp_path / "mc.jsonl", languages=["es"])) == 1


@pytest.mark.parametrize(("row", "message"), [
    ({"lang": "xx", "question": "q", "choices": ["a", "b"], "label": 0}, r"mc.jsonl:2: field 'lang'"),
    ({"lang": "en", "choices": ["a", "b"], "label": 0}, r"mc.jsonl:2: field 'question'"),
    ({"lang": "en", "question": "q", "choices": ["a"], "label": 0}, r"mc.jsonl:2: field 'choices'"),
    ({"lang": "en", "question": "q", "choices": ["a", "b"], "label": 2}, r"mc.jsonl:2: field 'label'"),
    ("{not json", r"mc.jsonl:2: field '<line>': not valid JSON"),
])
def test_read_errors_name_the_line_and_field(tmp_path: Path, row: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_mc_items(_write(tmp_path / "mc.jsonl", [ITEMS[0], row]))


def test_loglik_matches_a_hand_computation(tiny_tok: Any, tiny_lm: Any) -> None:
    item = MCItem("x", "en", "The sky is", ("blue", "a very long green thing"), 0)
    [score] = evaluate_mc(tiny_lm, tiny_tok, [item], method="loglik")
    context = tiny_tok("The sky is")["input_ids"]
    for j, choice in enumerate(item.choices):
        cont = tiny_tok(" " + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + cont])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_lm(ids).logits[0, :-1], dim=-1)
        expected = sum(float(logp[len(context) - 1 + k, t]) for k, t in enumerate(cont))
        assert score.scores[j] == pytest.approx(expected, abs=1e-4)
        assert score.norm_scores[j] == pytest.approx(expected / len(choice), abs=1e-4)


@pytest.mark.parametrize("method", ["loglik", "letter"])
def test_scores_do_not_depend_on_batching(tiny_tok: Any, tiny_lm: Any, tmp_path: Path, method: str) -> None:
    items = read_mc_items(_write(tmp_path / "mc.jsonl", ITEMS))
    one = evaluate_mc(tiny_lm, tiny_tok, items, method=method, batch_size=1)  # type: ignore[arg-type]
    many = evaluate_mc(tiny_lm, tiny_tok, items, method=method, batch_size=8)  # type: ignore[arg-type]
    for a, b in zip(one, many, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_summary_per_language(tiny_tok: Any, tiny_lm: Any, tmp_path: Path) -> None:
    items = read_mc_items(_write(tmp_path / "mc.jsonl", ITEMS * 2))
    summary = summarize(evaluate_mc(tiny_lm, tiny_tok, items, method="letter"))
    assert set(summary.per_language) == {"en", "es", "sw"}
    assert summary.per_language["es"]["n"] == 2 and summary.per_language["es"]["chance"] == pytest.approx(1 / 3)
    assert summary.overall["n"] == 6
    assert 0 <= summary.overall["ci_low"] <= summary.overall["acc"] <= summary.overall["ci_high"] <= 1
    assert "| all | 6 |" in summary.table()
