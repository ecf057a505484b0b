"""Parallel sources from per-language parts: a YAML file of parts, hf: configs (local dataset folders and
files), folders of language-named files; alignment by key with incomplete prompts counted per language."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from babeltune.data import RecordError, load_records
from babeltune.data.mixtures import MixtureSpec, build_mixture
from babeltune.data.parallel import ParallelReport, ParallelSourceError
from tests.conftest import write_rows

TEXT = {
    "en": ["How do I bake bread at home?", "Name three rivers in Europe.", "Why is the sky blue?",
           "Write a haiku about the sea."],
    "es": ["¿Cómo hago pan en casa?", "Nombra tres ríos de Europa.", "¿Por qué el cielo es azul?",
           "Escribe un haiku sobre el mar."],
    "fi": ["Miten leivon leipää kotona?", "Nimeä kolme Euroopan jokea.", "Miksi taivas on sininen?",
           "Kirjoita haiku merestä."],
}


def alpaca_rows(lang: str, ids: list[int]) -> list[dict[str, str]]:
    """Alpaca rows without a language label, aligned by their `id` column (Bactrian-X style)."""
    return [{"id": f"q{i}", "instruction": TEXT[lang][i], "input": "", "output": f"{TEXT[lang][i]} ({lang} answer)",
             "src": f"s{i}"} for i in ids]


# en has all four prompts, es lacks q3, fi lacks q0: q1 and q2 are complete.
IDS = {"en": [0, 1, 2, 3], "es": [0, 1, 2], "fi": [1, 2, 3]}


def three_files(tmp_path: Path) -> Path:
    for lang, ids in IDS.items():
        write_rows(tmp_path / f"{lang}_part.jsonl", alpaca_rows(lang, ids))
    yaml_path = tmp_path / "parts.yaml"
    yaml_path.write_text("key: id\nparts:\n  en: en_part.jsonl\n  es: es_part.jsonl\n  fi: hf:fi_part.jsonl\n",
                         encoding="utf-8")
    return yaml_path


def check_alignment(report: ParallelReport, records: list, langs: tuple[str, ...] = ("en", "es", "fi")) -> None:
    assert report.languages == list(langs)
    assert report.prompts == 4 and report.complete_prompts == 2
    assert {r.pid for r in records} == {"q1", "q2"}
    assert sorted((r.pid, r.lang) for r in records) == sorted((p, lang) for p in ("q1", "q2") for lang in langs)
    per = {lang: vars(a) for lang, a in report.per_language.items()}
    assert per["en"] == {"rows": 4, "complete": 2, "incomplete": 2, "missing": 0}
    assert per["es"] == {"rows": 3, "complete": 2, "incomplete": 1, "missing": 1}
    assert per["fi"] == {"rows": 3, "complete": 2, "incomplete": 1, "missing": 1}
    text = report.summary()
    assert "2 of 4 prompts complete in all" in text
    assert "es: 1 of 3 rows lack another language, 1 prompts missing here" in text
    for rec in records:
        assert rec.id == f"{rec.pid}-{rec.lang}"
        assert rec.prompt == TEXT[rec.lang][int(rec.pid[1:])]


def test_yaml_parts_over_three_files_align_by_id(tmp_path: Path) -> None:
    result = load_records(three_files(tmp_path))
    assert isinstance(result.report, ParallelReport)
    check_alignment(result.report, result.records)
    assert result.report.rows == 10 and result.report.kept == 6
    assert result.report.to_dict()["parallel"]["per_language"]["fi"]["missing"] == 1


def test_incomplete_keep_keeps_and_still_counts(tmp_path: Path) -> None:
    path = three_files(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + "incomplete: keep\n", encoding="utf-8")
    result = load_records(path)
    assert len(result.records) == 10 and result.report.complete_prompts == 2
    assert "incomplete prompts (kept)" in result.report.summary()


def test_requested_languages_restrict_parts_and_completeness(tmp_path: Path) -> None:
    result = load_records(three_files(tmp_path), languages=["en", "es"])
    assert result.report.languages == ["en", "es"] and result.report.complete_prompts == 3
    with pytest.raises(ParallelSourceError, match="no part for language"):
        load_records(three_files(tmp_path), languages=["en", "ru"])


def save_configs(tmp_path: Path, kind: str) -> Path:
    """A local stand-in for a hub dataset with one config per language: DIR/CONFIG saved by save_to_disk,
    or DIR/CONFIG.jsonl files."""
    import datasets

    root = tmp_path / "hub"
    root.mkdir()
    for lang, ids in IDS.items():
        config = {"en": "english", "es": "spanish", "fi": "finnish"}[lang] if kind == "mapped" else lang
        rows = alpaca_rows(lang, ids)
        if kind == "json":
            write_rows(root / f"{config}.jsonl", rows)
        else:
            datasets.Dataset.from_list(rows).save_to_disk(str(root / config))
    return root


@pytest.mark.parametrize("kind, configs", [("disk", "en,es,fi"), ("json", "en,es,fi"),
                                           ("mapped", "en=english,es=spanish,fi=finnish")])
def test_hf_configs_one_per_language(tmp_path: Path, kind: str, configs: str) -> None:
    root = save_configs(tmp_path, kind)
    result = load_records(f"hf:{root}", hf_config=configs)
    check_alignment(result.report, result.records)  # type: ignore[arg-type]


def test_yaml_hf_part_with_config(tmp_path: Path) -> None:
    root = save_configs(tmp_path, "disk")
    path = tmp_path / "p.yaml"
    path.write_text(f"key: id\nparts:\n  en: {{source: 'hf:{root}', config: en}}\n  es: {{source: 'hf:{root}', "
                    f"config: es}}\n  fi: {{source: 'hf:{root}', config: fi, split: train}}\n", encoding="utf-8")
    result = load_records(path)
    check_alignment(result.report, result.records)  # type: ignore[arg-type]


def test_folder_of_language_files(tmp_path: Path) -> None:
    for lang, ids in IDS.items():
        write_rows(tmp_path / f"{lang}.jsonl", alpaca_rows(lang, ids))
    result = load_records(tmp_path)
    check_alignment(result.report, result.records)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["column:src", "src", "hash:src"])
def test_alignment_by_column_or_hash(tmp_path: Path, key: str) -> None:
    path = three_files(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("key: id", f"key: '{key}'"), encoding="utf-8")
    result = load_records(path)
    assert result.report.complete_prompts == 2  # type: ignore[attr-defined]
    pids = {r.pid for r in result.records}
    assert pids == ({"s1", "s2"} if key != "hash:src" else pids) and len(pids) == 2
    assert all(r.meta["source_id"] == f"q{r.pid[1:]}-{r.lang}" for r in result.records if key != "hash:src")


def test_bad_rows_in_parts_name_their_origin(tmp_path: Path) -> None:
    path = three_files(tmp_path)
    rows = alpaca_rows("es", [0, 1])
    rows.append({**rows[0], "output": "otra"})
    rows.append({**alpaca_rows("es", [2])[0], "lang": "fi"})
    write_rows(tmp_path / "es_part.jsonl", rows)
    with pytest.raises(RecordError, match=r"es_part\.jsonl:3: field 'id': duplicate id 'q0-es'"):
        load_records(path)
    result = load_records(path, on_invalid="skip")
    assert result.report.rejected == {"duplicate_id": 1, "wrong_language": 1}
    assert result.report.complete_prompts == 1  # type: ignore[attr-defined]
    assert "labelled 'fi' in the 'es' part" in result.report.examples["wrong_language"][0]
    rows = alpaca_rows("es", [0, 1, 2])
    rows[1]["src"] = "s0"
    write_rows(tmp_path / "es_part.jsonl", rows)
    path.write_text(path.read_text(encoding="utf-8").replace("key: id", "key: src"), encoding="utf-8")
    with pytest.raises(RecordError, match=r"es_part\.jsonl: field 'src': alignment key 's0' repeated in the 'es' "
                       r"part \(records 'q0-es' and 'q1-es'\)"):
        load_records(path)


def test_missing_key_column(tmp_path: Path) -> None:
    path = three_files(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("key: id", "key: column:nope"), encoding="utf-8")
    with pytest.raises(RecordError, match="has no column 'nope'"):
        load_records(path)


@pytest.mark.parametrize("text, match", [
    ("parts: {xx: a.jsonl}\n", r"parts\.xx.*not a language code"),
    ("parts: [a.jsonl]\n", "field 'parts'"),
    ("parts: {en: a.jsonl}\nkeys: id\n", "field 'keys': unknown"),
    ("parts: {en: a.jsonl}\nincomplete: maybe\n", "field 'incomplete'"),
    ("parts: {en: {source: a.jsonl, conf: x}}\n", r"'parts\.en\.conf': unknown"),
    ("parts: {en: a.jsonl, eng: b.jsonl}\n", "language 'en' is given twice"),
])
def test_bad_parts_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "parts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParallelSourceError, match=match):
        load_records(path)


def test_mixture_draws_from_parallel_source(tmp_path: Path) -> None:
    for lang, ids in IDS.items():
        write_rows(tmp_path / f"{lang}.jsonl", alpaca_rows(lang, ids))
    records = load_records(tmp_path).records
    mixture = build_mixture(records, MixtureSpec(recipe="pinch", budget=2, pinch_count=1, seed=0))
    assert len(mixture.records) == 2 and len({r.pid for r in mixture.records}) == 2
    assert mixture.summary["per_language"]["en"] == 1


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "babeltune.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_stats_and_build_on_parts_yaml(tmp_path: Path) -> None:
    path = three_files(tmp_path)
    stats = run_cli("data", "stats", str(path))
    assert stats.returncode == 0, stats.stderr
    assert "2 of 4 prompts complete in all" in stats.stdout
    assert "prompts complete in all 3 languages (en, es, fi): 2 of 2" in stats.stdout
    keep = tmp_path / "keep.yaml"
    keep.write_text(path.read_text(encoding="utf-8") + "incomplete: keep\n", encoding="utf-8")
    stats = run_cli("data", "stats", str(keep), "--languages", "en,es")
    assert "prompts complete in all 2 languages (en, es): 3 of 4" in stats.stdout
    out = tmp_path / "mix.jsonl"
    build = run_cli("data", "build", "--source", str(path), "--recipe", "pinch", "--budget", "2",
                    "--pinch-count", "1", "--out", str(out))
    assert build.returncode == 0, build.stderr
    summary = json.loads(out.with_name("mix.summary.json").read_text(encoding="utf-8"))
    assert summary["source_read"]["parallel"]["complete_prompts"] == 2
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("parts: {xx: a.jsonl}\n", encoding="utf-8")
    failed = run_cli("data", "stats", str(bad))
    assert failed.returncode != 0 and "Traceback" not in failed.stderr and "parts.xx" in failed.stderr


def test_experiment_accepts_parallel_source_as_data_train(tmp_path: Path) -> None:
    from babeltune.experiments.config import load_experiment

    path = three_files(tmp_path)
    study = Path(__file__).parents[1] / "babeltune/configs/experiments/study-a-pinch.yaml"
    cfg = load_experiment(study, [f"data.train={path}", "budget=2"])
    assert cfg.data.train == str(path)
    records = load_records(cfg.data.train).records
    pinch = next(c for c in cfg.conditions if c.name == "pinch-40").mixture  # the experiment's recipe
    spec = MixtureSpec(**{**pinch, "pinch_count": 1}, budget=cfg.budget, languages=["en", "es", "fi"])
    assert len(build_mixture(records, spec).records) == 2


def test_hash_of_the_prompt_aligns_parts_sharing_it(tmp_path: Path) -> None:
    # e.g. English prompts answered in two languages: same prompt text, different responses
    for lang in ("en", "es"):
        write_rows(tmp_path / f"{lang}.jsonl", [{"instruction": f"  Prompt   {i}", "output": f"{lang} {i}"}
                                                 for i in (1, 2)])
    path = tmp_path / "p.yaml"
    path.write_text("key: hash:prompt\nparts: {en: en.jsonl, es: es.jsonl}\n", encoding="utf-8")
    result = load_records(path)
    assert result.report.complete_prompts == 2  # type: ignore[attr-defined]
    assert len({r.pid for r in result.records}) == 2 and all(len(r.pid) == 16 for r in result.records)
