"""Study B's released evaluation files (pasero format) as the data source `pasero:DIR`, on files written
here in that format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from babeltune.data import load_records
from babeltune.data.pasero import modifier_for_type
from babeltune.evaluate import parse_modifier

TYPES = ["lang_fr", "short", "long", "complex_inst", "simple_style", "scientific_style", "markdown_template",
         "html_template", "cap_template", "arrow_template", "num_items_3"]
PROMPT = {"en": "Tell me about tea", "es": "Háblame del té", "zh": "介绍一下茶"}


def write_folder(folder: Path, langs: tuple[str, ...] = ("en", "es", "zh")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        lines = [json.dumps([{"role": "user", "content": f"{PROMPT[lang]} ({t})"}], ensure_ascii=False)
                 for t in TYPES]
        (folder / f"modifiers.{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / f"modifiers.{lang}.types").write_text("\n".join(TYPES) + "\n", encoding="utf-8")
        open_prompts = [json.dumps([{"role": "user", "content": f"{PROMPT[lang]} #{i}"}], ensure_ascii=False)
                        for i in range(2)]
        (folder / f"alpacaeval_test_subset.{lang}.jsonl").write_text("\n".join(open_prompts) + "\n", encoding="utf-8")
    return folder


def test_every_type_maps_to_a_valid_babeltune_modifier() -> None:
    expected = [{"kind": "answer_language", "lang": "fr"}, {"kind": "short"}, {"kind": "long"},
                {"kind": "complex_inst"}, {"kind": "simple_style"}, {"kind": "scientific_style"},
                {"kind": "markdown_headings"}, {"kind": "html_page"}, {"kind": "all_caps"}, {"kind": "arrows"},
                {"kind": "list_items", "n": 3}]
    assert [modifier_for_type(t) for t in TYPES] == expected
    for spec in expected:
        parse_modifier(spec)  # every mapped spec is one babeltune checks (or hands to the judge)
    with pytest.raises(ValueError, match="unknown modifier type 'haiku'"):
        modifier_for_type("haiku")
    with pytest.raises(ValueError, match="unknown language code"):
        modifier_for_type("lang_qq")


def test_the_folder_reads_as_parallel_records(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "data")
    result = load_records(f"pasero:{folder}")
    records = result.records
    assert len(records) == 3 * (len(TYPES) + 2) and result.report.kept == len(records)
    mods = [r for r in records if r.meta["split"] == "modifiers"]
    first = next(r for r in mods if r.lang == "es" and r.pid == "modifiers-1")
    assert first.id == "modifiers-1-es" and first.prompt.startswith("Háblame del té")
    assert first.meta["modifier"] == {"kind": "answer_language", "lang": "fr"}
    assert first.meta["pasero_type"] == "lang_fr"
    # Parallel by line number: one pid per line, in every language, with the same modifier.
    eleventh = [r for r in mods if r.pid == "modifiers-11"]
    assert sorted(r.lang for r in eleventh) == ["en", "es", "zh"]
    assert all(r.meta["modifier"] == {"kind": "list_items", "n": 3} for r in eleventh)
    open_prompts = [r for r in records if r.meta["split"] == "eval"]
    assert {r.pid for r in open_prompts} == {"alpacaeval-1", "alpacaeval-2"} and "modifier" not in open_prompts[0].meta
    only = load_records(f"pasero:{folder}@alpacaeval").records
    assert [r.id for r in only] == [r.id for r in open_prompts]
    assert len(load_records(f"pasero:{folder}@modifiers").records) == 3 * len(TYPES)
    again = load_records(f"pasero:{folder}").report.fingerprint
    assert result.report.fingerprint and result.report.fingerprint == again


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "data", ("en",))
    types = folder / "modifiers.en.types"
    types.write_text("\n".join([*TYPES[:-1], "haiku"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"modifiers\.en\.types:11: field 'type': unknown modifier type 'haiku'"):
        load_records(f"pasero:{folder}")
    skipped = load_records(f"pasero:{folder}", on_invalid="skip")
    assert skipped.report.rejected["unknown_modifier"] == 1 and skipped.report.kept == len(TYPES) - 1 + 2
    types.write_text("\n".join(TYPES[:3]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"11 prompts but modifiers\.en\.types has 3 lines"):
        load_records(f"pasero:{folder}@modifiers")
    types.write_text("\n".join(TYPES) + "\n", encoding="utf-8")
    (folder / "modifiers.en.jsonl").write_text('{"role": "user"}\n' * len(TYPES), encoding="utf-8")
    with pytest.raises(ValueError, match=r"modifiers\.en\.jsonl:1: .*JSON list of chat messages"):
        load_records(f"pasero:{folder}@modifiers")
    with pytest.raises(ValueError, match="unknown set 'x'"):
        load_records(f"pasero:{folder}@x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_records(f"pasero:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match=r"no modifiers\.LANG\.jsonl"):
        load_records(f"pasero:{tmp_path}@modifiers")


def test_lines_split_on_newline_only_and_bad_bytes_are_file_line_errors(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "data", ("en",))
    path = folder / "alpacaeval_test_subset.en.jsonl"
    first = json.dumps([{"role": "user", "content": "one\u2028two\x85three"}], ensure_ascii=False)
    path.write_bytes(first.encode() + b"\r\n" + b'[{"role": "user", "content": "caf\xe9"}]\n')
    with pytest.raises(ValueError, match=r"alpacaeval_test_subset\.en\.jsonl:2: field '<line>': not UTF-8"):
        load_records(f"pasero:{folder}@alpacaeval")
    kept = load_records(f"pasero:{folder}@alpacaeval", on_invalid="skip")
    assert kept.report.rejected == {"not_utf8": 1}
    assert [r.prompt for r in kept.records] == ["one\u2028two\x85three"]
