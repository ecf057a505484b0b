"""The one JSONL reader: every JSONL file babeltune reads goes through `iter_jsonl` / `iter_jsonl_rows`.

A line that cannot be turned into a JSON value is a `JSONLError` naming the file and line (and a
short `kind`, counted per reason by `--skip-invalid`): bytes that are not UTF-8 (a Latin-1 or binary
file), text that is not JSON, nesting too deep to parse, a lone UTF-16 surrogate escape (`"\\ud800"`:
valid JSON, but no text can hold it, so it would fail later when written), or a number that is not
finite (`NaN`, `Infinity`, `1e999`). Lines are split on `\\n` only (a `\\r` before it is dropped), so a
U+2028 inside a string stays inside its line; blank lines are skipped.

    for line_no, obj in iter_jsonl(path):        # raises JSONLError at the first bad line
    for line_no, item in iter_jsonl_rows(data, path):   # item is the value or the JSONLError: go on

And the one writer: `JSONLAppender` / `append_jsonl` append each value as one complete line with a single
`os.write` on an O_APPEND file (a kill, SIGKILL included, leaves at most a partial *last* line, which
`split_torn_tail` finds), and `write_jsonl_atomic` replaces a whole file (temp file + rename: a failed
write leaves the previous file as it was and nothing beside it). Lines are `json.dumps(value,
ensure_ascii=False)` and `\\n`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from babeltune.data.records import RecordError

LINE_FIELD = "<line>"
"""The field name a whole-line error carries (a RecordError names a field; here it is the line)."""


class JSONLError(RecordError):
    """A JSONL line that is not a usable JSON value: `FILE:LINE: field '<line>': reason`.

    A `RecordError` (hence a `ValueError`): `.source` is the file, `.line` the 1-based line number,
    `.reason` the explanation and `.kind` one of `not_utf8`, `binary`, `malformed`, `too_deep`,
    `lone_surrogate`, `non_finite`."""

    def __init__(self, source: str, line: int, reason: str, kind: str) -> None:
        super().__init__(source, line, LINE_FIELD, reason, kind)


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not a finite number (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"{text} is too large for a float (it would become infinity)")
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The JSON path of the first string (value or key) holding a lone surrogate, or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "the value"
        elif isinstance(item, dict):
            for key, sub in item.items():
                stack.append((f"{where}.{key}" if where else str(key), key))
                stack.append((f"{where}.{key}" if where else str(key), sub))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", sub) for i, sub in enumerate(item))
    return None


def parse_json_line(raw: bytes, source: str, line: int) -> Any:
    """One JSONL line (bytes, without its newline) as a JSON value; a `JSONLError` if it is not one."""
    if b"\x00" in raw:
        raise JSONLError(source, line, "binary data (a NUL byte): not a JSONL text file", "binary")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONLError(
            source, line,
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8",
            "not_utf8",
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise JSONLError(source, line, str(exc), "non_finite") from None
    except json.JSONDecodeError as exc:
        raise JSONLError(source, line, f"not valid JSON ({exc.msg} at column {exc.colno})", "malformed") from None
    except RecursionError:
        raise JSONLError(source, line, "JSON nested too deeply to read", "too_deep") from None
    if b"\\u" in raw or b"\\U" in raw:  # a lone surrogate can only come from an escape
        where = _lone_surrogate(value)
        if where is not None:
            raise JSONLError(source, line, f"{where}: a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
                             "pair) cannot be stored as text", "lone_surrogate")
    return value


def iter_jsonl_rows(data: bytes, source: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value or JSONLError) for each non-blank line of `data`: the caller decides whether
    a bad line stops the read (raise the error) or is counted and skipped."""
    name = str(source)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark, as some editors write
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            yield lineno, parse_json_line(raw, name, lineno)
        except JSONLError as error:
            yield lineno, error


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of the file; a `JSONLError` at the first bad line."""
    for lineno, item in iter_jsonl_rows(Path(path).read_bytes(), path):
        if isinstance(item, JSONLError):
            raise item
        yield lineno, item


# ---------------------------------------------------------------------------------------------- writing


def dumps_line(value: Any) -> bytes:
    """One JSONL line (newline included) as UTF-8 bytes."""
    return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")


class JSONLAppender:
    """A JSONL file opened for appending whole lines: each `append` is one `os.write` of one complete line
    to an O_APPEND file, so an interruption can only leave a partial last line; with `fsync` each line is
    on disk when `append` returns."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, value: Any) -> None:
        os.write(self.fd, dumps_line(value))
        if self.fsync:
            os.fsync(self.fd)

    def truncate(self, size: int = 0) -> None:
        os.ftruncate(self.fd, size)

    def reopen(self) -> None:
        """Open the file at `path` again (after it was replaced by `write_jsonl_atomic`)."""
        new_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        os.close(self.fd)
        self.fd = new_fd

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self.fd)
        os.close(self.fd)


def append_jsonl(path: str | Path, value: Any) -> None:
    """Append one line to `path` durably (one write, fsync'd): the line is on disk when this returns."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sink = JSONLAppender(path, fsync=True)
    try:
        sink.append(value)
    finally:
        os.close(sink.fd)


def write_jsonl_atomic(path: str | Path, values: Iterable[Any]) -> int:
    """Write `values` as the whole of `path`, atomically (temp file, fsync, rename; the temp file is
    removed if the write fails, leaving the previous file as it was); returns the number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    try:
        with tmp.open("wb") as fh:
            for value in values:
                fh.write(dumps_line(value))
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def split_torn_tail(data: bytes) -> tuple[bytes, int]:
    """`data` up to its last newline, and the length of what follows it (a partial last line left by an
    interrupted append; 0 when the data ends with a newline)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], len(data) - cut
