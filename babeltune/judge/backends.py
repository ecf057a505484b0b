"""Chat backends for the LLM judges, on top of the generation stage's backends.

`GenerationChatBackend` turns any `babeltune.generate` backend (an OpenAI-compatible endpoint, or a
model loaded in this process) into the judges' `ChatBackend`: the judge prompt goes out as one user
turn, the reply text comes back, and a failed request comes back as None (then retried once by the
protocol, then recorded as invalid). Judges decode greedily with no repetition penalty, so the same
question gets the same verdict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from babeltune.data.records import Message
from babeltune.judge.llm import ChatMessages

log = logging.getLogger(__name__)


class GenerationChatBackend:
    """A judge's chat backend over a generation backend (`EndpointBackend` or `LocalBackend`)."""

    def __init__(self, backend: Any, *, max_new_tokens: int = 256, name: str | None = None) -> None:
        from babeltune.generate import DecodingSettings

        self.backend = backend
        self.settings = DecodingSettings(max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.0)
        self.name = name or str(backend.identity().get("model") or backend.name)
        self.failures = 0
        """Judge requests that failed (each is retried by the protocol, then recorded as invalid)."""

    def fingerprint(self) -> str:
        return json.dumps({"backend": self.backend.identity(), "settings": self.settings.to_dict()}, sort_keys=True)

    def complete(self, conversations: Sequence[ChatMessages]) -> list[str | None]:
        from babeltune.generate import GenerationRequest

        requests = [GenerationRequest(f"q{i}", tuple(Message(m["role"], m["content"]) for m in conv))  # type: ignore[arg-type]
                    for i, conv in enumerate(conversations)]
        replies: dict[str, str | None] = {}
        for result in self.backend.generate(requests, self.settings):
            replies[result.id] = result.text if result.error is None else None
            if result.error is not None:
                self.failures += 1
                # the first failure in full (it names the endpoint and what went wrong), the rest in the debug log
                log.log(logging.WARNING if self.failures == 1 else logging.DEBUG,
                        "judge request failed (retried, then recorded as an invalid verdict): %s", result.error)
        return [replies.get(req.id) for req in requests]


def endpoint_chat_backend(endpoint: Any, *, max_new_tokens: int = 256) -> GenerationChatBackend:
    """A judge backend talking to an OpenAI-compatible endpoint (vLLM, TGI, llama.cpp, hosted APIs), given
    the generation stage's `EndpointConfig`."""
    from babeltune.generate import EndpointBackend

    return GenerationChatBackend(EndpointBackend(endpoint), max_new_tokens=max_new_tokens)


def local_chat_backend(model: str, *, batch_size: int = 8, max_new_tokens: int = 256) -> GenerationChatBackend:
    """A judge backend running a model in this process (any model babeltune loads)."""
    from babeltune.generate import LocalBackend

    return GenerationChatBackend(LocalBackend.from_pretrained(model, batch_size=batch_size),
                                 max_new_tokens=max_new_tokens, name=model)
