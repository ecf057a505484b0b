"""Prompts for probing and manipulation training: from any babeltune source or plain text files.

A text file holds one sentence per line; its language is given as `PATH=LANG`, or read from the file
name when the name is a language code (`eng_Latn.dev`, `es.txt`). A folder stands for every file in it
whose name is a language code (the FLORES dev folder, for instance). Each prompt is rendered with the
model's chat template as a single user turn (records keep their own system turn), exactly as generation
renders it, and cut to `max_tokens` by shortening the user's text, never the template, so the last
prompt token is always the template's assistant header.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babeltune.data.records import Message
from babeltune.languages import normalize_code


@dataclass(frozen=True)
class ProbePrompt:
    """One rendered prompt: its language, parallel group and token ids."""

    lang: str
    pid: str
    ids: tuple[int, ...]
    truncated: bool = False


@dataclass
class PromptReport:
    """What was read, cut and kept, per language (nothing is dropped silently)."""

    read: Counter[str] = field(default_factory=Counter)
    truncated: Counter[str] = field(default_factory=Counter)
    empty_lines: int = 0
    other_languages: Counter[str] = field(default_factory=Counter)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"read": dict(self.read), "truncated": dict(self.truncated), "empty_lines": self.empty_lines,
                "other_languages": dict(self.other_languages), "fingerprints": self.fingerprints}


def text_files(spec: str) -> list[tuple[Path, str]]:
    """Expand `PATH[=LANG]` into (file, language) pairs; see the module docstring."""
    path_text, _, lang = spec.partition("=")
    path = Path(path_text)
    if path.is_dir():
        if lang:
            raise ValueError(f"--text {spec}: a folder takes its languages from the file names; drop '={lang}'")
        found = [(p, code) for p in sorted(path.iterdir()) if p.is_file() and (code := _code_of(p))]
        if not found:
            raise FileNotFoundError(f"--text {spec}: no file in the folder is named by a language code "
                                    "(e.g. eng_Latn.dev, es.txt)")
        return found
    if not path.exists():
        raise FileNotFoundError(f"--text {spec}: file not found")
    code = normalize_code(lang) if lang else _code_of(path)
    if code is None:
        raise ValueError(f"--text {spec}: " + (f"unknown language code {lang!r}" if lang else
                         "cannot tell the language from the file name; write PATH=LANG (e.g. sents.txt=fi)"))
    return [(path, code)]


def _code_of(path: Path) -> str | None:
    return normalize_code(path.name.split(".")[0])


def _text_lines(data: bytes, path: Path) -> list[str]:
    """The lines of a UTF-8 text file; a byte that is not UTF-8 is an error naming the file and line."""
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8") from None


def read_text_prompts(spec: str, report: PromptReport, parallel: bool) -> list[tuple[str, str, list[Message]]]:
    """(lang, pid, messages) for every non-empty line; with `parallel`, line n of every file shares a pid."""
    out: list[tuple[str, str, list[Message]]] = []
    for path, lang in text_files(spec):
        data = path.read_bytes()
        report.fingerprints[str(path)] = hashlib.sha256(data).hexdigest()
        for lineno, line in enumerate(_text_lines(data, path), 1):
            if not line.strip():
                report.empty_lines += 1
                continue
            pid = f"line{lineno}" if parallel else f"{path.name}:{lineno}"
            out.append((lang, pid, [Message("user", line.strip())]))
    return out


def read_source_prompts(source: str, report: PromptReport) -> list[tuple[str, str, list[Message]]]:
    """(lang, pid, prompt messages) of every record of a babeltune source."""
    from babeltune.data.readers import load_records

    loaded = load_records(source)
    report.fingerprints[source] = loaded.report.fingerprint
    return [(r.lang, r.pid, list(r.prompt_messages)) for r in loaded.records]


def render_probe_prompt(tokenizer: Any, template: Any | None, messages: Sequence[Message],
                        max_tokens: int) -> tuple[list[int], bool]:
    """Token ids of the prompt (template applied unless `template` is None), at most `max_tokens`.

    Returns (ids, truncated). Only the last user turn's text is shortened."""
    ids = _render(tokenizer, template, messages)
    if len(ids) <= max_tokens:
        return ids, False
    *head, last = messages
    content = list(tokenizer(last.content, add_special_tokens=False)["input_ids"])
    keep = len(content) - (len(ids) - max_tokens)
    while keep > 0:
        cut = [*head, Message(last.role, tokenizer.decode(content[:keep]))]
        ids = _render(tokenizer, template, cut)
        if len(ids) <= max_tokens:
            return ids, True
        keep -= len(ids) - max_tokens
    raise ValueError(f"max_prompt_tokens={max_tokens} leaves no room for the prompt text once the chat template "
                     "is applied; raise it")


def _render(tokenizer: Any, template: Any | None, messages: Sequence[Message]) -> list[int]:
    if template is None:
        text = "\n\n".join(m.content for m in messages)
        return list(tokenizer(text)["input_ids"])  # the tokenizer's own special tokens (BOS), nothing by hand
    from babeltune.models.chat import render_prompt

    return render_prompt(tokenizer, template, list(messages))


@dataclass
class ProbeSplit:
    """Prompts per language, split into the part the means are computed on and a held-out part."""

    train: dict[str, list[ProbePrompt]]
    heldout: dict[str, list[ProbePrompt]]
    report: PromptReport

    def counts(self) -> dict[str, dict[str, int]]:
        return {lang: {"train": len(self.train[lang]), "heldout": len(self.heldout.get(lang, []))}
                for lang in self.train}


def collect_prompts(
    tokenizer: Any, template: Any | None, *, sources: Sequence[str] = (), texts: Sequence[str] = (),
    parallel_text: bool = False, languages: Sequence[str] | None = None, max_tokens: int = 64,
    per_language: int = 300, min_per_language: int = 20, holdout: float = 0.2, seed: int = 0,
) -> ProbeSplit:
    """Read, render and split prompts per language.

    Parallel groups (pids) are split as a whole, so held-out sentences are unseen in every language. Each
    language keeps at most `per_language` prompts on each side; fewer than `min_per_language` for the
    means is an error that says so."""
    if not sources and not texts:
        raise ValueError("no prompts: give at least one data source (--data) or text file (--text)")
    report = PromptReport()
    rows: list[tuple[str, str, list[Message]]] = []
    for source in sources:
        rows += read_source_prompts(source, report)
    for spec in texts:
        rows += read_text_prompts(spec, report, parallel_text)
    wanted = list(languages) if languages else sorted({lang for lang, _, _ in rows})
    pids = sorted({pid for lang, pid, _ in rows if lang in wanted})
    random.Random(seed).shuffle(pids)
    rank = {pid: i for i, pid in enumerate(pids)}
    n_heldout = round(len(pids) * holdout)
    train: dict[str, list[ProbePrompt]] = {lang: [] for lang in wanted}
    heldout: dict[str, list[ProbePrompt]] = {lang: [] for lang in wanted}
    for lang, pid, messages in sorted(rows, key=lambda row: rank.get(row[1], -1)):
        if lang not in train:
            report.other_languages[lang] += 1
            continue
        report.read[lang] += 1
        side = heldout if rank[pid] < n_heldout else train
        if len(side[lang]) >= per_language:
            continue
        ids, truncated = render_probe_prompt(tokenizer, template, messages, max_tokens)
        report.truncated[lang] += truncated
        side[lang].append(ProbePrompt(lang, pid, tuple(ids), truncated))
    short = {lang: len(items) for lang, items in train.items() if len(items) < min_per_language}
    if short:
        listed = ", ".join(f"{lang}: {n}" for lang, n in sorted(short.items()))
        raise ValueError(f"too few prompts for a stable language mean ({listed}; at least {min_per_language} "
                         "needed after holding out): add data for those languages, drop them with --languages, "
                         "or lower min_per_language")
    return ProbeSplit(train, heldout, report)
