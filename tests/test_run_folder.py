"""One answer to "is there a finished or resumable run here?" (`babeltune.train.runfolder`), asked by
instruction tuning, sweeps, experiments and Lens manipulation training alike."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.train.checkpoint import save_checkpoint
from babeltune.train.loop import StepRecord, TrainingInterrupted
from babeltune.train.runfolder import CheckpointError, numbers_fingerprint, run_status

NUMBERS = {"lr": 0.01, "max_steps": 3, "seed": 0}


def _checkpoint(run: Path, numbers: dict[str, Any]) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(run, 1, model=model, optimizer=optimizer, scheduler=scheduler,
                    fingerprint=numbers_fingerprint(numbers), extra={"config": numbers})


def test_fresh_resumable_and_finished(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_status(run).state == "fresh" and run_status(run).same_numbers(NUMBERS)
    run.mkdir()
    (run / "log.jsonl").write_text("")  # a run killed before its first checkpoint starts afresh
    assert run_status(run).state == "fresh"
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        run_status(run).resume_point(NUMBERS)

    _checkpoint(run, NUMBERS)
    status = run_status(run)
    assert status.state == "resumable" and status.same_numbers(NUMBERS)
    checkpoint, state = status.resume_point(NUMBERS)
    assert checkpoint.name == "step-000001" and state["step"] == 1
    assert not status.same_numbers({**NUMBERS, "lr": 0.02})
    with pytest.raises(CheckpointError, match=r"step-000001 was written by a different configuration \(differs in: "
                                              r"lr, max_steps\)"):
        status.resume_point({**NUMBERS, "lr": 0.02, "max_steps": 4})

    (run / "result.json").write_text(json.dumps({"fingerprint": numbers_fingerprint(NUMBERS), "steps": 3}))
    status = run_status(run)
    assert status.state == "finished" and status.result()["steps"] == 3
    assert status.same_numbers(NUMBERS) and not status.same_numbers({**NUMBERS, "seed": 1})
    assert run_status(run, "summary.json").state == "resumable"  # lens's finished run writes summary.json


def test_a_damaged_checkpoint_is_not_the_same_run_and_its_resume_names_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _checkpoint(run, NUMBERS)
    state_file = run / "checkpoints" / "step-000001" / "state.json"
    state_file.write_text("{torn")
    assert not run_status(run).same_numbers(NUMBERS)  # an experiment moves such a folder aside
    with pytest.raises(CheckpointError, match=r"state\.json: not valid JSON"):
        run_status(run).resume_point(NUMBERS)


def test_train_asks_the_status_and_names_the_fields_a_resume_differs_in(tmp_path: Path) -> None:
    from babeltune.train import train
    from tests.train_helpers import fast_config, save_tiny_model, tiny_data

    model = save_tiny_model(tmp_path / "model")
    data = tiny_data(tmp_path / "mix.jsonl")
    config = fast_config(model, data, tmp_path / "run", max_steps=2)

    def stop(record: StepRecord) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train(config, on_step=stop)
    assert run_status(config.out).state == "resumable"
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(config)
    with pytest.raises(CheckpointError, match=r"differs in: lr\)"):
        train(fast_config(model, data, tmp_path / "run", max_steps=2, lr=5e-3), resume=True)
    train(config, resume=True)
    status = run_status(config.out)
    assert status.state == "finished" and status.same_numbers(config.numbers_dict())


def test_lens_asks_the_status_and_names_the_fields_a_resume_differs_in(tiny_tok: Any, tmp_path: Path) -> None:
    from babeltune.data import read_records
    from babeltune.lens.config import LensOptim, LensTrainConfig, ProbeConfig
    from babeltune.lens.manipulate import manipulate, start_point
    from babeltune.lens.probing import probe
    from babeltune.testing import tiny_model
    from tests.conftest import make_parallel, write_rows

    model = tiny_model(tiny_tok, layers=3)
    data = write_rows(tmp_path / "p.jsonl", make_parallel(12, ("en", "es", "ru")))
    sub = probe(model, tiny_tok, ProbeConfig(data=[str(data)], min_per_language=5, holdout=0.0)).subspace
    records = read_records(data)
    cfg = LensTrainConfig(subspace="x", max_groups=4, batch_size=2, grad_accum=1, max_steps=2, top_layers=1,
                          save_model=False, progress=False, optim=LensOptim(lr=1e-2, warmup_ratio=0.0))
    run = tmp_path / "run"
    assert start_point(run, cfg, resume=False) is None
    manipulate(model, tiny_tok, sub, records, cfg, run)
    assert run_status(run, "summary.json").state == "resumable"  # checkpointed at the end, no summary yet
    with pytest.raises(ValueError, match="holds an interrupted manipulation run: add --resume"):
        manipulate(model, tiny_tok, sub, records, cfg, run)
    other = LensTrainConfig(**{**cfg.__dict__, "top_layers": 2, "max_steps": 3})
    with pytest.raises(CheckpointError, match=r"differs in: max_steps, top_layers\)"):
        manipulate(model, tiny_tok, sub, records, other, run, resume=True)
    assert start_point(run, cfg, resume=True) == run / "checkpoints" / "step-000002"
    (run / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a finished manipulation run"):
        start_point(run, cfg, resume=True)
