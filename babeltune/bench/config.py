"""Typed settings of `babeltune bench`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from babeltune.lens.config import SteerConfig


@dataclass
class BenchConfig:
    """One lm-evaluation-harness run on one model."""

    model: str = "default"
    """Any model babeltune loads: the default alias, a folder (full model, PEFT adapter, merged or
    Lens-trained model) or a hub id already in the local cache."""
    tasks: list[str] = field(default_factory=list)
    """lm-eval task or group names (e.g. xcopa, xstorycloze_es), including those under include_path."""
    include_path: str | None = None
    """A folder of extra lm-eval task YAMLs (e.g. tasks over local JSON/JSONL files)."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt; None: each task's own default."""
    limit: float | None = None
    """At most this many items per task (a value below 1 is a share of each task); None: all."""
    batch_size: int = 8
    """Requests per forward pass."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype."""
    device: str = "cpu"
    """cpu, cuda, cuda:N."""
    merge_adapter: bool = False
    """Merge a PEFT adapter into its base before evaluating (same figures up to rounding, faster)."""
    chat_template: bool = False
    """Wrap each prompt in a chat template (lm-eval's apply_chat_template): the tokenizer's own, else
    babeltune's Gemma turn format (the one it tunes with); published base-model figures use plain
    prompts."""
    bootstrap_iters: int = 1000
    """lm-eval's bootstrap resamples for the standard errors of metrics without a closed form."""
    steer: SteerConfig | None = None
    """Lens steering applied while the tasks run (None: the model as it is)."""

    def __post_init__(self) -> None:
        self.tasks = [t.strip() for t in self.tasks if t.strip()]
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be 0 or more, got {self.num_fewshot}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be above 0, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
