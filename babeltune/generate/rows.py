"""One generation row: what `babeltune generate` writes per record, and what evaluation, the judges,
translation and the experiment runner read back (`GenerationRow.from_dict` / `to_dict`).

The JSON form is the generation file's line, field for field in `ROW_FIELDS` order (the file is also a
cache users keep, so the form does not change): keys a row holds beyond these are kept in `other` and
written back after them, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class GenerationFileError(ValueError):
    """A generation file that cannot be resumed or read as asked; the message says how to proceed."""


REQUIRED: tuple[str, ...] = ("id", "lang", "response", "finish_reason")
"""Fields a line must hold to be read as a generation row (the others have defaults)."""


@dataclass
class GenerationRow:
    """One record's generation: the record (id, pid, lang, prompt messages, reference answer, modifier,
    meta), the answer and what produced it (backend identity, decoding settings, cache key)."""

    id: str
    lang: str
    response: str | None
    """The answer's text; None when the request failed (`error` says why)."""
    finish_reason: str
    """`stop`, `length` (hit max_new_tokens) or `error`."""
    pid: str = ""
    """The parallel prompt id (the same prompt across languages); `id` when the row has none."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The prompt turns sent ({role, content})."""
    prompt: str = ""
    """The last user turn's text."""
    reference: str | None = None
    """The data set's reference answer, if any."""
    modifier: Any = None
    """The record's modifier spec ({kind, ...}) as it was given, or None."""
    meta: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    """The backend's identity (weights fingerprint, or base + adapter, dtype, template, steering)."""
    settings: Any = None
    """The decoding settings (`DecodingSettings.to_dict`)."""
    key: str = ""
    """sha256 of model identity, prompt messages and settings: the cache key."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend extras (e.g. `same_prompt_as`: the record whose answer this row shares)."""
    other: dict[str, Any] = field(default_factory=dict)
    """Keys of the line that are none of the above, kept as they were."""

    @property
    def failed(self) -> bool:
        return self.error is not None

    @classmethod
    def from_dict(cls, data: Any, source: str = "", line: int | None = None) -> GenerationRow:
        """A row from its JSON form; a `GenerationFileError` naming `FILE:LINE: field 'F'` otherwise."""
        where = f"{source}:{line}" if line is not None else (source or "generation row")
        if not isinstance(data, dict):
            raise GenerationFileError(f"{where}: not a JSON object")
        for name in REQUIRED:
            if name not in data:
                raise GenerationFileError(f"{where}: field '{name}': missing; is this a file written by "
                                          "`babeltune generate`?")
        for name, ok, wanted in _CHECKS:
            if name in data and not ok(data[name]):
                raise GenerationFileError(f"{where}: field '{name}': must be {wanted}, got {data[name]!r:.60}")
        known = {k: data[k] for k in ROW_FIELDS if k in data}
        known.setdefault("pid", data["id"])
        return cls(**known, other={k: v for k, v in data.items() if k not in ROW_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: `ROW_FIELDS` in order, then `other`."""
        return {**{name: getattr(self, name) for name in ROW_FIELDS}, **self.other}


ROW_FIELDS: tuple[str, ...] = (
    "id", "pid", "lang", "messages", "prompt", "response", "reference", "modifier", "meta", "model", "settings",
    "key", "finish_reason", "prompt_tokens", "completion_tokens", "error", "extra",
)
"""Every generation row's fields, in the order a line holds them."""


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _opt_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _opt_int(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


_CHECKS: tuple[tuple[str, Any, str], ...] = (
    ("id", _is_str, "a string"), ("pid", _is_str, "a string"), ("lang", _is_str, "a string"),
    ("response", _opt_str, "a string or null"), ("finish_reason", _is_str, "a string"),
    ("prompt", _is_str, "a string"), ("reference", _opt_str, "a string or null"),
    ("messages", _is_list, "a list"), ("meta", _is_dict, "an object"), ("extra", _is_dict, "an object"),
    ("key", _is_str, "a string"), ("error", _opt_str, "a string or null"),
    ("prompt_tokens", _opt_int, "an integer or null"), ("completion_tokens", _opt_int, "an integer or null"),
)
