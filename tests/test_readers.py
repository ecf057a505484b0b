from __future__ import annotations

import json
from pathlib import Path

import pytest

from babeltune.data import RecordError, load_records, read_records
from tests.conftest import make_parallel, write_rows


def test_reads_babeltune_jsonl(parallel_file: Path) -> None:
    result = load_records(parallel_file)
    assert len(result.records) == 30 * 12
    assert result.report.kept == 360 and not result.report.rejected
    assert len(result.report.fingerprint) == 64
    rec = result.records[0]
    assert (rec.pid == "p000" and rec.lang == "ar") or rec.lang in {"en", "ar"}
    assert rec.response and rec.prompt


def test_alpaca_rows_with_lang_option(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "alpaca.jsonl", [
        {"instruction": "Traduce al inglés", "input": "Hola", "output": "Hello", "id": "a1"},
        {"instruction": "Di hola", "output": "Hola"},
    ])
    recs = read_records(path, lang="es")
    assert [r.id for r in recs] == ["a1-es", "alpaca-2-es"]
    assert recs[0].prompt == "Traduce al inglés\n\nHola"
    assert recs[0].response == "Hello"


def test_chat_and_sharegpt_rows(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "chat.jsonl", [
        {"lang": "fi", "messages": [{"role": "system", "content": "Ole lyhyt."},
                                    {"role": "user", "content": "Moi"}, {"role": "assistant", "content": "Hei!"}]},
        {"language": "ru",
         "conversations": [{"from": "human", "value": "Привет"}, {"from": "gpt", "value": "Здравствуйте"}]},
    ])
    recs = read_records(path)
    assert [r.lang for r in recs] == ["fi", "ru"]
    assert recs[0].messages[0].role == "system"
    assert recs[1].response == "Здравствуйте"


@pytest.mark.parametrize("row, field, kind", [
    ("{not json", "<line>", "malformed"),
    (json.dumps({"id": "x", "pid": "x", "lang": "en"}), "messages", "missing_field"),
    (json.dumps({"id": "x", "pid": "x", "lang": "xx", "messages": [{"role": "user", "content": "a"}]}), "lang",
     "unknown_language"),
    (json.dumps({"id": "x", "pid": "x", "lang": "en", "messages": [{"role": "user", "content": "  "}]}),
     "messages[0].content", "empty_turn"),
    (json.dumps({"id": "x", "pid": "x", "lang": "en", "messages": [{"role": "assistant", "content": "a"}]}),
     "messages[0].role", "bad_role"),
    (json.dumps({"instruction": "hi", "output": "ho"}), "lang", "missing_language"),
])
def test_invalid_row_names_file_line_field(tmp_path: Path, row: str, field: str, kind: str) -> None:
    good = json.dumps(make_parallel(1, ("en",))[0])
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(RecordError) as info:
        read_records(path)
    err = info.value
    assert (err.line, err.field, err.kind) == (2, field, kind)
    assert f"bad.jsonl:2: field '{field}'" in str(err)


def test_duplicate_id_is_an_error(tmp_path: Path) -> None:
    rows = make_parallel(1, ("en",)) * 2
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field 'id': duplicate id 'p000-en' \(first at .*:1\)"):
        read_records(write_rows(tmp_path / "bad.jsonl", rows))


def test_skip_invalid_counts_every_reason(tmp_path: Path) -> None:
    rows = make_parallel(3, ("en", "es"))
    lines = [json.dumps(r) for r in rows]
    lines.insert(1, "{broken")
    lines.append(lines[0])  # duplicate id
    lines.append(json.dumps({"id": "z", "pid": "z", "lang": "qq", "messages": [{"role": "user", "content": "a"}]}))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = load_records(path, on_invalid="skip")
    assert result.report.rows == 9 and result.report.kept == 6
    assert dict(result.report.rejected) == {"malformed": 1, "duplicate_id": 1, "unknown_language": 1}
    assert "rejected 3" in result.report.summary()
    assert all(result.report.examples[k] for k in result.report.rejected)


def test_folder_of_jsonl_files(tmp_path: Path) -> None:
    rows = make_parallel(2, ("en", "es"))
    write_rows(tmp_path / "en.jsonl", [r for r in rows if r["lang"] == "en"])
    write_rows(tmp_path / "es.jsonl", [r for r in rows if r["lang"] == "es"])
    assert len(read_records(tmp_path)) == 4


def test_missing_source_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bundled:train"):
        read_records(tmp_path / "nope.jsonl")


def test_hf_sources_from_local_files(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"instruction": f"Sema jambo {i}", "input": "", "output": "Jambo!", "lang": "sw", "id": f"r{i}"}
            for i in range(4)]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    from_disk = load_records(f"hf:{tmp_path / 'saved'}")
    from_parquet = load_records(f"hf:{tmp_path / 'rows.parquet'}")
    assert [r.id for r in from_disk.records] == ["r0-sw", "r1-sw", "r2-sw", "r3-sw"]
    assert from_parquet.records == from_disk.records
    assert from_parquet.report.fingerprint


def test_language_filter_is_counted(parallel_file: Path) -> None:
    result = load_records(parallel_file, languages=["en", "es"])
    assert {r.lang for r in result.records} == {"en", "es"}
    assert result.report.rejected["filtered_language"] == 300
