from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from babeltune.cli import main
from babeltune.data import MixtureError, MixtureSpec, build_mixture, language_counts, read_records
from babeltune.languages import STUDY_A_LANGUAGES
from tests.conftest import make_parallel, write_rows

LANGS = list(STUDY_A_LANGUAGES)


@pytest.fixture
def source(parallel_file: Path) -> list:
    return read_records(parallel_file)


def check_rules(mixture, budget: int) -> Counter:
    assert len(mixture.records) == budget
    pids = [r.pid for r in mixture.records]
    assert len(set(pids)) == budget, "a prompt appears in more than one language"
    return Counter(r.lang for r in mixture.records)


def test_monolingual(source) -> None:
    mix = build_mixture(source, MixtureSpec("monolingual", budget=25, lang="fi"))
    assert check_rules(mix, 25) == {"fi": 25}
    assert mix.summary["per_language"] == {"fi": 25}


def test_pinch_count_spreads_over_other_languages(source) -> None:
    mix = build_mixture(source, MixtureSpec("pinch", budget=30, pinch_count=13))
    counts = check_rules(mix, 30)
    assert counts["en"] == 17
    others = [counts[lang] for lang in LANGS if lang != "en"]
    assert sum(others) == 13 and max(others) - min(others) <= 1
    assert mix.summary["n_multilingual"] == 13


def test_default_pinch_is_40() -> None:
    counts = language_counts(MixtureSpec("pinch", budget=100), LANGS)
    assert counts["en"] == 60 and sum(counts.values()) == 100


def test_pinch_percent_100_equals_uniform(source) -> None:
    pinch = build_mixture(source, MixtureSpec("pinch", budget=30, pinch_percent=100, seed=3))
    uniform = build_mixture(source, MixtureSpec("uniform", budget=30, seed=3))
    assert Counter(r.lang for r in pinch.records) == Counter(r.lang for r in uniform.records)
    assert [r.id for r in pinch.records] == [r.id for r in uniform.records]


def test_pinch_percent_includes_base_language() -> None:
    counts = language_counts(MixtureSpec("pinch", budget=4640, pinch_percent=10), LANGS)
    assert sum(counts.values()) == 4640
    assert counts["en"] == 4640 - 464 + 464 // 12 + (1 if LANGS.index("en") < 464 % 12 else 0)
    assert all(counts[lang] in (38, 39) for lang in LANGS if lang != "en")


def test_uniform_and_languages(source) -> None:
    mix = build_mixture(source, MixtureSpec("uniform", budget=26, languages=["en", "es", "sw"]))
    assert check_rules(mix, 26) == {"en": 9, "es": 9, "sw": 8}
    k3 = build_mixture(source, MixtureSpec("languages", budget=26, languages=["sw", "en", "es"]))
    assert check_rules(k3, 26) == {"sw": 9, "en": 9, "es": 8}
    assert k3.summary["languages"] == ["sw", "en", "es"]


def test_seen_unseen_split(source) -> None:
    spec = MixtureSpec("uniform", budget=24, languages=["en", "ar", "fi", "it", "ru", "sw"],
                       eval_languages=["cs", "et", "he", "hi", "es", "zh", "en"])
    summary = build_mixture(source, spec).summary
    assert summary["seen_languages"] == ["en", "ar", "fi", "it", "ru", "sw"]
    assert summary["unseen_languages"] == ["cs", "et", "he", "hi", "es", "zh"]


def test_deterministic_per_seed(source) -> None:
    spec = MixtureSpec("pinch", budget=30, pinch_count=11, seed=7)
    a, b = build_mixture(source, spec), build_mixture(source, spec)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert a.summary["fingerprint"] == b.summary["fingerprint"]
    c = build_mixture(source, MixtureSpec("pinch", budget=30, pinch_count=11, seed=8))
    assert [r.id for r in c.records] != [r.id for r in a.records]


def test_non_parallel_source_fills_scarce_languages_first() -> None:
    rows = make_parallel(10, ("en",)) + [r for r in make_parallel(3, ("sw",))]
    from babeltune.data import record_from_dict

    recs = [record_from_dict(r) for r in rows]
    mix = build_mixture(recs, MixtureSpec("uniform", budget=6, languages=["en", "sw"]))
    # sw exists only for p000..p002, so en must take other prompts.
    assert check_rules(mix, 6) == {"en": 3, "sw": 3}


@pytest.mark.parametrize("spec, message", [
    (dict(recipe="uniform", budget=31), "exceeds the 30 distinct prompts"),
    (dict(recipe="pinch", budget=20, pinch_count=21), "larger than the budget"),
    (dict(recipe="uniform", budget=10, languages=["en", "fr"]), "fr missing from the source"),
    (dict(recipe="monolingual", budget=10), "needs its language"),
    (dict(recipe="uniform", budget=10, pinch_count=3), "only apply to the pinch"),
    (dict(recipe="pinch", budget=10, pinch_percent=120), "within 0..100"),
    (dict(recipe="uniform", budget=0), "budget must be positive"),
])
def test_bad_requests(source, spec, message) -> None:
    with pytest.raises(MixtureError, match=message):
        build_mixture(source, MixtureSpec(**spec))


def test_cli_build_writes_mixture_and_summary(parallel_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mix" / "pinch.jsonl"
    code = main(["data", "build", "--source", str(parallel_file), "--recipe", "pinch", "--languages",
                 ",".join(LANGS), "--budget", "30", "--pinch-count", "11", "--seed", "1", "--out", str(out)])
    assert code == 0
    summary = json.loads(out.with_name("pinch.summary.json").read_text())
    assert summary["recipe"] == "pinch" and summary["budget"] == 30
    assert summary["per_language"]["en"] == 19 and sum(summary["per_language"].values()) == 30
    assert len(read_records(out)) == 30
    assert "pinch: 30 examples" in capsys.readouterr().out


def test_cli_build_bad_request_is_a_clear_error(parallel_file: Path, tmp_path: Path, capsys) -> None:
    code = main(["data", "build", "--source", str(parallel_file), "--recipe", "uniform", "--budget", "999",
                 "--out", str(tmp_path / "x.jsonl")])
    assert code == 2
    assert "exceeds the 30 distinct prompts" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_validate_reports_rejections(tmp_path: Path, capsys) -> None:
    path = write_rows(tmp_path / "v.jsonl", [*make_parallel(2, ("en",)), {"id": "q"}])
    assert main(["data", "validate", str(path), "--skip-invalid"]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 rows kept" in out and "missing_language" in out and "v.jsonl:3" in out
