"""Decoding settings: the one description of *how* a response is generated, shared by every backend,
stored with every generation row and part of the generation cache key."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from babeltune.config import to_dict


@dataclass(frozen=True)
class DecodingSettings:
    """How to decode. The defaults are study B's: greedy, repetition penalty 1.2, 512 new tokens."""

    max_new_tokens: int = 512
    """Most tokens generated per response (the stop token included); longer responses end with
    finish_reason 'length'."""
    temperature: float = 0.0
    """0 means greedy decoding; above 0, sample from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = all)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0 = no limit)."""
    repetition_penalty: float = 1.2
    """CTRL-style penalty on every token already in the prompt or the response (1 = none): a positive
    logit is divided by it, a negative one multiplied. Study B used 1.2."""
    seed: int = 0
    """Sampling seed. Each prompt gets its own generator seeded from (seed, prompt id), so a sampled
    response does not depend on batch size, order or resumption."""
    stop_on_eos: bool = True
    """Stop at the tokenizer's EOS as well as at the chat template's end-of-turn token(s)."""

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("max_new_tokens", "top_k", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = none), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def item_seed(seed: int, item_id: str) -> int:
    """A 31-bit seed for one prompt, derived from the run seed and the prompt's id (31 bits, so that
    every OpenAI-compatible server accepts it as its `seed`)."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
