"""Lens on the real default model (gemma-3-270m): probe, steer, train one step, multiple choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.data import read_records
from babeltune.lens import ProbeConfig, evaluate_mc, probe, steer
from babeltune.lens.config import LensOptim, LensTrainConfig
from babeltune.lens.manipulate import manipulate
from babeltune.lens.mc import MCItem
from tests.conftest import make_parallel, write_rows

pytestmark = pytest.mark.integration
LANGS = ("en", "es", "ru")


@pytest.fixture(scope="module")
def default() -> Any:
    from babeltune.models import load_model

    return load_model("gemma-3-270m")


def test_probe_steer_train_mc_on_the_default_model(default: Any, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "p.jsonl", make_parallel(6, LANGS))
    result = probe(default.model, default.tokenizer, ProbeConfig(data=[str(data)], min_per_language=4, holdout=0.0))
    sub = result.subspace
    assert (sub.n_layers, sub.hidden_size, sub.rank) == (18, 640, 2)
    sub.check_model(default.model)

    ids = torch.tensor([default.tokenizer("¿Cómo estás?")["input_ids"]])
    with torch.no_grad():
        plain = default.model.generate(ids, max_new_tokens=3, do_sample=False)
        with steer(default.model, sub, coefficient=0.0, layers=[-1, 9], lang="es"):
            same = default.model.generate(ids, max_new_tokens=3, do_sample=False)
        with steer(default.model, sub, mode="project", coefficient=1.0, layers=[9]):
            edited = default.model(ids).logits
        base = default.model(ids).logits
    assert torch.equal(plain, same) and not torch.allclose(edited, base)

    items = [MCItem("a", "en", "The capital of France is", ("Paris", "a banana"), 0)]
    assert evaluate_mc(default.model, default.tokenizer, items).summary.overall["acc"] == 1.0

    cfg = LensTrainConfig(subspace="x", max_groups=2, batch_size=1, grad_accum=2, top_layers=1, max_steps=1,
                          save_model=False, progress=False, optim=LensOptim(warmup_ratio=0.0))
    out = manipulate(default.model, default.tokenizer, sub, read_records(data), cfg, tmp_path / "run")
    assert out.steps == 1 and out.first["specific"] > 0 and out.trainable_params > 0
