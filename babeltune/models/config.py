"""Typed configs of `babeltune model prepare | info | render` (their flags are generated from these fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class PrepareConfig:
    """`babeltune model prepare`: build the default model's safetensors cache."""

    rebuild: bool = False
    """Build the cache again even when it is already there."""


@dataclass
class ModelInfoConfig:
    """`babeltune model info`: architecture, size, template and fingerprint of a model."""

    model: str = "gemma-3-270m"
    """Model alias, local folder or hub id."""


@dataclass
class RenderConfig:
    """`babeltune model render`: how records are rendered for training (template, loss mask)."""

    model: str = "gemma-3-270m"
    """Model alias, local folder or hub id (its tokenizer renders the records)."""
    data: str = "bundled:train"
    """A babeltune source (bundled:train, a .jsonl file or folder, hf:...)."""
    template: Literal["auto", "gemma", "tokenizer"] = "auto"
    """Chat template (auto: the model's own, else gemma's)."""
    per_language: int = 1
    """Samples shown per language."""

    def __post_init__(self) -> None:
        if self.per_language < 1:
            raise ValueError(f"per_language must be at least 1, got {self.per_language}")
