"""`train.launcher: accelerate` inside `babeltune run`: a condition's training as a child `accelerate
launch` (2 CPU processes over gloo here) writes the run folder the in-process launcher writes, with the
single-process losses at the same global batch; a failing launch is reported with its exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from babeltune.config import from_dict
from babeltune.experiments.config import ExperimentConfig, expand_conditions
from babeltune.experiments.training import run_training
from tests.train_helpers import losses, save_tiny_model, tiny_data

LANGS = ("en", "es", "it", "cs", "et", "fi", "ru", "sw", "ar")  # 9 examples: steps of 4, 4, 1
REPO = Path(__file__).parent.parent


def experiment(model: Path, **train: Any) -> ExperimentConfig:
    options = {"method": "lora", "lr": 1e-2, "max_steps": 4, "precision": "fp32", "peak_tflops": 0.1,
               "progress": False, "tensorboard": False, "max_length": 128, **train}
    return from_dict(ExperimentConfig, {
        "name": "launch", "model": str(model), "budget": 9, "languages": list(LANGS),
        "conditions": [{"name": "uniform", "mixture": {"recipe": "uniform"}}], "train": options})


@pytest.fixture
def quiet_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(REPO)


@pytest.mark.usefixtures("quiet_cpu")
def test_accelerate_launcher_matches_in_process_losses(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    mixture = tiny_data(tmp_path / "mix.jsonl", languages=LANGS)
    single_cfg = experiment(model, batch_size=2, grad_accum=2)
    single = run_training(single_cfg, expand_conditions(single_cfg)[0], mixture, tmp_path / "single" / "train")
    ddp_cfg = experiment(model, batch_size=1, grad_accum=2, launcher="accelerate", num_processes=2,
                         accelerate_config="examples/accelerate_ddp.yaml",
                         accelerate_args=["--main_process_port", "0"])
    out = tmp_path / "ddp" / "train"
    ddp = run_training(ddp_cfg, expand_conditions(ddp_cfg)[0], mixture, out)
    assert losses(out / "log.jsonl") == pytest.approx(losses(tmp_path / "single" / "train" / "log.jsonl"), abs=1e-5)
    assert ddp["steps"] == single["steps"] == 4 and ddp["adapter"] == str(out / "final")
    assert (out / "final" / "adapter_config.json").exists()
    # Run again: the finished run is reused, not relaunched.
    (tmp_path / "ddp" / "train.launch.log").unlink()
    assert run_training(ddp_cfg, expand_conditions(ddp_cfg)[0], mixture, out) == ddp
    assert not (tmp_path / "ddp" / "train.launch.log").exists()


@pytest.mark.usefixtures("quiet_cpu")
def test_failed_launch_names_the_exit_code_and_shows_the_output(tmp_path: Path) -> None:
    mixture = tiny_data(tmp_path / "mix.jsonl", languages=LANGS)
    cfg = experiment(tmp_path / "no-such-model", launcher="accelerate", num_processes=1)
    with pytest.raises(RuntimeError, match=r"failed \(exit code [1-9]") as info:
        run_training(cfg, expand_conditions(cfg)[0], mixture, tmp_path / "run" / "train")
    message = str(info.value)
    assert "train.launch.log" in message and "babeltune train: error: cannot load" in message
    assert "Traceback" not in message
