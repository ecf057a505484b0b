"""Experiment files, grid expansion, and the runner's skip / resume behaviour (with fast fake stages)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import make_parallel, write_rows

from babeltune.config import ConfigError, from_dict
from babeltune.data import ChatRecord
from babeltune.experiments.config import ExperimentConfig, expand_conditions
from babeltune.experiments.results import ResultRow, read_results
from babeltune.experiments.runner import run_experiment
from babeltune.judge import PairQuery, PairVerdict

LANGS = ["en", "es", "sw"]


def experiment(tmp_path: Path, **changes: Any) -> ExperimentConfig:
    train = write_rows(tmp_path / "train.jsonl", make_parallel(12, tuple(LANGS)))
    eval_rows = [{**r, "id": "e" + r["id"], "pid": "e" + r["pid"]} for r in make_parallel(4, tuple(LANGS))]
    evals = write_rows(tmp_path / "eval.jsonl", eval_rows)
    data: dict[str, Any] = {
        "name": "unit", "model": "fake-model", "budget": 6, "languages": LANGS, "eval_languages": LANGS,
        "data": {"train": str(train), "eval": str(evals), "modifiers": None},
        "conditions": [
            {"name": "mono-{lang}", "mixture": {"recipe": "monolingual"}, "vary": {"mixture.lang": ["en", "es"]}},
            {"name": "pinch", "mixture": {"recipe": "pinch", "pinch_count": 2}},
        ],
        "judge": {"kind": "reference", "reference": "mono-en"},
        **changes,
    }
    return from_dict(ExperimentConfig, data)


class PreferLongerJudge:
    """Picks the longer response; equal length: position 1."""

    name = "longer"

    def fingerprint(self) -> str:
        return "longer"

    def judge(self, queries: Sequence[PairQuery], attempt: int = 0) -> list[PairVerdict]:
        return [PairVerdict(1 if len(q.first) >= len(q.second) else 2, "") for q in queries]


class FakePipeline:
    """Stages that write small files and count their calls; `fail_at` raises at a chosen call."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_at = fail_at

    def _count(self, key: str) -> None:
        if key == self.fail_at:
            raise KeyboardInterrupt(f"simulated interruption at {key}")
        self.calls[key] += 1

    def train(self, config: Any, condition: Any, mixture: Path, out_dir: Path) -> dict[str, Any]:
        self._count(f"train:{condition.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        n = len(mixture.read_text().splitlines())
        (out_dir / "model.txt").write_text(condition.name)
        return {"model": str(out_dir), "final_loss": 1.0 / n}

    def generate(self, config: Any, model: str, records: Sequence[ChatRecord], out: Path) -> dict[str, Any]:
        name = Path(model).parent.name
        self._count(f"generate:{name}:{out.stem}")
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = {"mono-en": "", "mono-es": " more", "pinch": " much more words"}[name]
        rows = [{"id": r.id, "pid": r.pid, "lang": r.lang, "prompt": r.prompt, "response": f"answer{extra}",
                 "reference": r.response, "error": None, "finish_reason": "stop"} for r in records]
        out.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return {"rows": len(rows)}

    def evaluate(self, config: Any, condition: str, generations: dict[str, Path]) -> list[ResultRow]:
        self._count(f"evaluate:{condition}")
        return [ResultRow(condition, lang, "correct_language", 1.0, 1.0, 1.0, 4) for lang in [*LANGS, "all"]]

    def pairwise_judge(self, kind: str, config: Any) -> Any:
        return PreferLongerJudge()

    def rubric_judge(self, config: Any) -> Any:
        from babeltune.judge import FunctionBackend, LLMRubricJudge

        def grade(messages: list[dict[str, str]]) -> str:
            self.calls["rubric"] += 1
            helpful = 3 if "much more words" in messages[-1]["content"] else 1
            return json.dumps({"language": 3, "fluency": 2, "helpfulness": helpful, "accuracy": 2,
                               "logical_coherence": 3, "harmlessness": 3})

        return LLMRubricJudge(FunctionBackend(grade, "scripted"))

    def release(self) -> None:
        self.calls["release"] += 1


def test_grid_expansion_names_and_mixtures(tmp_path: Path) -> None:
    cfg = experiment(tmp_path, conditions=[
        {"name": "p{pinch_percent}-lr{lr}", "mixture": {"recipe": "pinch"},
         "vary": {"mixture.pinch_percent": [10, 100], "train.lr": [1e-4, 3e-4]}},
        {"name": "k{k}-{languages}", "mixture": {"recipe": "languages"},
         "vary": {"mixture.languages": [["en"], ["en", "es"]]}},
        {"name": "n{budget}", "mixture": {"recipe": "monolingual", "lang": "en"}, "vary": {"budget": [3, 9]}},
    ])
    conds = expand_conditions(cfg)
    assert [c.name for c in conds] == ["p10-lr0.0001", "p10-lr0.0003", "p100-lr0.0001", "p100-lr0.0003",
                                       "k1-en", "k2-en-es", "n3", "n9"]
    assert conds[1].mixture.pinch_percent == 10 and conds[1].train == {"lr": 3e-4}
    assert conds[5].mixture.languages == ["en", "es"] and conds[5].mixture.budget == 6
    assert conds[7].mixture.budget == 9 and conds[0].mixture.languages == LANGS


def test_grid_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        expand_conditions(experiment(tmp_path, conditions=[
            {"name": "same", "mixture": {"recipe": "monolingual"}, "vary": {"mixture.lang": ["en", "es"]}}]))
    with pytest.raises(ConfigError, match="not a varied key"):
        expand_conditions(experiment(tmp_path, conditions=[{"name": "x-{lang}", "mixture": {"recipe": "uniform"}}]))
    with pytest.raises(ConfigError, match="pinch"):
        expand_conditions(experiment(tmp_path, conditions=[
            {"name": "x", "mixture": {"recipe": "uniform", "pinch_count": 3}}]))
    with pytest.raises(ConfigError, match="vary key"):
        experiment(tmp_path, conditions=[{"name": "x", "mixture": {"recipe": "uniform"}, "vary": {"lr": [1]}}])
    with pytest.raises(ConfigError, match="endpoint"):
        experiment(tmp_path, judge={"kind": "llm"})


def test_run_produces_the_results_table_and_report(tmp_path: Path) -> None:
    cfg = experiment(tmp_path)
    pipe = FakePipeline()
    summary = run_experiment(cfg, tmp_path / "run", pipe, progress=False)
    rows, meta = read_results(tmp_path / "run")
    sxs = {(r.condition, r.lang): r for r in rows if r.metric == "sxs" and r.baseline is None}
    assert sxs[("mono-en", "es")].value == 50.0  # identical responses: ties
    assert sxs[("mono-es", "all")].value == 100.0 and sxs[("mono-es", "all")].n == 12
    assert sxs[("pinch", "sw")].reference == "mono-en" and sxs[("pinch", "sw")].judge == "reference"
    assert {r.condition for r in rows if r.metric == "train_loss"} == {"mono-en", "mono-es", "pinch"}
    assert meta["conditions"] == ["mono-en", "mono-es", "pinch"] and meta["primary_judge"] == "reference"
    assert summary.report is not None and summary.report.exists()
    samples = json.loads((tmp_path / "run" / "samples.json").read_text())
    assert samples["languages"]["es"][0]["responses"]["pinch"] == "answer much more words"
    assert pipe.calls["release"] == 1


def test_rerun_skips_finished_stages(tmp_path: Path) -> None:
    cfg = experiment(tmp_path)
    run_experiment(cfg, tmp_path / "run", FakePipeline(), progress=False, report=False)
    again = FakePipeline()
    summary = run_experiment(cfg, tmp_path / "run", again, progress=False, report=False)
    assert set(again.calls) == {"release"} and summary.ran == []
    # Changing one condition's training redoes that condition from training on, nothing else.
    changed = experiment(tmp_path, conditions=[
        {"name": "mono-{lang}", "mixture": {"recipe": "monolingual"}, "vary": {"mixture.lang": ["en", "es"]}},
        {"name": "pinch", "mixture": {"recipe": "pinch", "pinch_count": 2}, "train": {"lr": 0.5}},
    ])
    third = FakePipeline()
    summary = run_experiment(changed, tmp_path / "run", third, progress=False, report=False)
    assert set(third.calls) == {"train:pinch", "generate:pinch:eval", "evaluate:pinch", "release"}
    assert "pinch:judge:reference" in summary.ran and "mono-es:judge:reference" not in summary.ran


def test_interrupted_run_resumes_without_redoing_finished_work(tmp_path: Path) -> None:
    cfg = experiment(tmp_path)
    crashing = FakePipeline(fail_at="generate:mono-es:eval")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "run", crashing, progress=False)
    assert set(crashing.calls) == {"train:mono-en", "generate:mono-en:eval", "evaluate:mono-en", "train:mono-es"}
    resumed = FakePipeline()
    run_experiment(cfg, tmp_path / "run", resumed, progress=False)
    assert set(resumed.calls) == {"generate:mono-es:eval", "evaluate:mono-es", "train:pinch",
                                  "generate:pinch:eval", "evaluate:pinch", "release"}
    assert all(v == 1 for v in resumed.calls.values())
    fresh_rows, _ = read_results(tmp_path / "run")
    run_experiment(cfg, tmp_path / "fresh", FakePipeline(), progress=False)
    assert [r.to_dict() for r in read_results(tmp_path / "fresh")[0]] == [r.to_dict() for r in fresh_rows]


def test_missing_reference_is_listed_not_scored(tmp_path: Path) -> None:
    cfg = experiment(tmp_path, judge={"kind": "reference", "reference": "mono-{lang}"})
    run_experiment(cfg, tmp_path / "run", FakePipeline(), progress=False, report=False)
    rows, meta = read_results(tmp_path / "run")
    langs = {r.lang for r in rows if r.metric == "sxs" and r.condition == "pinch"}
    assert langs == {"en", "es", "all"}  # no mono-sw condition: sw not judged
    assert meta["no_reference"]["pinch"] == ["sw"]


def test_every_shipped_experiment_loads_expands_and_builds_its_stage_configs() -> None:
    from babeltune.data import build_mixture, load_records
    from babeltune.experiments.cli import experiments_dir, shipped_experiments
    from babeltune.experiments.config import load_experiment
    from babeltune.experiments.training import train_config

    names = shipped_experiments()
    assert {"demo", "demo-quick", "study-a-monolingual", "study-a-pinch", "study-a-seen-unseen",
            "study-a-num-languages", "study-b-lr", "study-b-data-size", "study-a-cpu", "study-c-lens"} <= set(names)
    bundled = load_records("bundled:train").records
    sizes = {}
    for name in names:
        cfg = load_experiment(experiments_dir() / f"{name}.yaml")
        conditions = expand_conditions(cfg)
        for cond in conditions:
            train_config(cfg, cond, Path("mix.jsonl"), Path("out"))
            if cond.method == "tune" and cfg.data.train == "bundled:train":  # the mixture can be drawn
                assert len(build_mixture(bundled, cond.mixture).records) == cond.mixture.budget, (name, cond.name)
        sizes[name] = len(conditions)
    assert sizes["study-a-monolingual"] == 12 and sizes["study-a-pinch"] == 12
    assert sizes["study-a-num-languages"] == 18 and sizes["demo"] == 3
    mono = load_experiment(experiments_dir() / "study-a-monolingual.yaml")
    assert mono.judge.reference_for("sw") == "mono-sw"


def test_rubric_stage_scores_every_eval_response_and_resumes(tmp_path: Path) -> None:
    cfg = experiment(tmp_path, judge={"kind": "reference", "reference": "mono-en", "rubric": True,
                                      "llm": {"endpoint": {"url": "http://127.0.0.1:9/v1"}}})
    pipe = FakePipeline()
    run_experiment(cfg, tmp_path / "run", pipe, progress=False, report=False)
    assert pipe.calls["rubric"] == 3 * 12  # every eval response of the three conditions
    rows, _ = read_results(tmp_path / "run")
    helpful = {r.condition: r.value for r in rows if r.metric == "rubric:helpfulness" and r.lang == "all"
               and r.baseline is None}
    assert helpful == {"mono-en": 1.0, "mono-es": 1.0, "pinch": 3.0}
    again = FakePipeline()
    run_experiment(cfg, tmp_path / "run", again, progress=False, report=False)
    assert again.calls["rubric"] == 0  # cached


def test_progress_estimate_learns_from_finished_units() -> None:
    import io

    from babeltune.experiments.progress import ProgressPlan, Unit, format_duration

    units = [Unit(f"t{i}", f"train {i}", "train", 10.0) for i in range(3)] + [Unit("g", "generate", "generate", 100.0)]
    stream = io.StringIO()
    plan = ProgressPlan(units, stream=stream, priors={"train": 1.0, "generate": 0.5})
    assert plan.remaining_seconds() == pytest.approx(30.0 + 50.0)
    plan.skip("t0")
    assert plan.remaining_seconds() == pytest.approx(20.0 + 50.0)  # skipped: costs nothing
    plan.start("t1")
    plan.finish("t1", seconds=40.0)  # measured: 4 s per example instead of the prior's 1
    assert plan.remaining_seconds() == pytest.approx(40.0 + 50.0)
    text = stream.getvalue()
    assert "[2/4] train 1 (about" in text and "done in 40 s; about 2 min left" in text and "skipped" in text
    assert format_duration(5400) == "1.5 h" and format_duration(600) == "10 min"


def test_second_judge_gives_agreement_rows_and_report_section(tmp_path: Path) -> None:
    cfg = experiment(tmp_path, judge={"kind": "reference", "also": ["llm"], "reference": "mono-en",
                                      "llm": {"endpoint": {"url": "http://127.0.0.1:9/v1"}}})
    summary = run_experiment(cfg, tmp_path / "run", FakePipeline(), progress=False)
    rows, meta = read_results(tmp_path / "run")
    agree = {r.condition: r for r in rows if r.metric == "judge_agreement"}
    assert set(agree) == {"mono-en", "mono-es", "pinch"} and agree["pinch"].value == 1.0
    assert agree["pinch"].judge == "reference vs llm" and agree["pinch"].n == 12
    assert meta["judges"] == ["reference", "llm"]
    assert {r.judge for r in rows if r.metric == "sxs" and r.baseline is None} == {"reference", "llm"}
    assert summary.report is not None and "reference vs llm" in summary.report.read_text()


def test_baseline_key_sets_the_reference_of_the_differences(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"baseline 'nope' is not a condition.*mono-en, mono-es, pinch"):
        expand_conditions(experiment(tmp_path, baseline="nope"))
    run_experiment(experiment(tmp_path, baseline="pinch"), tmp_path / "run", FakePipeline(), progress=False,
                   report=False)
    rows, _ = read_results(tmp_path / "run")
    diffs = [r for r in rows if r.is_difference]
    assert diffs and {r.baseline for r in diffs} == {"pinch"}
    assert {r.condition for r in diffs} == {"mono-en", "mono-es"}
    sxs = {r.condition: r for r in diffs if r.metric == "sxs" and r.lang == "all"}
    # PreferLongerJudge: pinch (longest answers) wins everything, mono-en ties itself: 50 - 100
    assert sxs["mono-en"].value == pytest.approx(-50.0)


def test_run_command_prints_levels_and_differences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    import babeltune.experiments.pipeline as pipeline_module
    from babeltune.cli import main
    from babeltune.config import to_dict

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(to_dict(experiment(tmp_path))), encoding="utf-8")
    monkeypatch.setattr(pipeline_module, "RealPipeline", FakePipeline)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "condition" in out and "correct language %" in out
    assert re.search(r"^pinch\s+0\.\d+\s+\d+\.\d \[\d+\.\d-\d+\.\d\]", out, re.M), out
    assert "minus mono-en" in out or "vs mono-en" in out, out


def test_evaluate_section_chooses_the_identifier_and_reruns_only_evaluation(tmp_path: Path) -> None:
    from babeltune.evaluate import EvalConfig
    from babeltune.experiments.evaluation import evaluation_rows

    with pytest.raises(ConfigError, match="evaluate"):
        experiment(tmp_path, evaluate={"identifer": "fasttext"})
    cfg = experiment(tmp_path, evaluate={"identifier": "fasttext", "compare_identifier": "py3langid"})
    assert isinstance(cfg.evaluate, EvalConfig) and cfg.evaluate.identifier == "fasttext"
    run_experiment(experiment(tmp_path), tmp_path / "run", FakePipeline(), progress=False, report=False)
    again = FakePipeline()
    run_experiment(cfg, tmp_path / "run", again, progress=False, report=False)
    assert not any(k.startswith(("train:", "generate:")) for k in again.calls)
    assert again.calls["evaluate:pinch"] == 1  # a new identifier: the evaluate stage runs again

    mixed = "Der Hund läuft schnell über die grüne Wiese im Park.\nThe dog runs quickly across the green meadow."
    rows = [{"id": f"g{i}", "pid": f"g{i}", "lang": "de", "prompt": "p", "response": text, "error": None,
             "finish_reason": "stop", "completion_tokens": 9}
            for i, text in enumerate([mixed, "Der Hund läuft schnell über die grüne Wiese im Park heute."])]
    (tmp_path / "c" / "generations").mkdir(parents=True)
    gens = write_rows(tmp_path / "c" / "generations" / "eval.jsonl", rows)
    result = {(r.metric, r.lang): r for r in evaluation_rows("c", {"eval": gens}, cfg.evaluate)}
    assert result[("lpr", "de")].value == 0.5 and result[("lpr", "de")].n == 2
    assert result[("identifier_agreement:line_pass:py3langid", "all")].n == 2
