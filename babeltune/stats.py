"""The one statistics module: every interval babeltune reports (evaluation, judging, Lens multiple
choice, experiment results, the report) comes from here. numpy only, so every stage can import it.

- **Rates** (shares of yes/no items: correct language, modifier pass, line pass, accuracy): Wilson
  score intervals (`wilson`, `rate`). Unlike a percentile bootstrap they never collapse to a
  zero-width interval on a handful of items: 4 of 4 correct gives [51.0%, 100%], not [100%, 100%].
- **Means** (side-by-side scores, lengths, rubric scores, code-switching shares): percentile bootstrap
  over prompts (`bootstrap_mean`). With `clusters` (the prompt id `pid`: a parallel prompt in 12
  languages is one cluster), whole clusters are resampled, so an overall figure pooled over languages
  is not credited with 12 independent items per prompt. One item or one cluster gives no interval.
  Scores confined to a range (SxS 0-100, rubric 1-3, code-switching shares 0-1) pass `bounds`: where
  the bootstrap can say nothing (all scores equal, or one cluster), their interval is the Wilson
  interval of the mean as a share of the range, so a few identical scores never get a zero-width one.
- **Differences between conditions** (`paired_difference`): the mean of condition A minus condition B
  over the items both have, its interval from the same cluster bootstrap applied to the per-item
  differences (paired: prompt difficulty cancels); for yes/no outcomes widened to cover Newcombe's
  paired score interval too (`newcombe_paired`), so it never collapses to [0, 0] on a few items.

Resampling is seeded and reproducible: `derive_seed(base, *names)` gives each statistic its own
generator, so adding a metric never moves another's interval. 1,000 resamples by default.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, TypeVar

import numpy as np

N_BOOT = 1000
"""Bootstrap resamples per interval, unless told otherwise."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A value with its confidence interval and the number of items behind it.

    NaN bounds mean "no interval" (no items, one item for a mean, or resampling switched off); n = 0 means
    no items."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def excludes(self, point: float = 0.0) -> bool:
        """Whether the interval lies wholly on one side of `point` (a difference whose CI excludes 0)."""
        return not (math.isnan(self.low) or math.isnan(self.high)) and (self.low > point or self.high < point)


NAN = float("nan")
EMPTY = Estimate(NAN, NAN, NAN, 0)


def derive_seed(base: int, *names: Any) -> int:
    """A seed of its own for one statistic: a hash of the run's seed and the statistic's names."""
    digest = hashlib.sha256(":".join([str(base), *map(str, names)]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n; (nan, nan) when n = 0."""
    if n <= 0:
        return NAN, NAN
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..n, got {successes} of {n}")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(outcomes: Sequence[bool] | Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The share of true (1.0) outcomes with its Wilson interval."""
    data = np.asarray(outcomes, dtype=np.float64)
    if data.size == 0:
        return EMPTY
    if not np.all((data == 0) | (data == 1)):
        raise ValueError("rate() takes yes/no outcomes (0 or 1); use bootstrap_mean for other values")
    hits = float(data.sum())
    low, high = wilson(hits, int(data.size), confidence)
    return Estimate(hits / data.size, low, high, int(data.size))


def _cluster_index(n: int, clusters: Sequence[Hashable] | None) -> tuple[np.ndarray, int]:
    """Each item's cluster number (0..k-1) and k; without clusters every item is its own cluster.
    Clusters are numbered in the sorted order of their labels, so the resamples, and the interval, do
    not depend on the order the items came in (a backend that finishes prompts in another order gives
    the same figures)."""
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} values")
    numbers = {label: i for i, label in enumerate(sorted(set(clusters), key=repr))}
    index = np.fromiter((numbers[c] for c in clusters), dtype=np.int64, count=n)
    return index, len(numbers)


def resample_weights(n: int, clusters: Sequence[Hashable] | None = None, *, n_boot: int = N_BOOT, seed: int = 0
                     ) -> np.ndarray:
    """(n_boot, n) weights: how often each item is drawn in each resample. Whole clusters are drawn with
    replacement (as many as there are clusters), so an item's weight is its cluster's draw count."""
    index, k = _cluster_index(n, clusters)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)  # (n_boot, k)
    return counts[:, index].astype(np.float64)  # (n_boot, n)


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates, e.g. empty resamples, ignored)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return NAN, NAN
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    columns: Mapping[str, Sequence[float] | np.ndarray], statistic: Callable[[Mapping[str, np.ndarray], np.ndarray],
                                                                              np.ndarray | float],
    clusters: Sequence[Hashable] | None = None, *, n_boot: int = N_BOOT, confidence: float = CONFIDENCE,
    seed: int = 0, bounds: tuple[float, float] | None = None,
) -> Estimate:
    """Any statistic of per-item columns, with a (cluster) bootstrap percentile interval.

    `statistic(columns, weights)` gets the columns as arrays and weights of shape (n,) for the point
    estimate (all ones) or (n_boot, n) for the replicates, and returns a value per row of weights.
    `bounds`: the statistic's range, for the Wilson fallback where the bootstrap is degenerate (see
    `bootstrap_mean`)."""
    data = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    n = len(next(iter(data.values()))) if data else 0
    if n == 0:
        return EMPTY
    value = float(np.asarray(statistic(data, np.ones(n))))
    if n_boot <= 0:
        return Estimate(value, NAN, NAN, n)
    low, high = NAN, NAN  # one item / cluster: the bootstrap has no interval to give
    if _cluster_index(n, clusters)[1] >= 2:
        replicates = np.asarray(statistic(data, resample_weights(n, clusters, n_boot=n_boot, seed=seed)))
        low, high = percentile_interval(replicates, confidence)
    degenerate = math.isnan(low) or high - low <= 1e-12 * max(1.0, abs(value))  # rounding noise is no spread
    if bounds is not None and degenerate and not math.isnan(value):
        return _wilson_of_mean(value, n, bounds, confidence)
    return Estimate(value, low, high, n)


def _wilson_of_mean(value: float, n: int, bounds: tuple[float, float], confidence: float) -> Estimate:
    """The Wilson interval of `value` taken as a share of the range `bounds`, mapped back onto it."""
    lowest, highest = bounds
    span = highest - lowest
    share = min(1.0, max(0.0, (value - lowest) / span))
    w_low, w_high = wilson(share * n, n, confidence)
    return Estimate(value, lowest + w_low * span, lowest + w_high * span, n)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of `values` under each row of `weights` (NaN where a row's weights sum to 0)."""
    total = weights.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * values).sum(axis=-1) / np.where(total > 0, total, 1), NAN)


def bootstrap_mean(values: Sequence[float] | np.ndarray, clusters: Sequence[Hashable] | None = None, *,
                   n_boot: int = N_BOOT, confidence: float = CONFIDENCE, seed: int = 0,
                   bounds: tuple[float, float] | None = None) -> Estimate:
    """Mean over items with a bootstrap interval; with `clusters`, whole clusters are resampled.

    `bounds` (lowest, highest possible value: a side-by-side score's 0 and 100): where the bootstrap can
    say nothing (every score equal, so every resample has the same mean; or a single prompt), the
    interval is the Wilson interval of the mean taken as a share of that range instead. A variable
    confined to a range has at most the variance of a coin flip with the same mean, so this is
    conservative; it keeps a handful of identical scores (two ties: 50, 50) from a zero-width interval."""
    return bootstrap({"x": values}, lambda d, w: weighted_mean(d["x"], w), clusters, n_boot=n_boot,
                     confidence=confidence, seed=seed, bounds=bounds)


K = TypeVar("K", bound=Hashable)


def paired_difference(
    a: Mapping[K, float], b: Mapping[K, float], clusters: Mapping[K, Hashable] | None = None, *,
    n_boot: int = N_BOOT, confidence: float = CONFIDENCE, seed: int = 0, bounds: tuple[float, float] | None = None,
) -> Estimate:
    """mean(a - b) over the items both have (keys: item ids), with a paired (cluster) bootstrap interval.

    `clusters` maps an item id to its cluster (its prompt id); items missing from it are their own
    cluster. n = number of shared items; no shared items gives `EMPTY`. `bounds` are the values' range
    (see `bootstrap_mean`; a difference ranges over twice it).

    Yes/no outcomes (every value 0 or 1) also get Newcombe's paired score interval (method 10 of
    Newcombe 1998, built from the two Wilson intervals), and the reported interval spans both: the
    bootstrap alone collapses to [0, 0] when every pair agrees (4 of 4 right in both conditions), and
    Newcombe's alone ignores the clustering of prompts across languages."""
    # canonical order: the sums round the same whatever order the items came in
    shared = sorted((key for key in a if key in b and not (math.isnan(a[key]) or math.isnan(b[key]))), key=repr)
    diffs = [a[key] - b[key] for key in shared]
    labels: list[Hashable] = [clusters.get(key, key) if clusters is not None else key for key in shared]
    spread = (bounds[0] - bounds[1], bounds[1] - bounds[0]) if bounds is not None else None
    boot = bootstrap_mean(diffs, labels, n_boot=n_boot, confidence=confidence, seed=seed, bounds=spread)
    pairs = [(a[key], b[key]) for key in shared]
    if not pairs or any(x not in (0.0, 1.0) or y not in (0.0, 1.0) for x, y in pairs):
        return boot
    table = (sum(x == 1 and y == 1 for x, y in pairs), sum(x == 1 and y == 0 for x, y in pairs),
             sum(x == 0 and y == 1 for x, y in pairs), sum(x == 0 and y == 0 for x, y in pairs))
    _, low, high = newcombe_paired(*table, confidence=confidence)
    if not math.isnan(boot.low):
        low, high = min(low, boot.low), max(high, boot.high)
    return Estimate(boot.value, low, high, boot.n)


def newcombe_paired(both: int, only_first: int, only_second: int, neither: int,
                    confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Difference p1 - p2 of two paired proportions with Newcombe's score interval (1998, method 10).

    Counts of pairs: both yes, only the first yes, only the second yes, neither. p1 = share of yes in the
    first, p2 in the second; the limits combine each proportion's Wilson interval with the correlation
    phi of the 2x2 table (0 when a margin is empty)."""
    n = both + only_first + only_second + neither
    if n == 0:
        return NAN, NAN, NAN
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson(both + only_first, n, confidence)
    l2, u2 = wilson(both + only_second, n, confidence)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins > 0 else 0.0
    delta = p1 - p2
    low = delta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = delta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return delta, max(-1.0, low), min(1.0, high)


def harmonic_mean(x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
    """2xy / (x + y), 0 where both are 0 (LCPR from LPR and WPR)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    total = x + y
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * x * y / np.where(total > 0, total, 1), np.where(np.isnan(total), NAN, 0.0))
