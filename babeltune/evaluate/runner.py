"""`evaluate(generations, out_dir)`: score every response, aggregate, write the tables, return them.

Writes into `out_dir`: `responses.jsonl` (one scored row per response), `metrics.csv` and
`metrics.json` (the tidy metrics table), `table.txt` (the printed tables) and `run.json` /
`config.yaml` (config, seed, versions, fingerprint of the generation file).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babeltune.data.jsonl import write_jsonl_atomic
from babeltune.evaluate.langid import LangIdThresholds, get_identifier
from babeltune.evaluate.metrics import OVERALL, ScoredResponse, compute_metrics, metric_value
from babeltune.evaluate.scoring import score_row
from babeltune.tidy import METRIC_COLUMNS, ResultRow

if TYPE_CHECKING:
    from babeltune.generate.rows import GenerationRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """How `babeltune eval` scores and aggregates."""

    identifier: str = "py3langid"
    """Language identifier (see babeltune.evaluate.register_identifier): `py3langid` (default) or
    `fasttext` (lid.176, the Language Confusion Benchmark's: LPR/WPR exactly as published)."""
    compare_identifier: str | None = None
    """A second identifier to measure agreement with (`identifier_agreement` rows: the share of responses
    both give the same whole-response language verdict, and the same line-level verdict)."""
    langid: LangIdThresholds = field(default_factory=LangIdThresholds)
    bootstrap: int = 1000
    """Bootstrap resamples per confidence interval of a mean (0 = none; rates always get Wilson intervals)."""
    confidence: float = 0.95
    seed: int = 0
    """Seed of the bootstrap."""

    def __post_init__(self) -> None:
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


@dataclass
class EvalResult:
    """Scored responses and the tidy metrics table."""

    responses: list[ScoredResponse]
    metrics: list[ResultRow]
    source: str = ""

    def value(self, metric: str, scope: str = OVERALL, kind: str = "") -> float | None:
        """A metric's value (None when it was not computed, e.g. no modifier of that kind)."""
        row = metric_value(self.metrics, metric, scope, kind)
        return row.value if row is not None else None

    def row(self, metric: str, scope: str = OVERALL, kind: str = "") -> ResultRow | None:
        return metric_value(self.metrics, metric, scope, kind)

    def table(self) -> str:
        from babeltune.evaluate.table import format_tables

        return format_tables(self.metrics)


def score_generations(rows: list[GenerationRow], config: EvalConfig | None = None, source: str = "",
                      lines: list[int] | None = None) -> list[ScoredResponse]:
    """Score generation rows (as `read_generations` returns them); `lines` name them in errors."""
    cfg = config or EvalConfig()
    identifier = get_identifier(cfg.identifier)
    numbers = lines if lines is not None else list(range(1, len(rows) + 1))
    where = [f"{source}:{n}" for n in numbers]
    return [score_row(row, identifier, cfg.langid, where=at) for row, at in zip(rows, where, strict=True)]


def evaluate(generations: str | Path, out_dir: str | Path | None = None, config: EvalConfig | None = None
             ) -> EvalResult:
    """Score a generation file and aggregate; with `out_dir`, write every table there."""
    from babeltune.generate.runner import read_generation_lines

    cfg = config or EvalConfig()
    path = Path(generations)
    numbered = read_generation_lines(path)
    if not numbered:
        raise ValueError(f"{path}: no generations to evaluate")
    rows = [row for _, row in numbered]
    responses = score_generations(rows, cfg, str(path), [n for n, _ in numbered])
    metrics = compute_metrics(responses, n_boot=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed)
    if cfg.compare_identifier:
        metrics += agreement_rows(rows, responses, cfg)
    result = EvalResult(responses, metrics, str(path))
    invalid = sum(r.modifier_invalid for r in responses)
    if invalid:
        log.warning("%d response(s) carry an invalid modifier spec; they are counted as modifier_invalid, "
                    "not scored", invalid)
    if out_dir is not None:
        write_outputs(result, Path(out_dir), cfg, path, rows)
    return result


def agreement_rows(rows: list[GenerationRow], responses: list[ScoredResponse], cfg: EvalConfig) -> list[ResultRow]:
    """How often `cfg.compare_identifier` agrees with the scoring identifier, per language and overall:
    kind `language:NAME` (same correct / wrong / undetermined verdict for the whole response) and
    `line_pass:NAME` (same LCB line-level verdict, over responses both score). Wilson intervals."""
    from babeltune import stats
    from babeltune.evaluate.confusion import confusion_verdict
    from babeltune.evaluate.langid import language_verdict

    assert cfg.compare_identifier is not None
    other = get_identifier(cfg.compare_identifier)
    same: dict[str, dict[str, list[float]]] = {}
    for row, scored in zip(rows, responses, strict=True):
        if scored.failed:
            continue
        text = str(row.response)
        verdict = language_verdict(text, scored.expected_lang, other, cfg.langid)
        confusion = confusion_verdict(text, scored.expected_lang, other)
        for scope in (scored.lang, OVERALL):
            bucket = same.setdefault(scope, {"language": [], "line_pass": []})
            bucket["language"].append(float(verdict.status == scored.lang_status))
            if confusion.line_pass is not None and scored.line_pass is not None:
                bucket["line_pass"].append(float(confusion.line_pass == scored.line_pass))
    out = []
    for scope in [*(s for s in same if s != OVERALL), OVERALL]:
        for what, values in same.get(scope, {}).items():
            est = stats.rate(values, cfg.confidence)
            if est.n:
                out.append(ResultRow("", scope, "identifier_agreement", est.value, est.low, est.high, est.n,
                                     kind=f"{what}:{other.name}"))
    return out


def write_outputs(result: EvalResult, out: Path, cfg: EvalConfig, source: Path, rows: list[GenerationRow]) -> None:
    from babeltune.runinfo import write_run_info

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "responses.jsonl", (scored.to_dict() for scored in result.responses))
    fields = [column for column, _ in METRIC_COLUMNS]
    with (out / "metrics.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in result.metrics:
            writer.writerow({k: _csv_value(v) for k, v in row.to_metric_dict().items()})
    models = Counter(json.dumps(r.model, sort_keys=True) for r in rows)
    summary = {
        "generations": str(source),
        "models": [json.loads(m) for m in models],
        "settings": rows[0].settings,
        "metrics": [row.to_metric_dict() for row in result.metrics],
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "table.txt").write_text(result.table() + "\n", encoding="utf-8")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    write_run_info(out, config=cfg, seed=cfg.seed,
                   data={"generations": {"path": str(source), "sha256": digest, "rows": len(rows)}})


def _csv_value(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value
