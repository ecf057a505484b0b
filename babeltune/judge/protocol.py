"""Study A's side-by-side (SxS) protocol, independent of who judges.

For each prompt, a candidate model's response is compared with a baseline model's response (study A:
the model tuned monolingually on the prompt's language). The judge sees the pair twice:

1. order 1: candidate in position 1, baseline in position 2;
2. order 2: baseline in position 1, candidate in position 2.

The same response picked both times is a win (or a loss) for the candidate; different picks (the
judge followed the position, not the content) are a tie. The score of a language is
mean(win 1, tie 0.5, loss 0) x 100 over its prompts, with a bootstrap 95% CI over prompts
(`babeltune.stats`; the score pooled over languages resamples whole prompts, `pid`): 50 means "as good
as the baseline". A verdict the judge's output does not let us read is asked once more; if it fails again
the pair is recorded as `invalid`, excluded from the score and counted: never a tie, never a win.
Two identical responses are a tie without asking the judge (no judge can prefer one of them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from babeltune import stats
from babeltune.judge.base import PairQuery, PairVerdict, PairwiseJudge, Pick
from babeltune.judge.cache import JudgementCache, judgement_key

log = logging.getLogger(__name__)

Outcome = Literal["win", "tie", "loss", "invalid"]
OUTCOME_VALUE: dict[str, float] = {"win": 1.0, "tie": 0.5, "loss": 0.0}
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SxSItem:
    """One prompt with the two responses to compare."""

    id: str
    pid: str
    lang: str
    prompt: str
    candidate: str
    baseline: str
    reference: str | None = None
    """The gold answer, for judges that compare against one."""


@dataclass(frozen=True)
class SxSJudgement:
    """The outcome of one item for the candidate, with both orders' verdicts kept for audit."""

    id: str
    pid: str
    lang: str
    outcome: Outcome
    picks: tuple[Pick | None, Pick | None]
    """Position picked in order 1 (candidate first) and order 2 (baseline first)."""
    attempts: tuple[int, int]
    """Judge calls spent per order (2 = retried after an unparseable reply; 0 = identical responses)."""
    raw: tuple[str, str]
    identical: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SxSJudgement:
        p1, p2 = data["picks"]
        a1, a2 = data["attempts"]
        r1, r2 = data["raw"]
        return cls(data["id"], data["pid"], data["lang"], data["outcome"], (p1, p2), (int(a1), int(a2)),
                   (str(r1), str(r2)), bool(data.get("identical", False)))


@dataclass(frozen=True)
class SxSScore:
    """A language's SxS score (0-100) with its bootstrap CI and the counts behind it."""

    lang: str
    score: float
    low: float
    high: float
    n: int
    """Valid (scored) items."""
    wins: int
    ties: int
    losses: int
    invalid: int
    """Items excluded because a verdict could not be parsed even after the retry."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def combine_orders(pick_candidate_first: Pick | None, pick_baseline_first: Pick | None) -> Outcome:
    """The candidate's outcome from the two orders' picks (see the module docstring)."""
    if pick_candidate_first is None or pick_baseline_first is None:
        return "invalid"
    chose_candidate = (pick_candidate_first == 1, pick_baseline_first == 2)
    if all(chose_candidate):
        return "win"
    if not any(chose_candidate):
        return "loss"
    return "tie"


def pair_key(judge: PairwiseJudge, query: PairQuery) -> str:
    return judgement_key("pair", judge.fingerprint(), query.prompt, query.first, query.second, query.lang,
                         query.reference)


def judge_queries(
    judge: PairwiseJudge, queries: Sequence[PairQuery], cache: JudgementCache | None = None, retries: int = 1,
) -> list[tuple[PairVerdict, int]]:
    """Verdicts for `queries` (cached ones reused), retrying unparseable replies `retries` times.

    Returns (verdict, judge calls spent) per query; a cached verdict reports the calls it once took.
    """
    cache = cache if cache is not None else JudgementCache()
    keys = [pair_key(judge, q) for q in queries]
    results: list[tuple[PairVerdict, int] | None] = []
    for key in keys:
        hit = cache.get(key)
        results.append(None if hit is None else (PairVerdict(hit["pick"], hit["raw"]), int(hit["attempts"])))
    todo = [i for i, r in enumerate(results) if r is None]
    attempt = 0
    while todo and attempt <= retries:
        verdicts = judge.judge([queries[i] for i in todo], attempt=attempt)
        if len(verdicts) != len(todo):
            raise RuntimeError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(todo)} questions")
        still: list[int] = []
        for i, verdict in zip(todo, verdicts, strict=True):
            if verdict.pick is None and attempt < retries:
                still.append(i)  # asked again below; not cached yet
                continue
            results[i] = (verdict, attempt + 1)
            cache.put(keys[i], {"pick": verdict.pick, "raw": verdict.raw, "attempts": attempt + 1})
        todo = still
        attempt += 1
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def side_by_side(
    items: Sequence[SxSItem], judge: PairwiseJudge, cache: JudgementCache | None = None, *, retries: int = 1,
    batch_size: int = 32, progress: ProgressFn | None = None,
) -> list[SxSJudgement]:
    """Judge every item in both orders and return the candidate's outcome per item.

    Work goes in batches of `batch_size` items, each cached as soon as it is judged, so an interrupted
    run resumes where it stopped.
    """
    out: list[SxSJudgement] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        identical = [it.candidate.strip() == it.baseline.strip() for it in batch]
        queries: list[PairQuery] = []
        for it in (it for it, same in zip(batch, identical, strict=True) if not same):
            queries.append(PairQuery(it.prompt, it.candidate, it.baseline, it.lang, it.reference))
            queries.append(PairQuery(it.prompt, it.baseline, it.candidate, it.lang, it.reference))
        verdicts = iter(judge_queries(judge, queries, cache, retries=retries))
        for it, same in zip(batch, identical, strict=True):
            if same:
                out.append(SxSJudgement(it.id, it.pid, it.lang, "tie", (None, None), (0, 0), ("", ""), True))
                continue
            (v1, a1), (v2, a2) = next(verdicts), next(verdicts)
            out.append(SxSJudgement(it.id, it.pid, it.lang, combine_orders(v1.pick, v2.pick), (v1.pick, v2.pick),
                                    (a1, a2), (v1.raw, v2.raw)))
        if progress is not None:
            progress(len(out), len(items))
    n_invalid = sum(j.outcome == "invalid" for j in out)
    if n_invalid:
        log.warning("%s: %d of %d pairs had a verdict that could not be parsed after a retry; they are excluded "
                    "from the scores and counted as invalid", judge.name, n_invalid, len(out))
    return out


def sxs_scores(
    judgements: Sequence[SxSJudgement], *, n_boot: int = 1000, seed: int = 0, overall: bool = True,
) -> dict[str, SxSScore]:
    """Score per language (and `"all"` pooled over languages when `overall`), invalid items excluded."""
    groups: dict[str, list[SxSJudgement]] = {}
    for j in judgements:
        groups.setdefault(j.lang, []).append(j)
    if overall and judgements:
        groups["all"] = list(judgements)
    scores: dict[str, SxSScore] = {}
    for lang, group in groups.items():
        valid = [j for j in group if j.outcome != "invalid"]
        ci = stats.bootstrap_mean([OUTCOME_VALUE[j.outcome] * 100 for j in valid], [j.pid for j in valid],
                                  n_boot=n_boot, seed=stats.derive_seed(seed, "sxs", lang), bounds=(0.0, 100.0))
        counts = {k: sum(j.outcome == k for j in group) for k in ("win", "tie", "loss", "invalid")}
        scores[lang] = SxSScore(lang, ci.value, ci.low, ci.high, ci.n, counts["win"], counts["tie"], counts["loss"],
                                counts["invalid"])
    return scores
