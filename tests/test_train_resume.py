"""A run killed with SIGKILL and resumed ends with the same loss curve as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from babeltune.config import dump_yaml
from babeltune.train import CheckpointError, train
from tests.train_helpers import fast_config, losses, save_tiny_model, tiny_data

KILLED_RUN = """
import os, signal, sys
from babeltune.config import load_config
from babeltune.train import TrainConfig, train

config = load_config(TrainConfig, sys.argv[1])

def kill_after(record):
    if record.step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: like kill -9 from outside

train(config, on_step=kill_after)
"""


def test_sigkill_then_resume_gives_the_same_curve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact: every logged loss of the resumed run equals the uninterrupted run's, bit for bit (float32,
    one process, the same kernels), so any difference in dropout masks or data order fails."""
    from babeltune.train import LoraSettings, recipe

    model = save_tiny_model(tmp_path / "model")
    data = tiny_data(tmp_path / "mix.jsonl")  # 12 examples: 3 steps per epoch, so the run crosses epochs
    # Dropout on, so the RNG must resume exactly; the matmul peak measured (as a real run does, once per
    # process: the cache is emptied before each run here), so its random matrices must not disturb it.
    settings = dict(max_steps=7, save_every=2, lora=LoraSettings(r=4, dropout=0.1), peak_tflops=None)
    monkeypatch.setattr(recipe, "_PEAK_CACHE", {})
    reference = train(fast_config(model, data, tmp_path / "reference", **settings))

    config = fast_config(model, data, tmp_path / "killed", **settings)
    config_path = tmp_path / "killed.yaml"
    dump_yaml(config, config_path)
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(config_path), "5"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = tmp_path / "killed"
    assert (run / "checkpoints" / "latest").read_text() == "step-000004"
    assert len(losses(run / "log.jsonl")) == 5  # step 5 was logged, but never checkpointed
    assert not (run / "result.json").exists()

    monkeypatch.setattr(recipe, "_PEAK_CACHE", {})
    resumed = train(config, resume=True)
    assert losses(resumed.log_path) == losses(reference.log_path)
    assert resumed.final_loss == reference.final_loss
    steps = [json.loads(line)["step"] for line in resumed.log_path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7]  # the curve is one piece: the killed step 5 was replaced
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["resumed_from"].endswith("step-000004")


class _Planted:
    """Stands for an object someone pickled into a checkpoint; unpickling it must never happen."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("code ran while loading a checkpoint",))


def test_resume_loads_no_pickled_objects(tmp_path: Path) -> None:
    import torch

    model = save_tiny_model(tmp_path / "model")
    data = tiny_data(tmp_path / "mix.jsonl")
    config = fast_config(model, data, tmp_path / "run", max_steps=2, save_every=1)
    train(config)  # the clean resume through the same loader: test_sigkill_then_resume_gives_the_same_curve
    optimizer_file = tmp_path / "run" / "checkpoints" / "step-000002" / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [], "planted": _Planted()}, optimizer_file)
    with pytest.raises(CheckpointError, match=r"optimizer\.pt: holds pickled objects"):
        train(config, resume=True)


def test_measuring_the_matmul_peak_leaves_the_global_generator_alone() -> None:
    import torch

    from babeltune.train.metrics import measure_matmul_peak

    torch.manual_seed(3)
    before = torch.get_rng_state()
    assert measure_matmul_peak("cpu", torch.float32, size=64, seconds=0.0) > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_resume_drops_a_torn_last_log_line_and_names_a_damaged_one(tmp_path: Path) -> None:
    from babeltune.data import JSONLError
    from babeltune.train.metrics import truncate_log

    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    log.write_text("\n".join(lines) + '\n{"step": 4, "lo', encoding="utf-8")  # killed while writing step 4
    truncate_log(log, 2)
    assert log.read_text(encoding="utf-8") == lines[0] + "\n" + lines[1] + "\n"
    log.write_text(lines[0] + "\n{damaged\n" + lines[2] + "\n", encoding="utf-8")
    with pytest.raises(JSONLError, match=r"log\.jsonl:2: field '<line>': not valid JSON"):
        truncate_log(log, 2)
