"""The generation runner: rows carry what eval needs, the output file is a cache keyed by model, prompt
and settings, failures are recorded and retried, and a SIGKILLed run resumes without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from babeltune.data.records import ChatRecord, Message
from babeltune.generate import (
    DecodingSettings,
    GenerationFileError,
    GenerationRequest,
    GenerationResult,
    GenerationRow,
    read_generations,
    run_generation,
)
from babeltune.generate.rows import ROW_FIELDS

SETTINGS = DecodingSettings(max_new_tokens=8)


class EchoBackend:
    """A scripted backend: answers 'echo: <prompt>', fails the ids in `fail`, sleeps `delay` per item."""

    name = "echo"

    def __init__(self, fail: Sequence[str] = (), delay: float = 0.0, tag: str = "v1") -> None:
        self.fail, self.delay, self.tag = set(fail), delay, tag
        self.calls: list[str] = []

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "tag": self.tag}

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        for req in requests:
            time.sleep(self.delay)
            self.calls.append(req.id)
            if req.id in self.fail:
                yield GenerationResult.failure(req.id, "HTTP 503: overloaded")
            else:
                text = f"echo: {req.messages[-1].content}"
                yield GenerationResult(req.id, text, "stop", len(req.messages[-1].content), 3)


def make_records(n: int, langs: Sequence[str] = ("en", "es", "zh"), same_prompts: bool = False) -> list[ChatRecord]:
    """n records; with `same_prompts`, records 2k and 2k+1 ask the same prompt in the same language under
    different ids."""
    records = []
    for i in range(n):
        lang = langs[(i // 2 if same_prompts else i) % len(langs)]
        meta: dict[str, Any] = {"split": "modifiers", "modifier": {"kind": "list_items", "n": 3}} if i % 2 else {}
        prompt = f"prompt {i - i % 2 if same_prompts else i}"
        records.append(ChatRecord(f"q{i:03d}-{lang}", f"q{i:03d}", lang,
                                  (Message("user", prompt), Message("assistant", f"reference {i}")), meta))
    return records


def test_rows_carry_everything_eval_needs(tmp_path: Path) -> None:
    records = make_records(4)
    out = Path(run_generation(records, EchoBackend(), SETTINGS, tmp_path / "g.jsonl").path)
    rows = read_generations(out)
    assert [r.id for r in rows] == [r.id for r in records]
    for row, rec in zip(rows, records, strict=True):
        assert list(row.to_dict()) == list(ROW_FIELDS)
        assert row.response == f"echo: {rec.prompt}" and row.reference == rec.response
        assert row.messages == [{"role": "user", "content": rec.prompt}]
        assert row.modifier == rec.meta.get("modifier")
        assert row.settings == SETTINGS.to_dict() and row.model == {"backend": "echo", "tag": "v1"}
        assert row.finish_reason == "stop" and row.completion_tokens == 3 and row.error is None
    summary = json.loads((tmp_path / "g.summary.json").read_text())
    assert summary["generated"] == 4 and summary["versions"]["torch"]


def test_rerun_reuses_cache_and_other_settings_are_refused(tmp_path: Path) -> None:
    records = make_records(6)
    out = tmp_path / "g.jsonl"
    run_generation(records[:4], EchoBackend(), SETTINGS, out)
    backend = EchoBackend()
    summary = run_generation(records, backend, SETTINGS, out)
    assert summary.reused == 4 and summary.generated == 2
    assert backend.calls == [r.id for r in records[4:]]
    assert [r.id for r in read_generations(out)] == [r.id for r in records]
    with pytest.raises(GenerationFileError, match="other decoding settings"):
        run_generation(records, EchoBackend(), DecodingSettings(max_new_tokens=9), out)
    with pytest.raises(GenerationFileError, match="another model"):
        run_generation(records, EchoBackend(tag="v2"), SETTINGS, out)
    fresh = run_generation(records, EchoBackend(tag="v2"), SETTINGS, out, overwrite=True)
    assert fresh.generated == 6 and fresh.reused == 0


def test_failures_are_recorded_then_retried(tmp_path: Path) -> None:
    records = make_records(5)
    out = tmp_path / "g.jsonl"
    first = run_generation(records, EchoBackend(fail=[records[1].id, records[3].id]), SETTINGS, out)
    assert (first.generated, first.failed) == (3, 2)
    failed = [r for r in read_generations(out) if r.error is not None]
    assert [r.id for r in failed] == [records[1].id, records[3].id]
    assert all(r.response is None and r.finish_reason == "error" for r in failed)
    backend = EchoBackend()
    second = run_generation(records, backend, SETTINGS, out)
    assert (second.retried, second.reused, second.generated) == (2, 3, 2)
    assert sorted(backend.calls) == sorted([records[1].id, records[3].id])
    rows = read_generations(out)
    assert sorted(r.id for r in rows) == sorted(r.id for r in records)
    assert all(r.error is None for r in rows)


def test_partial_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    records = make_records(3)
    out = tmp_path / "g.jsonl"
    run_generation(records[:2], EchoBackend(), SETTINGS, out)
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "q002-zh", "pid": "q0')  # what a kill in the middle of a write leaves
    summary = run_generation(records, EchoBackend(), SETTINGS, out)
    assert (summary.partial_lines_dropped, summary.reused, summary.generated) == (1, 2, 1)
    assert [r.id for r in read_generations(out)] == [r.id for r in records]


def test_a_corrupted_middle_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    records = make_records(3)
    out = tmp_path / "g.jsonl"
    run_generation(records, EchoBackend(), SETTINGS, out)
    lines = out.read_text().splitlines()
    lines[1] = lines[1][:20]
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(GenerationFileError, match=r"g\.jsonl:2: not valid JSON"):
        run_generation(records, EchoBackend(), SETTINGS, out)


def test_duplicate_record_ids_are_refused(tmp_path: Path) -> None:
    records = make_records(2)
    with pytest.raises(ValueError, match="appears twice"):
        run_generation([*records, records[0]], EchoBackend(), SETTINGS, tmp_path / "g.jsonl")


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_generate_runner import EchoBackend, SETTINGS, make_records
from babeltune.generate import run_generation
run_generation(make_records({n}, same_prompts={dup}), EchoBackend(delay={delay}), SETTINGS, {out!r})
"""


def _essentials(rows: list[GenerationRow]) -> list[tuple[Any, ...]]:
    return sorted((r.id, r.key, r.prompt, r.response, r.finish_reason, r.error) for r in rows)


@pytest.mark.parametrize("same_prompts", [False, True], ids=["distinct prompts", "pairs of records share a prompt"])
def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path: Path, same_prompts: bool) -> None:
    n = 40
    out = tmp_path / "g.jsonl"
    code = _CHILD.format(tests=str(Path(__file__).parent), n=n, delay=0.05, dup=same_prompts, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline:
        if out.exists() and out.read_text().count("\n") >= 5:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = out.read_text().count("\n")
    assert 5 <= done_before < n, "the child should have been killed mid-run"
    backend = EchoBackend()
    records = make_records(n, same_prompts=same_prompts)
    summary = run_generation(records, backend, SETTINGS, out)
    assert summary.reused == done_before and summary.generated == n - done_before
    rows = read_generations(out)  # raises on any duplicate id
    assert sorted(r.id for r in rows) == sorted(r.id for r in records)
    assert all(r.response == f"echo: {r.prompt}" for r in rows)
    assert len(set(backend.calls) & {r.id for r in rows[:done_before]}) == 0
    uninterrupted = tmp_path / "uninterrupted.jsonl"
    run_generation(records, EchoBackend(), SETTINGS, uninterrupted)
    assert _essentials(rows) == _essentials(read_generations(uninterrupted))


def test_records_with_the_same_prompt_each_get_a_row(tmp_path: Path) -> None:
    """Before: rows were keyed by (model, prompt, settings) only, so the second record was dropped."""
    records = make_records(6, same_prompts=True)
    out = tmp_path / "g.jsonl"
    backend = EchoBackend()
    summary = run_generation(records, backend, SETTINGS, out)
    assert (summary.requested, summary.generated, summary.same_prompt) == (6, 6, 3)
    assert "6 generated (3 sharing the answer of an identical prompt)" in summary.line()
    assert backend.calls == ["q000-en", "q002-es", "q004-zh"], "greedy: one request per distinct prompt"
    rows = read_generations(out)
    assert [r.id for r in rows] == [r.id for r in records]
    assert rows[1].response == rows[0].response and rows[1].extra["same_prompt_as"] == "q000-en"
    # a record added later with a prompt already answered takes the stored answer, without a request;
    # the same prompt in another language is asked (a steered model answers per language)
    more = [*records, ChatRecord("late-es", "late", "es", (Message("user", "prompt 2"),), {}),
            ChatRecord("late-en", "late", "en", (Message("user", "prompt 2"),), {})]
    again = EchoBackend()
    summary = run_generation(more, again, SETTINGS, out)
    assert (summary.reused, summary.generated, summary.same_prompt, again.calls) == (6, 2, 1, ["late-en"])
    assert [r.response for r in read_generations(out)[-2:]] == ["echo: prompt 2"] * 2
    # sampling: each record has its own seed, so each gets its own request
    sampled = EchoBackend()
    run_generation(records, sampled, DecodingSettings(max_new_tokens=8, temperature=0.7), tmp_path / "s.jsonl")
    assert len(sampled.calls) == 6 and len(read_generations(tmp_path / "s.jsonl")) == 6


def test_two_writers_on_one_file_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    code = _CHILD.format(tests=str(Path(__file__).parent), n=200, delay=0.05, dup=False, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out.exists() and out.stat().st_size > 0):
            time.sleep(0.02)
        with pytest.raises(GenerationFileError, match="another process is writing"):
            run_generation(make_records(200), EchoBackend(), SETTINGS, out)
    finally:
        child.kill()
        child.wait()


def test_a_line_separator_in_a_response_stays_in_its_row(tmp_path: Path) -> None:
    """U+2028 / U+2029 / U+0085 are written as themselves (ensure_ascii=False); lines split on newline only."""
    records = [ChatRecord(f"s{i}-en", f"s{i}", "en", (Message("user", f"one{sep}two"), Message("assistant", "r")), {})
               for i, sep in enumerate(("\u2028", "\u2029", "\x85", "\x1c"))]
    out = tmp_path / "g.jsonl"
    run_generation(records, EchoBackend(), SETTINGS, out)
    assert "\u2028" in out.read_text(encoding="utf-8")
    rows = read_generations(out)
    assert [r.response for r in rows] == [f"echo: {rec.prompt}" for rec in records]
    assert run_generation(records, EchoBackend(), SETTINGS, out).reused == len(records)


def test_rows_round_trip_byte_for_byte_and_keep_unknown_keys(tmp_path: Path) -> None:
    """A generation file is a cache users keep: reading a row and writing it back gives the same line,
    and a key this version does not know is kept (after the known ones), never dropped."""
    out = tmp_path / "g.jsonl"
    run_generation(make_records(3), EchoBackend(fail=["q001-es"]), SETTINGS, out)
    lines = out.read_bytes().splitlines(keepends=True)
    rows = read_generations(out)
    assert [(json.dumps(r.to_dict(), ensure_ascii=False) + "\n").encode() for r in rows] == lines
    extended = {**json.loads(lines[0]), "annotator": "kept"}
    assert GenerationRow.from_dict(extended).to_dict() == extended
    run_generation(make_records(3), EchoBackend(), SETTINGS, out)  # retries the failed row: rewrites the file
    assert out.read_bytes().splitlines(keepends=True)[:2] == [lines[0], lines[2]]


@pytest.mark.parametrize("change, message", [
    ({"id": 7}, "field 'id': must be a string"),
    ({"response": ["x"]}, "field 'response': must be a string or null"),
    ({"completion_tokens": "3"}, "field 'completion_tokens': must be an integer or null"),
    ({"finish_reason": None}, "field 'finish_reason': must be a string"),
])
def test_a_bad_row_names_file_line_and_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    out = tmp_path / "g.jsonl"
    run_generation(make_records(2), EchoBackend(), SETTINGS, out)
    first, second = out.read_text(encoding="utf-8").splitlines()
    out.write_text(first + "\n" + json.dumps({**json.loads(second), **change}) + "\n", encoding="utf-8")
    with pytest.raises(GenerationFileError, match=rf"g\.jsonl:2: {message}"):
        read_generations(out)
    lines = first + "\n" + json.dumps({k: v for k, v in json.loads(second).items() if k != "lang"}) + "\n"
    out.write_text(lines, encoding="utf-8")
    with pytest.raises(GenerationFileError, match=r"g\.jsonl:2: field 'lang': missing"):
        read_generations(out)
