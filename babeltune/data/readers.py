"""Read chat records from any source babeltune accepts.

Sources (the same string works wherever a command takes `--data`/`--source`):

- `bundled:train`, `bundled:eval`, `bundled:modifiers`: the parallel set that ships with babeltune;
- a `.jsonl` file (or a folder of them) whose rows are babeltune records, chat rows with `messages`,
  or Alpaca / Okapi / Bactrian-X rows (`instruction`, optional `input`, `output`): the format is
  detected per row;
- `hf:NAME_OR_PATH`: a Hugging Face dataset by hub name, a folder written by `save_to_disk`, or a
  local json/jsonl/parquet/csv file, read through `datasets` (split and config by option);
- a parallel source of per-language parts aligned by a key (`babeltune.data.parallel`): a YAML file
  listing the parts, `hf:NAME` with several configs (`ar,zh` or `ar=CONFIG,...`), or a folder of
  files named by language (`en.jsonl`, `es.jsonl`).
- `pasero:DIR` (`@modifiers` / `@alpacaeval` for one set): study B's released evaluation files
  (`babeltune.data.pasero`).

Rows that are not babeltune records need a language: a `lang`/`language` column, or `lang=` given by
the caller. Every rejected row is an error naming file, line and field, or, with
`on_invalid="skip"`, is counted per reason in the `LoadReport`: never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from babeltune.data.jsonl import JSONLError, iter_jsonl_rows
from babeltune.data.records import ChatRecord, RecordError, parse_messages, record_from_dict
from babeltune.languages import normalize_code

OnInvalid = Literal["error", "skip"]
BUNDLED_SPLITS: tuple[str, ...] = ("train", "eval", "modifiers")
_EXAMPLES_PER_KIND = 3


@dataclass
class LoadReport:
    """What a read did: how many rows it saw, kept and rejected (per reason, with examples)."""

    source: str
    rows: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    fingerprint: str = ""
    """sha256 over the bytes of every file read (empty for hub datasets, see `revision`)."""

    def reject(self, error: RecordError) -> None:
        self.rejected[error.kind] += 1
        self.examples.setdefault(error.kind, [])
        if len(self.examples[error.kind]) < _EXAMPLES_PER_KIND:
            self.examples[error.kind].append(str(error))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "kept": self.kept,
            "rejected": dict(self.rejected),
            "examples": self.examples,
            "fingerprint": self.fingerprint,
        }

    def summary(self) -> str:
        text = f"{self.source}: {self.kept} of {self.rows} rows kept"
        if self.rejected:
            parts = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.rejected.items()))
            text += f"; rejected {sum(self.rejected.values())} ({parts})"
        return text


@dataclass
class LoadResult:
    records: list[ChatRecord]
    report: LoadReport


def bundled_path(split: str) -> Path:
    """Path of a bundled split's JSONL file."""
    if split not in BUNDLED_SPLITS:
        raise ValueError(f"unknown bundled split {split!r}; choose one of {', '.join(BUNDLED_SPLITS)}")
    return Path(str(resources.files("babeltune.bundled").joinpath(f"{split}.jsonl")))


def load_records(
    source: str | Path,
    *,
    on_invalid: OnInvalid = "error",
    lang: str | None = None,
    hf_split: str = "train",
    hf_config: str | None = None,
    languages: Iterable[str] | None = None,
) -> LoadResult:
    """Read and validate every record of `source` (see the module docstring for the forms).

    `lang` labels rows that carry no language of their own; `languages` keeps only records in those
    languages (the others are counted as `filtered_language`, not rejected).
    """
    text = str(source)
    from babeltune.data.parallel import load_parallel, parallel_spec_for  # parallel.py imports this module

    parallel = parallel_spec_for(text, hf_config=hf_config, hf_split=hf_split)
    if parallel is not None:  # per-language parts aligned by a key (a YAML file, hf: configs, a folder)
        return load_parallel(parallel, on_invalid=on_invalid, languages=languages)
    report = LoadReport(source=text)
    if text.startswith("bundled:"):
        rows = _iter_jsonl_files([bundled_path(text.split(":", 1)[1])], report)
    elif text.startswith("hf:"):
        rows = _iter_hf(text[3:], hf_split, hf_config, report)
    elif text.startswith("pasero:"):
        rows = _iter_pasero(text[len("pasero:"):], report)
    else:
        rows = _iter_jsonl_files(_jsonl_files(Path(text)), report)
    records = _validate_rows(rows, report, on_invalid, lang)
    if languages is not None:
        wanted = {normalize_code(code) or code for code in languages}
        kept = [r for r in records if r.lang in wanted]
        if len(kept) != len(records):
            report.rejected["filtered_language"] += len(records) - len(kept)
        records = kept
    report.kept = len(records)
    return LoadResult(records, report)


def read_records(source: str | Path, **kwargs: Any) -> list[ChatRecord]:
    """`load_records(...).records`: strict by default, so any bad row raises."""
    return load_records(source, **kwargs).records


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"{path}: folder has no .jsonl files")
        return files
    if not path.exists():
        raise FileNotFoundError(
            f"data source not found: {path} (give a .jsonl file or folder, bundled:train|eval|modifiers, "
            "or hf:NAME_OR_PATH)"
        )
    return [path]


Row = tuple[str, int | None, Any]


def _iter_jsonl_files(files: list[Path], report: LoadReport) -> Iterator[Row | RecordError]:
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(data)
        for lineno, item in iter_jsonl_rows(data, path):
            yield item if isinstance(item, JSONLError) else (str(path), lineno, item)
    report.fingerprint = digest.hexdigest()


def _iter_pasero(spec: str, report: LoadReport) -> Iterator[Row | RecordError]:
    from babeltune.data.pasero import iter_pasero

    digest = hashlib.sha256()
    yield from iter_pasero(spec, digest)
    report.fingerprint = digest.hexdigest()


def _iter_hf(spec: str, split: str, config: str | None, report: LoadReport) -> Iterator[Row | RecordError]:
    try:
        import datasets  # heavy and optional: imported only when a hf: source is read
    except ImportError as exc:
        raise ImportError("reading hf: sources needs the 'datasets' package: pip install 'babeltune[hf]'") from exc
    path = Path(spec)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif path.is_file():
        builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise ValueError(f"hf:{spec}: cannot read files of type {path.suffix!r}")
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # datasets wraps the parser's error in its own types
            raise _unreadable_file(spec, path, builder, exc) from exc
        report.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        try:
            ds = datasets.load_dataset(spec, config, split=split)
        except Exception as exc:  # the hub client raises many types; all mean "not available"
            raise RuntimeError(
                f"could not load Hugging Face dataset {spec!r} (split {split!r}): {exc}. Without network, "
                "download it elsewhere and pass a local copy: hf:/path/to/saved_dataset or a .jsonl file."
            ) from exc
        report.fingerprint = f"hf:{spec}@{getattr(ds, '_fingerprint', '')}"
    name = f"hf:{spec}[{split}]"
    for i, row in enumerate(ds):
        yield name, i + 1, row


def _unreadable_file(spec: str, path: Path, builder: str, exc: Exception) -> ValueError:
    """The error for a local file `datasets` could not read: FILE:LINE from babeltune's own JSONL reader
    when the file is line-delimited JSON, else the innermost cause's message."""
    if builder == "json":
        for _, item in iter_jsonl_rows(path.read_bytes(), path):
            if isinstance(item, JSONLError):
                return ValueError(f"hf:{spec}: {item}")
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return ValueError(f"hf:{spec}: {path} cannot be read as {builder}: {type(cause).__name__}: {cause}")


def _validate_rows(
    rows: Iterable[Row | RecordError], report: LoadReport, on_invalid: OnInvalid, lang: str | None
) -> list[ChatRecord]:
    records: list[ChatRecord] = []
    seen: dict[str, str] = {}
    for item in rows:
        report.rows += 1
        try:
            if isinstance(item, RecordError):
                raise item
            source, lineno, raw = item
            record = row_to_record(raw, source, lineno, lang)
            if record.id in seen:
                raise RecordError(
                    source, lineno, "id", f"duplicate id {record.id!r} (first at {seen[record.id]})", "duplicate_id"
                )
            seen[record.id] = f"{source}:{lineno}"
            records.append(record)
        except RecordError as error:
            if on_invalid == "error":
                raise
            report.reject(error)
    return records


def row_to_record(raw: Any, source: str, line: int | None, lang: str | None = None) -> ChatRecord:
    """Turn one row of any supported format into a validated ChatRecord."""
    if not isinstance(raw, dict):
        raise RecordError(source, line, "<record>", "must be a JSON object", "malformed")
    if "pid" in raw and "instruction" not in raw:  # a pid marks a babeltune record: validate it strictly
        return record_from_dict(raw, source, line)
    row_lang = raw.get("lang", raw.get("language", lang))
    if row_lang is None:
        raise RecordError(
            source, line, "lang",
            "no language label: add a 'lang' column, or give the language of unlabelled rows (--source-lang)",
            "missing_language",
        )
    code = normalize_code(str(row_lang))
    if code is None:
        raise RecordError(source, line, "lang", f"unknown language code {row_lang!r}", "unknown_language")
    base = str(raw.get("pid") or raw.get("id") or f"{Path(source).stem}-{line}")
    meta = {k: v for k, v in raw.items() if k not in _CONSUMED and _json_safe(v)}
    if "messages" in raw or "conversations" in raw:
        turns = raw.get("messages", raw.get("conversations"))
        if isinstance(turns, list):
            turns = [_normalise_turn(t) for t in turns]
        messages = parse_messages(turns, source, line)
    elif "instruction" in raw:
        instruction, extra = raw.get("instruction"), raw.get("input") or ""
        output = raw.get("output", raw.get("response"))
        for name, value in (("instruction", instruction), ("output", output)):
            if not isinstance(value, str) or not value.strip():
                raise RecordError(source, line, name, "missing or empty", "empty_turn")
        if not isinstance(extra, str):
            raise RecordError(source, line, "input", "must be a string", "malformed")
        assert isinstance(instruction, str) and isinstance(output, str)
        prompt = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()
        messages = parse_messages(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}], source, line
        )
    else:
        raise RecordError(
            source, line, "<record>",
            "unrecognised row: expected a babeltune record (id, pid, lang, messages), a chat row "
            "('messages') or an Alpaca-style row ('instruction', 'input', 'output')", "unknown_format",
        )
    return ChatRecord(id=f"{base}-{code}", pid=base, lang=code, messages=messages, meta=meta)


_CONSUMED = {"id", "pid", "lang", "language", "messages", "conversations", "instruction", "input", "output",
             "response"}
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                   "assistant": "assistant"}


def _normalise_turn(turn: Any) -> Any:
    """Accept ShareGPT-style {from, value} turns as well as {role, content}."""
    if isinstance(turn, dict) and "from" in turn and "value" in turn:
        return {"role": _SHAREGPT_ROLES.get(str(turn["from"]), turn["from"]), "content": turn["value"]}
    return turn


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def fingerprint_records(records: Iterable[ChatRecord]) -> str:
    """sha256 of the records' canonical JSON, order-sensitive: identifies a mixture's exact content."""
    digest = hashlib.sha256()
    for rec in records:
        digest.update(rec.to_json().encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
