"""Training metrics: FLOPs of a step, MFU against a measured matmul peak, peak memory, and the logger
(JSONL in the run folder, TensorBoard, a progress bar with ETA).

FLOPs count the matrix products the objective needs, not what an implementation happens to execute:

- every linear layer of the body, per real (non-padding) token: 2 x params forward, 2 x params for the
  gradient with respect to its input, and 2 x params for its weight gradient only where trainable
  (LoRA: the adapters; full fine-tuning: everything);
- attention scores and values, causal, within each example: 2 x heads x head_dim x L(L+1) per layer
  forward, 3x that in training;
- the LM head only at supervised positions: 2 x V x D forward, the same for the input gradient, and
  again when the head is trained.

The same count is used for every system a benchmark compares, so MFU ratios equal throughput ratios.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from babeltune.data.jsonl import JSONLError, iter_jsonl, iter_jsonl_rows
from babeltune.models.anatomy import lm_head, text_config, unwrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlopsModel:
    """What the FLOP count of a training step depends on (see the module docstring)."""

    body_linear_params: int
    trainable_body_linear_params: int
    layers: int
    heads: int
    head_dim: int
    vocab: int
    hidden: int
    head_trained: bool

    @classmethod
    def from_model(cls, lm: Any) -> FlopsModel:
        """Read the sizes from a (possibly PEFT-wrapped) causal LM."""
        base: Any = unwrap(lm)
        head = lm_head(base)
        linear = [m for m in base.modules() if isinstance(m, nn.Linear) and m is not head]
        total = sum(m.weight.numel() for m in linear)
        trainable = sum(m.weight.numel() for m in linear if m.weight.requires_grad)
        cfg = text_config(base)
        heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        return cls(
            body_linear_params=total, trainable_body_linear_params=trainable, layers=int(cfg.num_hidden_layers),
            heads=heads, head_dim=head_dim, vocab=int(head.weight.shape[0]), hidden=int(head.weight.shape[1]),
            head_trained=bool(head.weight.requires_grad),
        )

    def step_flops(self, example_lengths: Sequence[int], supervised_tokens: int) -> float:
        """Training FLOPs of one optimizer step over examples of these lengths."""
        tokens = sum(example_lengths)
        linear = tokens * 2 * (2 * self.body_linear_params + self.trainable_body_linear_params)
        attention = 3 * self.layers * 2 * self.heads * self.head_dim * sum(n * (n + 1) for n in example_lengths)
        head = supervised_tokens * 2 * self.vocab * self.hidden * (3 if self.head_trained else 2)
        return float(linear + attention + head)


def measure_matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                        size: int | None = None, seconds: float = 1.0) -> float:
    """Best observed FLOP/s of a square matrix product on `device`: the ceiling MFU is reported against.

    The matrices come from a private generator: the global one is left as it was, so a resumed run's
    dropout masks (its RNG state restored before this runs) equal the uninterrupted run's."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, dtype=dtype, device=device, generator=generator)
    b = torch.randn(size, size, dtype=dtype, device=device, generator=generator)
    best = 0.0
    deadline = time.perf_counter() + seconds
    for i in range(100):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        elapsed = time.perf_counter() - start
        if i > 0:  # the first product pays for allocation and kernel selection
            best = max(best, 2 * size**3 / elapsed)
        if i >= 2 and time.perf_counter() > deadline:
            break
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: str | torch.device = "cpu") -> int:
    """Peak memory so far: allocated GPU memory on CUDA, else the process's peak resident set size."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MetricsLogger:
    """Per-step metrics to RUN/log.jsonl, TensorBoard (RUN/tb) and a tqdm bar; only the main process
    writes. On resume the JSONL is cut back to the checkpoint's step, so the file always holds one
    uninterrupted loss curve."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int = 0, tensorboard: bool = True,
                 progress: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self._tb: Any = None
        self._bar: Any = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_log(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
            except ImportError:
                log.warning("tensorboard is not installed (pip install 'babeltune[tensorboard]'): "
                            "logging to %s only", self.path)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             file=sys.stderr)

    def log(self, record: dict[str, Any]) -> None:
        """Write one step's record ({'step': int, 'loss': float, ...})."""
        if not self.enabled:
            return
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        step = int(record["step"])
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(f"train/{key}", value, step)
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record.get('tokens_per_s', 0):.0f}",
                                  refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def truncate_log(path: Path, last_step: int) -> None:
    """Keep only the records of steps <= last_step (atomically): what a resume starts from."""
    if not path.exists():
        return
    data = path.read_bytes()
    items = list(iter_jsonl_rows(data, path))
    lines = data.split(b"\n")
    kept = []
    for i, (lineno, item) in enumerate(items):
        if isinstance(item, JSONLError):
            if i == len(items) - 1 and not data.endswith(b"\n"):
                break  # the last line of a write cut short by a kill: after the checkpoint, so dropped
            raise item
        if item["step"] <= last_step:
            kept.append(lines[lineno - 1].decode("utf-8").rstrip("\r"))
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl."""
    return [record for _, record in iter_jsonl(path)]
