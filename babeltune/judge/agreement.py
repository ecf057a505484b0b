"""How often two judges agree on the same side-by-side comparisons (e.g. the offline judge vs an LLM).

Both judges' outcomes (win / tie / loss for the candidate) are matched by item id; items either judge
marked invalid are left out and counted. Reported: the share of identical outcomes (study A's
judge-human agreement is the same statistic, 75-80%), Cohen's kappa (agreement beyond chance), per
language, and the 3 x 3 confusion table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from babeltune.judge.protocol import SxSJudgement

OUTCOMES = ("win", "tie", "loss")


@dataclass(frozen=True)
class Agreement:
    n: int
    """Items both judges judged validly."""
    agreement: float
    """Share of those items with the same outcome (NaN when n = 0)."""
    kappa: float
    """Cohen's kappa over win / tie / loss (NaN when undefined)."""
    per_language: dict[str, dict[str, float]]
    """lang -> {"n": ..., "agreement": ...}."""
    confusion: dict[str, dict[str, int]]
    """outcome of judge a -> outcome of judge b -> count."""
    excluded: int
    """Items missing from one side or invalid for either judge."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float:
    n = len(pairs)
    if n == 0:
        return float("nan")
    observed = sum(a == b for a, b in pairs) / n
    count_a = Counter(a for a, _ in pairs)
    count_b = Counter(b for _, b in pairs)
    expected = sum(count_a[k] * count_b[k] for k in OUTCOMES) / (n * n)
    if expected >= 1.0:
        return float("nan") if observed < 1.0 else 1.0
    return (observed - expected) / (1.0 - expected)


def judge_agreement(a: Sequence[SxSJudgement], b: Sequence[SxSJudgement]) -> Agreement:
    """Agreement of judge `a`'s and judge `b`'s outcomes on the items both judged."""
    b_by_id = {j.id: j for j in b}
    pairs: list[tuple[str, str, str]] = []  # (lang, outcome a, outcome b)
    ids = {j.id for j in a} | set(b_by_id)
    for ja in a:
        jb = b_by_id.get(ja.id)
        if jb is None or ja.outcome == "invalid" or jb.outcome == "invalid":
            continue
        pairs.append((ja.lang, ja.outcome, jb.outcome))
    confusion = {x: {y: 0 for y in OUTCOMES} for x in OUTCOMES}
    per_lang: dict[str, list[bool]] = {}
    for lang, oa, ob in pairs:
        confusion[oa][ob] += 1
        per_lang.setdefault(lang, []).append(oa == ob)
    n = len(pairs)
    return Agreement(
        n=n,
        agreement=sum(oa == ob for _, oa, ob in pairs) / n if n else float("nan"),
        kappa=cohen_kappa([(oa, ob) for _, oa, ob in pairs]),
        per_language={lang: {"n": len(v), "agreement": sum(v) / len(v)} for lang, v in sorted(per_lang.items())},
        confusion=confusion,
        excluded=len(ids) - n,
    )
