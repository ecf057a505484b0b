"""Metrics and `babeltune eval`: per-language and overall values with bootstrap CIs, failures counted
but never scored, tidy CSV/JSON outputs, the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from babeltune.cli import main
from babeltune.evaluate import EvalConfig, evaluate

EN = "Store the bread in a cloth bag at room temperature, never in the fridge."
ES = "Guarda el pan en una bolsa de tela a temperatura ambiente, nunca en la nevera."
ZH = "把面包放在布袋里，在室温下保存，不要放进冰箱。"


def row(i: int, lang: str, response: str | None, modifier: dict[str, Any] | None = None, error: str | None = None,
        finish: str = "stop", tokens: int | None = 10) -> dict[str, Any]:
    return {"id": f"g{i}-{lang}", "pid": f"g{i}", "lang": lang, "prompt": "p", "response": response,
            "modifier": modifier, "finish_reason": "error" if error else finish, "error": error,
            "completion_tokens": None if error else tokens, "model": {"backend": "test"},
            "settings": {"max_new_tokens": 8}}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def sample_rows() -> list[dict[str, Any]]:
    return [
        row(0, "en", EN),
        row(1, "en", ES),  # wrong language
        row(2, "en", "OK."),  # undetermined
        row(3, "en", None, error="HTTP 503: overloaded"),  # failed: counted, never scored
        row(4, "en", "- one\n- two\n- three", {"kind": "list_items", "n": 3}, finish="length"),
        row(5, "en", "- one\n- two", {"kind": "list_items", "n": 3}),
        row(6, "es", ES, tokens=20),
        row(7, "es", EN, {"kind": "answer_language", "lang": "en"}, tokens=30),
        row(8, "zh", ZH, tokens=12),
        row(9, "zh", None, {"kind": "list_items", "n": 2}, error="timed out"),
    ]


def test_metrics_per_language_and_overall(tmp_path: Path) -> None:
    result = evaluate(write(tmp_path / "g.jsonl", sample_rows()), None, EvalConfig(bootstrap=200))
    assert result.value("responses") == 10 and result.value("responses", "en") == 6
    assert result.value("failed_rate") == pytest.approx(0.2)
    assert result.value("failed_rate", "zh") == pytest.approx(0.5)
    # en: 5 answered; "OK." undetermined; the lists are English enough? they are too short -> undetermined.
    en = result.row("correct_language_rate", "en")
    assert en is not None and en.n == 2 and en.value == pytest.approx(0.5)
    assert result.value("undetermined_rate", "en") == pytest.approx(3 / 5)
    assert result.value("correct_language_rate", "es") == 1.0  # the answer_language row expects English
    assert result.value("truncated_rate", "en") == pytest.approx(1 / 5)
    assert result.value("response_tokens", "es") == 25.0
    length = result.row("response_length", "zh")
    assert length is not None and length.unit == "chars"
    assert length.value == len("把面包放在布袋里在室温下保存不要放进冰箱")
    assert result.row("response_length") is None  # words and characters do not mix
    lists = result.row("modifier_pass_rate", "overall", "list_items")
    assert lists is not None and (lists.n, lists.value) == (2, 0.5)  # the failed zh request is not scored
    assert result.value("modifier_pass_rate", "es", "answer_language") == 1.0
    assert result.value("modifier_pass_rate", "overall", "all") == pytest.approx(2 / 3)
    for r in result.metrics:
        if r.n >= 2 and r.low is not None:
            assert r.low <= r.value <= r.high, r


def test_failed_rows_are_never_scored(tmp_path: Path) -> None:
    result = evaluate(write(tmp_path / "g.jsonl", sample_rows()), None, EvalConfig(bootstrap=0))
    failed = [r for r in result.responses if r.failed]
    assert [r.id for r in failed] == ["g3-en", "g9-zh"]
    assert all(r.lang_status == "failed" and r.modifier_passed is None and r.length is None for r in failed)
    assert failed[1].modifier_kind == "list_items" and failed[1].error == "timed out"


def test_invalid_modifier_specs_are_counted_not_scored(tmp_path: Path) -> None:
    rows = [row(0, "en", EN, {"kind": "haiku"}), row(1, "en", EN, {"kind": "list_items"})]
    result = evaluate(write(tmp_path / "g.jsonl", rows), None, EvalConfig(bootstrap=0))
    assert result.value("modifier_invalid") == 2
    assert all(r.modifier_invalid and r.modifier_passed is None for r in result.responses)
    assert result.row("modifier_pass_rate", "overall", "all") is None
    assert "2 response(s) with an invalid modifier spec" in result.table()


def test_unlabelled_generations_are_an_error_naming_the_line(tmp_path: Path) -> None:
    rows = sample_rows()[:2]
    rows[1]["lang"] = "xx"
    with pytest.raises(ValueError, match=r"g\.jsonl:2: field 'lang'"):
        evaluate(write(tmp_path / "g.jsonl", rows))
    del rows[1]["lang"]
    with pytest.raises(ValueError, match=r"g\.jsonl:2: field 'lang': missing"):
        evaluate(write(tmp_path / "g.jsonl", rows))


def test_outputs_are_tidy_and_reproducible(tmp_path: Path) -> None:
    gen = write(tmp_path / "g.jsonl", sample_rows())
    evaluate(gen, tmp_path / "a", EvalConfig(bootstrap=300, seed=3))
    evaluate(gen, tmp_path / "b", EvalConfig(bootstrap=300, seed=3))
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()
    with (tmp_path / "a" / "metrics.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["scope", "metric", "kind", "n", "value", "ci_low", "ci_high", "unit"]
    assert {r["scope"] for r in table} == {"en", "es", "zh", "overall"}
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["models"] == [{"backend": "test"}] and len(metrics["metrics"]) == len(table)
    scored = [json.loads(line) for line in (tmp_path / "a" / "responses.jsonl").read_text().splitlines()]
    assert [s["id"] for s in scored] == [r["id"] for r in sample_rows()]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["seed"] == 3 and run["data"]["generations"]["rows"] == 10


def test_eval_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = write(tmp_path / "g.jsonl", sample_rows())
    assert main(["eval", "--generations", str(gen), "--out", str(tmp_path / "ev"), "--bootstrap", "100",
                 "--set", "langid.min_response=5"]) == 0
    out = capsys.readouterr().out
    assert "Language fidelity" in out and "Modifier pass rate" in out and "overall" in out
    assert "min_response: 5" in (tmp_path / "ev" / "config.yaml").read_text()
    assert main(["eval", "--generations", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "generation file not found" in capsys.readouterr().err
    assert main(["eval", "--generations", str(gen), "--out", str(tmp_path / "y"), "--set", "nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_metrics_do_not_depend_on_the_order_responses_were_generated_in(tmp_path: Path) -> None:
    """vLLM and the local engine finish prompts in different orders: the same responses in another order
    give the same table, row for row (languages sorted, intervals order-free)."""
    rows = sample_rows()
    first = evaluate(write(tmp_path / "a.jsonl", rows), None, EvalConfig(bootstrap=300, seed=1))
    again = evaluate(write(tmp_path / "b.jsonl", rows[::-1]), None, EvalConfig(bootstrap=300, seed=1))
    assert [r.to_dict() for r in first.metrics] == [r.to_dict() for r in again.metrics]
    assert [r.lang for r in first.metrics if r.metric == "responses"] == ["en", "es", "zh", "overall"]
