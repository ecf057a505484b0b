"""`babeltune bench`: lm-evaluation-harness tasks on babeltune's models, offline, on a local task."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lm_eval")

from babeltune.bench.config import BenchConfig
from babeltune.bench.harness import (
    BenchError,
    BenchResult,
    evaluate_model,
    format_rows,
    run_bench,
    task_language,
)
from tests.train_helpers import continuation_loglik

ITEMS = {
    "en": [("The man broke his toe.", "He dropped a hammer on his foot.", "He got a hole in his sock.", 0),
           ("I tipped the bottle.", "The liquid froze.", "The liquid poured out.", 1),
           ("The sun rose.", "It got bright.", "It got dark.", 0),
           ("The girl was thirsty.", "She drank water.", "She went to sleep.", 0)],
    "es": [("El hombre se rompió el dedo.", "Se le cayó un martillo.", "Tenía un agujero en el calcetín.", 0),
           ("Incliné la botella.", "El líquido se congeló.", "El líquido se derramó.", 1),
           ("La niña tenía sed.", "Se fue a dormir.", "Bebió agua.", 1)],
}


def write_task_folder(folder: Path) -> Path:
    """lm-eval task YAMLs over local JSONL files: toycopa_en, toycopa_es and their group toycopa."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang, items in ITEMS.items():
        with open(folder / f"{lang}.jsonl", "w", encoding="utf-8") as handle:
            for premise, one, two, label in items:
                handle.write(json.dumps({"premise": premise, "choice1": one, "choice2": two, "label": label},
                                        ensure_ascii=False) + "\n")
        (folder / f"toycopa_{lang}.yaml").write_text(
            f"task: toycopa_{lang}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {folder / (lang + '.jsonl')}\ntest_split: test\noutput_type: multiple_choice\n"
            'doc_to_text: "{{premise}}"\ndoc_to_choice: "{{[choice1, choice2]}}"\ndoc_to_target: label\n'
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n")
    (folder / "hubcopa_et.yaml").write_text(  # a task whose data would come from the hub
        "task: hubcopa_et\ndataset_path: babeltune-test/not-on-this-machine\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "{{premise}}"\ndoc_to_choice: "{{[a, b]}}"\n'
        "doc_to_target: label\n")
    (folder / "toycopa.yaml").write_text(
        "group: toycopa\ntask:\n  - toycopa_en\n  - toycopa_es\naggregate_metric_list:\n  - metric: acc\n"
        "    weight_by_size: true\nmetadata:\n  version: 1.0\n")
    return folder


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task_folder(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from babeltune.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    return tiny_model(tok), tok


def _bench(model: Any, tok: Any, tasks_dir: Path, steering: Any = None, **kw: Any) -> BenchResult:
    cfg = BenchConfig(tasks=["toycopa"], include_path=str(tasks_dir), batch_size=4, **kw)
    return evaluate_model(model, tok, cfg, {"model": "tiny", "fingerprint": None}, steering)


def _figures(result: BenchResult) -> dict[tuple[str, str], float]:
    return {(row.task, row.metric): row.value for row in result.rows}


def test_accuracy_is_the_hand_count_of_log_likelihoods(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    model, tok = tiny
    result = _bench(model, tok, tasks_dir)
    rows = {(row.task, row.language, row.metric): row for row in result.rows}
    total = 0
    for lang, items in ITEMS.items():
        logged = {s["doc_id"]: s for s in result.samples if s["task"] == f"toycopa_{lang}"}
        hits = 0
        for index, (premise, one, two, label) in enumerate(items):
            lls = [continuation_loglik(model, tok, premise, " " + choice) for choice in (one, two)]
            assert [r[0] for r in logged[index]["responses"]] == pytest.approx(lls, abs=1e-3)
            hits += int(max(range(2), key=lambda i: lls[i]) == label)
        row = rows[(f"toycopa_{lang}", lang, "acc")]
        assert row.value == pytest.approx(hits / len(items)) and row.n == len(items)
        assert row.low <= row.value <= row.high and row.high - row.low > 0
        total += hits
    group = rows[("toycopa", "all", "acc")]
    assert group.group and group.n == 7 and group.value == pytest.approx(total / 7)
    assert 0 < total < 7, "items chosen so that the random tiny model gets some right and some wrong"
    assert set(result.tasks) == {"toycopa", "toycopa_en", "toycopa_es"}
    assert result.tasks["toycopa_en"]["config_sha256"] and result.tasks["toycopa_en"]["items_sha256"]
    assert "toycopa_es  es    acc" in format_rows(result.rows)


def test_steering_at_zero_is_unsteered_and_an_adapter_changes_figures(tiny: tuple[Any, Any], tasks_dir: Path,
                                                                      tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from babeltune.lens.config import SteerConfig
    from babeltune.lens.steering import state_sites
    from babeltune.lens.subspace import LanguageSubspace

    model, tok = tiny
    plain = _bench(model, tok, tasks_dir)
    means = torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    LanguageSubspace.from_means(("en", "es"), "en", means).save(tmp_path / "s")
    zero = _bench(model, tok, tasks_dir, SteerConfig(subspace=str(tmp_path / "s"), coefficient=0.0, layers=[0, 1]))
    assert [s["responses"] for s in zero.samples] == [s["responses"] for s in plain.samples]
    strong = _bench(model, tok, tasks_dir, SteerConfig(subspace=str(tmp_path / "s"), coefficient=50.0, layers=[0, 1]))
    assert [s["responses"] for s in strong.samples] != [s["responses"] for s in plain.samples]
    assert strong.identity["steering"]["lang"] == "per task"
    assert {row.task for row in strong.rows} == {"toycopa_en", "toycopa_es"}  # steered per language: no group row
    assert sum(len(site._forward_hooks) for site in state_sites(model)) == 0

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(model, lora)
    try:
        tuned = _bench(adapted, tok, tasks_dir)
    finally:
        adapted.unload()
    lls = [s["responses"] for s in tuned.samples]
    assert lls != [s["responses"] for s in plain.samples]


def test_same_figures_as_lm_eval_on_the_saved_model(tiny: tuple[Any, Any], tasks_dir: Path, tmp_path: Path) -> None:
    """babeltune bench on a model folder gives what lm-eval's own `hf` model gives on that folder."""
    from lm_eval import evaluator

    from babeltune.bench.harness import task_manager

    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    ours = run_bench(BenchConfig(model=str(tmp_path / "m"), tasks=["toycopa"], include_path=str(tasks_dir),
                                 batch_size=4), tmp_path / "out")
    theirs = evaluator.simple_evaluate(model="hf", model_args={"pretrained": str(tmp_path / "m"), "dtype": "float32"},
                                       tasks=["toycopa"], task_manager=task_manager(str(tasks_dir)),
                                       device="cpu", batch_size=4, bootstrap_iters=0)
    assert theirs is not None
    for row in ours.rows:
        assert row.value == pytest.approx(theirs["results"][row.task][f"{row.metric},{row.filter}"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["identity"]["lm_eval_version"] and saved["identity"]["fingerprint"]
    assert len((tmp_path / "out" / "results.csv").read_text().splitlines()) == 1 + len(ours.rows)
    assert len((tmp_path / "out" / "samples.jsonl").read_text().splitlines()) == 7


def test_task_without_local_data_fails_at_once_naming_it(tasks_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from babeltune.cli import main

    argv = ["bench", "--model", str(tmp_path / "no-model"), "--include-path", str(tasks_dir),
            "--out", str(tmp_path / "o")]
    assert main([*argv, "--tasks", "hubcopa_et"]) == 2  # before the (missing) model is even looked for
    err = capsys.readouterr().err.strip()
    assert err.startswith("babeltune bench: error: task 'hubcopa_et' cannot be loaded offline") and "\n" not in err
    assert main([*argv, "--tasks", "nosuchtask"]) == 2
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
        assert main([*argv, "--tasks", "toycopa"]) == 2
    assert "pip install 'babeltune[harness]'" in capsys.readouterr().err
    with pytest.raises(BenchError, match="no such folder"):
        run_bench(BenchConfig(tasks=["toycopa"], include_path=str(tmp_path / "missing")))


@pytest.mark.parametrize(("name", "lang"), [("xcopa_et", "et"), ("belebele_spa_Latn", "es"), ("mgsm_direct_sw", "sw"),
                                            ("xstorycloze_zh", "zh"), ("toycopa", None), ("arc_easy", None)])
def test_task_language_from_its_name(name: str, lang: str | None) -> None:
    assert task_language(name) == lang


def test_config_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        BenchConfig(batch_size=0)
    with pytest.raises(ValueError, match="limit"):
        BenchConfig(limit=0)
    assert BenchConfig(tasks=[" xcopa ", ""]).tasks == ["xcopa"]


def test_limit_and_few_shot_pass_through(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    model, tok = tiny
    result = _bench(model, tok, tasks_dir, limit=2, num_fewshot=1)
    leaves = {row.task: row.n for row in result.rows if not row.group}
    assert leaves == {"toycopa_en": 2, "toycopa_es": 2}
    assert result.tasks["toycopa_en"]["n_shot"] == 1 and result.identity["settings"]["limit"] == 2


def test_adapter_folder_as_model_and_chat_template(tiny: tuple[Any, Any], tasks_dir: Path, tmp_path: Path) -> None:
    """`--model ADAPTER_FOLDER` loads base + adapter as babeltune does (same figures as the adapted model
    in memory; merged: the same up to rounding); `--chat-template` wraps each context in the template."""
    from peft import LoraConfig, get_peft_model

    from babeltune.testing import tiny_model

    model, tok = tiny
    base = tiny_model(tok)  # a fresh copy: the module's `tiny` stays unadapted
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    adapted = get_peft_model(tiny_model(tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=False))
    adapted.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    adapted.save_pretrained(tmp_path / "adapter")
    in_memory = _bench(adapted, tok, tasks_dir)
    cfg = {"tasks": ["toycopa"], "include_path": str(tasks_dir), "batch_size": 4}
    from_folder = run_bench(BenchConfig(model=str(tmp_path / "adapter"), **cfg))
    assert from_folder.identity["adapter"] and from_folder.identity["fingerprint"]
    for ours, ref in zip(from_folder.samples, in_memory.samples, strict=True):
        assert [r[0] for r in ours["responses"]] == pytest.approx([r[0] for r in ref["responses"]], abs=1e-4)
    merged = run_bench(BenchConfig(model=str(tmp_path / "adapter"), merge_adapter=True, **cfg))
    assert merged.identity["merged_adapter"] is True
    assert _figures(merged) == _figures(from_folder)
    plain = _bench(model, tok, tasks_dir)
    assert [s["responses"] for s in from_folder.samples] != [s["responses"] for s in plain.samples]

    templated = _bench(model, tok, tasks_dir, chat_template=True)
    context = templated.samples[0]["context"]
    assert plain.samples[0]["context"] in ITEMS["en"][0][0] + ITEMS["es"][0][0]
    assert context.startswith("<bos><start_of_turn>user\n") and "<start_of_turn>model\n" in context
    assert any(premise in context for items in ITEMS.values() for premise, *_ in items)
    assert templated.identity["settings"]["chat_template"] is True and templated.identity["chat_template"] == "gemma"
    assert tok.chat_template is None  # restored afterwards


def test_babeltune_bench_command_equals_lm_eval_command(tiny: tuple[Any, Any], tasks_dir: Path,
                                                         tmp_path: Path) -> None:
    """`babeltune bench` and lm-eval's own command line (`python -m lm_eval run --model hf`), offline, on
    the same model folder and local task: the same figure for every task and metric."""
    import csv
    import os
    import subprocess

    from babeltune.cli import main

    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                    f"pretrained={tmp_path / 'm'},dtype=float32", "--tasks", "toycopa", "--include_path",
                    str(tasks_dir), "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "lm")],
                   check=True, env=env, capture_output=True, timeout=600)
    theirs = json.loads(next((tmp_path / "lm").rglob("results_*.json")).read_text())["results"]
    assert main(["bench", "--model", str(tmp_path / "m"), "--tasks", "toycopa", "--include-path", str(tasks_dir),
                 "--batch-size", "4", "--out", str(tmp_path / "ours")]) == 0
    with open(tmp_path / "ours" / "results.csv", encoding="utf-8") as handle:
        ours = list(csv.DictReader(handle))
    assert {row["task"] for row in ours} == {"toycopa", "toycopa_en", "toycopa_es"}
    for row in ours:
        assert float(row["value"]) == pytest.approx(theirs[row["task"]][f"{row['metric']},{row['filter']}"])
