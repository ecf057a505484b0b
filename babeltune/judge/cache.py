"""Judgement cache: judge once, resume after any interruption, never judge the same thing twice.

Each judgement is one JSON line `{"key": ..., "value": {...}}` appended to a file and flushed to disk
before the next one starts, so a run killed at any moment (SIGKILL included) loses at most the line
being written. On opening, a torn last line is cut off and counted; every complete line is kept.
Keys hash the judge's fingerprint together with the exact question, so a changed prompt, response,
judge model or judge setting is a different key and is judged afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from babeltune.data.jsonl import JSONLError, append_jsonl, iter_jsonl_rows, split_torn_tail

log = logging.getLogger(__name__)


def judgement_key(*parts: Any) -> str:
    """A stable hash of the parts (JSON-encoded, so order and types matter)."""
    text = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class JudgementCache:
    """A key -> JSON value store backed by an append-only JSONL file (or memory when `path` is None)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        """Lines found incomplete or unreadable on opening (an interrupted write); they are re-judged."""
        self.hits = 0
        self.writes = 0
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        data, torn = split_torn_tail(path.read_bytes())
        self.torn_lines = int(torn > 0)  # the last line of a write that was cut short
        good_lines = 0
        for lineno, row in iter_jsonl_rows(data, path):
            try:
                if isinstance(row, JSONLError):
                    raise row
                self.entries[str(row["key"])] = dict(row["value"])
            except (ValueError, KeyError, TypeError):
                self.torn_lines += 1
                continue
            good_lines = lineno
        good_end = sum(len(line) + 1 for line in data.split(b"\n")[:good_lines])
        if good_end < len(data) + torn:
            with path.open("r+b") as fh:
                fh.truncate(good_end)
        if self.torn_lines:
            log.warning("%s: %d incomplete judgement line(s) from an interrupted run dropped; they are judged "
                        "again", path, self.torn_lines)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> dict[str, Any] | None:
        value = self.entries.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store and (with a file) append durably: the line is on disk when this returns."""
        self.entries[key] = value
        self.writes += 1
        if self.path is None:
            return
        append_jsonl(self.path, {"key": key, "value": value})
