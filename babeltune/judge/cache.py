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
import os
from pathlib import Path
from typing import Any

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
        data = path.read_bytes()
        good_end = 0
        offset = 0
        for line in data.splitlines(keepends=True):
            offset += len(line)
            if not line.endswith(b"\n"):
                self.torn_lines += 1  # the last line of a write that was cut short
                break
            try:
                row = json.loads(line)
                self.entries[str(row["key"])] = dict(row["value"])
            except (ValueError, KeyError, TypeError):
                self.torn_lines += 1
                continue
            good_end = offset
        if good_end < len(data):
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
