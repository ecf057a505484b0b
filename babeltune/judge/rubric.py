"""Study B's rubric judging: one response alone, six criteria scored 1-3, cached and resumable. A response
to a judge-scored modifier prompt (`RubricItem.modifier`) gets a seventh, `modifier`: does it follow the
instruction (the only verdict those kinds get: no rule passes them).

An unparseable reply is asked again once; if it fails again the response is recorded as invalid and
left out of the means (and counted), never scored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from babeltune import stats
from babeltune.judge.base import MODIFIER_CRITERION, RUBRIC_CRITERIA, RubricJudge, RubricQuery
from babeltune.judge.cache import JudgementCache, judgement_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RubricItem:
    id: str
    pid: str
    lang: str
    prompt: str
    response: str
    modifier: str | None = None
    """A judge-scored modifier kind (scientific_style, simple_style, complex_inst): the judge also scores
    whether the response follows it (criterion `modifier`)."""


@dataclass(frozen=True)
class RubricJudgement:
    id: str
    pid: str
    lang: str
    scores: dict[str, int] | None
    """None = invalid (unparseable twice)."""
    attempts: int
    raw: str
    modifier: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_rubric(
    items: Sequence[RubricItem], judge: RubricJudge, cache: JudgementCache | None = None, *, retries: int = 1,
    batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
) -> list[RubricJudgement]:
    """Grade every item (cached ones reused), retrying unparseable replies `retries` times."""
    cache = cache if cache is not None else JudgementCache()
    out: list[RubricJudgement] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        keys = [judgement_key("rubric", judge.fingerprint(), it.prompt, it.response, it.lang,
                              *([it.modifier] if it.modifier else [])) for it in batch]
        done: dict[int, RubricJudgement] = {}
        for i, (it, key) in enumerate(zip(batch, keys, strict=True)):
            hit = cache.get(key)
            if hit is not None:
                done[i] = RubricJudgement(it.id, it.pid, it.lang, hit["scores"], int(hit["attempts"]), hit["raw"],
                                          it.modifier)
        todo = [i for i in range(len(batch)) if i not in done]
        attempt = 0
        while todo and attempt <= retries:
            verdicts = judge.judge([RubricQuery(batch[i].prompt, batch[i].response, batch[i].lang, batch[i].modifier)
                                    for i in todo], attempt=attempt)
            still = []
            for i, verdict in zip(todo, verdicts, strict=True):
                if verdict.scores is None and attempt < retries:
                    still.append(i)
                    continue
                it = batch[i]
                done[i] = RubricJudgement(it.id, it.pid, it.lang, verdict.scores, attempt + 1, verdict.raw,
                                          it.modifier)
                cache.put(keys[i], {"scores": verdict.scores, "raw": verdict.raw, "attempts": attempt + 1})
            todo = still
            attempt += 1
        out.extend(done[i] for i in range(len(batch)))
        if progress is not None:
            progress(len(out), len(items))
    n_invalid = sum(j.scores is None for j in out)
    if n_invalid:
        log.warning("%s: %d of %d rubric replies could not be parsed after a retry; excluded and counted as "
                    "invalid", judge.name, n_invalid, len(out))
    return out


@dataclass(frozen=True)
class RubricScore:
    lang: str
    criteria: dict[str, stats.Estimate]
    invalid: int

    def to_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "invalid": self.invalid,
                "criteria": {k: v.to_dict() for k, v in self.criteria.items()}}


def rubric_scores(judgements: Sequence[RubricJudgement], *, n_boot: int = 1000, seed: int = 0,
                  overall: bool = True) -> dict[str, RubricScore]:
    """Mean 1-3 score per criterion and language (and "all"), with bootstrap CIs over prompts (pooled:
    whole prompts resampled); invalid ones excluded."""
    groups: dict[str, list[RubricJudgement]] = {}
    for j in judgements:
        groups.setdefault(j.lang, []).append(j)
    if overall and judgements:
        groups["all"] = list(judgements)
    result = {}
    for lang, group in groups.items():
        valid = [j for j in group if j.scores is not None]
        criteria = {}
        for c in (*RUBRIC_CRITERIA, MODIFIER_CRITERION):
            scored = [(j.scores[c], j.pid) for j in valid if j.scores is not None and c in j.scores]
            if c == MODIFIER_CRITERION and not scored:
                continue
            criteria[c] = stats.bootstrap_mean([v for v, _ in scored], [p for _, p in scored], n_boot=n_boot,
                                               seed=stats.derive_seed(seed, "rubric", lang, c), bounds=(1.0, 3.0))
        result[lang] = RubricScore(lang, criteria, len(group) - len(valid))
    return result
