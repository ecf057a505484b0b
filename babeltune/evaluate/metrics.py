"""Aggregate scored responses into metrics per language and overall, with confidence intervals.

The result is a tidy table of `babeltune.tidy.ResultRow`s (the experiments' row type; `lang` holds the
scope: a language or 'overall'): one per (scope, metric, kind) with the number of responses it rests
on, its value and a 95% CI from `babeltune.stats`: a Wilson score interval for rates (yes/no per
response), a percentile bootstrap over prompts for means (lengths, tokens, code-switching shares);
the overall row's bootstrap resamples whole prompts (`pid`: a parallel prompt in every language is
one cluster). Each bootstrap gets its own generator seeded from the run seed and the metric's name,
so adding a metric never changes another's interval. Rates are shares in 0..1.

Which responses each metric counts (failed requests are never scored as pass or fail):

| metric | over | value | CI |
|---|---|---|---|
| responses | all rows | count | |
| failed_rate | all rows | share whose request failed | Wilson |
| correct_language_rate | answered, language determined | share in the expected language | Wilson |
| undetermined_rate | answered | share too short / non-linguistic to identify | Wilson |
| code_switching_rate | answered, >= 1 identifiable line | mean share of lines in another language | bootstrap* |
| truncated_rate | answered | share that hit max_new_tokens | Wilson |
| response_length | answered | mean words (characters for languages without spaces); per language only | bootstrap |
| response_tokens | answered, token count known | mean generated tokens | bootstrap |
| line_pass_rate (LPR) | answered, >= 1 line of 5+ tokens | share with every line in the expected language | Wilson |
| word_pass_rate (WPR) | line-passing responses in ar, hi, ja, ko, ru, zh | share without an English word | Wilson |
| lcpr | as LPR and WPR | harmonic mean of LPR and WPR (LPR where WPR does not apply) | bootstrap* |
| confusion_skipped | answered, no line of 5+ tokens | count (not scored) | |
| modifier_pass_rate (kind K, or 'all') | answered, check decided by a rule | share passing | Wilson |
| modifier_undecided_rate (kind K) | answered with modifier K | share not applicable / undecidable | Wilson |
| modifier_judge_scored (kind K) | answered with a judge-scored modifier K | count (left to the judge, never passed) | |
| modifier_invalid | rows with an invalid spec | count (never scored) | |

bootstrap*: the Wilson interval of the mean share where the bootstrap is degenerate (all values equal,
or one prompt: `babeltune.stats.bootstrap_mean` with bounds). LCPR over several languages is the mean
of the languages' LCPRs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from babeltune import stats
from babeltune.tidy import ResultRow

OVERALL = "overall"


@dataclass(frozen=True)
class ScoredResponse:
    """One generation row, scored: the per-response table `babeltune eval` writes."""

    id: str
    pid: str
    lang: str
    expected_lang: str
    failed: bool
    error: str | None
    finish_reason: str
    detected_lang: str | None
    lang_confidence: float
    lang_status: str
    """correct | wrong | undetermined | failed"""
    lang_reason: str
    code_switch_rate: float | None
    segments: int
    modifier_kind: str | None
    modifier_passed: bool | None
    modifier_reason: str
    modifier_invalid: bool
    length: int | None
    length_unit: str
    completion_tokens: int | None
    line_pass: bool | None = None
    """Language Confusion Benchmark line-level verdict: every line of 5+ tokens in the expected language
    (None: failed, or no such line: skipped)."""
    word_pass: bool | None = None
    """Word-level verdict (no English word), for line-passing responses in non-Latin-script languages
    (None elsewhere)."""
    confusion_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Statistic = Literal["rate", "share", "mean"]
"""rate: yes/no per response (Wilson); share: a mean of values in 0..1 (bootstrap, Wilson where degenerate);
mean: unbounded (bootstrap)."""


@dataclass(frozen=True)
class _Metric:
    name: str
    select: Callable[[ScoredResponse], bool]
    value: Callable[[ScoredResponse], float]
    statistic: Statistic
    per_language_only: bool = False


def _answered(r: ScoredResponse) -> bool:
    return not r.failed


_METRICS: tuple[_Metric, ...] = (
    _Metric("failed_rate", lambda r: True, lambda r: float(r.failed), "rate"),
    _Metric("correct_language_rate", lambda r: _answered(r) and r.lang_status in ("correct", "wrong"),
            lambda r: float(r.lang_status == "correct"), "rate"),
    _Metric("undetermined_rate", _answered, lambda r: float(r.lang_status == "undetermined"), "rate"),
    _Metric("code_switching_rate", lambda r: _answered(r) and r.code_switch_rate is not None,
            lambda r: float(r.code_switch_rate or 0.0), "share"),
    _Metric("truncated_rate", _answered, lambda r: float(r.finish_reason == "length"), "rate"),
    _Metric("response_length", lambda r: _answered(r) and r.length is not None, lambda r: float(r.length or 0),
            "mean", per_language_only=True),
    _Metric("response_tokens", lambda r: _answered(r) and r.completion_tokens is not None,
            lambda r: float(r.completion_tokens or 0), "mean"),
    _Metric("line_pass_rate", lambda r: r.line_pass is not None, lambda r: float(bool(r.line_pass)), "rate"),
    _Metric("word_pass_rate", lambda r: r.word_pass is not None, lambda r: float(bool(r.word_pass)), "rate"),
)
STATISTICS: dict[str, Statistic] = {m.name: m.statistic for m in _METRICS}


def _judge_scored(kind: str | None) -> bool:
    from babeltune.evaluate.modifiers import JUDGE_SCORED_KINDS

    return kind in JUDGE_SCORED_KINDS


def estimate(values: Sequence[float], statistic: Statistic, clusters: Sequence[str] | None = None, *,
             n_boot: int = stats.N_BOOT, confidence: float = stats.CONFIDENCE, seed: int = 0) -> stats.Estimate:
    """A rate with its Wilson interval, or a mean with its (cluster) bootstrap interval (a share falls back
    to the Wilson interval of its value where the bootstrap is degenerate)."""
    if statistic == "rate":
        return stats.rate(values, confidence)
    return stats.bootstrap_mean(values, clusters, n_boot=n_boot, confidence=confidence, seed=seed,
                                bounds=(0.0, 1.0) if statistic == "share" else None)


def item_values(responses: Sequence[ScoredResponse]) -> dict[tuple[str, str], dict[str, float]]:
    """Per-response values of every metric that is a mean over responses: (metric, kind) -> id -> value.

    The input of paired differences between conditions (same ids = same prompts)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for m in _METRICS:
        values = {r.id: m.value(r) for r in responses if m.select(r)}
        if values:
            out[(m.name, "")] = values
    for r in responses:
        if r.failed or r.modifier_invalid or r.modifier_kind is None or r.modifier_passed is None:
            continue
        for kind in (r.modifier_kind, "all"):
            out.setdefault(("modifier_pass_rate", kind), {})[r.id] = float(r.modifier_passed)
    return out


def compute_metrics(responses: Sequence[ScoredResponse], *, n_boot: int = stats.N_BOOT,
                    confidence: float = stats.CONFIDENCE, seed: int = 0) -> list[ResultRow]:
    """The tidy metrics table: each language (sorted by code), then overall. Neither the order of the
    languages nor the figures depend on the order the responses were generated in."""
    scopes: dict[str, list[ScoredResponse]] = {}
    for r in sorted(responses, key=lambda r: (r.lang, r.id)):
        scopes.setdefault(r.lang, []).append(r)
    scopes[OVERALL] = list(responses)
    rows: list[ResultRow] = []

    def add(scope: str, metric: str, kind: str, items: list[ScoredResponse], values: list[float],
            statistic: Statistic, unit: str = "") -> None:
        if not values:
            return
        est = estimate(values, statistic, [r.pid for r in items], n_boot=n_boot, confidence=confidence,
                       seed=stats.derive_seed(seed, scope, metric, kind))
        rows.append(ResultRow("", scope, metric, est.value, est.low, est.high, est.n, kind=kind, unit=unit))

    def count(scope: str, metric: str, kind: str, n: int) -> None:
        if n:
            rows.append(ResultRow("", scope, metric, float(n), n=n, kind=kind))

    for scope, items in scopes.items():
        rows.append(ResultRow("", scope, "responses", float(len(items)), n=len(items)))
        for m in _METRICS:
            if m.per_language_only and scope == OVERALL:
                continue
            unit = items[0].length_unit if m.name == "response_length" else ""
            chosen = [r for r in items if m.select(r)]
            add(scope, m.name, "", chosen, [m.value(r) for r in chosen], m.statistic, unit)
        lcpr = _lcpr(items, n_boot=n_boot, confidence=confidence, seed=stats.derive_seed(seed, scope, "lcpr"))
        if lcpr.n:
            rows.append(ResultRow("", scope, "lcpr", lcpr.value, lcpr.low, lcpr.high, lcpr.n))
        count(scope, "confusion_skipped", "", sum(1 for r in items if not r.failed and r.line_pass is None
                                                   and r.confusion_reason.startswith("skipped")))
        count(scope, "modifier_invalid", "", sum(1 for r in items if r.modifier_invalid))
        _modifier_metrics(items, scope, add, count)
    return rows


def _lcpr(items: Sequence[ScoredResponse], *, n_boot: int, confidence: float, seed: int) -> stats.Estimate:
    """LCPR: per language, the harmonic mean of LPR and WPR (LPR where no response has a WPR verdict);
    over several languages, the mean of the languages' LCPRs. Bootstrap over prompts (clusters: pid)."""
    scored = [r for r in items if r.line_pass is not None]
    if not scored:
        return stats.EMPTY
    langs = sorted({r.lang for r in scored})
    columns = {
        "lp": [float(bool(r.line_pass)) for r in scored],
        "wp": [math.nan if r.word_pass is None else float(r.word_pass) for r in scored],
        "lang": [float(langs.index(r.lang)) for r in scored],
    }

    def statistic(d: Mapping[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        per_language = []
        for i in range(len(langs)):
            in_lang = w * (d["lang"] == i)
            lpr = stats.weighted_mean(d["lp"], in_lang)
            has_wp = ~np.isnan(d["wp"])
            if not has_wp[d["lang"] == i].any():
                per_language.append(lpr)
                continue
            wpr = stats.weighted_mean(np.nan_to_num(d["wp"]), in_lang * has_wp)
            both = stats.harmonic_mean(lpr, wpr)
            per_language.append(np.where(np.isnan(wpr), lpr, both))  # resample without WPR verdicts: LPR
        return np.nanmean(np.stack(per_language), axis=0) if len(langs) > 1 else per_language[0]

    return stats.bootstrap(columns, statistic, [r.pid for r in scored], n_boot=n_boot, confidence=confidence,
                           seed=seed, bounds=(0.0, 1.0))


def _modifier_metrics(items: list[ScoredResponse], scope: str, add: Callable[..., None],
                      count: Callable[[str, str, str, int], None]) -> None:
    with_modifier = [r for r in items if r.modifier_kind is not None and not r.failed and not r.modifier_invalid]
    decided_all: list[ScoredResponse] = []
    for kind in sorted({r.modifier_kind for r in with_modifier if r.modifier_kind}):
        of_kind = [r for r in with_modifier if r.modifier_kind == kind]
        if _judge_scored(kind):
            count(scope, "modifier_judge_scored", kind, len(of_kind))
            continue
        decided = [r for r in of_kind if r.modifier_passed is not None]
        add(scope, "modifier_pass_rate", kind, decided, [float(bool(r.modifier_passed)) for r in decided], "rate")
        add(scope, "modifier_undecided_rate", kind, of_kind, [float(r.modifier_passed is None) for r in of_kind],
            "rate")
        decided_all.extend(decided)
    add(scope, "modifier_pass_rate", "all", decided_all, [float(bool(r.modifier_passed)) for r in decided_all],
        "rate")


def metric_value(rows: Sequence[ResultRow], metric: str, scope: str = OVERALL, kind: str = "") -> ResultRow | None:
    """The row of `metric` for `scope` (and modifier `kind`), or None if it was not computed."""
    for row in rows:
        if row.metric == metric and row.lang == scope and row.kind == kind:
            return row
    return None
