"""`babeltune data translate`: machine-translate a source into target languages, gated, into a parallel set.

Every turn of every source record (prompt and response separately) is translated into each target
language through any generation backend (an OpenAI-compatible endpoint, vLLM, the local engine) with
a versioned translation prompt (`PROMPT_VERSION`). Before sending, code blocks, inline code, URLs,
placeholders (`{name}`, `{0}`, `{{var}}`, `%s`, `%(name)s`) and HTML/XML tags are replaced by markers
`⟦1⟧, ⟦2⟧, ...`; the reply must give each marker back exactly once, and the original spans are put back
verbatim. A turn with nothing to translate (only code, say) is copied as it is.

Each translation passes the gates, or is rejected with one reason:

- `request_failed`: the backend gave no text (an HTTP error or a broken reply, after its own retries);
- `truncated`: generation stopped at `max_new_tokens`;
- `empty`: nothing but whitespace;
- `placeholder_changed`: a marker missing, repeated or invented;
- `length_ratio`: the translation's length (characters, protected spans left out) is implausible
  next to the source's: outside the target language's band (`LENGTH_BANDS`, calibrated on FLORES-200 by
  `benchmarks/calibrate_length_ratio.py`; `TranslationGates.length` overrides it);
- `wrong_language`: the language identifier (`babeltune.evaluate.langid`) finds another language
  (text too short to identify passes).

A rejected item is asked again `retries` times (default once) with a stricter prompt, then counted per
language and reason and left out: a prompt enters the parallel set only when every turn passed in
every target language. The output file holds, per complete prompt, the source record and one record per
target language (`pid` the source's; `meta.translation` says from which record and language, the
backend identity and the prompt version).

The translation requests go through `babeltune.generate.runner.run_generation`, so the cache file
`OUT.translations.jsonl` (beside `OUT.jsonl`) resumes exactly as `babeltune generate` does: append-only
rows, SIGKILL safe, failed requests retried on the next run. `OUT.summary.json` counts everything;
`OUT.rejects.jsonl` lists each rejected item with its reason and the text that was rejected.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from babeltune.data.jsonl import write_jsonl_atomic
from babeltune.data.records import ChatRecord, Message, write_jsonl
from babeltune.generate.config import LocalConfig, VLLMConfig
from babeltune.generate.endpoint import EndpointConfig
from babeltune.generate.rows import GenerationRow
from babeltune.generate.settings import DecodingSettings
from babeltune.languages import get_language, parse_language_list

PROMPT_VERSION = "babeltune-translate-v1"
"""Changes whenever `translation_prompt` changes; stored with every translated record."""

REASONS: tuple[str, ...] = ("request_failed", "truncated", "empty", "placeholder_changed", "length_ratio",
                            "wrong_language")

SCRIPT_LENGTH_FACTOR: dict[str, float] = {
    "Latn": 1.0, "Cyrl": 1.0, "Grek": 1.0, "Deva": 1.0, "Beng": 1.0, "Taml": 1.1, "Telu": 1.0, "Thai": 0.9,
    "Ethi": 0.7, "Arab": 0.85, "Hebr": 0.8, "Hang": 0.5, "Jpan": 0.45, "Hans": 0.3, "Hant": 0.3,
}
"""Typical characters per character of English text, by script (the same text in Chinese takes about a
third of the characters): the expected length for a language without a calibrated band in
`LENGTH_BANDS`; scripts not listed count 1.0."""

LENGTH_MARGIN = 1.25
"""A calibrated band reaches from the 1% quantile of FLORES-200's ratios divided by this margin to the 99%
quantile times it (`benchmarks/calibrate_length_ratio.py`)."""

LENGTH_BANDS: dict[str, tuple[float, float, float]] = {
    # language: (median, low, high) in characters per character of English, FLORES-200 dev (997 sentences);
    # study A's languages besides English
    "ar": (0.870, 0.47, 1.58), "zh": (0.318, 0.15, 0.87), "cs": (0.972, 0.54, 1.70),
    "et": (0.975, 0.53, 1.72), "fi": (1.062, 0.60, 1.86), "he": (0.774, 0.45, 1.33),
    "hi": (1.000, 0.56, 1.77), "it": (1.167, 0.66, 2.04), "ru": (1.087, 0.59, 2.05),
    "es": (1.179, 0.66, 2.09), "sw": (1.048, 0.61, 1.79),
    # study B's and other languages with FLORES files at hand
    "ja": (0.435, 0.22, 0.84), "ko": (0.500, 0.26, 1.02), "bn": (0.979, 0.54, 1.85),
    "fr": (1.181, 0.68, 2.10), "pt": (1.077, 0.64, 1.87), "de": (1.161, 0.68, 1.98),
}
"""The calibrated length bands: a translation of an English text of n characters into language L must have
between low x n and high x n characters (+- `TranslationGates.slack_chars`); `median` x n is the expected
length, which also converts a source in L to English-equivalent characters (n / median)."""


@dataclass(frozen=True)
class LengthBand:
    """A translation's accepted length in one language, in characters per character of English; a field left
    out keeps the calibrated value (`LENGTH_BANDS`, or the script fallback for an uncalibrated language)."""

    median: float | None = None
    """The expected length (FLORES-200's median ratio)."""
    low: float | None = None
    """Shortest accepted length."""
    high: float | None = None
    """Longest accepted length."""


@dataclass(frozen=True)
class TranslationGates:
    """Which translations are plausible enough to keep."""

    min_ratio: float = 0.5
    """For a language without a calibrated band: its shortest accepted length, as a multiple of the expected
    length (source length x script factors). 0.5 and 1.9 are the widest bands of the calibrated alphabetic
    languages relative to their medians (`benchmarks/README.md`, 'Translation')."""
    max_ratio: float = 1.9
    """For a language without a calibrated band: its longest accepted length, as a multiple of the expected
    length."""
    length: dict[str, LengthBand] = field(default_factory=dict)
    """Per-language bands replacing (field by field) the calibrated ones, e.g. `gates.length.zh.high=1.0`."""
    slack_chars: int = 12
    """Characters allowed beyond both bounds, so short texts (a word or two) are not judged by ratio."""
    check_language: bool = True
    """Reject a translation the language identifier finds in another language."""

    def __post_init__(self) -> None:
        if not 0 < self.min_ratio <= 1 <= self.max_ratio:
            raise ValueError(f"need 0 < min_ratio <= 1 <= max_ratio, got {self.min_ratio} and {self.max_ratio}")
        if self.slack_chars < 0:
            raise ValueError(f"slack_chars must be >= 0, got {self.slack_chars}")
        for code in self.length:
            median, low, high = self.band(code)
            if not 0 < low <= median <= high:
                raise ValueError(f"length.{code}: need 0 < low <= median <= high, got low {low}, median {median}, "
                                 f"high {high}")

    def band(self, lang: str) -> tuple[float, float, float]:
        """(median, low, high) for `lang`: its override, else its calibrated band, else the script fallback."""
        code = get_language(lang).code
        if code in LENGTH_BANDS:
            median, low, high = LENGTH_BANDS[code]
        else:
            median = SCRIPT_LENGTH_FACTOR.get(get_language(code).script, 1.0)
            low, high = self.min_ratio * median, self.max_ratio * median
        override = self.length.get(code, LengthBand())
        return (override.median if override.median is not None else median,
                override.low if override.low is not None else low,
                override.high if override.high is not None else high)


@dataclass(frozen=True)
class TranslateConfig:
    """One `babeltune data translate` run."""

    source: str = ""
    """Records to translate: any source babeltune reads (babeltune, Alpaca or chat rows)."""
    out: str = ""
    """The parallel set to write (OUT.jsonl); OUT.translations.jsonl (the cache), OUT.summary.json and
    OUT.rejects.jsonl are written beside it."""
    languages: list[str] = field(default_factory=list)
    """Target languages (a source record's own language is skipped: it is the original)."""
    source_lang: str | None = None
    """Language of source rows that carry no `lang` column."""
    backend: Literal["local", "vllm", "endpoint"] = "endpoint"
    model: str = "gemma-3-270m"
    """The translating model for the local and vllm backends."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    """How the local backend loads and batches the model."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """The vllm backend's engine settings."""
    decoding: DecodingSettings = field(default_factory=lambda: DecodingSettings(max_new_tokens=1024,
                                                                                repetition_penalty=1.0))
    """Greedy, no repetition penalty (a translation repeats its source's names and numbers)."""
    gates: TranslationGates = field(default_factory=TranslationGates)
    retries: int = 1
    """Times a rejected item is asked again (with a stricter prompt) before it is left out."""
    limit: int | None = None
    """Translate only the first N source records (None: all)."""
    overwrite: bool = False
    """Start the cache afresh instead of resuming."""

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is required: the parallel set to write (--out FILE.jsonl)")
        if not self.source:
            raise ValueError("source is required: the records to translate (--source)")
        if not self.languages:
            raise ValueError("languages is required: the target languages (--languages es,fi,...)")
        object.__setattr__(self, "languages", parse_language_list(self.languages))
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


# --- protecting code, links and placeholders ----------------------------------------------------------

_PROTECTED = re.compile(
    r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)"  # fenced code blocks
    r"|`[^`\n]+`"  # inline code
    r"|(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]"  # URLs (without trailing punctuation)
    r"|\{\{[^{}\n]*\}\}|\{[A-Za-z0-9_.]*\}"  # {{var}}, {name}, {0}, {}
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)[sdifr]|%[sdifr]"  # %(name)s, %s
    r"|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>",  # <tags>
    re.S,
)
_MARKER = re.compile(r"⟦(\d+)⟧")


def mask(text: str) -> tuple[str, list[str]]:
    """`text` with every protected span replaced by a marker ⟦i⟧ (1-based), and the spans in order."""
    spans: list[str] = []

    def repl(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        return f"⟦{len(spans)}⟧"

    return _PROTECTED.sub(repl, text), spans


def unmask(text: str, spans: Sequence[str]) -> str | None:
    """`text` with its markers replaced by the original spans; None unless each marker appears exactly once."""
    found = Counter(int(m) for m in _MARKER.findall(text))
    if found != Counter(range(1, len(spans) + 1)):
        return None
    return _MARKER.sub(lambda m: spans[int(m.group(1)) - 1], text)


def prose(masked: str) -> str:
    """The translatable part of a masked text: markers removed."""
    return _MARKER.sub("", masked)


# --- the prompt --------------------------------------------------------------------------------------

TEXT_HEADER = "\n\nText:\n"
"""Separates the instructions from the text to translate (the text is everything after it)."""


def translation_prompt(masked: str, source_lang: str, target_lang: str, attempt: int = 0) -> str:
    """The translation request (version `PROMPT_VERSION`); `attempt` > 0 adds a stricter reminder."""
    src, tgt = get_language(source_lang).name, get_language(target_lang).name
    lines = [
        f"Translate the text below from {src} into {tgt}.",
        "Markers such as ⟦1⟧ stand for code, links or placeholders: copy each one exactly once, unchanged, "
        "where it belongs in the translation.",
        "Keep the formatting (line breaks, lists, headings). Do not answer or carry out the text: translate it.",
        f"Reply with the {tgt} translation only.",
    ]
    if attempt > 0:
        lines.append(f"Your previous reply was rejected: write the whole text in {tgt}, keep every marker, add "
                     "nothing and leave nothing out.")
    return "\n".join(lines) + TEXT_HEADER + masked


# --- gates -------------------------------------------------------------------------------------------

def prose_length(masked: str) -> int:
    """The length the length gate measures: characters of a masked text, markers left out, stripped."""
    return len(prose(masked).strip())


def length_bounds(source_chars: int, source_lang: str, target_lang: str, gates: TranslationGates
                  ) -> tuple[float, float]:
    """Accepted (shortest, longest) translation length in characters for a source of `source_chars`: the
    target's band applied to the source's length in English characters (through the source's median)."""
    english = source_chars / gates.band(source_lang)[0]
    _, low, high = gates.band(target_lang)
    return max(0.0, low * english - gates.slack_chars), high * english + gates.slack_chars


def gate(row: GenerationRow, masked_source: str, spans: Sequence[str], source_lang: str, target_lang: str,
         gates: TranslationGates) -> tuple[str | None, str, str]:
    """(translated text or None, reason, detail) for one generation row."""
    response = row.response
    if row.failed or response is None:
        return None, "request_failed", str(row.error)
    if row.finish_reason == "length":
        return None, "truncated", f"stopped at max_new_tokens ({row.completion_tokens} tokens)"
    text = response.strip()
    if not text:
        return None, "empty", "empty reply"
    restored = unmask(text, spans)
    if restored is None:
        got = sorted(int(m) for m in _MARKER.findall(text))
        return None, "placeholder_changed", f"markers {got}, expected 1..{len(spans)} once each"
    n_source, n_target = prose_length(masked_source), prose_length(text)
    low, high = length_bounds(n_source, source_lang, target_lang, gates)
    if not low <= n_target <= high:
        return None, "length_ratio", f"{n_target} characters for a source of {n_source} (accepted {low:.0f}-{high:.0f})"
    if gates.check_language:
        from babeltune.evaluate.langid import get_identifier, language_verdict

        verdict = language_verdict(prose(text), target_lang, get_identifier())
        if verdict.status == "wrong":
            return None, "wrong_language", verdict.reason
    return restored, "", ""


# --- the run -----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Item:
    """One turn of one source record, to translate into one language."""

    record: ChatRecord
    turn: int
    lang: str
    masked: str
    spans: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.record.id, self.turn, self.lang)

    def request(self, attempt: int) -> ChatRecord:
        prompt = translation_prompt(self.masked, self.record.lang, self.lang, attempt)
        return ChatRecord(id=f"{self.record.id}|turn{self.turn}|{self.lang}|attempt{attempt}", pid=self.record.pid,
                          lang=self.lang, messages=(Message("user", prompt),),
                          meta={"translate": {"source_id": self.record.id, "turn": self.turn, "attempt": attempt}})


@dataclass
class TranslateSummary:
    """What one translation run did."""

    out: str
    source_records: int = 0
    languages: list[str] = field(default_factory=list)
    items: int = 0
    """Turns x target languages to translate (copied turns included)."""
    copied: int = 0
    """Turns with nothing to translate (only code, links, placeholders), copied as they are."""
    first_attempt_rejected: dict[str, int] = field(default_factory=dict)
    """Items each gate rejected at the first attempt."""
    retried: int = 0
    passed_on_retry: int = 0
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    """Items left out for good, per language and reason."""
    complete_prompts: int = 0
    incomplete_prompts: int = 0
    records_written: int = 0
    seconds: float = 0.0
    prompt_version: str = PROMPT_VERSION
    backend: dict[str, Any] = field(default_factory=dict)
    generation: list[dict[str, Any]] = field(default_factory=list)
    """The generation runner's summary of each pass (first attempt, then each retry)."""

    @property
    def records_per_second(self) -> float:
        translated = self.complete_prompts * len(self.languages)
        return translated / self.seconds if self.seconds > 0 else 0.0

    def gate_shares(self) -> dict[str, float]:
        """Share of the items sent that each gate rejected at the first attempt."""
        sent = self.items - self.copied
        return {reason: n / sent for reason, n in self.first_attempt_rejected.items()} if sent else {}

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in vars(self).items()}, "records_per_second": round(self.records_per_second, 3),
                "first_attempt_rejected_share": {k: round(v, 4) for k, v in self.gate_shares().items()}}

    def lines(self) -> list[str]:
        rejected = sum(sum(v.values()) for v in self.rejected.values())
        text = [f"{self.source_records} source records x {len(self.languages)} languages: {self.items} items "
                f"({self.copied} copied as they are); {self.complete_prompts} prompts complete in every language, "
                f"{self.incomplete_prompts} incomplete (left out); {self.records_written} records -> {self.out}"]
        if self.first_attempt_rejected:
            text.append("  first attempt rejected: " + ", ".join(
                f"{r}: {n} ({self.gate_shares()[r]:.1%})" for r, n in sorted(self.first_attempt_rejected.items())))
        if self.retried:
            text.append(f"  retried {self.retried}, passed on retry {self.passed_on_retry}; left out {rejected}")
        for lang, reasons in sorted(self.rejected.items()):
            text.append(f"  rejected in {lang}: " + ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())))
        return text


def sidecar(out: Path, suffix: str) -> Path:
    """OUT.jsonl -> OUT{suffix} (e.g. '.translations.jsonl')."""
    return out.with_name(out.name.removesuffix(".jsonl") + suffix)


def translate_records(records: Sequence[ChatRecord], backend: Any, cfg: TranslateConfig) -> TranslateSummary:
    """Translate `records` into `cfg.languages` through `backend`; write the parallel set and its sidecars."""
    from babeltune.generate.runner import generation_key, run_generation

    out = Path(cfg.out)
    _check_unique_pids(records, cfg.source)
    start = time.perf_counter()
    summary = TranslateSummary(str(out), source_records=len(records), languages=list(cfg.languages),
                               backend=backend.identity())
    items, copied = _items(records, cfg.languages)
    summary.items = len(items) + len(copied)
    summary.copied = len(copied)
    cache = sidecar(out, ".translations.jsonl")
    passed: dict[tuple[str, int, str], str] = dict(copied)
    failed: dict[tuple[str, int, str], tuple[_Item, str, str, str | None]] = {}
    sent: list[ChatRecord] = []
    pending = items
    for attempt in range(cfg.retries + 1):
        requests = [item.request(attempt) for item in pending]
        sent.extend(requests)
        # Pass 0 retries earlier runs' failed requests; later passes keep every row of pass 0 as it is.
        gen = run_generation(sent, backend, cfg.decoding, cache, overwrite=cfg.overwrite and attempt == 0,
                             retry_failed=attempt == 0)
        summary.generation.append(gen.to_dict())
        rows = _cache_rows(cache)
        still: list[_Item] = []
        for item, request in zip(pending, requests, strict=True):
            row = rows[(request.id, generation_key(summary.backend, [m.to_dict() for m in request.messages],
                                                   cfg.decoding))]
            text, reason, detail = gate(row, item.masked, item.spans, item.record.lang, item.lang, cfg.gates)
            if text is not None:
                passed[item.key] = text
                failed.pop(item.key, None)
                summary.passed_on_retry += attempt > 0
                continue
            if attempt == 0:
                summary.first_attempt_rejected[reason] = summary.first_attempt_rejected.get(reason, 0) + 1
            failed[item.key] = (item, reason, detail, row.response)
            still.append(item)
        pending = still
        if not pending or attempt == cfg.retries:
            break
        summary.retried += len(pending)
    parallel = _assemble(records, cfg, passed, summary)
    summary.records_written = write_jsonl(parallel, out)
    for item, reason, _, _ in failed.values():
        per_lang = summary.rejected.setdefault(item.lang, {})
        per_lang[reason] = per_lang.get(reason, 0) + 1
    _write_rejects(sidecar(out, ".rejects.jsonl"), failed, cfg.retries + 1)
    summary.seconds = time.perf_counter() - start
    path = sidecar(out, ".summary.json")
    path.write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _cache_rows(path: Path) -> dict[tuple[str, str], GenerationRow]:
    """The cache's rows by (request id, key): a source turn edited since an earlier run has a new key, so
    its id can have rows for both texts."""
    from babeltune.data.jsonl import JSONLError, iter_jsonl_rows

    rows: dict[tuple[str, str], GenerationRow] = {}
    for lineno, raw in iter_jsonl_rows(path.read_bytes(), path):
        if isinstance(raw, JSONLError) or not isinstance(raw, dict) or "key" not in raw:
            raise ValueError(f"{path}:{lineno}: not a generation row; the cache was changed by something other "
                             "than babeltune: fix or remove it")
        row = GenerationRow.from_dict(raw, str(path), lineno)
        rows[(row.id, row.key)] = row
    return rows


def select_source(records: Sequence[ChatRecord], source: str, source_lang: str | None) -> list[ChatRecord]:
    """The records to translate: all of them, or those in `source_lang` when the source holds several
    languages (a parallel set: translate one language's records)."""
    langs = sorted({rec.lang for rec in records})
    if len(langs) <= 1:
        return list(records)
    if source_lang is None:
        raise ValueError(f"{source}: holds records in {len(langs)} languages ({', '.join(langs)}); give "
                         "--source-lang L to translate the records in L")
    code = get_language(source_lang).code
    kept = [rec for rec in records if rec.lang == code]
    if not kept:
        raise ValueError(f"{source}: no records in --source-lang {code} (it has {', '.join(langs)})")
    return kept


def _check_unique_pids(records: Sequence[ChatRecord], source: str) -> None:
    seen: dict[str, str] = {}
    for rec in records:
        if rec.pid in seen:
            raise ValueError(f"{source}: records {seen[rec.pid]!r} and {rec.id!r} share pid {rec.pid!r}; a prompt is "
                             "translated from one record")
        seen[rec.pid] = rec.id


def _items(records: Sequence[ChatRecord], languages: Sequence[str]
           ) -> tuple[list[_Item], dict[tuple[str, int, str], str]]:
    """The turns to translate, and the turns copied as they are (nothing to translate)."""
    items: list[_Item] = []
    copied: dict[tuple[str, int, str], str] = {}
    for rec in records:
        for turn, message in enumerate(rec.messages):
            masked, spans = mask(message.content)
            for lang in languages:
                if lang == rec.lang:
                    continue
                if not re.search(r"\w", prose(masked)):
                    copied[(rec.id, turn, lang)] = message.content
                else:
                    items.append(_Item(rec, turn, lang, masked, tuple(spans)))
    return items, copied


def _assemble(records: Sequence[ChatRecord], cfg: TranslateConfig, passed: dict[tuple[str, int, str], str],
              summary: TranslateSummary) -> list[ChatRecord]:
    """The source record and its translations, for each prompt complete in every target language."""
    out: list[ChatRecord] = []
    for rec in records:
        targets = [lang for lang in cfg.languages if lang != rec.lang]
        turns = range(len(rec.messages))
        if not all((rec.id, t, lang) in passed for lang in targets for t in turns):
            summary.incomplete_prompts += 1
            continue
        summary.complete_prompts += 1
        out.append(rec)
        for lang in targets:
            messages = tuple(Message(m.role, passed[(rec.id, t, lang)]) for t, m in enumerate(rec.messages))
            provenance = {"from_lang": rec.lang, "source_id": rec.id, "prompt_version": PROMPT_VERSION,
                          "backend": summary.backend}
            out.append(ChatRecord(f"{rec.pid}-{lang}", rec.pid, lang, messages,
                                  {**rec.meta, "translation": provenance}))
    return out


def _write_rejects(path: Path, failed: dict[tuple[str, int, str], tuple[_Item, str, str, str | None]],
                   attempts: int) -> None:
    write_jsonl_atomic(path, ({"source_id": item.record.id, "pid": item.record.pid, "lang": item.lang,
                               "turn": item.turn, "reason": reason, "detail": detail, "attempts": attempts,
                               "source": item.record.messages[item.turn].content, "response": response}
                              for item, reason, detail, response in failed.values()))


def make_translation_backend(cfg: TranslateConfig) -> Any:
    """The generation backend `cfg` names (heavy modules imported only for the one asked for)."""
    from babeltune.generate.cli import make_backend

    return make_backend(cfg)  # reads backend, model, endpoint, local, vllm
