"""Steering inside `babeltune generate`: a steered model is evaluated like any other.

`steer_backend(stack, backend, steer_cfg, record_languages)` enters a `steer` block on a local backend's
model for the lifetime of `stack`, names the steering in the backend's identity (so cached generations
made without it, or with other settings, are never reused) and, in add mode without a fixed language,
generates each language's prompts as their own batches steered toward that language.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from babeltune.lens.config import SteerConfig
from babeltune.lens.steering import Steering, steer
from babeltune.lens.subspace import LanguageSubspace


class LanguageGroupedBackend:
    """Wraps a backend: each call's requests are generated language by language, steering set per language."""

    def __init__(self, inner: Any, steering: Steering, languages: Mapping[str, str]) -> None:
        self.inner = inner
        self.steering = steering
        self.languages = dict(languages)
        self.name = inner.name

    def identity(self) -> dict[str, Any]:
        return dict(self.inner.identity())

    def generate(self, requests: Sequence[Any], settings: Any) -> Iterator[Any]:
        groups: dict[str, list[Any]] = {}
        for req in requests:
            if req.id not in self.languages:
                raise ValueError(f"steering: no language known for request {req.id!r}")
            groups.setdefault(self.languages[req.id], []).append(req)
        for lang, group in groups.items():
            self.steering.set_languages(lang)
            yield from self.inner.generate(group, settings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def steer_backend(stack: ExitStack, backend: Any, cfg: SteerConfig, record_languages: Mapping[str, str]) -> Any:
    """Steer `backend` (a local backend: it must expose `.model`) until `stack` closes; returns the backend
    to generate with."""
    model = getattr(backend, "model", None)
    if model is None:
        raise ValueError("--steer needs a local model (backend local): an endpoint's states cannot be edited")
    subspace = LanguageSubspace.load(cfg.subspace)
    fingerprint = None if cfg.allow_other_model else getattr(backend, "fingerprint", None)
    steering = stack.enter_context(steer(model, subspace, mode=cfg.mode, coefficient=cfg.coefficient,
                                         layers=cfg.layers, lang=cfg.lang, fingerprint=fingerprint))
    if hasattr(backend, "identity_extra"):
        backend.identity_extra["steering"] = {
            "subspace": subspace.digest(), "subspace_languages": list(subspace.languages),
            "mode": cfg.mode, "coefficient": cfg.coefficient, "layers": steering.layers,
            "lang": cfg.lang or ("per prompt" if cfg.mode == "add" else None)}
    if cfg.mode == "add" and cfg.lang is None:
        return LanguageGroupedBackend(backend, steering, record_languages)
    return backend
