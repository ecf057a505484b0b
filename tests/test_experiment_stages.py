"""Typed experiment stages: every section of an experiment file is checked when it is loaded, so
`babeltune run EXP --list` refuses a typo or a wrong type anywhere, naming the file and the dotted key,
before any compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from babeltune.cli import main
from babeltune.config import ConfigError
from babeltune.experiments.config import expand_conditions, load_experiment


def write_experiment(tmp_path: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "name": "typed", "budget": 6, "languages": ["en", "es"], "eval_languages": ["en", "es"],
        "conditions": [{"name": "mono-{lang}", "mixture": {"recipe": "monolingual"},
                        "vary": {"mixture.lang": ["en", "es"]}}],
        "train": {"method": "lora", "lr": 1.0e-4, "lora": {"r": 4}},
        "generate": {"decoding": {"max_new_tokens": 16}, "local": {"batch_size": 4}},
        "judge": {"kind": "reference", "reference": "mono-en"},
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def list_errors(path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    args = ["run", str(path), "--list"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("changes", "key"), [
    ({"generate__local__batchsize": 4}, "generate.local.batchsize"),
    ({"generate__local__batch_size": "many"}, "generate.local.batch_size"),
    ({"generate__decoding__temprature": 0.5}, "generate.decoding.temprature"),
    ({"generate__backend": "vllmm"}, "generate.backend"),
    ({"generate__vllm__tensor_parallel": 2}, "generate.vllm.tensor_parallel"),
    ({"train__lrr": 1.0e-4}, "train.lrr"),
    ({"train__lr": "fast"}, "train.lr"),
    ({"train__lora__rank": 4}, "train.lora.rank"),
    ({"train__launcher": "slurm"}, "train.launcher"),
    ({"train__model": "other"}, "train.model"),
    ({"judge__kind": "llm-judge"}, "judge.kind"),
    ({"judge__offline__weight": 1}, "judge.offline.weight"),
    ({"data__eval_per_lang": 2}, "data.eval_per_lang"),
])
def test_list_refuses_a_bad_key_or_type_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], key: str,
) -> None:
    path = write_experiment(tmp_path, **changes)
    err = list_errors(path, capsys)
    assert str(path) in err and key in err


def test_condition_train_overlays_and_varied_values_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    typo = write_experiment(tmp_path, conditions=[
        {"name": "en", "mixture": {"recipe": "monolingual", "lang": "en"}, "train": {"epoch": 2}}])
    err = list_errors(typo, capsys)
    assert str(typo) in err and "conditions[0].train.epoch" in err
    varied = write_experiment(tmp_path, conditions=[
        {"name": "lr{lr}", "mixture": {"recipe": "monolingual", "lang": "en"},
         "vary": {"train.lr": [1.0e-4, "fast"]}}])
    err = list_errors(varied, capsys)
    assert str(varied) in err and "condition lrfast" in err and "train.lr must be a number" in err
    nested = write_experiment(tmp_path, conditions=[
        {"name": "r{rr}", "mixture": {"recipe": "monolingual", "lang": "en"}, "vary": {"train.lora.rr": [4, 8]}}])
    err = list_errors(nested, capsys)
    assert "train.lora.rr" in err


def test_overrides_are_checked_and_set_typed_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path)
    err = list_errors(path, capsys, "generate.local.batchsize=3")
    assert "generate.local.batchsize" in err
    cfg = load_experiment(path, ["generate.backend=vllm", "generate.vllm.gpu_memory_utilization=0.2",
                                 "train.launcher=accelerate", "train.num_processes=2"])
    assert cfg.generate.backend == "vllm" and cfg.generate.vllm.gpu_memory_utilization == 0.2
    assert expand_conditions(cfg)[0].launch.num_processes == 2
    assert main(["run", str(path), "--list", "--set", "generate.backend=vllm"]) == 0
    assert "mono-en" in capsys.readouterr().out


def test_max_new_tokens_shorthand_is_honoured_not_ignored(tmp_path: Path) -> None:
    # The module docstring's own example: `generate: {max_new_tokens: 128}` (it used to run at 512).
    path = write_experiment(tmp_path, generate={"max_new_tokens": 128})
    cfg = load_experiment(path)
    assert cfg.generate.decoding.max_new_tokens == 128
    assert load_experiment(path, ["generate.decoding.max_new_tokens=128"]).generate.decoding.max_new_tokens == 128
    with pytest.raises(ConfigError, match="disagree"):
        load_experiment(path, ["generate.decoding.max_new_tokens=64"])
    # Other decoding keys written directly under generate: refused, saying where they go.
    wrong = write_experiment(tmp_path, generate={"temperature": 0.7})
    with pytest.raises(ConfigError, match=r"generate\.decoding\.temperature") as info:
        load_experiment(wrong)
    assert str(wrong) in str(info.value)


def test_endpoint_backend_needs_an_endpoint(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, generate={"backend": "endpoint"})
    with pytest.raises(ConfigError, match=r"generate\.endpoint\.url") as info:
        load_experiment(path)
    assert str(path) in str(info.value)
    cfg = load_experiment(path, ["generate.endpoint.url=http://127.0.0.1:8000/v1"])
    assert cfg.generate.endpoint is not None and cfg.generate.endpoint.url.endswith("/v1")
    # The server serves adapters on its base model: a full fine-tune cannot be generated there.
    with pytest.raises(ConfigError, match="condition mono-en trains a full model"):
        load_experiment(path, ["generate.endpoint.url=http://127.0.0.1:8000/v1", "train.method=full"])


def test_stage_typo_fails_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: a typo in generate.local used to fail only after the first condition had trained, and
    without the file's name. Now the run stops at load time: no run folder is even created."""
    path = write_experiment(tmp_path, generate__local__dtyp="bfloat16")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "generate.local.dtyp" in err
    assert not out.exists()


def test_changed_generation_settings_regenerate_and_keep_the_old_file(tmp_path: Path) -> None:
    from test_experiments import FakePipeline, experiment

    from babeltune.experiments.runner import run_experiment

    run_experiment(experiment(tmp_path), tmp_path / "run", FakePipeline(), progress=False, report=False)
    again = FakePipeline()
    changed = experiment(tmp_path, generate={"decoding": {"max_new_tokens": 7}})
    run_experiment(changed, tmp_path / "run", again, progress=False, report=False)
    assert again.calls["generate:pinch:eval"] == 1 and again.calls["train:pinch"] == 0
    gens = tmp_path / "run" / "conditions" / "pinch" / "generations"
    assert (gens / "eval.stale-1.jsonl").exists() and (gens / "eval.jsonl").exists()
