"""Paired differences between conditions in the experiment's results table (babeltune.experiments.results)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from babeltune.evaluate.metrics import ScoredResponse
from babeltune.experiments.results import (
    ResultRow,
    choose_baseline,
    difference_rows,
    format_differences,
    pivot,
    read_results,
    write_results,
)

LANGS = ("en", "es", "fi")


def scored(pid: str, lang: str, correct: bool, length: int) -> dict[str, object]:
    return ScoredResponse(
        id=f"{pid}-{lang}", pid=pid, lang=lang, expected_lang=lang, failed=False, error=None, finish_reason="stop",
        detected_lang=lang if correct else "en", lang_confidence=0.9, lang_status="correct" if correct else "wrong",
        lang_reason="", code_switch_rate=0.0, segments=1, modifier_kind=None, modifier_passed=None,
        modifier_reason="", modifier_invalid=False, length=length, length_unit="words", completion_tokens=length,
        line_pass=correct,
    ).to_dict()


def write_condition(run: Path, name: str, correct: list[bool], lengths: list[int], outcomes: list[str]) -> None:
    root = run / "conditions" / name
    (root / "eval" / "eval").mkdir(parents=True)
    (root / "judge").mkdir(parents=True)
    items = [(f"p{i}", lang) for i in range(len(correct) // len(LANGS)) for lang in LANGS]
    lines = [json.dumps(scored(pid, lang, c, n)) for (pid, lang), c, n in zip(items, correct, lengths, strict=True)]
    (root / "eval" / "eval" / "responses.jsonl").write_text("\n".join(lines) + "\n")
    judged = [{"id": f"{pid}-{lang}", "pid": pid, "lang": lang, "outcome": o}
              for (pid, lang), o in zip(items, outcomes, strict=True)]
    (root / "judge" / "reference.jsonl").write_text("".join(json.dumps(j) + "\n" for j in judged))
    (root / "judge" / "reference.cache.jsonl").write_text("")


def test_differences_exclude_zero_on_a_clear_case_and_include_it_on_noise(tmp_path: Path) -> None:
    n = 30 * len(LANGS)
    write_condition(tmp_path, "base", [False] * n, [100] * n, ["tie"] * n)
    # "better" answers every prompt in the right language; its SxS outcomes are noise around a tie.
    rng = random.Random(0)
    noise = [rng.choice(["win", "loss", "tie", "tie"]) for _ in range(n)]
    write_condition(tmp_path, "better", [True] * n, [100 + (i % 4) * 2 - 3 for i in range(n)], noise)
    rows = difference_rows([ResultRow("better", "all", "sxs", 50.0, judge="reference")], tmp_path,
                           ["base", "better"], seed=0)
    table = {(r.condition, r.lang, r.metric): r for r in rows}
    assert all(r.baseline == "base" for r in rows) and {r.condition for r in rows} == {"better"}
    right = table[("better", "all", "correct_language")]
    assert right.value == 1.0 and right.n == n and right.excludes_zero()
    assert table[("better", "es", "correct_language")].n == 30
    assert table[("better", "all", "lpr")].value == 1.0
    sxs = table[("better", "all", "sxs")]
    assert abs(sxs.value) < 10 and sxs.low < 0 < sxs.high and not sxs.excludes_zero() and sxs.judge == "reference"
    length = table[("better", "all", "response_words")]
    assert length.low is not None and length.high is not None and length.low < 0 < length.high
    assert ("better", "all", "train_loss") not in table  # not a mean over prompts
    # Seeded: the same inputs give the same rows.
    again = difference_rows([ResultRow("better", "all", "sxs", 50.0, judge="reference")], tmp_path,
                            ["base", "better"], seed=0)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in rows]


def test_differences_only_count_shared_prompts_and_round_trip(tmp_path: Path) -> None:
    n = 4 * len(LANGS)
    write_condition(tmp_path, "a", [True] * n, [10] * n, ["win"] * n)
    write_condition(tmp_path, "b", [True] * (n - 3), [10] * (n - 3), ["win"] * (n - 3))
    rows = difference_rows([], tmp_path, ["a", "b"], baseline="b", seed=1)
    shared = {r.metric: r.n for r in rows if r.lang == "all"}
    assert shared["correct_language"] == n - 3 and {r.condition for r in rows} == {"a"}
    write_results([ResultRow("a", "all", "correct_language", 1.0, 0.8, 1.0, n), *rows], tmp_path)
    back, _ = read_results(tmp_path)
    assert [r.to_dict() for r in back[1:]] == [r.to_dict() for r in rows]
    assert set(pivot(back, "correct_language")["a"]) == {"all"}  # levels only
    assert "es" in pivot(back, "correct_language", differences=True)["a"]
    csv_header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert csv_header[-1] == "baseline"


def test_baseline_choice_and_printed_table() -> None:
    assert choose_baseline(["x", "y"]) == "x" and choose_baseline(["x", "y"], "y") == "y"
    assert choose_baseline(["x", "y"], "mono-{lang}") == "x" and choose_baseline([]) is None
    rows = [ResultRow("y", "all", "correct_language", 0.25, 0.1, 0.4, 40, baseline="x"),
            ResultRow("y", "all", "modifier", -0.05, -0.2, 0.1, 40, baseline="x")]
    text = format_differences(rows, [("correct_language", "right language (pp)", 100.0),
                                     ("modifier", "modifiers (pp)", 100.0), ("sxs", "SxS", 1.0)])
    lines = text.splitlines()
    assert lines[0].startswith("Paired differences vs x") and "SxS" not in lines[1]
    assert "+25.0 [+10.0, +40.0]*" in lines[3] and "-5.0 [-20.0, +10.0]" in lines[3]
    assert not lines[3].endswith("*")
    assert format_differences([], [("sxs", "SxS", 1.0)]) == ""


def test_judge_scored_modifiers_are_graded_by_the_rubric_judge_and_differenced(tmp_path: Path) -> None:
    from babeltune.experiments.judging import judged_modifier_rows
    from babeltune.experiments.layout import ConditionPaths
    from babeltune.judge import LLMRubricJudge
    from babeltune.judge.llm import FunctionBackend

    good = {"language": 3, "fluency": 3, "helpfulness": 3, "accuracy": 3, "logical_coherence": 3, "harmlessness": 3}

    def fake(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        return json.dumps({**good, "modifier": 3 if "FORMAL" in text else 1})

    judge = LLMRubricJudge(FunctionBackend(fake))
    cfg: Any = SimpleNamespace(judge=SimpleNamespace(retries=1, batch_size=8), seed=0)  # the fields it reads
    for name, style in (("base", "chatty"), ("formal", "FORMAL")):
        paths = ConditionPaths.of(tmp_path, name)
        paths.generations("modifiers").parent.mkdir(parents=True)
        rows = [{"id": f"m{i}-{lang}", "pid": f"m{i}", "lang": lang, "prompt": "Explain tea scientifically.",
                 "response": f"{style} answer {i}", "finish_reason": "stop", "error": None,
                 "modifier": {"kind": kind}}
                for i, kind in enumerate(["scientific_style", "simple_style", "list_items"]) for lang in ("en", "es")]
        rows[-1]["modifier"] = {"kind": "list_items", "n": 2}
        paths.generations("modifiers").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (paths.root / "judge").mkdir()
        out = judged_modifier_rows(paths, judge, cfg)
        by = {(r.lang, r.metric): r for r in out}
        assert set(by) == {(lang, f"modifier_judge:{k}") for lang in ("en", "es", "all")
                           for k in ("scientific_style", "simple_style")}  # the rule-checked kind is not graded
        assert by[("all", "modifier_judge:scientific_style")].n == 2
        assert by[("all", "modifier_judge:scientific_style")].value == (3.0 if style == "FORMAL" else 1.0)
    diffs = difference_rows([], tmp_path, ["base", "formal"], seed=0)
    pooled = next(r for r in diffs if r.metric == "modifier_judge:scientific_style" and r.lang == "all")
    assert pooled.value == 2.0 and pooled.n == 2 and pooled.baseline == "base"


def test_report_shows_the_differences_and_marks_those_excluding_zero(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from babeltune.report import build_report

    rows = [ResultRow("x", "all", "correct_language", 0.5, 0.3, 0.7, 40),
            ResultRow("y", "all", "correct_language", 0.8, 0.65, 0.9, 40),
            ResultRow("y", "all", "correct_language", 0.3, 0.1, 0.5, 40, baseline="x"),
            ResultRow("y", "all", "lpr", -0.05, -0.2, 0.1, 40, baseline="x")]
    write_results(rows, tmp_path, {"conditions": ["x", "y"], "languages": ["en"]})
    page = build_report(tmp_path).read_text()
    assert "Differences from x" in page
    assert "<td class='num excludes-zero'>+30.0 [+10.0, +50.0]*</td>" in page
    assert "<td class='num'>-5.0 [-20.0, +10.0]</td>" in page


def test_one_row_type_whose_missing_numbers_are_none(tmp_path: Path) -> None:
    """Evaluation and experiments share `ResultRow`; a NaN from the statistics becomes None, written as an
    empty CSV cell and JSON null, in each file's own columns."""
    from babeltune.tidy import METRIC_COLUMNS, RESULT_COLUMNS

    row = ResultRow("c", "all", "x", float("nan"), float("nan"), None, 0, kind="k")
    assert (row.value, row.low, row.high) == (None, None, None)
    write_results([row], tmp_path)
    assert (tmp_path / "results.csv").read_text().splitlines() == [",".join(RESULT_COLUMNS), "c,all,x,,,,0,0,,,"]
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == [row.to_dict()]
    assert list(row.to_metric_dict()) == [column for column, _ in METRIC_COLUMNS]
    assert row.to_metric_dict()["ci_low"] is None and row.to_metric_dict()["scope"] == "all"
