"""Aggregate scored responses into metrics per language and overall, with bootstrap confidence intervals.

The result is a tidy table: one row per (scope, metric, kind) with the number of responses it rests
on, its value and a percentile-bootstrap CI (responses resampled with replacement; each metric gets
its own generator seeded from the run seed and the metric's name, so adding a metric never changes
another's interval). Rates are shares in 0..1.

Which responses each metric counts (failed requests are never scored as pass or fail):

| metric | over | value |
|---|---|---|
| responses | all rows | count |
| failed_rate | all rows | share whose request failed |
| correct_language_rate | answered, language determined | share in the expected language |
| undetermined_rate | answered | share too short / non-linguistic to identify |
| code_switching_rate | answered, >= 1 identifiable line | mean share of lines/sentences in another language |
| truncated_rate | answered | share that hit max_new_tokens |
| response_length | answered | mean words (characters for languages without spaces); per language only |
| response_tokens | answered, token count known | mean generated tokens |
| modifier_pass_rate (kind K, or 'all') | answered, check decided | share passing |
| modifier_undecided_rate (kind K) | answered with modifier K | share not applicable / undecidable |
| modifier_invalid | rows with an invalid spec | count (never scored) |
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricRow:
    """One row of the tidy metrics table."""

    scope: str
    """A language code, or 'overall'."""
    metric: str
    kind: str
    """Modifier kind for modifier metrics ('all' = every kind together), else ''."""
    n: int
    """Responses the value rests on."""
    value: float
    ci_low: float
    ci_high: float
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean. One value gives (v, v); none gives (nan, nan)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1 or n_boot <= 0:
        return float(data.mean()), float(data.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(n_boot, data.size))  # (n_boot, n)
    means = data[idx].mean(axis=1)  # (n_boot,)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _seed(base: int, *parts: str) -> int:
    digest = hashlib.sha256(":".join([str(base), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class _Metric:
    name: str
    select: Callable[[ScoredResponse], bool]
    value: Callable[[ScoredResponse], float]
    per_language_only: bool = False


def _answered(r: ScoredResponse) -> bool:
    return not r.failed


_METRICS: tuple[_Metric, ...] = (
    _Metric("failed_rate", lambda r: True, lambda r: float(r.failed)),
    _Metric("correct_language_rate", lambda r: _answered(r) and r.lang_status in ("correct", "wrong"),
            lambda r: float(r.lang_status == "correct")),
    _Metric("undetermined_rate", _answered, lambda r: float(r.lang_status == "undetermined")),
    _Metric("code_switching_rate", lambda r: _answered(r) and r.code_switch_rate is not None,
            lambda r: float(r.code_switch_rate or 0.0)),
    _Metric("truncated_rate", _answered, lambda r: float(r.finish_reason == "length")),
    _Metric("response_length", lambda r: _answered(r) and r.length is not None, lambda r: float(r.length or 0),
            per_language_only=True),
    _Metric("response_tokens", lambda r: _answered(r) and r.completion_tokens is not None,
            lambda r: float(r.completion_tokens or 0)),
)


def compute_metrics(responses: Sequence[ScoredResponse], *, n_boot: int = 1000, confidence: float = 0.95,
                    seed: int = 0) -> list[MetricRow]:
    """The tidy metrics table: each language (in first-seen order), then overall."""
    scopes: dict[str, list[ScoredResponse]] = {}
    for r in responses:
        scopes.setdefault(r.lang, []).append(r)
    scopes[OVERALL] = list(responses)
    rows: list[MetricRow] = []

    def add(scope: str, metric: str, kind: str, values: list[float], unit: str = "") -> None:
        if not values:
            return
        low, high = bootstrap_ci(values, n_boot=n_boot, confidence=confidence, seed=_seed(seed, scope, metric, kind))
        rows.append(MetricRow(scope, metric, kind, len(values), float(np.mean(values)), low, high, unit))

    for scope, items in scopes.items():
        rows.append(MetricRow(scope, "responses", "", len(items), float(len(items)), math.nan, math.nan))
        for m in _METRICS:
            if m.per_language_only and scope == OVERALL:
                continue
            unit = items[0].length_unit if m.name == "response_length" else ""
            add(scope, m.name, "", [m.value(r) for r in items if m.select(r)], unit)
        invalid = sum(1 for r in items if r.modifier_invalid)
        if invalid:
            rows.append(MetricRow(scope, "modifier_invalid", "", invalid, float(invalid), math.nan, math.nan))
        _modifier_metrics(items, scope, add)
    return rows


def _modifier_metrics(items: list[ScoredResponse], scope: str, add: Callable[..., None]) -> None:
    with_modifier = [r for r in items if r.modifier_kind is not None and not r.failed]
    decided_all: list[float] = []
    for kind in sorted({r.modifier_kind for r in with_modifier if not r.modifier_invalid and r.modifier_kind}):
        of_kind = [r for r in with_modifier if r.modifier_kind == kind and not r.modifier_invalid]
        decided = [float(bool(r.modifier_passed)) for r in of_kind if r.modifier_passed is not None]
        add(scope, "modifier_pass_rate", kind, decided)
        add(scope, "modifier_undecided_rate", kind, [float(r.modifier_passed is None) for r in of_kind])
        decided_all.extend(decided)
    add(scope, "modifier_pass_rate", "all", decided_all)


def metric_value(rows: Sequence[MetricRow], metric: str, scope: str = OVERALL, kind: str = "") -> MetricRow | None:
    """The row of `metric` for `scope` (and modifier `kind`), or None if it was not computed."""
    for row in rows:
        if row.metric == metric and row.scope == scope and row.kind == kind:
            return row
    return None
