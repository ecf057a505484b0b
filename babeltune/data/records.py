"""The one record type babeltune moves around: a chat example in one language.

A `ChatRecord` has an `id` (unique in its file), a `pid` (the parallel group: the same prompt in every
language shares one pid), a `lang` (ISO 639-1, validated against `babeltune.languages`), `messages`
(an optional system turn, then alternating user / assistant turns, starting with user) and free-form
`meta`. Validation errors name the file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from babeltune.languages import normalize_code

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatRecord:
    """A chat example in one language; the unit of every babeltune data file."""

    id: str
    pid: str
    lang: str
    messages: tuple[Message, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=True)

    @property
    def prompt_messages(self) -> tuple[Message, ...]:
        """The conversation up to (not including) the last assistant turn: what a model is asked."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return self.messages

    @property
    def prompt(self) -> str:
        """The last user turn's text."""
        return next(m.content for m in reversed(self.messages) if m.role == "user")

    @property
    def response(self) -> str | None:
        """The final assistant turn's text, if the record has one."""
        return self.messages[-1].content if self.messages and self.messages[-1].role == "assistant" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "lang": self.lang,
            "messages": [m.to_dict() for m in self.messages],
            "meta": self.meta,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


class RecordError(ValueError):
    """A record that fails validation; knows where it came from and which field is wrong."""

    def __init__(self, source: str, line: int | None, field_name: str, reason: str, kind: str) -> None:
        self.source = source
        self.line = line
        self.field = field_name
        self.reason = reason
        self.kind = kind
        """A short stable category (e.g. 'unknown_language'), used to count rejections per reason."""
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: field '{field_name}': {reason}")


def _fail(source: str, line: int | None, field_name: str, reason: str, kind: str) -> RecordError:
    return RecordError(source, line, field_name, reason, kind)


def parse_messages(raw: Any, source: str, line: int | None) -> tuple[Message, ...]:
    """Validate a list of {role, content} dicts: optional system first, then user/assistant alternating."""
    if not isinstance(raw, list) or not raw:
        raise _fail(source, line, "messages", "must be a non-empty list of {role, content}", "bad_messages")
    messages: list[Message] = []
    for i, turn in enumerate(raw):
        name = f"messages[{i}]"
        if not isinstance(turn, dict):
            raise _fail(source, line, name, "must be an object with role and content", "bad_messages")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise _fail(source, line, f"{name}.role", f"must be one of {list(ROLES)}, got {role!r}", "bad_role")
        if not isinstance(content, str):
            raise _fail(source, line, f"{name}.content", "missing or not a string", "missing_field")
        if not content.strip():
            raise _fail(source, line, f"{name}.content", "empty turn", "empty_turn")
        messages.append(Message(role, content))
    roles = [m.role for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if not body:
        raise _fail(source, line, "messages", "has only a system turn", "bad_messages")
    for i, role in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            offset = len(roles) - len(body)
            raise _fail(
                source, line, f"messages[{i + offset}].role",
                f"expected {expected!r} (turns alternate user/assistant, starting with user), got {role!r}",
                "bad_role",
            )
    return tuple(messages)


def record_from_dict(raw: Any, source: str = "<memory>", line: int | None = None) -> ChatRecord:
    """Validate one babeltune record (as parsed JSON) and build a ChatRecord."""
    if not isinstance(raw, dict):
        raise _fail(source, line, "<record>", "must be a JSON object", "malformed")
    for name in ("id", "pid", "lang", "messages"):
        if name not in raw:
            raise _fail(source, line, name, "missing", "missing_field")
    for name in ("id", "pid", "lang"):
        if not isinstance(raw[name], str) or not raw[name].strip():
            raise _fail(source, line, name, "must be a non-empty string", "missing_field")
    lang = normalize_code(raw["lang"])
    if lang is None:
        raise _fail(source, line, "lang", f"unknown language code {raw['lang']!r}", "unknown_language")
    meta = raw.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise _fail(source, line, "meta", "must be an object", "malformed")
    unknown = sorted(set(raw) - {"id", "pid", "lang", "messages", "meta"})
    if unknown:
        raise _fail(source, line, unknown[0], "unknown field (put extra information in 'meta')", "unknown_field")
    messages = parse_messages(raw["messages"], source, line)
    return ChatRecord(raw["id"], raw["pid"], lang, messages, meta)


def write_jsonl(records: Iterable[ChatRecord], path: str | Path) -> int:
    """Write records as babeltune JSONL atomically (temp file + rename; the temp file is removed if the
    write fails); returns the count."""
    from babeltune.data.jsonl import write_jsonl_atomic  # jsonl imports this module's RecordError

    return write_jsonl_atomic(path, (rec.to_dict() for rec in records))
