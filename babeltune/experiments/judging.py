"""The judge stage's results as rows of the experiment's table: SxS scores and judge agreement.

Pairs whose generation failed (see `babeltune.judge.pairs`) are added to the `invalid` count of their
language, next to the verdicts that could not be parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from babeltune.experiments.results import ResultRow
from babeltune.judge import SxSJudgement, judge_agreement, sxs_scores
from babeltune.judge.pairs import PairPlan


def sxs_result_rows(
    condition: str, judge_name: str, plan: PairPlan, judgements: Sequence[SxSJudgement],
    seen_languages: Sequence[str] | None, seed: int,
) -> list[ResultRow]:
    """Per-language, pooled ("all") and, when the condition has unseen languages, "seen"/"unseen" rows."""
    scores = sxs_scores(judgements, seed=seed)
    rows = []
    for lang, s in scores.items():
        extra = plan.failed.get(lang, 0) if lang != "all" else sum(plan.failed.values())
        ref = plan.references.get(lang) if lang != "all" else _one_or_many(plan.references.values())
        rows.append(ResultRow(condition, lang, "sxs", s.score, s.low, s.high, s.n, s.invalid + extra, judge_name, ref))
    if seen_languages is not None:
        for group, keep in (("seen", True), ("unseen", False)):
            subset = [j for j in judgements if (j.lang in seen_languages) == keep]
            if subset and len(subset) < len(judgements):
                s = sxs_scores(subset, seed=seed, overall=True)["all"]
                rows.append(ResultRow(condition, group, "sxs", s.score, s.low, s.high, s.n, s.invalid, judge_name,
                                      _one_or_many(plan.references.values())))
    return rows


def agreement_rows(condition: str, a_name: str, a: Sequence[SxSJudgement], b_name: str,
                   b: Sequence[SxSJudgement]) -> list[ResultRow]:
    agree = judge_agreement(a, b)
    label = f"{a_name} vs {b_name}"
    return [ResultRow(condition, "all", "judge_agreement", agree.agreement, n=agree.n, invalid=agree.excluded,
                      judge=label),
            ResultRow(condition, "all", "judge_kappa", agree.kappa, n=agree.n, invalid=agree.excluded, judge=label)]


def _one_or_many(names: Any) -> str:
    unique = sorted(set(names))
    return unique[0] if len(unique) == 1 else "per language"
