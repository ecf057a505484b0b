"""Modifier checks (study B, IFEval-style): one small pure function per kind of instruction.

A record's `meta["modifier"]` names the instruction its prompt carries, e.g. `{"kind": "list_items",
"n": 4}`. Kinds and their fields:

| kind | fields | passes when |
|---|---|---|
| answer_language | lang | the response is identified as `lang` |
| html_page | | it starts with `<!DOCTYPE html>` or `<html>`, has `<body>...</body>`, ends with `</html>` |
| markdown_headings | min_headings (2) | at least that many `#`..`######` heading lines (outside code blocks) |
| list_items | n | exactly n lines start with `- `, `* `, `• `, `1.` or `1)` |
| max_words | n, unit (words/chars) | at most n words (chars for languages written without spaces) |
| all_caps | | no lower-case letter, and some upper-case ones; only for cased scripts |
| arrows | | at least 2 non-empty lines, each starting with an arrow (→ -> ⇒ ➜ ➔) |
| short | n (60) | at most n words (1.5 n characters for languages written without spaces) |
| long | n (150) | at least n words (1.5 n characters for languages written without spaces) |
| scientific_style, simple_style, complex_inst | | judge-scored (the rubric judge's `modifier` criterion) |

`short` / `long` thresholds: a bundled reference answer has 78 words on average, so "short" is under
most of them and "long" about twice one; 1.5 = Chinese characters per English word, measured on the
160 parallel bundled training answers (19,544 characters / 12,504 words = 1.56). The three style
kinds cannot be checked by a rule: their check returns `passed=None` with the reason "judge-scored",
the metrics count them as `modifier_judge_scored` (never as passed or failed), and the rubric judge
scores whether the response follows the instruction.

Every check returns a `CheckResult`: passed True/False with the reason, or None when the check does
not apply (capitals in a script without case) or cannot be decided (language of a 3-word answer).
An empty response fails every check.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from babeltune.data.modifiers import MODIFIER_KINDS as MODIFIER_KINDS  # re-exported: the grammar lives with the data
from babeltune.data.modifiers import ModifierSpec, Unit, parse_modifier
from babeltune.languages import LANGUAGES, get_language

ARROWS: tuple[str, ...] = ("→", "->", "⇒", "➜", "➔")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")
_HEADING = re.compile(r"^#{1,6}\s+\S")
_FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check."""

    kind: str
    passed: bool | None
    """True/False; None when the check does not apply or cannot be decided."""
    reason: str


@dataclass(frozen=True)
class CheckContext:
    """What a check may know besides the response: the prompt's language and the identified language."""

    lang: str
    """Language of the prompt (the language the response is expected in, unless told otherwise)."""
    detected: str | None = None
    """Language identified for the response (None: undetermined)."""
    undetermined_reason: str = ""


JUDGE_SCORED_KINDS: frozenset[str] = frozenset({"scientific_style", "simple_style", "complex_inst"})
"""Kinds no rule can check: scored by the rubric judge's `modifier` criterion, never passed by a rule."""
JUDGED_INSTRUCTIONS: dict[str, str] = {
    "scientific_style": "a scientific, academic style",
    "simple_style": "a simple style that a child or a non-expert can follow",
    "complex_inst": "several things at once (a compound instruction): every part of it counts",
}
"""What the rubric judge is told each judge-scored kind asks for."""
SHORT_WORDS = 60
"""`short` passes at most this many words (unless the spec's n says otherwise)."""
LONG_WORDS = 150
"""`long` passes at least this many words (unless the spec's n says otherwise)."""
CHARS_PER_WORD = 1.5
"""Characters per word for languages written without spaces (measured on the bundled parallel answers)."""


# --- helpers ----------------------------------------------------------------------------------------


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def plain_text(text: str) -> str:
    """The text a reader counts: markup and list/heading/arrow markers removed."""
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", text, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(text)
    text = re.sub(r"^[#>\-*•→⇒➜➔\d.)\s]+", "", text, flags=re.M)
    return text.replace("->", " ")


def count_length(text: str, unit: Unit) -> int:
    """Words (whitespace-separated) or characters (letters and digits: no spaces, no punctuation)."""
    plain = plain_text(text)
    if unit == "chars":
        return len(re.sub(r"\s|\W", "", plain))
    return len(plain.split())


def length_unit(lang: str) -> Unit:
    """How length is measured in a language: words, or characters where words are not spaced."""
    language = LANGUAGES.get(lang)
    return "chars" if language is not None and not language.spaces else "words"


# --- the checks (pure: response + spec + context -> CheckResult) -------------------------------------


def check_answer_language(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    want = spec.lang or ""
    if ctx.detected is None:
        return CheckResult(spec.kind, None, f"language undetermined ({ctx.undetermined_reason or 'no text'})")
    if ctx.detected == want:
        return CheckResult(spec.kind, True, f"answered in {want}")
    return CheckResult(spec.kind, False, f"answered in {ctx.detected}, asked for {want}")


def check_html_page(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    low = response.strip().lower()
    if not low.startswith(("<!doctype html", "<html")):
        return CheckResult(spec.kind, False, "does not start with <!DOCTYPE html> or <html>")
    if not low.endswith("</html>"):
        return CheckResult(spec.kind, False, "does not end with </html>")
    if "<body" not in low or "</body>" not in low:
        return CheckResult(spec.kind, False, "has no <body>...</body>")
    return CheckResult(spec.kind, True, "a complete HTML page")


def check_markdown_headings(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    headings, in_code = 0, False
    for line in response.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and _HEADING.match(line):
            headings += 1
    ok = headings >= spec.min_headings
    return CheckResult(spec.kind, ok, f"{headings} markdown heading(s), at least {spec.min_headings} asked")


def check_list_items(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    items = sum(1 for line in nonempty_lines(response) if _LIST_ITEM.match(line))
    return CheckResult(spec.kind, items == spec.n, f"{items} list item(s), exactly {spec.n} asked")


def check_max_words(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    unit: Unit = spec.unit or length_unit(ctx.lang)
    count = count_length(response, unit)
    limit = spec.n or 0
    return CheckResult(spec.kind, count <= limit, f"{count} {unit}, at most {limit} asked")


def check_all_caps(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    language = get_language(ctx.lang)
    if not language.cased:
        return CheckResult(spec.kind, None, f"not applicable: {language.name} script has no capitals")
    lower = [ch for ch in response if ch.islower()]
    upper = sum(1 for ch in response if ch.isupper())
    if lower:
        return CheckResult(spec.kind, False, f"{len(lower)} lower-case letter(s), e.g. {''.join(lower[:5])!r}")
    if upper == 0:
        return CheckResult(spec.kind, False, "no capital letters at all")
    return CheckResult(spec.kind, True, f"all {upper} cased letters are capitals")


def check_arrows(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    lines = nonempty_lines(response)
    arrowed = sum(1 for line in lines if line.lstrip().startswith(ARROWS))
    if len(lines) < 2:
        return CheckResult(spec.kind, False, f"{len(lines)} non-empty line(s); at least 2 arrow lines asked")
    ok = arrowed == len(lines)
    return CheckResult(spec.kind, ok, f"{arrowed} of {len(lines)} non-empty lines start with an arrow")


def _length_limit(words: int, lang: str) -> tuple[int, Unit]:
    unit = length_unit(lang)
    return (round(words * CHARS_PER_WORD) if unit == "chars" else words), unit


def check_short(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    limit, unit = _length_limit(spec.n or SHORT_WORDS, ctx.lang)
    count = count_length(response, unit)
    return CheckResult(spec.kind, count <= limit, f"{count} {unit}, a short answer is at most {limit}")


def check_long(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    limit, unit = _length_limit(spec.n or LONG_WORDS, ctx.lang)
    count = count_length(response, unit)
    return CheckResult(spec.kind, count >= limit, f"{count} {unit}, a long answer is at least {limit}")


def check_by_judge(spec: ModifierSpec, response: str, ctx: CheckContext) -> CheckResult:
    return CheckResult(spec.kind, None, "judge-scored: no rule checks this instruction (see the rubric's "
                                        "'modifier' criterion)")


CHECKS: dict[str, Callable[[ModifierSpec, str, CheckContext], CheckResult]] = {
    "answer_language": check_answer_language,
    "html_page": check_html_page,
    "markdown_headings": check_markdown_headings,
    "list_items": check_list_items,
    "max_words": check_max_words,
    "all_caps": check_all_caps,
    "arrows": check_arrows,
    "short": check_short,
    "long": check_long,
    **{kind: check_by_judge for kind in sorted(JUDGE_SCORED_KINDS)},
}


def check_modifier(spec: ModifierSpec | dict[str, Any], response: str, ctx: CheckContext) -> CheckResult:
    """Run the check for `spec`'s kind; an empty response fails every rule check."""
    spec = parse_modifier(spec)
    if not response.strip() and spec.kind not in JUDGE_SCORED_KINDS:
        return CheckResult(spec.kind, False, "empty response")
    return CHECKS[spec.kind](spec, response, ctx)


def expected_language(lang: str, spec: ModifierSpec | dict[str, Any] | None) -> str:
    """The language a response should be in: the one an answer_language modifier asks for, else the
    prompt's."""
    if spec is None:
        return lang
    parsed = parse_modifier(spec)
    return parsed.lang if parsed.kind == "answer_language" and parsed.lang else lang
