"""The interface every generation backend implements, and the values that cross it.

A backend turns `GenerationRequest`s (an id and a conversation) into `GenerationResult`s, yielding
each result as soon as it is ready, in any order, so the runner can append it to disk at once. A
request that fails is a result with `finish_reason='error'` and an `error` message, never an
exception that loses the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from babeltune.data.records import Message
from babeltune.generate.settings import DecodingSettings, item_seed

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to answer: `id` identifies it in results."""

    id: str
    messages: tuple[Message, ...]
    seed: int | None = None
    """Sampling seed of this prompt; None derives it from the settings' seed and `id` (`item_seed`)."""

    def sampling_seed(self, settings: DecodingSettings) -> int:
        return self.seed if self.seed is not None else item_seed(settings.seed, self.id)


@dataclass
class GenerationResult:
    """What a backend produced for one request."""

    id: str
    text: str | None
    """The response text (None when the request failed)."""
    finish_reason: FinishReason
    """'stop': the model ended its turn; 'length': max_new_tokens reached; 'error': the request failed."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    """Tokens generated, the stop token included."""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific facts worth keeping (e.g. an endpoint's system_fingerprint, attempts made)."""

    @classmethod
    def failure(cls, request_id: str, error: str, **extra: Any) -> GenerationResult:
        return cls(request_id, None, "error", error=error, extra=dict(extra))


class GenerationBackend(Protocol):
    """What the runner and the server need from a backend."""

    name: str
    """Short backend kind, e.g. 'local' or 'endpoint'."""

    def identity(self) -> dict[str, Any]:
        """Everything besides prompt and decoding settings that decides the output (model fingerprint,
        precision, chat template, endpoint URL...). Part of the cache key; stored with each row."""
        ...

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        """Answer every request; yield one result per request as soon as it is ready."""
        ...
