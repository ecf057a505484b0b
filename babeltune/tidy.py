"""The one result row: every tidy table babeltune writes is made of `ResultRow`s.

`babeltune eval`'s `metrics.csv` / `metrics.json` and an experiment's `results.csv` / `results.json` hold
the same row type; each file keeps its own columns (`METRIC_COLUMNS`, `RESULT_COLUMNS`), as users' files
already have them.

Missing numbers are None, never NaN: an interval that does not exist (one item, a count) has `low` and
`high` None, and a value with nothing to measure is None. The constructor turns a NaN it is given
(`babeltune.stats` returns NaN for no data) into None; JSON writes null and CSV an empty cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

RESULT_COLUMNS: tuple[str, ...] = (
    "condition", "lang", "metric", "value", "low", "high", "n", "invalid", "judge", "reference", "baseline",
)
"""The columns of an experiment's results.csv / results.json rows, in order."""

METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scope", "lang"), ("metric", "metric"), ("kind", "kind"), ("n", "n"), ("value", "value"),
    ("ci_low", "low"), ("ci_high", "high"), ("unit", "unit"),
)
"""(column, field) of `babeltune eval`'s metrics.csv / metrics.json rows, in order."""


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass(frozen=True)
class ResultRow:
    condition: str
    """The experiment condition ('' for a single `babeltune eval`)."""
    lang: str
    """A language code, or the pooled scope ('all' in experiments, 'overall' in `babeltune eval`, or a
    group such as 'seen')."""
    metric: str
    value: float | None
    low: float | None = None
    """The confidence interval's bounds (None: no interval)."""
    high: float | None = None
    n: int = 0
    """Items the value rests on."""
    invalid: int = 0
    """Items left out as invalid (unparseable judge verdicts, failed generations)."""
    judge: str | None = None
    reference: str | None = None
    """The condition the SxS score is measured against."""
    baseline: str | None = None
    """Set on a paired-difference row: the value is this row's condition minus `baseline`."""
    kind: str = ""
    """Modifier kind of a modifier metric ('all' = every kind together), or what an agreement row compares."""
    unit: str = ""
    """`words` or `chars` for lengths, else ''."""

    def __post_init__(self) -> None:
        for name in ("value", "low", "high"):
            object.__setattr__(self, name, _number(getattr(self, name)))

    @property
    def is_difference(self) -> bool:
        return self.baseline is not None

    def excludes_zero(self) -> bool:
        """A difference whose CI lies wholly above or below 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        """The results.json / results.csv form (`RESULT_COLUMNS`)."""
        return {name: getattr(self, name) for name in RESULT_COLUMNS}

    def to_metric_dict(self) -> dict[str, Any]:
        """The metrics.json / metrics.csv form (`METRIC_COLUMNS`)."""
        return {column: getattr(self, name) for column, name in METRIC_COLUMNS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        names = {f.name for f in fields(cls)}
        row = {k: v for k, v in data.items() if k in names}
        if row.get("value") is not None:
            row["value"] = float(row["value"])
        row.setdefault("value", None)
        return cls(**row)
