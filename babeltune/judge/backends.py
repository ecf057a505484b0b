"""Chat backends for the LLM judges, on top of the generation stage's backends.

`GenerationChatBackend` turns any `babeltune.generate` backend (an OpenAI-compatible endpoint, a
model loaded in this process, or an in-process vLLM engine) into the judges' `ChatBackend`: the judge
prompt goes out as one user turn, the reply text comes back, and a failed request comes back as None
(then retried once by the protocol, then recorded as invalid). Judges decode greedily with no
repetition penalty, so the same question gets the same verdict. `judge_chat_backend` picks one of
the three (`local | vllm | endpoint`), as the generation stage does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from babeltune.data.records import Message
from babeltune.judge.llm import ChatMessages

log = logging.getLogger(__name__)


class GenerationChatBackend:
    """A judge's chat backend over a generation backend (`EndpointBackend`, `LocalBackend` or
    `VLLMBackend`)."""

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


JudgeBackendKind = Literal["local", "vllm", "endpoint"]


def endpoint_chat_backend(endpoint: Any, *, max_new_tokens: int = 256) -> GenerationChatBackend:
    """A judge backend talking to an OpenAI-compatible endpoint (vLLM, TGI, llama.cpp, hosted APIs), given
    the generation stage's `EndpointConfig` (its `concurrency` requests in flight)."""
    from babeltune.generate import EndpointBackend

    return GenerationChatBackend(EndpointBackend(endpoint), max_new_tokens=max_new_tokens)


def local_chat_backend(model: str, *, batch_size: int = 8, max_new_tokens: int = 256) -> GenerationChatBackend:
    """A judge backend running a model in this process (any model babeltune loads)."""
    from babeltune.generate import LocalBackend

    return GenerationChatBackend(LocalBackend.from_pretrained(model, batch_size=batch_size),
                                 max_new_tokens=max_new_tokens, name=model)


def vllm_chat_backend(model: str, vllm: Any = None, *, max_new_tokens: int = 256) -> GenerationChatBackend:
    """A judge backend on an in-process vLLM engine (`VLLMBackend.from_pretrained(model, VLLMConfig)`;
    the `vllm` package is imported only here)."""
    from babeltune.generate.config import VLLMConfig
    from babeltune.generate.vllm import VLLMBackend

    backend = VLLMBackend.from_pretrained(model, vllm if vllm is not None else VLLMConfig())
    return GenerationChatBackend(backend, max_new_tokens=max_new_tokens, name=model)


def judge_chat_backend(kind: JudgeBackendKind | None, *, model: str | None = None, endpoint: Any = None,
                       vllm: Any = None, max_new_tokens: int = 256) -> GenerationChatBackend:
    """The LLM judge's backend: `endpoint` (an `EndpointConfig`), `local` or `vllm` (the model `model`
    loaded in this process). `kind` None: the endpoint when one is given, else the local model."""
    if kind is None:
        kind = "endpoint" if endpoint is not None else "local"
    if kind == "endpoint":
        if endpoint is None:
            raise ValueError("the LLM judge's endpoint backend needs an endpoint URL")
        return endpoint_chat_backend(endpoint, max_new_tokens=max_new_tokens)
    if not model:
        raise ValueError(f"the LLM judge's {kind} backend needs the model to load (a folder, hub id or alias)")
    if kind == "vllm":
        return vllm_chat_backend(model, vllm, max_new_tokens=max_new_tokens)
    if kind == "local":
        return local_chat_backend(model, max_new_tokens=max_new_tokens)
    raise ValueError(f"unknown judge backend {kind!r}; use local, vllm or endpoint")
