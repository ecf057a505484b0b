"""Quality gates of the bundled parallel set (see babeltune/bundled/README.md)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from babeltune.data import load_records
from babeltune.data.readers import BUNDLED_SPLITS
from babeltune.languages import STUDY_A_LANGUAGES

MINIMUM_PIDS = {"train": 160, "eval": 40, "modifiers": 24}


@pytest.fixture(scope="module")
def splits():
    return {split: load_records(f"bundled:{split}") for split in BUNDLED_SPLITS}


@pytest.mark.parametrize("split", BUNDLED_SPLITS)
def test_every_record_validates_and_every_pid_is_in_all_12_languages(splits, split: str) -> None:
    result = splits[split]
    assert not result.report.rejected and result.report.kept == result.report.rows
    by_pid: dict[str, set[str]] = defaultdict(set)
    for rec in result.records:
        by_pid[rec.pid].add(rec.lang)
        assert rec.meta["split"] == split
        assert [m.role for m in rec.messages] == ["user", "assistant"]
        assert rec.prompt.strip() and rec.response and rec.response.strip()
    assert len(by_pid) >= MINIMUM_PIDS[split]
    assert all(langs == set(STUDY_A_LANGUAGES) for langs in by_pid.values())


def test_no_duplicate_prompts_and_no_train_eval_overlap(splits) -> None:
    seen: dict[tuple[str, str], str] = {}
    for split in BUNDLED_SPLITS:
        for rec in splits[split].records:
            key = (rec.lang, " ".join(rec.prompt.lower().split()))
            assert key not in seen, f"{rec.id} repeats the prompt of {seen[key]}"
            seen[key] = rec.id
    train_pids = {r.pid for r in splits["train"].records}
    assert not train_pids & {r.pid for r in splits["eval"].records}
    train_topics = {r.meta["topic"] for r in splits["train"].records}
    assert not train_topics & {r.meta["topic"] for r in splits["eval"].records}


def test_modifier_records_carry_a_spec(splits) -> None:
    for rec in splits["modifiers"].records:
        spec = rec.meta["modifier"]
        assert spec["kind"] in {"answer_language", "html_page", "markdown_headings", "list_items", "max_words",
                                "all_caps", "arrows"}
        if spec["kind"] == "answer_language":
            assert spec["lang"] != rec.lang
