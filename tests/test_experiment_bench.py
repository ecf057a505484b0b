"""The experiment's bench stage (lm-evaluation-harness tasks per condition) on the tiny model and a local task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_parallel, write_rows

pytest.importorskip("lm_eval")

from babeltune.bench.config import BenchConfig
from babeltune.config import ConfigError, from_dict
from babeltune.experiments.bench import bench_metric
from babeltune.experiments.config import ExperimentConfig
from babeltune.experiments.results import read_results
from babeltune.experiments.runner import run_experiment

LANGS = ("en", "es")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_bench import write_task_folder

    return write_task_folder(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def experiment_data(tmp_path: Path, model: Path, tasks: Path, **extra: Any) -> dict[str, Any]:
    """A one-condition experiment on the tiny model: LoRA on 4 examples, 2 eval prompts, no judge."""
    train = write_rows(tmp_path / "train.jsonl", make_parallel(4, LANGS))
    evals = [{**r, "id": "e" + r["id"], "pid": "e" + r["pid"]} for r in make_parallel(1, LANGS)]
    return {
        "name": "tiny-bench", "model": str(model), "budget": 4, "languages": list(LANGS),
        "eval_languages": list(LANGS),
        "data": {"train": str(train), "eval": str(write_rows(tmp_path / "eval.jsonl", evals)), "modifiers": None},
        "conditions": [{"name": "uniform", "mixture": {"recipe": "uniform"}}],
        "train": {"method": "lora", "lr": 1e-2, "epochs": 1, "batch_size": 2, "merge": True, "tensorboard": False,
                  "progress": False, "peak_tflops": 0.1, "lora": {"r": 4, "alpha": 8}},
        "generate": {"decoding": {"max_new_tokens": 4}, "local": {"batch_size": 4}},
        "judge": {"kind": "none"},
        "bench": {"tasks": ["toycopa"], "include_path": str(tasks), "batch_size": 4, "bootstrap_iters": 0},
        **extra,
    }


def test_bench_stage_rows_equal_run_bench_and_a_rerun_skips_it(tmp_path: Path, model_dir: Path,
                                                                 tasks_dir: Path) -> None:
    from babeltune.bench.harness import run_bench

    cfg = from_dict(ExperimentConfig, experiment_data(tmp_path, model_dir, tasks_dir))
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir, progress=False, report=True)
    assert "uniform:bench" in summary.ran
    rows, meta = read_results(run_dir)
    ours = {(r.lang, r.metric): r for r in rows if r.metric.startswith("bench:")}
    stages = json.loads((run_dir / "conditions" / "uniform" / "stages.json").read_text())
    tuned = stages["train"]["info"]["model"]
    assert tuned.endswith("merged")
    direct = run_bench(BenchConfig(model=tuned, tasks=["toycopa"], include_path=str(tasks_dir), batch_size=4,
                                   bootstrap_iters=0))
    assert len(ours) == len(direct.rows) == 3  # toycopa_en, toycopa_es and the group
    for row in direct.rows:
        mine = ours[(row.language, bench_metric(row.task, row.metric, row.filter))]
        assert (mine.value, mine.low, mine.high, mine.n) == pytest.approx((row.value, row.low, row.high, row.n))
    assert ("uniform", "es", "bench:toycopa_es:acc") in {(r.condition, r.lang, r.metric) for r in rows}
    bench = meta["bench"]["uniform"]
    assert bench["lm_eval_version"] and bench["tasks"]["toycopa_en"]["config_sha256"]
    assert (run_dir / "conditions" / "uniform" / "bench" / "samples.jsonl").exists()
    assert "lm-evaluation-harness" in (run_dir / "report.html").read_text()
    again = run_experiment(cfg, run_dir, progress=False, report=False)
    assert again.ran == [] and "uniform:bench" in again.skipped
    assert [r.to_dict() for r in read_results(run_dir)[0]] == [r.to_dict() for r in rows]


@pytest.mark.parametrize(("bench", "message"), [
    ({"tasks": []}, "bench.tasks"),
    ({"tasks": ["xcopa"], "model": "x"}, "bench.model is set by the experiment runner"),
    ({"tasks": ["xcopa"], "batch_size": 0}, "batch_size"),
    ({"tasks": ["xcopa"], "shots": 0}, "bench.shots"),
])
def test_bench_section_is_checked_at_load(tmp_path: Path, bench: dict[str, Any], message: str) -> None:
    from babeltune.experiments.config import load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"name": "x", "conditions": [{"name": "a"}], "bench": bench}))
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


SHIPPED = Path(__file__).parent.parent / "babeltune" / "configs" / "experiments" / "study-c-lens.yaml"


def cpu_overrides(tasks: Path) -> list[str]:
    """The `--set` overrides the shipped study-c-lens file's header gives for a CPU run on a local task."""
    import shlex

    line = next(text for text in SHIPPED.read_text().splitlines() if text.startswith("# CPU run on a local task:"))
    words = shlex.split(line.split(":", 1)[1])
    assert words[::2] == ["--set"] * (len(words) // 2)
    return [value.replace("TASK_DIR", str(tasks)) for value in words[1::2]]


def test_study_c_lens_runs_end_to_end_and_each_method_does_its_own_stages(tmp_path: Path, model_dir: Path,
                                                                           tasks_dir: Path) -> None:
    """The shipped study-c-lens experiment, shrunk by its header's overrides, on the tiny model: base, Lens,
    steering and LoRA xSFT each run their own stages; base and steer bench rows equal `run_bench`'s."""
    from babeltune.bench.harness import run_bench
    from babeltune.experiments.config import load_experiment
    from babeltune.lens.config import SteerConfig

    cfg = load_experiment(SHIPPED, [*cpu_overrides(tasks_dir), f"model={model_dir}", "generate.local.batch_size=8",
                                    "lens.grad_accum=2", "train.epochs=1", "probe.per_language=20"])
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir, progress=False, report=True)
    folder = run_dir / "conditions"
    stages = {name: set(json.loads((folder / name / "stages.json").read_text()))
              for name in ("base", "steer", "lens", "xsft")}
    assert stages["base"] == {"generate:eval", "evaluate", "bench"}
    assert stages["steer"] == {"probe", "generate:eval", "evaluate", "bench"}
    assert stages["lens"] == {"probe", "lens", "generate:eval", "evaluate", "bench"}
    assert stages["xsft"] == {"mixture", "train", "generate:eval", "evaluate", "bench"}
    assert not (folder / "base" / "mixture.jsonl").exists() and (folder / "lens" / "lens" / "final").is_dir()
    probes = [(folder / name / "probe" / "subspace.safetensors").read_bytes() for name in ("lens", "steer")]
    assert probes[0] == probes[1]  # probed once (lens), copied for steer
    steered = json.loads((folder / "steer" / "generations" / "eval.jsonl").read_text().splitlines()[0])
    assert steered["model"]["steering"]["coefficient"] == 1.0

    rows, meta = read_results(run_dir)
    fidelity = {(r.condition, r.lang) for r in rows if r.metric == "correct_language" and r.baseline is None}
    assert {(c, "all") for c in stages} <= fidelity and {lang for _, lang in fidelity} <= {*cfg.eval_languages, "all"}
    bench = {(r.condition, r.lang, r.metric): r.value for r in rows if r.metric.startswith("bench:") and not r.baseline}
    assert ("xsft", "en", "bench:toycopa_en:acc") in bench  # English retention
    diffs = {(r.condition, r.lang, r.metric): r for r in rows if r.metric.startswith("bench:") and r.baseline}
    for cond in ("steer", "lens", "xsft"):  # paired over the same documents: the difference of the accuracies
        for lang in ("en", "es"):
            metric = f"bench:toycopa_{lang}:acc"
            diff, level = diffs[(cond, lang, metric)], bench[(cond, lang, metric)] - bench[("base", lang, metric)]
            assert diff.baseline == "base" and diff.value == pytest.approx(level)
            assert diff.low <= diff.value <= diff.high and diff.high > diff.low
    assert not any(metric == "bench:toycopa:acc" for _, _, metric in diffs)  # a group has no per-item samples
    assert "Second line: the condition minus base" in (run_dir / "report.html").read_text()
    settings = {"tasks": ["toycopa"], "include_path": str(tasks_dir), "batch_size": 8}
    base = run_bench(BenchConfig(model=str(model_dir), **settings))
    steer = SteerConfig(subspace=str(folder / "steer" / "probe"), coefficient=1.0, layers=[-1])
    steer_direct = run_bench(BenchConfig(model=str(model_dir), steer=steer, **settings), steering=steer)
    for cond, result in (("base", base), ("steer", steer_direct)):
        assert {(r.language, bench_metric(r.task, r.metric)): r.value for r in result.rows} == {
            (lang, metric): value for (c, lang, metric), value in bench.items() if c == cond}
    assert meta["bench"]["steer"]["steering"]["coefficient"] == 1.0
    lens_samples = (folder / "lens" / "bench" / "samples.jsonl").read_text()
    assert lens_samples != (folder / "base" / "bench" / "samples.jsonl").read_text()  # the trained model differs

    tokens = {r.condition: r.value for r in rows if r.metric == "train_tokens"}
    assert set(tokens) == {"lens", "xsft"} and all(value > 0 for value in tokens.values())
    compute = meta["compute"]
    assert compute["base"]["model_seconds"] == 0.0 and "train_tokens" not in compute["base"]
    for cond in ("steer", "lens", "xsft"):
        assert compute[cond]["model_seconds"] > 0
    assert compute["steer"]["probe_copied_from"] == "lens" and "probe_copied_from" not in compute["lens"]
    assert compute["steer"]["model_seconds"] == pytest.approx(compute["lens"]["stages"]["probe"], abs=1e-3)
    assert compute["lens"]["train_tokens"] == tokens["lens"] and set(compute["lens"]["stages"]) == stages["lens"]
    assert meta["condition_info"]["base"]["mixture"] == "the base model, untuned"
    report = (run_dir / "report.html").read_text()
    assert "Compute" in report and "toycopa_es" in report
    assert run_experiment(cfg, run_dir, progress=False, report=False).ran == []


def test_study_c_lens_as_shipped_is_gpu_sized_on_the_published_tasks() -> None:
    from babeltune.experiments.config import expand_conditions, load_experiment

    cfg = load_experiment(SHIPPED)
    assert cfg.bench is not None and cfg.bench.tasks == ["xcopa", "xstorycloze", "xwinograd", "m_mmlu"]
    assert cfg.bench.device == "cuda" and cfg.generate.local.device == "cuda"
    assert [(c.name, c.method) for c in expand_conditions(cfg)] == [
        ("base", "base"), ("lens", "lens"), ("steer", "steer"), ("xsft", "tune")]
    assert "en" in cfg.eval_languages


@pytest.mark.parametrize(("condition", "extra", "message"), [
    ({"name": "b", "method": "base", "mixture": {"recipe": "uniform"}}, {}, "method base takes no mixture"),
    ({"name": "b", "method": "tune", "mixture": {"recipe": "uniform"}, "steer": {"coefficient": 2}}, {},
     "method tune takes no steer"),
    ({"name": "s-{lr}", "method": "steer", "vary": {"train.lr": [1.0]}}, {}, "method steer takes no train"),
    ({"name": "s", "method": "steer"}, {"steer": {"strength": 2}}, "steer.strength"),
    ({"name": "s", "method": "steer"}, {"steer": {"subspace": "x"}}, "steer.subspace is set by the experiment runner"),
    ({"name": "s", "method": "steer"}, {"generate": {"backend": "vllm"}}, "needs generate.backend local"),
    ({"name": "l", "method": "lens", "lens": {"top_layers": 0}}, {}, "top_layers"),
    ({"name": "l", "method": "lens"}, {"probe": {"model": "x"}}, "probe.model is set by the experiment runner"),
    ({"name": "l", "method": "lens"}, {"languages": ["es", "ru"]}, "central language"),
    ({"name": "l", "method": "magic"}, {}, "method"),
    ({"name": "t", "mixture": {"recipe": "uniform"}}, {"steer": {"strength": 2}}, "steer.strength"),
    ({"name": "t", "mixture": {"recipe": "uniform"}}, {"lens": {"lr": 1}}, "lens.lr"),
])
def test_condition_methods_are_checked_at_load(tmp_path: Path, condition: dict[str, Any], extra: dict[str, Any],
                                               message: str) -> None:
    from babeltune.experiments.config import load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"name": "x", "conditions": [condition], **extra}))
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_list_names_each_conditions_method(capsys: pytest.CaptureFixture[str]) -> None:
    from babeltune.cli import main

    assert main(["run", "study-c-lens", "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "method base" in lines["base"] and "method steer" in lines["steer"] and "method lens" in lines["lens"]
    assert "uniform" in lines["xsft"] and "budget=160" in lines["xsft"]
