"""Evaluation without a judge (study B): language identification of every response, code-switching,
modifier checks, lengths, and metrics per language with confidence intervals (babeltune.stats)."""

from babeltune.evaluate.langid import (
    LangIdThresholds,
    LanguageIdentifier,
    LanguageVerdict,
    Py3LangIdIdentifier,
    get_identifier,
    identify,
    language_verdict,
    register_identifier,
    to_babeltune_code,
)
from babeltune.evaluate.metrics import ScoredResponse, compute_metrics
from babeltune.evaluate.modifiers import (
    CHECKS,
    MODIFIER_KINDS,
    CheckContext,
    CheckResult,
    ModifierSpec,
    check_modifier,
    expected_language,
    parse_modifier,
)
from babeltune.evaluate.runner import EvalConfig, EvalResult, evaluate, score_generations
from babeltune.evaluate.scoring import score_row

__all__ = [
    "CHECKS",
    "MODIFIER_KINDS",
    "CheckContext",
    "CheckResult",
    "EvalConfig",
    "EvalResult",
    "LangIdThresholds",
    "LanguageIdentifier",
    "LanguageVerdict",
    "ModifierSpec",
    "Py3LangIdIdentifier",
    "ScoredResponse",
    "check_modifier",
    "compute_metrics",
    "evaluate",
    "expected_language",
    "get_identifier",
    "identify",
    "language_verdict",
    "parse_modifier",
    "register_identifier",
    "score_generations",
    "score_row",
    "to_babeltune_code",
]
