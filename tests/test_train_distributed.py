"""The same `babeltune train` command under `accelerate launch` with 2 CPU processes (DDP over gloo)
gives the losses of the single-process run at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from babeltune.config import dump_yaml
from babeltune.train import train
from tests.train_helpers import fast_config, losses, save_tiny_model, tiny_data

LANGS = ("en", "es", "it", "cs", "et", "fi", "ru", "sw", "ar")  # 9 examples: steps of 4, 4, 1


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    data = tiny_data(tmp_path / "mix.jsonl", languages=LANGS)
    # Single process: 2 examples x 2 micro-batches = 4 per step.
    single = train(fast_config(model, data, tmp_path / "single", batch_size=2, grad_accum=2, max_steps=4))

    # Two processes: 1 example each x 2 micro-batches = 4 per step. The epoch's last step has one
    # example, so the second process runs an empty share (nothing to predict) to keep DDP in step.
    config = fast_config(model, data, tmp_path / "ddp", batch_size=1, grad_accum=2, max_steps=4)
    config_path = tmp_path / "ddp.yaml"
    dump_yaml(config, config_path)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "babeltune.cli", "train", "--config", str(config_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False,
                          cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run_info["train"]["processes"] == 2 and run_info["train"]["global_batch"] == 4
    assert losses(tmp_path / "ddp" / "log.jsonl") == pytest.approx(losses(single.log_path), abs=1e-5)
    records = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["examples"] for r in records] == [4, 4, 1, 4]
