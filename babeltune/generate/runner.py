"""Run a backend over records and keep every result: the generation file is also the cache.

Each output row is keyed by sha256(backend identity, prompt messages, decoding settings) and belongs to
one record id: two records with the same prompt get two rows. Running again with the same output
file resumes: rows already there with a matching key are kept and not redone; failed rows are retried
(by default); anything else is generated and appended.

Why this survives SIGKILL without losing or duplicating rows: every row is one complete JSON line
written by a single `os.write` to a file opened with O_APPEND, so a killed process leaves at most one
partial last line. On resume a partial last line is cut off (and counted), every complete line is
parsed, and only (record id, key) pairs not yet present are generated. Removing failed rows before a
retry rewrites the file to a temporary name and renames it over the original, which is atomic. An
exclusive lock on `FILE.lock` (taken before anything else, `--overwrite` included; it names the pid and
host holding it) stops two processes from writing the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from babeltune.data.jsonl import (
    JSONLAppender,
    JSONLError,
    iter_jsonl,
    iter_jsonl_rows,
    split_torn_tail,
    write_jsonl_atomic,
)
from babeltune.data.records import ChatRecord
from babeltune.generate.backends import GenerationBackend, GenerationRequest, GenerationResult
from babeltune.generate.rows import GenerationFileError, GenerationRow
from babeltune.generate.settings import DecodingSettings, stable_hash

log = logging.getLogger(__name__)

def generation_key(identity: dict[str, Any], messages: Sequence[dict[str, str]], settings: DecodingSettings) -> str:
    """The cache key of one generation: what decides its output, hashed."""
    return stable_hash({"model": identity, "messages": list(messages), "settings": settings.to_dict()})


def build_row(
    record: ChatRecord, result: GenerationResult, identity: dict[str, Any], settings: DecodingSettings, key: str
) -> GenerationRow:
    """One generation row: everything evaluation needs, and what produced it."""
    return GenerationRow(
        id=record.id, pid=record.pid, lang=record.lang, messages=[m.to_dict() for m in record.prompt_messages],
        prompt=record.prompt, response=result.text, reference=record.response, modifier=record.meta.get("modifier"),
        meta=record.meta, model=identity, settings=settings.to_dict(), key=key, finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, error=result.error,
        extra=result.extra,
    )


@dataclass
class GenerationSummary:
    """What one `run_generation` call did."""

    path: str
    requested: int = 0
    reused: int = 0
    """Rows already in the file with a matching key (not regenerated)."""
    generated: int = 0
    failed: int = 0
    """Requests that failed in this call (recorded as rows with an error)."""
    retried: int = 0
    """Failed rows from an earlier run removed to be tried again."""
    partial_lines_dropped: int = 0
    """Incomplete last lines (an interrupted write) cut off before resuming."""
    same_prompt: int = 0
    """Rows written in this call that took the answer of another record with the same prompt (greedy
    decoding: one request, or the stored answer, serves every record with that prompt)."""
    failures: dict[str, str] = field(default_factory=dict)
    """Record id -> error, for the first failed records of this call."""
    other_rows: int = 0
    """Rows in the file for prompts outside this run (same model and settings), kept as they are."""
    new_tokens: int = 0
    seconds: float = 0.0
    identity: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 2)}

    def line(self) -> str:
        shared = f" ({self.same_prompt} sharing the answer of an identical prompt)" if self.same_prompt else ""
        text = (f"{self.path}: {self.requested} prompts: {self.reused} reused, {self.generated} generated{shared}, "
                f"{self.failed} failed")
        if self.retried:
            text += f", {self.retried} earlier failures retried"
        if self.partial_lines_dropped:
            text += f", {self.partial_lines_dropped} partial line(s) from an interrupted run dropped"
        if self.generated:
            text += f"; {self.new_tokens} new tokens in {self.seconds:.1f} s ({self.tokens_per_second:.1f} tokens/s)"
        return text


def run_generation(
    records: Sequence[ChatRecord],
    backend: GenerationBackend,
    settings: DecodingSettings,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    retry_failed: bool = True,
    progress: bool = False,
) -> GenerationSummary:
    """Generate a response for every record into `out_path` (resuming if it exists); returns what was done
    (also written to `FILE.summary.json`; `.path` is the file). The one entry point: a `generate(...) -> Path`
    twin was removed, its name clashed with the backends' `generate(requests, settings)` and the package.

    Every record gets its own row, matched on resume by (record id, key). Under greedy decoding,
    records with the same prompt and language share one request (or a stored answer): the answer
    cannot differ.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_unique_ids(records)
    identity = backend.identity()
    run_key = stable_hash({"model": identity, "settings": settings.to_dict()})
    keys = {rec.id: generation_key(identity, [m.to_dict() for m in rec.prompt_messages], settings) for rec in records}
    summary = GenerationSummary(str(out), requested=len(records), identity=identity, settings=settings.to_dict())
    sink = _AppendFile(out)  # the writer lock comes first: --overwrite never empties a file another run writes
    try:
        if overwrite:
            sink.truncate()
        rows, summary.partial_lines_dropped = sink.read_and_repair()
        _check_compatible(out, rows, run_key)
        if retry_failed and any(row.failed for row in rows):
            kept = [row for row in rows if not row.failed]
            summary.retried = len(rows) - len(kept)
            sink.rewrite(kept)
            rows = kept
        done = {(row.id, row.key) for row in rows}
        summary.reused = sum(1 for rec in records if (rec.id, keys[rec.id]) in done)
        summary.other_rows = sum(1 for row in rows if keys.get(row.id) != row.key)
        pending = [rec for rec in records if (rec.id, keys[rec.id]) not in done]
        from_store, groups = _plan_requests(pending, rows, keys, settings.greedy)
        for rec, row in from_store:
            sink.append(build_row(rec, _stored_result(row, rec.id), identity, settings, keys[rec.id]))
        summary.generated += len(from_store)
        summary.same_prompt += len(from_store)
        requests = [GenerationRequest(rid, recs[0].prompt_messages) for rid, recs in groups.items()]
        start = time.perf_counter()
        bar = _progress(len(requests), progress)
        for result in _checked(backend.generate(requests, settings), set(groups)):
            for rec in groups[result.id]:
                shared = _shared_result(result, rec.id)
                sink.append(build_row(rec, shared, identity, settings, keys[rec.id]))
                summary.generated += result.error is None
                summary.failed += result.error is not None
                summary.same_prompt += rec.id != result.id
                if result.error is not None and len(summary.failures) < MAX_LISTED_FAILURES:
                    summary.failures[rec.id] = result.error
            summary.new_tokens += result.completion_tokens or 0
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - start
        if summary.failed:
            log.warning("%d of %d records failed; they are recorded with their error and retried on the next run",
                        summary.failed, len(pending))
        _write_summary(out, summary)
    finally:
        sink.close()
    return summary


MAX_LISTED_FAILURES = 5
"""Failed records named (with their error) in a summary."""


def _plan_requests(pending: Sequence[ChatRecord], rows: Sequence[GenerationRow], keys: dict[str, str],
                   greedy: bool) -> tuple[list[tuple[ChatRecord, GenerationRow]], dict[str, list[ChatRecord]]]:
    """What to send for the `pending` records: (records answered by a stored row, request id -> the
    records its answer is for). Under greedy decoding, records with the same prompt and language (a
    steered backend edits states per language) get the same answer, so one request, or an answer
    already stored, serves every such record; otherwise each record is its own request."""
    stored = {(row.key, row.lang): row for row in rows if not row.failed} if greedy else {}
    from_store: list[tuple[ChatRecord, GenerationRow]] = []
    groups: dict[str, list[ChatRecord]] = {}
    lead: dict[tuple[str, str], str] = {}
    for rec in pending:
        same = (keys[rec.id], rec.lang)
        if same in stored:
            from_store.append((rec, stored[same]))
        elif greedy and same in lead:
            groups[lead[same]].append(rec)
        else:
            groups[rec.id] = [rec]
            lead[same] = rec.id
    return from_store, groups


def _shared_result(result: GenerationResult, record_id: str) -> GenerationResult:
    """`result` as the answer for `record_id` (the same when it is the record the request was for)."""
    if result.id == record_id:
        return result
    return replace(result, id=record_id, extra={**result.extra, "same_prompt_as": result.id})


def _stored_result(row: GenerationRow, record_id: str) -> GenerationResult:
    """The answer stored in another record's row (same prompt and settings, greedy) for `record_id`."""
    return GenerationResult(record_id, row.response, row.finish_reason,  # type: ignore[arg-type]
                            row.prompt_tokens, row.completion_tokens, extra={**row.extra, "same_prompt_as": row.id})


def _check_unique_ids(records: Sequence[ChatRecord]) -> None:
    seen: set[str] = set()
    for rec in records:
        if rec.id in seen:
            raise ValueError(f"record id {rec.id!r} appears twice; generation rows are matched by id")
        seen.add(rec.id)


def _checked(results: Iterator[GenerationResult], expected: set[str]) -> Iterator[GenerationResult]:
    """Pass results through, refusing unknown or repeated ids, and check every request was answered."""
    missing = set(expected)
    for result in results:
        if result.id not in missing:
            raise RuntimeError(f"backend returned an unexpected or repeated result for request {result.id!r}")
        missing.discard(result.id)
        yield result
    if missing:
        raise RuntimeError(f"backend finished without answering {len(missing)} request(s)")


class _WriterLock:
    """An exclusive lock on `FILE.lock` beside a file, naming its holder (pid, host, start time) for
    whoever is refused. The lock file is removed on release; whoever locked a lock file that was
    removed meanwhile locks the new one instead, so two writers never both hold a lock."""

    def __init__(self, target: Path) -> None:
        self.path = target.with_name(target.name + ".lock")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise GenerationFileError(f"{target}: cannot create its lock file {self.path}: "
                                          f"{exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise GenerationFileError(f"{target}: another process is writing this file ({self.holder()}); "
                                          "wait for it to finish or use another --out") from None
            try:
                current = os.stat(self.path)
                mine = os.fstat(fd)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the previous holder removed the file we opened: lock the one there now
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        self.fd = fd

    def holder(self) -> str:
        """Who holds the lock, as its lock file says."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {info['pid']} on host {info['host']}, since {info['since']}; lock file {self.path}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"lock file {self.path}"

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)


class _AppendFile:
    """The generation file, under its writer lock, opened for appending whole lines (`JSONLAppender`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = _WriterLock(path)
        try:
            self.sink = JSONLAppender(path)
        except OSError as exc:
            self.lock.release()
            raise GenerationFileError(f"{path}: cannot open for writing: {exc.strerror or exc}") from exc
        except BaseException:
            self.lock.release()
            raise

    def append(self, row: GenerationRow) -> None:
        self.sink.append(row.to_dict())  # one write per line: an interruption leaves at most a partial last line

    def truncate(self) -> None:
        """Empty the file (under the lock: --overwrite)."""
        self.sink.truncate()

    def read_and_repair(self) -> tuple[list[GenerationRow], int]:
        """Parse every complete line; cut off an incomplete last line (an interrupted write)."""
        data, torn = split_torn_tail(self.path.read_bytes())
        if torn:
            self.sink.truncate(len(data))
            log.warning("%s: dropped an incomplete last line (%d bytes) left by an interrupted run", self.path, torn)
        rows = []
        for lineno, row in iter_jsonl_rows(data, self.path):
            if isinstance(row, JSONLError):
                raise GenerationFileError(f"{self.path}:{lineno}: {row.reason}; the file was changed by something "
                                          "other than babeltune: fix or remove the line")
            if not isinstance(row, dict) or "key" not in row:
                raise GenerationFileError(f"{self.path}:{lineno}: field 'key': missing; not a babeltune generation row")
            rows.append(GenerationRow.from_dict(row, str(self.path), lineno))
        return rows, int(torn > 0)

    def rewrite(self, rows: list[GenerationRow]) -> None:
        """Replace the content with `rows` atomically (temp file + rename); the lock is kept."""
        write_jsonl_atomic(self.path, (row.to_dict() for row in rows))
        self.sink.reopen()

    def close(self) -> None:
        self.sink.close()
        self.lock.release()


def _check_compatible(path: Path, rows: list[GenerationRow], run_key: str) -> None:
    seen: set[tuple[str, str]] = set()
    for row in rows:
        row_id = (row.id, row.key)
        if row_id in seen and not row.failed:
            raise GenerationFileError(f"{path}: generation {row.id!r} appears twice; remove one copy")
        seen.add(row_id)
        row_run = stable_hash({"model": row.model, "settings": row.settings})
        if row_run != run_key:
            raise GenerationFileError(
                f"{path} already holds generations from another model or other decoding settings "
                f"(first: id {row.id!r}, model {row.model}); use another --out, or --overwrite "
                "to replace them"
            )


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="prompt", desc="generate", dynamic_ncols=True)


def _write_summary(out: Path, summary: GenerationSummary) -> None:
    from babeltune.runinfo import git_commit, package_versions

    path = out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")
    payload = {**summary.to_dict(), "versions": package_versions(), "git_commit": git_commit()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_generations(path: str | Path) -> list[GenerationRow]:
    """Read a generation file strictly: every line a complete row with the fields evaluation needs and a
    unique id (errors name file:line and field)."""
    return [row for _, row in read_generation_lines(path)]


def read_generation_lines(path: str | Path) -> list[tuple[int, GenerationRow]]:
    """`read_generations`, with each row's line number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"generation file not found: {path} (write one with `babeltune generate`)")
    numbered: list[tuple[int, GenerationRow]] = []
    seen: dict[str, int] = {}
    try:
        for lineno, raw in iter_jsonl(path):
            row = GenerationRow.from_dict(raw, str(path), lineno)
            if row.id in seen:
                raise GenerationFileError(f"{path}:{lineno}: field 'id': {row.id!r} already at line {seen[row.id]}")
            seen[row.id] = lineno
            numbered.append((lineno, row))
    except JSONLError as exc:
        raise GenerationFileError(str(exc)) from exc
    return numbered
