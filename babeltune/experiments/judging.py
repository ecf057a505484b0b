"""The judge stage's results as rows of the experiment's table: SxS scores, judge agreement, rubric.

Pairs whose generation failed (see `babeltune.judge.pairs`) are added to the `invalid` count of their
language, next to the verdicts that could not be parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from babeltune.data.jsonl import write_jsonl_atomic
from babeltune.experiments.config import ExperimentConfig
from babeltune.experiments.layout import ConditionPaths, read_generation_rows
from babeltune.experiments.results import ResultRow
from babeltune.judge import (
    JudgementCache,
    RubricItem,
    RubricJudge,
    SxSJudgement,
    judge_agreement,
    rubric_scores,
    run_rubric,
    sxs_scores,
)
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


def judged_modifier_rows(paths: ConditionPaths, judge: RubricJudge, config: ExperimentConfig) -> list[ResultRow]:
    """Responses to scientific_style / simple_style / complex_inst prompts graded by the rubric judge with
    the `modifier` criterion (judgements in judge/rubric-modifiers.jsonl): rows `modifier_judge:KIND`,
    the mean 1-3 score per language and over all, with bootstrap CIs over prompts."""
    from babeltune import stats
    from babeltune.evaluate.modifiers import JUDGE_SCORED_KINDS
    from babeltune.judge.base import MODIFIER_CRITERION

    gen_rows = read_generation_rows(paths.generations("modifiers"))
    items = [RubricItem(r.id, r.pid, r.lang, r.prompt, r.response or "", r.modifier["kind"])
             for r in gen_rows if not r.failed and isinstance(r.modifier, dict)
             and r.modifier.get("kind") in JUDGE_SCORED_KINDS]
    if not items:
        return []
    judgements = run_rubric(items, judge, JudgementCache(paths.judge_cache("rubric-modifiers")),
                            retries=config.judge.retries, batch_size=config.judge.batch_size)
    write_jsonl_atomic(paths.judgements("rubric-modifiers"), (j.to_dict() for j in judgements))
    rows = []
    for kind in sorted({j.modifier for j in judgements if j.modifier}):
        of_kind = [j for j in judgements if j.modifier == kind]
        for lang in [*sorted({j.lang for j in of_kind}), "all"]:
            group = [j for j in of_kind if lang in ("all", j.lang)]
            valid = [j for j in group if j.scores is not None and MODIFIER_CRITERION in j.scores]
            values = [j.scores[MODIFIER_CRITERION] for j in valid if j.scores]
            est = stats.bootstrap_mean(values, [j.pid for j in valid],
                                       seed=stats.derive_seed(config.seed, "modifier_judge", kind, lang),
                                       bounds=(1.0, 3.0))
            rows.append(ResultRow(paths.name, lang, f"modifier_judge:{kind}", est.value, est.low, est.high, est.n,
                                  len(group) - len(valid), judge.name))
    return rows


def _one_or_many(names: Any) -> str:
    unique = sorted(set(names))
    return unique[0] if len(unique) == 1 else "per language"


def rubric_rows(conditions: Sequence[ConditionPaths], judge: RubricJudge, config: ExperimentConfig) -> list[ResultRow]:
    """Study B's rubric on every eval response of every condition (cached, resumable), as result rows; and
    the judge's `modifier` score of every response to a judge-scored modifier prompt."""
    rows: list[ResultRow] = []
    for paths in conditions:
        rows += judged_modifier_rows(paths, judge, config)
        gen_rows = read_generation_rows(paths.generations("eval"))
        items = [RubricItem(r.id, r.pid, r.lang, r.prompt, r.response or "") for r in gen_rows if not r.failed]
        failed = len(gen_rows) - len(items)
        judgements = run_rubric(items, judge, JudgementCache(paths.judge_cache("rubric")),
                                retries=config.judge.retries, batch_size=config.judge.batch_size)
        write_jsonl_atomic(paths.judgements("rubric"), (j.to_dict() for j in judgements))
        for lang, score in rubric_scores(judgements, seed=config.seed).items():
            for criterion, ci in score.criteria.items():
                rows.append(ResultRow(paths.name, lang, f"rubric:{criterion}", ci.value, ci.low, ci.high, ci.n,
                                      score.invalid + (failed if lang == "all" else 0), judge.name))
    return rows
