"""The bench stage of an experiment: lm-evaluation-harness tasks on each condition's model.

An experiment's `bench:` section is a `BenchConfig` without `model` and `steer` (the runner sets them:
the condition's model, merged or adapter, and the condition's steering). The stage writes lm-eval's
figures into `CONDITION/bench/` (`babeltune bench`'s results.csv, results.json, samples.jsonl) and its
rows go into the run's results table as metric `bench:TASK:METRIC` (`bench:TASK:METRIC@FILTER` after
an lm-eval filter other than "none"), in the task's language ("all" for a group or a task of no one
language), with the interval and item count `babeltune bench` reports.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from babeltune.bench.config import BenchConfig
from babeltune.config import ConfigError
from babeltune.experiments.results import ItemValues
from babeltune.tidy import ResultRow

BENCH_PREFIX = "bench:"
RUNNER_SET = ("model", "steer")
"""BenchConfig fields the experiment runner sets per condition."""


def check_bench_section(bench: BenchConfig) -> None:
    """An experiment's `bench` section: at least one task, and neither `model` nor `steer` (set per condition)."""
    if bench.model != BenchConfig().model:
        raise ConfigError("bench.model is set by the experiment runner (each condition's model); remove it")
    if bench.steer is not None:
        raise ConfigError("bench.steer is set by the experiment runner (a steer condition's steering); remove it")
    if not bench.tasks:
        raise ConfigError("bench.tasks: give at least one lm-eval task or group (e.g. [xcopa]), or drop the bench "
                          "section")


def bench_metric(task: str, metric: str, filt: str = "none") -> str:
    """The results-table metric of one lm-eval figure."""
    return f"{BENCH_PREFIX}{task}:{metric}" + ("" if filt == "none" else f"@{filt}")


def split_bench_metric(name: str) -> tuple[str, str] | None:
    """(task, metric[@filter]) of a bench metric name, else None."""
    if not name.startswith(BENCH_PREFIX):
        return None
    task, _, metric = name[len(BENCH_PREFIX):].partition(":")
    return task, metric


def bench_rows(condition: str, folder: Path) -> list[ResultRow]:
    """The bench stage's rows (its results.json) as result rows of `condition`."""
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return [ResultRow(condition, row["language"], bench_metric(row["task"], row["metric"], row["filter"]),
                      row["value"], row["low"], row["high"], int(row["n"])) for row in data["rows"]]


def bench_items(folder: Path) -> dict[tuple[str, str | None], ItemValues]:
    """Per-item values of every numeric lm-eval metric in a bench stage's samples.jsonl, keyed like the
    results' other per-prompt metrics ((`bench:TASK:METRIC[@FILTER]`, None) -> item id -> (language, cluster,
    value)), for paired differences between conditions. An item is one document of one task and its own
    cluster: lm-eval tasks in different languages are not assumed parallel. Groups have no per-item
    samples (lm-eval logs the tasks in them), so their differences are left out."""
    from babeltune.data.jsonl import iter_jsonl

    path = folder / "samples.jsonl"
    out: dict[tuple[str, str | None], ItemValues] = {}
    if not path.exists():
        return out
    for _, sample in iter_jsonl(path):
        item = f"{sample['task']}:{sample['doc_id']}"
        for metric, value in (sample.get("metrics") or {}).items():
            if isinstance(value, (int, float)):  # per-item corpus metrics (e.g. BLEU's pairs) have no mean
                name = bench_metric(sample["task"], metric, sample.get("filter") or "none")
                out.setdefault((name, None), {})[item] = (sample["language"], item, float(value))
    return out


def bench_meta(folder: Path) -> dict[str, Any]:
    """What the run's meta records of a condition's bench stage: lm-eval's version, the model's identity
    (fingerprint, steering) and each task's version and hashes."""
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    identity = data.get("identity", {})
    return {"lm_eval_version": identity.get("lm_eval_version"), "model_fingerprint": identity.get("fingerprint"),
            "steering": identity.get("steering"), "settings": identity.get("settings"), "tasks": data.get("tasks", {})}


def folder_digest(folder: str | None) -> str | None:
    """sha256 over the names and bytes of every file under `folder` (the local task YAMLs and their data),
    so that editing a local task runs the bench stage again; None without a folder."""
    if folder is None:
        return None
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
