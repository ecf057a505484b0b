"""Shared pieces of the training tests (no tests here): a tiny model folder, small data, a fast config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from babeltune.train.config import TrainConfig
from tests.conftest import make_parallel, write_rows


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A tiny Gemma-3 model + tokenizer saved as a folder `load_model` accepts."""
    from babeltune.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_model(tok, seed=seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_data(path: Path, n_pids: int = 1, languages: tuple[str, ...] | None = None) -> Path:
    rows = make_parallel(n_pids, languages) if languages else make_parallel(n_pids)
    return write_rows(path, rows)


def fast_config(model: Path, data: Path, out: Path, **overrides: Any) -> TrainConfig:
    """A float32, quiet, few-step config: exact numbers, no start-up peak measurement."""
    values: dict[str, Any] = dict(
        model=str(model), data=str(data), out=out, lr=1e-2, batch_size=4, max_steps=3, precision="fp32",
        peak_tflops=0.1, progress=False, tensorboard=False, max_length=128,
    )
    values.update(overrides)
    return TrainConfig(**values)


def losses(log_path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in log_path.read_text().splitlines() if line.strip()]


def continuation_loglik(model: Any, tok: Any, context: str, continuation: str) -> float:
    """log P(continuation | context) computed directly with the model, tokenized as a whole and split where
    the context ends (as lm-eval does)."""
    import torch

    ctx = tok(context)["input_ids"]
    whole = tok(context + continuation)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return float(sum(logprobs[pos - 1, whole[pos]] for pos in range(len(ctx), len(whole))))
