"""Means with bootstrap confidence intervals, the one statistic every judge score is reported with.

The interval is the evaluation stage's percentile bootstrap (`babeltune.evaluate.metrics.bootstrap_ci`),
so judge scores and evaluation rates are computed the same way.
"""

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
    from babeltune.evaluate.metrics import bootstrap_ci

    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    low, high = bootstrap_ci(data, n_boot=n_boot, confidence=level, seed=seed)
    return MeanCI(float(data.mean()), low, high, n)
