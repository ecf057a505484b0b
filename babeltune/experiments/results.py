"""The tidy results table of an experiment: one row per (condition, language, metric).

The runner writes it as `results.csv` and `results.json` at the top of the run directory; the report
reads it. `lang` is an ISO code or "all" (pooled over the evaluation languages). Metric names:

| metric | value | from |
|---|---|---|
| `sxs` | side-by-side score 0-100 vs the language's reference (`judge`, `reference` say which) | judge stage |
| `correct_language` | share of responses in the expected language, 0-1 | evaluate stage |
| `code_switching` | share of lines not in the expected language, 0-1 | evaluate stage |
| `modifier` / `modifier:KIND` | modifier pass rate, all kinds / one kind, 0-1 | evaluate stage |
| `response_words` | mean response length | evaluate stage |
| `rubric:CRITERION` | mean 1-3 rubric score | rubric stage |
| `judge_agreement` / `judge_kappa` | two judges' agreement on the same SxS pairs (`judge` = "a vs b") | judge stage |
| `train_loss` | final training loss (lang "all") | train stage |

`low` / `high` are the bootstrap 95% CI bounds (None where none applies); `n` the items behind the
value; `invalid` the items excluded (unparseable verdicts, failed requests): shown, never hidden.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"


@dataclass(frozen=True)
class ResultRow:
    condition: str
    lang: str
    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    n: int = 0
    invalid: int = 0
    judge: str | None = None
    reference: str | None = None
    """The condition the SxS score is measured against."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        names = {f.name for f in fields(cls)}
        row = {k: v for k, v in data.items() if k in names}
        value = row.get("value")
        row["value"] = float("nan") if value is None else float(value)
        return cls(**row)


def write_results(rows: Sequence[ResultRow], run_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write results.json (rows + `meta`) and results.csv into `run_dir`; returns the JSON path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {**(meta or {}), "rows": [r.to_dict() for r in rows]}
    path = run_dir / RESULTS_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    names = [f.name for f in fields(ResultRow)]
    with (run_dir / RESULTS_CSV).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in rows:
            writer.writerow(r.to_dict())
    return path


def read_results(run_dir: str | Path) -> tuple[list[ResultRow], dict[str, Any]]:
    """The rows and the metadata of `run_dir/results.json`."""
    path = Path(run_dir) / RESULTS_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `babeltune run EXPERIMENT.yaml --out {run_dir}` (or "
                                f"`babeltune demo`) first; it writes the results table the report reads")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a results table written by babeltune (not valid JSON: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: field 'rows': missing; a results table is a JSON object with a 'rows' list "
                         f"(got {type(data).__name__}); run `babeltune run` again to rewrite it")
    rows = []
    for i, raw in enumerate(data.pop("rows")):
        try:
            rows.append(ResultRow.from_dict(raw))
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: field 'rows[{i}]': not a result row ({exc})") from exc
    return rows, data


def pivot(rows: Iterable[ResultRow], metric: str, judge: str | None = None) -> dict[str, dict[str, ResultRow]]:
    """condition -> lang -> row for one metric (and judge, when given)."""
    table: dict[str, dict[str, ResultRow]] = {}
    for r in rows:
        if r.metric == metric and (judge is None or r.judge == judge):
            table.setdefault(r.condition, {})[r.lang] = r
    return table
