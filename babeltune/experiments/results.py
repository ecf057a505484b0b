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
| `modifier_judge:KIND` | mean 1-3 `modifier` score of the rubric judge for a judge-scored kind | rubric stage |
| `judge_agreement` / `judge_kappa` | two judges' agreement on the same SxS pairs (`judge` = "a vs b") | judge stage |
| `lpr` / `wpr` / `lcpr` | language confusion: line-, word-level pass rate, their harmonic mean | evaluate stage |
| `identifier_agreement:WHAT:ID` | share of responses ID agrees on (WHAT: language, line_pass) | evaluate stage |
| `train_loss` | final training loss (lang "all") | train stage |

`low` / `high` are the 95% CI bounds from `babeltune.stats` (Wilson for rates, bootstrap over prompts
for means, whole prompts resampled for lang "all"; None where none applies); `n` the items behind
the value; `invalid` the items excluded (unparseable verdicts, failed requests): shown, never hidden.

**Differences between conditions** are rows of the same table with `baseline` set: `value` is the
condition's mean minus the baseline condition's over the prompts both have (same item ids), in the
metric's own units; `low` / `high` its paired bootstrap 95% CI (lang "all": whole prompts resampled),
`n` the shared prompts. Every per-prompt metric gets one (not `train_loss`, `lcpr` or the judge
agreement, which are not means over prompts). The baseline is the experiment's `baseline` when set,
else the judge's reference condition when it is one of the run's conditions, else the run's first
condition (`difference_rows`). Rows without
`baseline` are the levels; `pivot` reads only those.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from babeltune.data.jsonl import iter_jsonl
from babeltune.tidy import RESULT_COLUMNS, ResultRow

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"


def write_results(rows: Sequence[ResultRow], run_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write results.json (rows + `meta`) and results.csv into `run_dir`; returns the JSON path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {**(meta or {}), "rows": [r.to_dict() for r in rows]}
    path = run_dir / RESULTS_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    names = list(RESULT_COLUMNS)
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


def pivot(rows: Iterable[ResultRow], metric: str, judge: str | None = None, *, differences: bool = False
          ) -> dict[str, dict[str, ResultRow]]:
    """condition -> lang -> row for one metric (and judge, when given): the levels, or with
    `differences` the paired-difference rows."""
    table: dict[str, dict[str, ResultRow]] = {}
    for r in rows:
        if r.metric == metric and (judge is None or r.judge == judge) and r.is_difference == differences:
            table.setdefault(r.condition, {})[r.lang] = r
    return table


# ---------------------------------------------------------------- paired differences between conditions

ItemValues = dict[str, tuple[str, str, float]]
"""item id -> (lang, pid, value) of one metric in one condition."""


def choose_baseline(conditions: Sequence[str], configured: str | None = None) -> str | None:
    """The condition differences are taken against: `configured` when it is one of `conditions`, else the
    first condition (None for an empty run)."""
    if configured is not None and configured in conditions:
        return configured
    return conditions[0] if conditions else None


def condition_items(condition_dir: Path) -> dict[tuple[str, str | None], ItemValues]:
    """Per-prompt values of every per-prompt metric of one condition, read from what its stages wrote:
    `eval/SPLIT/responses.jsonl` (evaluation), `judge/KIND.jsonl` (SxS judgements), `judge/rubric.jsonl`
    and `bench/samples.jsonl` (lm-eval's per-item figures). Keys: (result metric name, judge kind for SxS
    else None)."""
    from babeltune.evaluate.metrics import ScoredResponse, item_values
    from babeltune.experiments.bench import bench_items
    from babeltune.experiments.evaluation import result_metric

    out: dict[tuple[str, str | None], ItemValues] = {}
    for split_dir in sorted((condition_dir / "eval").glob("*/")):
        path = split_dir / "responses.jsonl"
        if not path.exists():
            continue
        responses = [ScoredResponse(**row) for _, row in iter_jsonl(path)]
        where = {r.id: (r.lang, r.pid) for r in responses}
        for (metric, kind), values in item_values(responses).items():
            name = result_metric(split_dir.name, metric, kind)
            if name is not None:
                out[(name, None)] = {i: (*where[i], v) for i, v in values.items()}
    for path in sorted((condition_dir / "judge").glob("*.jsonl")):
        if path.name.endswith(".cache.jsonl"):
            continue
        for _, j in iter_jsonl(path):
            if path.stem == "rubric-modifiers":
                score = (j.get("scores") or {}).get("modifier")
                if score is not None and j.get("modifier"):
                    out.setdefault((f"modifier_judge:{j['modifier']}", None), {})[j["id"]] = (
                        j["lang"], j["pid"], float(score))
            elif path.stem == "rubric":
                for criterion, score in (j.get("scores") or {}).items():
                    out.setdefault((f"rubric:{criterion}", None), {})[j["id"]] = (j["lang"], j["pid"], float(score))
            elif j.get("outcome") in SXS_VALUE:
                out.setdefault(("sxs", path.stem), {})[j["id"]] = (j["lang"], j["pid"], SXS_VALUE[j["outcome"]])
    out.update(bench_items(condition_dir / "bench"))
    return out


SXS_VALUE: dict[str, float] = {"win": 100.0, "tie": 50.0, "loss": 0.0}


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """The range of a per-prompt score (None: unbounded, e.g. lengths; yes/no metrics need none)."""
    if metric == "sxs":
        return 0.0, 100.0
    if metric.startswith(("rubric:", "modifier_judge:")):
        return 1.0, 3.0
    if metric == "code_switching":
        return 0.0, 1.0
    return None


def difference_rows(rows: Sequence[ResultRow], run_dir: str | Path, conditions: Sequence[str],
                    baseline: str | None = None, *, seed: int = 0, n_boot: int | None = None) -> list[ResultRow]:
    """Paired differences, every condition minus `baseline` (see `choose_baseline`), for every per-prompt
    metric, per language and over all languages (lang "all", clustered by prompt id)."""
    from babeltune import stats

    base = choose_baseline(conditions, baseline)
    if base is None:
        return []
    run_dir = Path(run_dir)
    items = {c: condition_items(run_dir / "conditions" / c) for c in conditions}
    judges = {(r.condition, r.metric): r.judge for r in rows if not r.is_difference}
    out: list[ResultRow] = []
    for cond in conditions:
        if cond == base:
            continue
        for (metric, judge), values in items[cond].items():
            ref = items[base].get((metric, judge))
            if not ref:
                continue
            langs = sorted({lang for lang, _, _ in values.values()})
            for lang in dict.fromkeys([*langs, "all"]):  # items of no one language are "all" already
                a = {i: v for i, (l_, _, v) in values.items() if lang in ("all", l_)}
                b = {i: v for i, (l_, _, v) in ref.items() if lang in ("all", l_)}
                clusters = {i: pid for i, (_, pid, _) in values.items()}
                est = stats.paired_difference(a, b, clusters, n_boot=stats.N_BOOT if n_boot is None else n_boot,
                                              seed=stats.derive_seed(seed, "difference", cond, base, metric, lang),
                                              bounds=metric_bounds(metric))
                if est.n == 0:
                    continue
                out.append(ResultRow(cond, lang, metric, est.value, est.low, est.high, est.n,
                                     judge=judge or judges.get((cond, metric)), baseline=base))
    return out


def format_differences(rows: Sequence[ResultRow], metrics: Sequence[tuple[str, str, float]],
                       judge: str | None = None) -> str:
    """A text table of the pooled ("all") paired differences: one line per condition, a column per
    (metric, header, scale) (SxS: `judge`'s, when given); `*` marks a CI that excludes 0. Empty when
    there are none."""
    diffs = {(r.condition, r.metric): r for r in rows if r.is_difference and r.lang == "all"
             and (judge is None or r.metric != "sxs" or r.judge == judge)}
    present = [(m, h, s) for m, h, s in metrics if any(k[1] == m for k in diffs)]
    if not present:
        return ""
    conditions = list(dict.fromkeys(c for c, _ in diffs))
    baseline = next(iter(diffs.values())).baseline
    table = [["condition", *(h for _, h, _ in present)]]
    for cond in conditions:
        cells = [cond]
        for metric, _, scale in present:
            r = diffs.get((cond, metric))
            cells.append("n/a" if r is None else format_difference(r, scale))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = (f"Paired differences vs {baseline} (condition minus {baseline}, over shared prompts, 95% CI; "
             "* = CI excludes 0):")
    return "\n".join([title, *lines])


def format_difference(row: ResultRow, scale: float = 1.0, digits: int = 1) -> str:
    """`+4.2 [-1.0, +9.5]*` (the star where the CI excludes 0)."""
    if row.value is None:
        return "n/a"
    text = f"{row.value * scale:+.{digits}f}"
    if row.low is not None and row.high is not None:
        text += f" [{row.low * scale:+.{digits}f}, {row.high * scale:+.{digits}f}]"
    return text + ("*" if row.excludes_zero() else "")
