"""Means with bootstrap confidence intervals, the one statistic every judge score is reported with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    """A mean and its percentile-bootstrap confidence interval over `n` items."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_mean(
    values: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
) -> MeanCI:
    """Mean of `values` with a percentile bootstrap CI (resampling items with replacement).

    Deterministic for a given seed. No values: NaN mean and bounds, n = 0 (shown as "n/a", never 0).
    """
    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(data.mean())
    if n == 1 or n_boot <= 0:
        return MeanCI(mean, mean, mean, n)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (B, n) resampled item indices
    means = data[idx].mean(axis=1)  # (B,)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return MeanCI(mean, float(low), float(high), n)
