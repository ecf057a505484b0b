"""The modifier grammar: what a record's `meta["modifier"]` may say (its kind and that kind's fields).

It lives with the data records so that reading or generating from data can check a spec without the
evaluation package; the checks themselves are in `babeltune.evaluate.modifiers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from babeltune.languages import normalize_code

Unit = Literal["words", "chars"]


@dataclass(frozen=True)
class ModifierSpec:
    """A validated modifier: its kind and the fields that kind uses."""

    kind: str
    lang: str | None = None
    """answer_language: the language asked for."""
    n: int | None = None
    """list_items: exact count; max_words, short: the most words; long: the fewest words."""
    unit: Unit | None = None
    """max_words: 'words' or 'chars' (None: chars for languages without spaces, else words)."""
    min_headings: int = 2
    """markdown_headings: fewest headings that pass."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.lang is not None:
            out["lang"] = self.lang
        if self.n is not None:
            out["n"] = self.n
        if self.unit is not None:
            out["unit"] = self.unit
        if self.kind == "markdown_headings":
            out["min_headings"] = self.min_headings
        return out


_FIELDS: dict[str, dict[str, bool]] = {
    # kind -> {field: required}
    "answer_language": {"lang": True},
    "html_page": {},
    "markdown_headings": {"min_headings": False},
    "list_items": {"n": True},
    "max_words": {"n": True, "unit": False},
    "all_caps": {},
    "arrows": {},
    "short": {"n": False},
    "long": {"n": False},
    "scientific_style": {},
    "simple_style": {},
    "complex_inst": {},
}
MODIFIER_KINDS: tuple[str, ...] = tuple(_FIELDS)


def parse_modifier(raw: Any) -> ModifierSpec:
    """Validate a modifier spec (a mapping as stored in meta.modifier); ValueError says what is wrong."""
    if isinstance(raw, ModifierSpec):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"a modifier must be an object with a 'kind', got {raw!r}")
    kind = raw.get("kind")
    if kind not in _FIELDS:
        raise ValueError(f"unknown modifier kind {kind!r}; known kinds: {', '.join(MODIFIER_KINDS)}")
    fields = _FIELDS[kind]
    extra = sorted(set(raw) - {"kind"} - set(fields))
    if extra:
        raise ValueError(f"modifier {kind}: unknown field(s) {extra}; it takes {sorted(fields) or 'no fields'}")
    for name, required in fields.items():
        if required and name not in raw:
            raise ValueError(f"modifier {kind}: field {name!r} is required")
    lang = None
    if "lang" in raw:
        lang = normalize_code(str(raw["lang"]))
        if lang is None:
            raise ValueError(f"modifier {kind}: unknown language code {raw['lang']!r}")
    for name in ("n", "min_headings"):
        if name in raw and (not isinstance(raw[name], int) or isinstance(raw[name], bool) or raw[name] < 1):
            raise ValueError(f"modifier {kind}: field {name!r} must be a positive integer, got {raw[name]!r}")
    unit = raw.get("unit")
    if unit not in (None, "words", "chars"):
        raise ValueError(f"modifier {kind}: unit must be 'words' or 'chars', got {unit!r}")
    return ModifierSpec(kind=kind, lang=lang, n=raw.get("n"), unit=unit, min_headings=raw.get("min_headings", 2))
