"""Language identification as the judges see it: a babeltune code, or None when undetermined."""

from __future__ import annotations

import functools
from typing import Any

from babeltune.languages import LANGUAGES, normalize_code

MIN_LETTERS = 12
"""Fewer letters than this (numbers, code, one word) is too little to tell a language: undetermined."""


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    import py3langid

    return py3langid


def identify_language(text: str) -> str | None:
    """The language of `text` as a babeltune code, or None when too short or not a known language."""
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None
    code, _ = _identifier().classify(text)
    norm = normalize_code(str(code))
    return norm if norm is not None and norm in LANGUAGES else str(code)
