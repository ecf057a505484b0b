"""Manipulation training on a tiny model: the losses as specified, only the top layers change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from babeltune.data import read_records
from babeltune.lens.config import LensOptim, LensTrainConfig, ProbeConfig
from babeltune.lens.manipulate import manipulate
from babeltune.lens.probing import probe
from babeltune.train.metrics import read_log
from tests.conftest import make_parallel, write_rows

LANGS = ("en", "es", "ru", "zh")


@pytest.fixture
def setup(tiny_tok: Any, tmp_path: Path) -> Any:
    from babeltune.testing import tiny_model

    model = tiny_model(tiny_tok, layers=3)
    data = write_rows(tmp_path / "p.jsonl", make_parallel(12, LANGS))
    sub = probe(model, tiny_tok, ProbeConfig(data=[str(data)], min_per_language=5, holdout=0.0)).subspace
    return model, sub, read_records(data)


def _cfg(**kw: Any) -> LensTrainConfig:
    base: dict[str, Any] = dict(subspace="x", max_groups=8, batch_size=2, grad_accum=2, save_model=False,
                                progress=False, optim=LensOptim(lr=1e-2, warmup_ratio=0.0))
    base.update(kw)
    return LensTrainConfig(**base)


def test_first_step_losses_match_the_definition(setup: Any, tiny_tok: Any, tmp_path: Path) -> None:
    model, sub, records = setup
    result = manipulate(model, tiny_tok, sub, records, _cfg(max_steps=1), tmp_path / "run")
    # step 1 starts from the reference model: retain is 0 and each target's language-specific loss is
    # mean((w * delta_t)^2), summed over the three targets
    assert result.first["retain"] == pytest.approx(0.0, abs=1e-10)
    top = sub.n_layers - 1
    expected = sum(float((sub.direction(lang, top) ** 2).mean()) for lang in LANGS if lang != "en")
    assert result.first["specific"] == pytest.approx(expected, rel=1e-4)
    assert result.first["agnostic"] > 0
    log = read_log(tmp_path / "run" / "log.jsonl")
    assert log[0]["tokens"] > 0 and "tokens_per_s" in log[0]


def test_only_the_top_layers_change_and_the_loss_falls(setup: Any, tiny_tok: Any, tmp_path: Path) -> None:
    model, sub, records = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = manipulate(model, tiny_tok, sub, records, _cfg(top_layers=2, max_steps=6), tmp_path / "run")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("model.layers.1.", "model.layers.2.")) for n in changed)
    assert any(n.startswith("model.layers.1.") for n in changed)
    assert result.steps == 6 and result.last["loss"] < result.first["loss"]
    assert all(p.requires_grad for p in model.parameters())  # handed back as it came


def test_bad_training_requests(setup: Any, tiny_tok: Any, tmp_path: Path) -> None:
    model, sub, records = setup
    with pytest.raises(ValueError, match="top_layers=4 but the model has only 3 layers"):
        manipulate(model, tiny_tok, sub, records, _cfg(top_layers=4), tmp_path / "a")
    with pytest.raises(ValueError, match="must include the central language"):
        manipulate(model, tiny_tok, sub, records, _cfg(languages=["es", "ru"]), tmp_path / "b")
    with pytest.raises(ValueError, match="language 'fi' was not probed"):
        manipulate(model, tiny_tok, sub, records, _cfg(languages=["en", "fi"]), tmp_path / "c")


def test_lens_train_command(tiny_tok: Any, tmp_path: Path) -> None:
    import json

    from babeltune.cli import main
    from babeltune.testing import tiny_model

    folder = tmp_path / "tiny"
    tiny_model(tiny_tok, layers=3).save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    data = write_rows(tmp_path / "p.jsonl", make_parallel(12, LANGS))
    assert main(["lens", "probe", "--model", str(folder), "--data", str(data), "--min-per-language", "5",
                 "--out", str(tmp_path / "sub")]) == 0
    run = tmp_path / "run"
    assert main(["lens", "train", "--model", str(folder), "--subspace", str(tmp_path / "sub"), "--data", str(data),
                 "--max-steps", "2", "--set", "progress=false", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["tokens"] > 0 and summary["trainable_params"] > 0
    assert (run / "final" / "model.safetensors").exists() and (run / "run.json").exists()
    from babeltune.models.chat import GEMMA_CHAT_TEMPLATE

    assert json.loads((run / "final" / "tokenizer_config.json").read_text())["chat_template"] == GEMMA_CHAT_TEMPLATE
    # the trained model is another model: its own subspace must be probed (or the check overridden)
    assert main(["lens", "steer", "--model", str(run / "final"), "--steer", str(tmp_path / "sub"),
                 "--prompt", "es:hola", "--max-new-tokens", "2"]) == 2


def test_interrupted_manipulation_resumes_to_the_same_curve(setup: Any, tiny_tok: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import copy
    import os
    import signal

    import babeltune.train.loop as loop
    from babeltune.train.checkpoint import CheckpointError
    from babeltune.train.loop import TrainingInterrupted

    model, sub, records = setup
    start = copy.deepcopy(model.state_dict())
    cfg = _cfg(max_steps=5, save_every=2, top_layers=2)
    reference = manipulate(model, tiny_tok, sub, records, cfg, tmp_path / "reference")
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}

    model.load_state_dict(start)
    real_step = loop.train_step
    calls = []

    def step_then_sigint(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        out = real_step(*args, **kwargs)
        if len(calls) == 3:  # Ctrl-C during step 3: the step finishes, is checkpointed, the run stops
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_sigint)
    with pytest.raises(TrainingInterrupted):
        manipulate(model, tiny_tok, sub, records, cfg, tmp_path / "run")
    monkeypatch.setattr(loop, "train_step", real_step)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-000003"
    with pytest.raises(CheckpointError, match="different configuration"):
        manipulate(model, tiny_tok, sub, records, _cfg(max_steps=6, save_every=2, top_layers=2), tmp_path / "run",
                   resume=True)

    model.load_state_dict(start)  # a fresh process would load the base model again
    resumed = manipulate(model, tiny_tok, sub, records, cfg, tmp_path / "run", resume=True)
    curve = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    assert curve == pytest.approx([r["loss"] for r in read_log(tmp_path / "reference" / "log.jsonl")], abs=1e-6)
    assert resumed.steps == reference.steps == 5 and resumed.last == pytest.approx(reference.last, abs=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, expected[name], rtol=0, atol=1e-6, msg=name)
