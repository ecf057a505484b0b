"""Score one generation row: language fidelity, language confusion (LPR/WPR verdicts), modifier check,
length. Pure given the identifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from babeltune.evaluate.confusion import confusion_verdict
from babeltune.evaluate.langid import LangIdThresholds, LanguageIdentifier, language_verdict
from babeltune.evaluate.metrics import ScoredResponse
from babeltune.evaluate.modifiers import (
    CheckContext,
    ModifierSpec,
    check_modifier,
    count_length,
    length_unit,
    parse_modifier,
)
from babeltune.languages import normalize_code

if TYPE_CHECKING:
    from babeltune.generate.rows import GenerationRow


def score_row(row: GenerationRow, identifier: LanguageIdentifier, thresholds: LangIdThresholds | None = None,
              where: str = "") -> ScoredResponse:
    """Score a generation row (as `babeltune generate` writes it). A failed request is marked failed and
    scored on nothing; an invalid modifier spec is flagged and not checked."""
    lang = normalize_code(row.lang)
    if lang is None:
        raise ValueError(f"{where or row.id}: field 'lang': unknown or missing language {row.lang!r}; "
                         "label every prompt with its language (e.g. --source-lang when generating)")
    raw_spec = row.modifier
    spec: ModifierSpec | None = None
    spec_error = ""
    if raw_spec is not None:
        try:
            spec = parse_modifier(raw_spec)
        except ValueError as exc:
            spec_error = f"invalid modifier spec: {exc}"
    kind = spec.kind if spec is not None else (str(raw_spec.get("kind")) if isinstance(raw_spec, dict) else
                                               ("invalid" if raw_spec is not None else None))
    expected = spec.lang if spec is not None and spec.kind == "answer_language" and spec.lang else lang
    unit = length_unit(expected)
    response = row.response
    failed = row.failed or response is None
    base: dict[str, Any] = dict(
        id=row.id, pid=row.pid, lang=lang, expected_lang=expected, error=row.error if failed else None,
        finish_reason=row.finish_reason, modifier_kind=kind, modifier_invalid=bool(spec_error), length_unit=unit,
        completion_tokens=row.completion_tokens,
    )
    if failed:
        return ScoredResponse(**base, failed=True, detected_lang=None, lang_confidence=0.0, lang_status="failed",
                              lang_reason="request failed", code_switch_rate=None, segments=0, modifier_passed=None,
                              modifier_reason="request failed" if kind else "", length=None)
    assert isinstance(response, str)
    verdict = language_verdict(response, expected, identifier, thresholds)
    if spec is not None:
        ctx = CheckContext(lang=lang, detected=verdict.detected, undetermined_reason=verdict.reason)
        check = check_modifier(spec, response, ctx)
        passed, reason = check.passed, check.reason
    else:
        passed, reason = None, spec_error
    confusion = confusion_verdict(response, expected, identifier)
    return ScoredResponse(
        **base, failed=False, line_pass=confusion.line_pass, word_pass=confusion.word_pass,
        confusion_reason=confusion.reason, detected_lang=verdict.detected, lang_confidence=round(verdict.confidence, 4),
        lang_status=verdict.status, lang_reason=verdict.reason, code_switch_rate=verdict.code_switch_rate,
        segments=verdict.segments, modifier_passed=passed, modifier_reason=reason,
        length=count_length(response, unit),
    )
