"""Typed options of the LLM judge in `babeltune judge sxs|rubric` (flags, `--set` and YAML map onto them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from babeltune.generate.config import VLLMConfig


@dataclass
class LLMJudgeConfig:
    """Who runs the judge model: a local model, an in-process vLLM engine or an endpoint."""

    backend: Literal["local", "vllm", "endpoint"] | None = None
    """Who runs the judge model (default: endpoint when an endpoint URL is given, else local)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."""
    model: str = ""
    """Model name at the endpoint (default: the first it lists)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key."""
    concurrency: int | None = None
    """Endpoint requests in flight (default 4; hundreds are fine for vLLM)."""
    local_model: str | None = None
    """Judge with a model loaded here (backend local or vllm) instead of an endpoint."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """The vLLM engine of backend vllm (`--set vllm.dtype=bfloat16`)."""
    max_new_tokens: int = 256
    """Most tokens of one judgement."""

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class SxsConfig(LLMJudgeConfig):
    """`babeltune judge sxs`: candidate vs baseline, judged offline or by the LLM judge above."""

    judge: Literal["reference", "llm"] = "reference"
    """reference: offline, needs reference answers in the data; llm: an LLM judge."""
    seed: int = 0
    """Bootstrap seed."""
    allow_partial: bool = False
    """Judge the prompts both files share even when some are in one file only (they are listed and
    recorded in OUT/coverage.json); without it such files are refused."""


@dataclass
class RubricConfig(LLMJudgeConfig):
    """`babeltune judge rubric`: each response graded alone by the LLM judge above."""

    seed: int = 0
    """Bootstrap seed."""
