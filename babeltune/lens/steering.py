"""Steering at inference: edit the probed states of chosen layers while the model runs.

`with steer(model, subspace, mode="add", coefficient=4, layers=[-1], lang="fi"): model.generate(...)`
installs one forward hook per layer on the module whose output is that layer's probed state (see
`babeltune.lens.states.state_sites`) and removes them when the block ends, also when it ends with an
exception. Two edits:

- `add`: h <- h + coefficient * direction(lang), the language's direction from the central language;
- `project`: h <- h - coefficient * P_s h, study C's follow-up (remove the language-specific part;
  a negative coefficient amplifies it).

The edit applies at every position. With coefficient 0 the hooks return the module's output untouched,
so the steered model is the unsteered one exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from babeltune.lens.config import SteerMode
from babeltune.lens.states import check_layers, state_sites
from babeltune.lens.subspace import LanguageSubspace


@dataclass
class Steering:
    """The live state of a `steer` block; `set_languages` changes the target per batch row (add mode)."""

    subspace: LanguageSubspace
    mode: SteerMode
    coefficient: float
    layers: list[int]
    languages: list[str] | None = None
    """One language per batch row, or None: then `lang` for every row."""
    lang: str | None = None
    calls: dict[int, int] = field(default_factory=dict)
    """How many forward passes each hooked layer edited (for logs and tests)."""

    def set_languages(self, languages: Sequence[str] | str) -> None:
        """Target language(s) for the next forward passes: one code, or one per batch row."""
        if isinstance(languages, str):
            self.lang, self.languages = languages, None
            self.subspace.lang_index(languages)
        else:
            for code in languages:
                self.subspace.lang_index(code)
            self.languages = list(languages)

    def edit(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """The edited state (B, T, D) of `layer`."""
        self.calls[layer] = self.calls.get(layer, 0) + 1
        if self.mode == "project":
            return hidden - self.coefficient * self.subspace.project_specific(hidden, layer)
        if self.languages is not None:
            if len(self.languages) != hidden.shape[0]:
                raise ValueError(f"steering has {len(self.languages)} row languages for a batch of {hidden.shape[0]}")
            rows = torch.stack([self.subspace.direction(code, layer) for code in self.languages])  # (B, D)
            delta = rows[:, None, :]  # (B, 1, D)
        elif self.lang is not None:
            delta = self.subspace.direction(self.lang, layer)  # (D,)
        else:
            raise ValueError("add-mode steering needs a target language: pass lang= or call set_languages()")
        return hidden + self.coefficient * delta.to(hidden.device, hidden.dtype)


@contextmanager
def steer(model: Any, subspace: LanguageSubspace, *, mode: SteerMode = "add", coefficient: float = 1.0,
          layers: Sequence[int] = (-1,), lang: str | None = None, fingerprint: str | None = None) -> Iterator[Steering]:
    """Edit `layers` of `model` inside the block (see the module docstring); hooks are always removed."""
    subspace.check_model(model, fingerprint)
    if mode not in ("add", "project"):
        raise ValueError(f"steering mode must be 'add' or 'project', got {mode!r}")
    indices = check_layers(layers, subspace.n_layers)
    steering = Steering(subspace, mode, float(coefficient), indices)
    if lang is not None:
        steering.set_languages(lang)
    sites = state_sites(model)
    handles = []
    try:
        for layer in indices:
            handles.append(sites[layer].register_forward_hook(_hook(steering, layer)))
        yield steering
    finally:
        for handle in handles:
            handle.remove()


def _hook(steering: Steering, layer: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if steering.coefficient == 0:
            return output  # exactly unsteered
        if isinstance(output, tuple):
            return (steering.edit(output[0], layer), *output[1:])
        return steering.edit(output, layer)

    return hook
