"""Study B's released evaluation files (naver/pasero, `examples/zero-shot-transfer-inst-tuning/data/`) as a
data source: `pasero:DIR` (both sets), `pasero:DIR@modifiers` or `pasero:DIR@alpacaeval` (one set).

The folder holds, per language code `{lang}`:

- `modifiers.{lang}.jsonl`: one prompt per line, each line a JSON list of chat messages
  (`[{"role": "user", "content": "..."}]`), with `modifiers.{lang}.types` beside it: one modifier type
  per line, for the prompt on the same line;
- `alpacaeval_test_subset.{lang}.jsonl`: open prompts in the same message format.

Lines are parallel across languages: line n of every language is the same prompt. Each line becomes
a babeltune record with `pid` = `modifiers-{n}` or `alpacaeval-{n}` (n: the 1-based line number, so
a prompt in 12 languages is one pid), `id` = `{pid}-{lang}`, `meta.split` = `modifiers` or `eval`,
and for modifier prompts `meta.modifier` (babeltune's spec) and `meta.pasero_type` (the type as
written). Types map onto babeltune's modifier kinds:

| pasero type | babeltune modifier |
|---|---|
| `lang_XX` | `answer_language` {lang: XX} |
| `short`, `long` | `short`, `long` (rule-checked) |
| `scientific_style`, `simple_style`, `complex_inst` | the same kinds (judge-scored) |
| `markdown_template` | `markdown_headings` |
| `html_template` | `html_page` |
| `cap_template` | `all_caps` |
| `arrow_template` | `arrows` |
| `num_items_N` | `list_items` {n: N} |

An unknown type, a types file whose line count differs from its prompts', a line that is not a JSON
list of messages or an unknown language code is an error naming the file and line (or, with
`on_invalid="skip"`, counted per reason like any rejected row).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from babeltune.data.jsonl import JSONLError, parse_json_line
from babeltune.data.records import RecordError
from babeltune.languages import normalize_code

SETS: dict[str, tuple[str, str]] = {
    # name -> (file prefix, babeltune split)
    "modifiers": ("modifiers", "modifiers"),
    "alpacaeval": ("alpacaeval_test_subset", "eval"),
}
_TYPE_TO_KIND: dict[str, str] = {
    "short": "short", "long": "long", "scientific_style": "scientific_style", "simple_style": "simple_style",
    "complex_inst": "complex_inst", "markdown_template": "markdown_headings", "html_template": "html_page",
    "cap_template": "all_caps", "arrow_template": "arrows",
}
_NUM_ITEMS = re.compile(r"num_items_(\d+)")
_LANG = re.compile(r"lang_(\w+)")

Row = tuple[str, int | None, Any]


def modifier_for_type(kind: str) -> dict[str, Any]:
    """babeltune's modifier spec for a pasero type; ValueError for an unknown one."""
    kind = kind.strip()
    if kind in _TYPE_TO_KIND:
        return {"kind": _TYPE_TO_KIND[kind]}
    if match := _NUM_ITEMS.fullmatch(kind):
        return {"kind": "list_items", "n": int(match.group(1))}
    if match := _LANG.fullmatch(kind):
        code = normalize_code(match.group(1))
        if code is None:
            raise ValueError(f"type {kind!r}: unknown language code {match.group(1)!r}")
        return {"kind": "answer_language", "lang": code}
    known = ", ".join([*_TYPE_TO_KIND, "lang_XX", "num_items_N"])
    raise ValueError(f"unknown modifier type {kind!r} (known: {known})")


def parse_source(spec: str) -> tuple[Path, list[str]]:
    """`DIR`, `DIR@modifiers` or `DIR@alpacaeval` -> (folder, set names)."""
    folder, _, which = spec.partition("@")
    if which and which not in SETS:
        raise ValueError(f"pasero:{spec}: unknown set {which!r}; use pasero:DIR, pasero:DIR@modifiers or "
                         "pasero:DIR@alpacaeval")
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"pasero:{spec}: {path} is not a folder (give study B's data folder)")
    return path, [which] if which else list(SETS)


def pasero_files(folder: Path, name: str) -> list[tuple[str, Path]]:
    """(language code as in the file name, path) of one set's prompt files, sorted by language."""
    prefix = SETS[name][0]
    found = []
    for path in sorted(folder.glob(f"{prefix}.*.jsonl")):
        found.append((path.name[len(prefix) + 1:-len(".jsonl")], path))
    return found


def iter_pasero(spec: str, digest: Any | None = None) -> Iterator[Row | RecordError]:
    """babeltune record rows (source, line, dict) of `pasero:spec`, or the errors of bad lines. `digest`
    (a hashlib object) is updated with the bytes of every file read."""
    folder, names = parse_source(spec)
    digest = digest if digest is not None else hashlib.sha256()
    total = 0
    for name in names:
        files = pasero_files(folder, name)
        total += len(files)
        for lang_name, path in files:
            yield from _iter_file(name, lang_name, path, digest)
    if total == 0:
        wanted = " or ".join(f"{SETS[n][0]}.LANG.jsonl" for n in names)
        raise FileNotFoundError(f"pasero:{spec}: no {wanted} files in {folder}")


def _lines(data: bytes) -> list[bytes]:
    """The lines of a released file, split on `\\n` only (a U+2028 inside a prompt stays in its line)."""
    lines = [raw.removesuffix(b"\r") for raw in data.split(b"\n")]
    return lines[:-1] if lines and not lines[-1] else lines


def _iter_file(name: str, lang_name: str, path: Path, digest: Any) -> Iterator[Row | RecordError]:
    source = str(path)
    data = path.read_bytes()
    digest.update(data)
    lines = _lines(data)
    lang = normalize_code(lang_name)
    if lang is None:
        yield RecordError(source, None, "lang", f"unknown language code {lang_name!r} in the file name",
                          "unknown_language")
        return
    types: list[str] | None = None
    types_path = path.with_suffix(".types")
    if name == "modifiers":
        if not types_path.exists():
            yield RecordError(source, None, "types", f"{types_path.name} is missing beside it", "malformed")
            return
        types_data = types_path.read_bytes()
        digest.update(types_data)
        types = [raw.decode("utf-8", errors="replace") for raw in _lines(types_data)]
        if len(types) != len(lines):
            yield RecordError(source, None, "types", f"{len(lines)} prompts but {types_path.name} has "
                              f"{len(types)} lines; they must match line by line", "malformed")
            return
    split = SETS[name][1]
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            yield RecordError(source, lineno, "<line>", "empty line (lines are parallel across languages)",
                              "malformed")
            continue
        try:
            messages = parse_json_line(line, source, lineno)
        except JSONLError as exc:
            yield exc
            continue
        if not isinstance(messages, list):
            yield RecordError(source, lineno, "<line>", "must be a JSON list of chat messages", "malformed")
            continue
        pid = f"{name}-{lineno}"
        meta: dict[str, Any] = {"split": split, "source": "pasero"}
        if types is not None:
            try:
                meta["modifier"] = modifier_for_type(types[lineno - 1])
            except ValueError as exc:
                yield RecordError(str(types_path), lineno, "type", str(exc), "unknown_modifier")
                continue
            meta["pasero_type"] = types[lineno - 1].strip()
        yield source, lineno, {"id": f"{pid}-{lang}", "pid": pid, "lang": lang, "messages": messages, "meta": meta}
