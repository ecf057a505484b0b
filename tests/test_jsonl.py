"""The one JSONL reader: every way a line can fail to be a JSON value is a FILE:LINE error with a kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from babeltune.data import load_records
from babeltune.data.jsonl import JSONLError, iter_jsonl, iter_jsonl_rows
from tests.conftest import make_parallel

GOOD = json.dumps(make_parallel(1, ("en",))[0]).encode()

BAD_LINES = [
    ("caf\xe9".encode("latin-1"), "not_utf8", "not UTF-8 text (byte 0xe9 at column 4)"),
    (b"\x89PNG\x1a\x00\x00\x0d", "binary", "binary data"),
    (b"{not json", "malformed", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep", "nested too deeply"),
    (b'{"a": {"b": ["\\ud800"]}}', "lone_surrogate", "a.b[0]: a lone UTF-16 surrogate"),
    (b'{"x": NaN}', "non_finite", "NaN is not a finite number"),
    (b'{"x": -Infinity}', "non_finite", "-Infinity is not a finite number"),
    (b'{"x": 1e999}', "non_finite", "too large for a float"),
]


@pytest.mark.parametrize("raw, kind, reason", BAD_LINES, ids=[k for _, k, _ in BAD_LINES])
def test_bad_line_is_a_file_line_error(tmp_path: Path, raw: bytes, kind: str, reason: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD + b"\n\n" + raw + b"\n" + GOOD + b"\n")
    with pytest.raises(JSONLError) as info:
        list(iter_jsonl(path))
    err = info.value
    assert (err.source, err.line, err.kind) == (str(path), 3, kind)
    assert str(err).startswith(f"{path}:3: field '<line>': ") and reason in str(err)
    assert isinstance(err, ValueError)


def test_rows_go_on_past_a_bad_line_and_keep_line_numbers() -> None:
    data = b'{"a": 1}\r\n{"a": NaN}\n\n{"b": "x\xe2\x80\xa8y"}'  # U+2028 inside a string stays in its line
    items = list(iter_jsonl_rows(data, "m.jsonl"))
    assert [n for n, _ in items] == [1, 2, 4]
    assert items[0][1] == {"a": 1} and isinstance(items[1][1], JSONLError)
    assert items[2][1] == {"b": "x\u2028y"}


def test_valid_surrogate_pair_and_bom_are_accepted() -> None:
    items = list(iter_jsonl_rows(b'\xef\xbb\xbf{"e": "\\ud83d\\ude00"}\n', "e.jsonl"))
    assert items == [(1, {"e": "\U0001F600"})]


@pytest.mark.parametrize("raw, kind, reason", BAD_LINES, ids=[k for _, k, _ in BAD_LINES])
def test_skip_invalid_counts_each_reason(tmp_path: Path, raw: bytes, kind: str, reason: str) -> None:
    path = tmp_path / "d.jsonl"
    rows = make_parallel(2, ("en",))
    path.write_bytes(json.dumps(rows[0]).encode() + b"\n" + raw + b"\n" + json.dumps(rows[1]).encode() + b"\n")
    result = load_records(path, on_invalid="skip")
    assert (result.report.rows, result.report.kept) == (3, 2)
    assert dict(result.report.rejected) == {kind: 1}
    assert f"{path}:2:" in result.report.examples[kind][0]


def test_judgements_with_a_line_separator_in_a_reply_read_back(tmp_path: Path) -> None:
    from babeltune.judge.pairs import load_judgements, save_judgements
    from babeltune.judge.protocol import SxSJudgement

    judgement = SxSJudgement("a-en", "a", "en", "win", (1, 2), (1, 1), ("[[1]]\u2028", "x\u2029[[2]]"))
    save_judgements(tmp_path / "j.jsonl", [judgement])
    assert load_judgements(tmp_path / "j.jsonl") == [judgement]


def test_writer_round_trips_and_appends_whole_lines(tmp_path: Path) -> None:
    from babeltune.data.jsonl import JSONLAppender, append_jsonl, split_torn_tail, write_jsonl_atomic

    path = tmp_path / "w.jsonl"
    values = [{"a": "x\u2028y"}, [1, 2], "é"]
    assert write_jsonl_atomic(path, values) == 3
    append_jsonl(path, {"b": None})
    sink = JSONLAppender(path)
    sink.append({"c": 1})
    sink.close()
    data = path.read_bytes()
    assert data.count(b"\n") == 5 and "x\u2028y".encode() in data  # ensure_ascii=False: text as itself
    assert [v for _, v in iter_jsonl(path)] == [*values, {"b": None}, {"c": 1}]
    assert split_torn_tail(data + b'{"d": ') == (data, 6)


def test_atomic_write_that_fails_leaves_the_old_file(tmp_path: Path) -> None:
    from babeltune.data.jsonl import write_jsonl_atomic

    path = tmp_path / "w.jsonl"
    write_jsonl_atomic(path, [{"a": 1}])

    def broken() -> Any:
        yield {"a": 2}
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, broken())
    assert path.read_text() == '{"a": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["w.jsonl"]
