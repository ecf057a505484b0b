"""Parallel sources assembled from per-language parts, aligned by a key.

A parallel source is a set of parts, one per language, each any source babeltune reads (a JSONL file
or folder, `hf:NAME`, `bundled:...`), whose rows are matched across languages by an alignment key.
Three ways to give one, wherever a source is taken:

- a YAML file (`parts.yaml`)::

      key: id                 # pid | id | column:NAME (or just NAME) | hash:NAME
      incomplete: drop        # drop (default) | keep
      parts:
        en: en.jsonl          # relative paths are taken from the YAML file's folder
        es: hf:NAME           # a hub dataset, a save_to_disk folder, a local json/parquet/csv file
        zh: {source: hf:NAME, config: zh, split: train}

- `hf:NAME` with several configs, one per language: `--hf-config ar,zh,en` (configs named by
  language) or `--hf-config ar=arabic,zh=chinese` (language=config). For local copies, `hf:DIR` whose
  `DIR/CONFIG` is a `save_to_disk` folder or `DIR/CONFIG.{jsonl,json,parquet,csv}` a file is read
  without the hub;
- a folder whose `.jsonl` files are all named by a language code (`en.jsonl`, `es.jsonl`, ...).

A part's rows without a language label take the part's language; a row labelled with another
language is rejected (`wrong_language`). The key: `pid` / `id` is the record's pid (raw rows: their
`pid`, else `id` column); `column:NAME` a column's value; `hash:NAME` a hash of a column's text
(whitespace collapsed), or of the prompt with `hash:prompt` / `hash:instruction`, for parts that share
a source-text column. A key repeated within one language is an error (`duplicate_key`).

Prompts found in only some of the requested languages are counted per language in the
`ParallelReport` (and left out with `incomplete: drop`, the default, so that every prompt of the
result exists in every language; `keep` keeps them): never dropped silently.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from babeltune.data.readers import LoadReport, LoadResult, OnInvalid, load_records
from babeltune.data.records import ChatRecord, RecordError
from babeltune.languages import normalize_code

Incomplete = Literal["drop", "keep"]
_HF_LOCAL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".parquet", ".csv")


class ParallelSourceError(ValueError):
    """A parallel source description that cannot be used; names the file and field."""


@dataclass(frozen=True)
class PartSpec:
    """One language's part of a parallel source."""

    lang: str
    """babeltune code of the part's language (labels its unlabelled rows)."""
    source: str
    """Any source `load_records` reads."""
    hf_config: str | None = None
    """Config (subset) of a `hf:` part."""
    hf_split: str = "train"
    """Split of a `hf:` part."""


@dataclass(frozen=True)
class ParallelSpec:
    """Per-language parts and how to align them."""

    parts: tuple[PartSpec, ...]
    key: str = "pid"
    """Alignment key: pid | id | column:NAME (or a bare column NAME) | hash:NAME (see the module doc)."""
    incomplete: Incomplete = "drop"
    """drop: keep only prompts present in every requested language (the rest counted per language);
    keep: keep them too (still counted)."""
    origin: str = ""
    """Where the description came from (YAML path or source string), for messages."""

    @property
    def languages(self) -> list[str]:
        return [part.lang for part in self.parts]


@dataclass
class LanguageAlignment:
    """How one language's part aligned with the others."""

    rows: int = 0
    """Records the part gave (after validation)."""
    complete: int = 0
    """Of those, prompts present in every requested language."""
    incomplete: int = 0
    """Of those, prompts missing from some other language."""
    missing: int = 0
    """Prompts other languages have and this one lacks."""


@dataclass
class ParallelReport(LoadReport):
    """A `LoadReport` over every part, plus the alignment per language."""

    key: str = "pid"
    languages: list[str] = field(default_factory=list)
    incomplete_policy: str = "drop"
    prompts: int = 0
    """Distinct keys over all parts."""
    complete_prompts: int = 0
    """Keys present in every requested language."""
    per_language: dict[str, LanguageAlignment] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each language's own part report (`LoadReport.to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "parallel": {
            "key": self.key, "languages": self.languages, "incomplete": self.incomplete_policy,
            "prompts": self.prompts, "complete_prompts": self.complete_prompts,
            "per_language": {lang: vars(a) for lang, a in self.per_language.items()}, "parts": self.parts,
        }}

    def summary(self) -> str:
        lines = [super().summary(),
                 f"aligned by {self.key!r} over {len(self.languages)} languages ({', '.join(self.languages)}): "
                 f"{self.complete_prompts} of {self.prompts} prompts complete in all"]
        incomplete = {lang: a for lang, a in self.per_language.items() if a.incomplete or a.missing}
        if incomplete:
            what = "left out" if self.incomplete_policy == "drop" else "kept"
            lines.append(f"  incomplete prompts ({what}), per language: " + "; ".join(
                f"{lang}: {a.incomplete} of {a.rows} rows lack another language, {a.missing} prompts missing here"
                for lang, a in incomplete.items()))
        return "\n".join(lines)


def parallel_spec_for(source: str, *, hf_config: str | None = None, hf_split: str = "train") -> ParallelSpec | None:
    """The parallel source `source` (with `hf_config`) describes, or None for an ordinary source."""
    if source.startswith("hf:") and hf_config and ("," in hf_config or "=" in hf_config):
        return ParallelSpec(tuple(_hf_parts(source, hf_config, hf_split)), origin=f"{source} --hf-config {hf_config}")
    if re.match(r"[a-z][a-z0-9]+:", source):  # two letters at least: not a Windows drive
        return None  # another scheme (bundled:, hf: with one config, or one a reader hook adds)
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"parallel source file not found: {path}")
        return read_parallel_yaml(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        langs = [normalize_code(f.stem) for f in files]
        if files and all(langs):
            parts = tuple(PartSpec(str(lang), str(f)) for lang, f in zip(langs, files, strict=True))
            if len(set(langs)) == len(langs):
                return ParallelSpec(parts, origin=str(path))
    return None


def _hf_parts(source: str, hf_config: str, hf_split: str) -> list[PartSpec]:
    parts: list[PartSpec] = []
    for item in (x.strip() for x in hf_config.split(",")):
        if not item:
            continue
        lang_text, _, config = item.partition("=")
        config = config.strip() or lang_text.strip()
        lang = normalize_code(lang_text.strip())
        if lang is None:
            raise ParallelSourceError(f"--hf-config {hf_config}: {lang_text.strip()!r} is not a language code "
                                      "(give LANG or LANG=CONFIG, comma-separated)")
        parts.append(_local_hf_part(lang, source, config, hf_split))
    _check_unique_languages([p.lang for p in parts], f"--hf-config {hf_config}")
    return parts


def _local_hf_part(lang: str, source: str, config: str | None, split: str) -> PartSpec:
    """A hf: part; `hf:DIR` with config C reads DIR/C (a save_to_disk folder) or DIR/C.jsonl etc. locally."""
    base = Path(source[3:])
    if config and base.is_dir():
        if (base / config).is_dir():
            return PartSpec(lang, f"hf:{base / config}", None, split)
        for suffix in _HF_LOCAL_SUFFIXES:
            if (base / f"{config}{suffix}").is_file():
                return PartSpec(lang, f"hf:{base / (config + suffix)}", None, split)
    return PartSpec(lang, source, config, split)


def _check_unique_languages(langs: list[str], where: str) -> None:
    repeated = [lang for lang, n in Counter(langs).items() if n > 1]
    if repeated:
        raise ParallelSourceError(f"{where}: language {repeated[0]!r} is given twice")


def read_parallel_yaml(path: Path) -> ParallelSpec:
    """Parse a parallel source YAML file (see the module docstring); errors name the file and field."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParallelSourceError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParallelSourceError(f"{path}: must be a mapping with 'parts' (and optional 'key', 'incomplete')")
    unknown = sorted(set(raw) - {"key", "parts", "incomplete"})
    if unknown:
        raise ParallelSourceError(f"{path}: field {unknown[0]!r}: unknown (expected key, parts, incomplete)")
    key = raw.get("key", "pid")
    if not isinstance(key, str) or not key.strip():
        raise ParallelSourceError(f"{path}: field 'key': must be pid, id, column:NAME or hash:NAME")
    incomplete = raw.get("incomplete", "drop")
    if incomplete not in ("drop", "keep"):
        raise ParallelSourceError(f"{path}: field 'incomplete': must be drop or keep, got {incomplete!r}")
    parts_raw = raw.get("parts")
    if not isinstance(parts_raw, dict) or not parts_raw:
        raise ParallelSourceError(f"{path}: field 'parts': must map languages to sources, e.g. "
                                  "{en: en.jsonl, es: hf:NAME}")
    parts = [_yaml_part(path, str(lang), value) for lang, value in parts_raw.items()]
    _check_unique_languages([p.lang for p in parts], f"{path}: field 'parts'")
    return ParallelSpec(tuple(parts), key=key.strip(), incomplete=incomplete, origin=str(path))


def _yaml_part(path: Path, lang_text: str, value: Any) -> PartSpec:
    where = f"{path}: field 'parts.{lang_text}'"
    lang = normalize_code(lang_text)
    if lang is None:
        raise ParallelSourceError(f"{where}: {lang_text!r} is not a language code babeltune knows")
    if isinstance(value, str):
        value = {"source": value}
    if not isinstance(value, dict) or not isinstance(value.get("source"), str) or not value["source"].strip():
        raise ParallelSourceError(f"{where}: give a source string, or {{source: ..., config: ..., split: ...}}")
    unknown = sorted(set(value) - {"source", "config", "split"})
    if unknown:
        raise ParallelSourceError(f"{path}: field 'parts.{lang_text}.{unknown[0]}': unknown (expected source, "
                                  "config, split)")
    source = _relative_to(path.parent, value["source"].strip())
    config, split = value.get("config"), value.get("split", "train")
    if (config is not None and not isinstance(config, str)) or not isinstance(split, str):
        raise ParallelSourceError(f"{where}: config and split must be strings")
    if source.startswith("hf:"):
        return _local_hf_part(lang, source, config, split)
    return PartSpec(lang, source, config, split)


def _relative_to(folder: Path, source: str) -> str:
    """A part's source with a relative file path taken from the YAML file's folder."""
    if source.startswith("bundled:"):
        return source
    prefix, rest = ("hf:", source[3:]) if source.startswith("hf:") else ("", source)
    candidate = folder / rest
    if not Path(rest).is_absolute() and candidate.exists():
        return prefix + str(candidate)
    return source


def load_parallel(
    spec: ParallelSpec, *, on_invalid: OnInvalid = "error", languages: Iterable[str] | None = None
) -> LoadResult:
    """Read every part of `spec`, align the records by its key and report the alignment.

    `languages` restricts the parts read (and the languages a prompt must be complete in).
    """
    wanted = [normalize_code(code) or code for code in languages] if languages is not None else spec.languages
    absent = [lang for lang in wanted if lang not in spec.languages]
    if absent:
        raise ParallelSourceError(f"{spec.origin}: no part for language(s) {', '.join(absent)}; it has "
                                  f"{', '.join(spec.languages)}")
    parts = [part for part in spec.parts if part.lang in wanted]
    report = ParallelReport(source=spec.origin, key=spec.key, languages=[p.lang for p in parts],
                            incomplete_policy=spec.incomplete)
    by_lang: dict[str, dict[str, ChatRecord]] = {}
    order: dict[str, None] = {}
    digest = hashlib.sha256()
    for part in parts:
        loaded = load_records(part.source, on_invalid=on_invalid, lang=part.lang, hf_split=part.hf_split,
                              hf_config=part.hf_config)
        _merge_part_report(report, part, loaded.report)
        digest.update(f"{part.lang}={loaded.report.fingerprint};".encode())
        by_lang[part.lang] = {}
        for rec in loaded.records:
            try:
                key = _check_part_record(rec, part, spec.key, by_lang[part.lang])
            except RecordError as error:
                if on_invalid == "error":
                    raise
                report.reject(error)
                continue
            by_lang[part.lang][key] = rec
            order.setdefault(key)
    report.fingerprint = digest.hexdigest() + f"|key={spec.key}|incomplete={spec.incomplete}"
    records = _align(by_lang, list(order), report, spec.incomplete)
    report.kept = len(records)
    return LoadResult(records, report)


def _merge_part_report(report: ParallelReport, part: PartSpec, part_report: LoadReport) -> None:
    report.rows += part_report.rows
    report.rejected.update(part_report.rejected)
    for kind, examples in part_report.examples.items():
        room = 3 - len(report.examples.setdefault(kind, []))
        report.examples[kind].extend(examples[:max(room, 0)])
    report.parts[part.lang] = part_report.to_dict()


def _check_part_record(rec: ChatRecord, part: PartSpec, key_spec: str, seen: dict[str, ChatRecord]) -> str:
    if rec.lang != part.lang:
        raise RecordError(part.source, None, "lang", f"record {rec.id!r} is labelled {rec.lang!r} in the "
                          f"{part.lang!r} part", "wrong_language")
    key = alignment_key(rec, key_spec, part.source)
    if key in seen:
        raise RecordError(part.source, None, key_spec, f"alignment key {key!r} repeated in the {part.lang!r} part "
                          f"(records {seen[key].id!r} and {rec.id!r})", "duplicate_key")
    return key


def alignment_key(rec: ChatRecord, key_spec: str, source: str = "<memory>") -> str:
    """The value a record aligns on (see the module docstring for `key_spec`)."""
    if key_spec in ("pid", "id"):
        return rec.pid
    kind, _, name = key_spec.partition(":")
    if kind not in ("column", "hash"):
        kind, name = "column", key_spec
    if kind == "hash" and name in ("prompt", "instruction"):
        value: Any = rec.prompt
    elif name in rec.meta:
        value = rec.meta[name]
    else:
        raise RecordError(source, None, name, f"record {rec.id!r} has no column {name!r} to align on "
                          f"(key {key_spec!r})", "missing_key")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordError(source, None, name, f"record {rec.id!r}: alignment column {name!r} is empty", "missing_key")
    if kind == "hash":
        text = re.sub(r"\s+", " ", str(value)).strip()
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return str(value)


def _align(by_lang: dict[str, dict[str, ChatRecord]], keys: list[str], report: ParallelReport,
           incomplete: Incomplete) -> list[ChatRecord]:
    langs = list(by_lang)
    report.prompts = len(keys)
    complete = {key for key in keys if all(key in by_lang[lang] for lang in langs)}
    report.complete_prompts = len(complete)
    for lang in langs:
        mine = by_lang[lang]
        report.per_language[lang] = LanguageAlignment(
            rows=len(mine), complete=sum(1 for k in mine if k in complete),
            incomplete=sum(1 for k in mine if k not in complete), missing=sum(1 for k in keys if k not in mine))
    records: list[ChatRecord] = []
    for key in keys:
        if incomplete == "drop" and key not in complete:
            continue
        for lang in langs:
            rec = by_lang[lang].get(key)
            if rec is not None:
                records.append(_aligned_record(rec, key))
    return records


def _aligned_record(rec: ChatRecord, key: str) -> ChatRecord:
    new_id = f"{key}-{rec.lang}"
    meta = dict(rec.meta)
    if new_id != rec.id:
        meta.setdefault("source_id", rec.id)
    return ChatRecord(id=new_id, pid=key, lang=rec.lang, messages=rec.messages, meta=meta)


def complete_prompts(records: Iterable[ChatRecord], languages: Iterable[str]) -> tuple[int, int]:
    """(prompts present in every one of `languages`, distinct prompts) of any set of records."""
    wanted = set(languages)
    have: dict[str, set[str]] = {}
    for rec in records:
        have.setdefault(rec.pid, set()).add(rec.lang)
    return sum(1 for langs in have.values() if wanted <= langs), len(have)
