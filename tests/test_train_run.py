"""End-to-end `train()` runs on a tiny model: outputs, equivalences, sweeps, bad input, signals, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.cli import main
from babeltune.train import (
    CheckpointError,
    LoraSettings,
    StepRecord,
    TrainDataError,
    TrainingInterrupted,
    train,
    train_sweep,
)
from tests.train_helpers import fast_config, losses, save_tiny_model, tiny_data


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tiny_data(tmp_path / "mix.jsonl", n_pids=1)  # 12 examples, one per language


def test_lora_run_writes_a_complete_loadable_run(tiny_dir: Path, data: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from babeltune.models import load_model

    config = fast_config(tiny_dir, data, tmp_path / "run", max_steps=None, epochs=2, merge=True, tensorboard=True)
    result = train(config)
    run = result.run_dir
    for name in ("run.json", "config.yaml", "data_report.json", "log.jsonl", "result.json",
                 "final/adapter_model.safetensors", "final/adapter_config.json", "final/tokenizer.json",
                 "merged/model.safetensors"):
        assert (run / name).exists(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # 12 examples / 4 per step x 2 epochs
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "supervised_tokens"} <= set(records[0])
    epoch_means = [sum(r["loss"] for r in records if r["epoch"] == e) / 3 for e in (0, 1)]
    assert epoch_means[1] < epoch_means[0]
    assert result.final_loss == records[-1]["loss"]
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["data"]["examples"]["kept"] == 12 and run_info["train"]["fused_loss"] is True

    # The adapter loads through babeltune and plain PEFT; the merged model through plain transformers,
    # and all three compute the same function.
    ids = torch.tensor([[2, 5, 9, 14, 20]])
    adapter = load_model(str(result.weights)).model
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    plain = PeftModel.from_pretrained(base, str(result.weights)).eval()
    merged = AutoModelForCausalLM.from_pretrained(result.merged).eval()
    with torch.no_grad():
        reference = adapter(input_ids=ids).logits
        torch.testing.assert_close(plain(input_ids=ids).logits, reference)
        torch.testing.assert_close(merged(input_ids=ids).logits, reference, rtol=1e-4, atol=1e-4)
        untouched = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()(input_ids=ids).logits
    assert not torch.allclose(untouched, reference, atol=1e-4)  # the adapter changed the model
    # Both carry the chat template they were trained with, in their tokenizer config.
    from babeltune.models.chat import GEMMA_CHAT_TEMPLATE

    for folder in (result.weights, result.merged):
        assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == GEMMA_CHAT_TEMPLATE
    eos = json.loads((result.merged / "generation_config.json").read_text())["eos_token_id"]
    assert isinstance(eos, list) and len(eos) == 2  # <eos> and <end_of_turn>: stops where babeltune stops


def test_full_finetuning_changes_every_weight_and_saves_a_plain_model(tiny_dir: Path, data: Path,
                                                                       tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    result = train(fast_config(tiny_dir, data, tmp_path / "full", method="full", lr=1e-3, max_steps=2))
    before = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(result.weights).state_dict()
    assert set(before) == set(after)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) == len(before)  # trl's check: every trainable parameter really moved


def test_gradient_accumulation_equals_one_big_batch(tiny_dir: Path, data: Path, tmp_path: Path) -> None:
    curves = []
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        result = train(fast_config(tiny_dir, data, tmp_path / f"b{batch}", batch_size=batch, grad_accum=accum))
        curves.append(losses(result.log_path))
    assert curves[1] == pytest.approx(curves[0], abs=1e-5)
    assert curves[2] == pytest.approx(curves[0], abs=1e-5)


def test_bf16_run_tracks_fp32(tiny_dir: Path, data: Path, tmp_path: Path) -> None:
    exact = losses(train(fast_config(tiny_dir, data, tmp_path / "fp32")).log_path)
    low = losses(train(fast_config(tiny_dir, data, tmp_path / "bf16", precision="bf16")).log_path)
    assert low == pytest.approx(exact, rel=2e-2)


def test_lr_sweep_trains_one_model_per_rate(tiny_dir: Path, data: Path, tmp_path: Path) -> None:
    config = fast_config(tiny_dir, data, tmp_path / "sweep", lr_sweep=[1e-3, 3e-2], max_steps=2)
    results = train_sweep(config)
    assert [r.lr for r in results] == [1e-3, 3e-2]
    assert [r.run_dir.name for r in results] == ["lr-1e-03", "lr-3e-02"]
    assert results[0].final_loss != results[1].final_loss
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [s["lr"] for s in summary] == [1e-3, 3e-2]
    assert json.loads((results[1].run_dir / "run.json").read_text())["config"]["lr"] == 3e-2
    again = train_sweep(config, resume=True)  # finished runs are kept, not retrained
    assert [r.final_loss for r in again] == [r.final_loss for r in results]


def test_sigterm_checkpoints_and_resume_finishes_the_same_curve(tiny_dir: Path, data: Path, tmp_path: Path) -> None:
    reference = losses(train(fast_config(tiny_dir, data, tmp_path / "ref", max_steps=5)).log_path)
    config = fast_config(tiny_dir, data, tmp_path / "run", max_steps=5)

    def stop_at_two(record: StepRecord) -> None:
        if record.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="after step 2"):
        train(config, on_step=stop_at_two)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-000002"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was removed
    result = train(config, resume=True)
    assert losses(result.log_path) == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("problem, message", [
    ("empty", "no training records"),
    ("too_long", "no training examples left"),
    ("lora_target", "lora.target_modules: nope_proj not found.*q_proj"),
    ("missing_data", "no training data"),
])
def test_bad_input_fails_before_training(tiny_dir: Path, tmp_path: Path, problem: str, message: str) -> None:
    data = tiny_data(tmp_path / "mix.jsonl")
    overrides: dict[str, Any] = {}
    if problem == "empty":
        data.write_text("")
    elif problem == "too_long":
        overrides = {"max_length": 8, "overflow": "drop"}
    elif problem == "lora_target":
        overrides = {"lora": LoraSettings(target_modules=["q_proj", "nope_proj"])}
    config = fast_config(tiny_dir, data, tmp_path / "run", **overrides)
    if problem == "missing_data":
        config = dataclasses.replace(config, data="")
    with pytest.raises((ValueError, TrainDataError), match=message):
        train(config)
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_resume_refuses_a_different_config_and_fresh_runs_refuse_to_overwrite(tiny_dir: Path, data: Path,
                                                                              tmp_path: Path) -> None:
    config = fast_config(tiny_dir, data, tmp_path / "run", max_steps=1)
    train(config)
    with pytest.raises(CheckpointError, match=r"differs in: lr, max_steps"):
        train(fast_config(tiny_dir, data, tmp_path / "run", max_steps=2, lr=5e-3), resume=True)
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(config)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train(fast_config(tiny_dir, data, tmp_path / "other"), resume=True)
    state_file = tmp_path / "run" / "checkpoints" / "step-000001" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "world_size": 2}))
    with pytest.raises(CheckpointError, match=r"written by 2 process\(es\); resume with as many"):
        train(config, resume=True)


def test_cli_trains_from_yaml_with_overrides(tiny_dir: Path, data: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("method: lora\nlr: 0.01\nmax_steps: 2\nprecision: fp32\nprogress: false\n"
                      "tensorboard: false\npeak_tflops: 0.1\nlora:\n  r: 4\n")
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--model", str(tiny_dir), "--data", str(data), "--out", str(out),
                 "batch_size=2"])
    assert code == 0
    assert "final loss" in capsys.readouterr().out
    saved = json.loads((out / "run.json").read_text())["config"]
    assert saved["lora"]["r"] == 4 and saved["batch_size"] == 2 and saved["max_steps"] == 2
    assert json.loads((out / "final" / "adapter_config.json").read_text())["r"] == 4
    # --resume without --config reads the run's own config.yaml; the run is complete, so nothing is left to do.
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert len(losses(out / "log.jsonl")) == 2
    assert main(["train", "--config", str(config), "--data", str(data), "--out", str(tmp_path / "x"),
                 "overflow=cut"]) == 2
    assert "overflow must be one of" in capsys.readouterr().err


@pytest.mark.integration  # not the default model, but torch.compile takes a minute or two on a small CPU
def test_compiled_layers_train_like_eager(tiny_dir: Path, data: Path, tmp_path: Path) -> None:
    eager = losses(train(fast_config(tiny_dir, data, tmp_path / "eager", max_steps=2)).log_path)
    compiled = train(fast_config(tiny_dir, data, tmp_path / "compiled", max_steps=2, compile=True))
    assert losses(compiled.log_path) == pytest.approx(eager, abs=1e-4)
    assert json.loads((tmp_path / "compiled" / "run.json").read_text())["config"]["compile"] is True
