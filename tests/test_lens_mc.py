"""Multiple-choice items: reading (FILE:LINE errors), and scoring through `babeltune bench` (lm-eval) checked
against a hand count from log-likelihoods computed directly with the tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.cli import main
from babeltune.lens.mc import LETTERS, MCItem, evaluate_mc, letter_prompt, read_mc_items
from tests.train_helpers import continuation_loglik, save_tiny_model


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


ITEMS = [
    {"lang": "en", "premise": "The man broke his toe.", "question": "What was the cause?",
     "choices": ["He dropped a hammer on his foot.", "He got a hole in his sock."], "label": 0},
    {"lang": "es", "question": "¿Cuál es la capital de España?", "choices": ["Madrid", "Roma", "París"], "label": "A"},
    {"lang": "swh_Latn", "question": "Mbwa ni nini?", "choices": ["mnyama", "gari"], "label": 1, "id": "sw-1"},
]

TWO_LANGUAGES = [
    {"lang": "en", "question": "The sky is", "choices": ["blue", "a very long green thing"], "label": 0},
    {"lang": "en", "question": "I tipped the bottle.", "choices": ["The liquid froze.", "It poured out."], "label": 1},
    {"lang": "en", "question": "The sun rose.", "choices": ["It got bright.", "It got dark.", "Nothing."], "label": 0},
    {"lang": "en", "question": "The girl was thirsty.", "choices": ["She drank water.", "She slept."], "label": 0},
    {"lang": "es", "question": "La capital de España es", "choices": ["Madrid", "Roma", "París"], "label": 0},
    {"lang": "es", "question": "Incliné la botella.", "choices": ["Se congeló.", "Se derramó."], "label": 1},
    {"lang": "es", "question": "La niña tenía sed.", "choices": ["Se fue a dormir.", "Bebió agua."], "label": 1},
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


needs_harness = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")


def _hand_count(model: Any, tok: Any, items: list[MCItem], method: str) -> dict[str, dict[str, float]]:
    """Per language: accuracy and per-character accuracy from log-likelihoods computed with the model."""
    counts: dict[str, list[tuple[bool, bool]]] = {}
    for item in items:
        if method == "loglik":
            targets, context = item.choices, item.question
        else:
            targets, context = tuple(LETTERS[:len(item.choices)]), letter_prompt(item)
        lls = [continuation_loglik(model, tok, context, " " + t) for t in targets]
        best = max(range(len(lls)), key=lls.__getitem__)
        best_norm = max(range(len(lls)), key=lambda i: lls[i] / len(targets[i]))
        counts.setdefault(item.lang, []).append((best == item.label, best_norm == item.label))
    return {lang: {"acc": sum(a for a, _ in c) / len(c), "acc_norm": sum(b for _, b in c) / len(c), "n": len(c)}
            for lang, c in counts.items()}


@needs_harness
@pytest.mark.parametrize("method", ["loglik", "letter"])
def test_accuracy_per_language_is_the_hand_count(tiny_tok: Any, tiny_lm: Any, tmp_path: Path, method: str) -> None:
    items = read_mc_items(_write(tmp_path / "mc.jsonl", TWO_LANGUAGES))
    result = evaluate_mc(tiny_lm, tiny_tok, items, method=method, batch_size=3)  # type: ignore[arg-type]
    expected = _hand_count(tiny_lm, tiny_tok, items, method)
    summary = result.summary
    assert set(summary.per_language) == {"en", "es"}
    for lang, hand in expected.items():
        got = summary.per_language[lang]
        assert (got["n"], got["acc"], got["acc_norm"]) == (hand["n"], pytest.approx(hand["acc"]),
                                                          pytest.approx(hand["acc_norm"]))
        assert 0 <= got["ci_low"] <= got["acc"] <= got["ci_high"] <= 1 and got["ci_high"] > got["ci_low"]
    assert summary.per_language["es"]["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    hits = sum(e["acc"] * e["n"] for e in expected.values())
    assert summary.overall["n"] == 7 and summary.overall["acc"] == pytest.approx(hits / 7)
    assert {(row.task, row.language) for row in result.bench.rows if row.metric == "acc"} == {
        (f"babeltune_mc_{method}_en", "en"), (f"babeltune_mc_{method}_es", "es")}
    assert "| all | 7 |" in summary.table()


@needs_harness
def test_steering_at_zero_gives_the_unsteered_figures(tiny_tok: Any, tiny_lm: Any, tmp_path: Path) -> None:
    from babeltune.lens.config import SteerConfig
    from babeltune.lens.subspace import LanguageSubspace

    items = read_mc_items(_write(tmp_path / "mc.jsonl", TWO_LANGUAGES))
    means = torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    LanguageSubspace.from_means(("en", "es"), "en", means).save(tmp_path / "s")
    plain = evaluate_mc(tiny_lm, tiny_tok, items)
    zero = evaluate_mc(tiny_lm, tiny_tok, items, steering=SteerConfig(subspace=str(tmp_path / "s"), coefficient=0.0,
                                                                     layers=[0, 1]))
    strong = evaluate_mc(tiny_lm, tiny_tok, items, steering=SteerConfig(subspace=str(tmp_path / "s"),
                                                                       coefficient=50.0, layers=[0, 1]))
    responses = [s["responses"] for s in plain.bench.samples]
    assert zero.summary.to_dict() == plain.summary.to_dict()
    assert [s["responses"] for s in zero.bench.samples] == responses
    assert [s["responses"] for s in strong.bench.samples] != responses  # the hooks do act
    assert zero.bench.identity["steering"]["coefficient"] == 0.0


@needs_harness
def test_chat_template_writes_the_question_as_a_user_turn(tiny_tok: Any, tiny_lm: Any, tmp_path: Path) -> None:
    items = read_mc_items(_write(tmp_path / "mc.jsonl", TWO_LANGUAGES[:2]))
    result = evaluate_mc(tiny_lm, tiny_tok, items, method="letter", template="gemma", tasks_dir=tmp_path / "tasks")
    row = json.loads((tmp_path / "tasks" / "letter_en.jsonl").read_text().splitlines()[0])
    assert row["prompt"].startswith("<bos><start_of_turn>user\nThe sky is\nA. blue")
    assert row["prompt"].endswith("<start_of_turn>model\n") and row["targets"] == ["A", "B"]
    assert result.summary.per_language["en"]["n"] == 2


@needs_harness
def test_cli_scores_through_bench_and_needs_the_harness(tmp_path: Path, capsys: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model = save_tiny_model(tmp_path / "tiny")
    data = _write(tmp_path / "mc.jsonl", TWO_LANGUAGES)
    out, tasks = tmp_path / "mc.json", tmp_path / "tasks"
    assert main(["lens", "mc-eval", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--tasks-dir", str(tasks), "--languages", "es"]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["per_language"]) == {"es"} and payload["per_language"]["es"]["n"] == 3
    assert [r["task"] for r in payload["rows"] if r["metric"] == "acc"] == ["babeltune_mc_loglik_es"]
    assert payload["identity"]["lm_eval_version"] and "| es | 3 |" in capsys.readouterr().out
    assert {"babeltune_mc_loglik_es.yaml", "loglik_es.jsonl", "results.csv", "samples.jsonl"} <= {
        p.name for p in tasks.iterdir()}
    again = tmp_path / "again"  # the kept tasks rerun with babeltune bench give the same figures
    assert main(["bench", "--model", str(model), "--include-path", str(tasks), "--tasks", "babeltune_mc_loglik_es",
                 "--out", str(again)]) == 0
    rerun = json.loads((again / "results.json").read_text())["rows"]
    assert [(r["metric"], r["value"]) for r in rerun] == [(r["metric"], r["value"]) for r in payload["rows"]]

    bad = _write(tmp_path / "bad.jsonl", [TWO_LANGUAGES[0], {"lang": "en", "question": "q", "choices": ["a"],
                                                              "label": 0}])
    assert main(["lens", "mc-eval", "--model", str(model), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: field 'choices'" in err and "Traceback" not in err

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    assert main(["lens", "mc-eval", "--model", str(model), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'babeltune[harness]'" in err and len(err.splitlines()) == 1
