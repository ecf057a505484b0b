"""Run lm-evaluation-harness tasks on a model babeltune has loaded, and turn its results into tidy rows.

lm-eval receives the model object itself (`HFLM(pretrained=model, tokenizer=...)`), so a PEFT adapter
and steering hooks installed on the model apply. Task data is read offline: a task whose data is not
on the machine fails at once, naming the task. With add-mode steering and no fixed target language,
each language's tasks run as one evaluation steered toward that language (the language is read from
the task name's last part: xcopa_et -> et, belebele_spa_Latn -> es); lm-eval's group averages are then
not reported, only the per-task rows.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from babeltune.bench.config import BenchConfig
from babeltune.languages import normalize_code
from babeltune.stats import wilson

log = logging.getLogger(__name__)

BINARY_METRICS = frozenset({"acc", "acc_norm", "exact_match"})
"""Metrics that are a share of items scored 0 or 1: their interval is Wilson's over n items."""
_NOT_METRICS = frozenset({"name", "alias", "sample_len", "sample_count"})
_OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def require_harness(command: str) -> None:
    """A one-line CLIError naming the extra to install when lm-evaluation-harness is missing."""
    from babeltune.cli import CLIError

    if importlib.util.find_spec("lm_eval") is None:
        raise CLIError(f"{command} needs lm-evaluation-harness, which is not installed: "
                       "pip install 'babeltune[harness]'")


class BenchError(ValueError):
    """A task that cannot run (unknown, or its data is not on this machine): one line, naming it."""


@dataclass
class BenchRow:
    """One figure of one task (or group) in one language."""

    task: str
    language: str
    """babeltune's code of the task's language, or 'all' for a group / a task of no one language."""
    metric: str
    value: float
    low: float
    high: float
    n: int
    """Items behind the figure."""
    filter: str = "none"
    """lm-eval's filter the figure was computed after (e.g. 'flexible-extract' for MGSM)."""
    stderr: float = float("nan")
    """lm-eval's own standard error."""
    group: bool = False
    """lm-eval's aggregate over a group's tasks."""


@dataclass
class BenchResult:
    rows: list[BenchRow]
    identity: dict[str, Any]
    """The model (name, path, adapter, fingerprint, dtype), steering, and lm-eval's version and settings."""
    tasks: dict[str, dict[str, Any]]
    """Per task: lm-eval's version, n-shot, a sha256 of its resolved config and of the items evaluated."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Per item: task, language, doc_id, target, lm-eval's filtered responses (log-likelihoods for
    multiple choice) and its per-item metrics."""


def task_language(name: str) -> str | None:
    """The language a task name ends with (xcopa_et -> et, belebele_spa_Latn -> es), or None."""
    parts = name.split("_")
    for size in (2, 1):
        if len(parts) > size:
            code = normalize_code("_".join(parts[-size:]))
            if code is not None:
                return code
    return None


@contextmanager
def offline() -> Iterator[None]:
    """No hub access while lm-eval loads task data: datasets reads only what is on the machine."""
    saved = {name: os.environ.get(name) for name in _OFFLINE_VARIABLES}
    patched: list[tuple[Any, str, Any]] = []
    for name in _OFFLINE_VARIABLES:
        os.environ[name] = "1"
    import datasets.config
    import huggingface_hub.constants

    for module, attr in ((datasets.config, "HF_DATASETS_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
                         (huggingface_hub.constants, "HF_HUB_OFFLINE")):
        if hasattr(module, attr):
            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


_MANAGERS: dict[str | None, Any] = {}


def task_manager(include_path: str | None) -> Any:
    """lm-eval's TaskManager for the built-in tasks plus `include_path`'s; indexing the built-in task
    YAMLs takes seconds, so one is kept per folder for the life of the process."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise BenchError(f"--include-path {include_path}: no such folder")
    key = None if include_path is None else str(Path(include_path).resolve())
    if key not in _MANAGERS:
        _MANAGERS[key] = TaskManager(include_path=key, verbosity="ERROR")
    return _MANAGERS[key]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_tasks(names: Sequence[str], manager: Any) -> dict[str, list[str]]:
    """Each requested task or group -> its leaf tasks, loading their data offline; an unknown name or
    data not on the machine is a BenchError naming the task."""
    if not names:
        raise BenchError("no tasks given (--tasks NAME,NAME)")
    known = set(manager.all_tasks)
    leaves: dict[str, list[str]] = {}
    for name in names:
        if name not in known:
            raise BenchError(f"unknown task {name!r}: not an lm-eval task, group or tag, nor in --include-path")
        try:
            with offline():
                loaded = manager.load([name])
        except Exception as exc:  # lm-eval and datasets raise many kinds; all mean "cannot load"
            raise BenchError(f"task {name!r} cannot be loaded offline (is its data on this machine?): "
                             f"{type(exc).__name__}: {_first_line(exc)}") from exc
        leaves[name] = [str(task) for task in loaded["tasks"]]
    return leaves


@dataclass
class TaskSet:
    """Tasks checked to load offline, with the lm-eval TaskManager that found them."""

    manager: Any
    leaves: dict[str, list[str]]
    """Each requested task or group -> its leaf tasks."""


def prepare_tasks(cfg: BenchConfig) -> TaskSet:
    """Find and load `cfg.tasks` offline (BenchError naming the first that fails), before any model loads."""
    quiet_lm_eval()
    manager = task_manager(cfg.include_path)
    return TaskSet(manager, check_tasks(cfg.tasks, manager))


def quiet_lm_eval() -> None:
    """lm-eval's per-task warnings (default aggregation, ...) at ERROR level only, unless asked for."""
    logger = logging.getLogger("lm_eval")
    if logger.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.ERROR)


def evaluate_model(model: Any, tokenizer: Any, cfg: BenchConfig, identity: Mapping[str, Any],
                   steering: Any = None, prepared: TaskSet | None = None) -> BenchResult:
    """Run `cfg.tasks` on an already-loaded model. `steering` is a `babeltune.lens.config.SteerConfig`
    (or None); `identity` describes the model and goes into the result as it is."""
    from lm_eval.models.huggingface import HFLM

    prepared = prepared or prepare_tasks(cfg)
    manager, leaves = prepared.manager, prepared.leaves
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=cfg.device)
    info: dict[str, Any] = {**identity}
    with ExitStack() as stack:
        if cfg.chat_template:
            info["chat_template"] = _install_chat_template(stack, tokenizer)
        batches: list[tuple[str | None, list[str]]] = [(None, list(cfg.tasks))]
        live = None
        if steering is not None:
            live, info["steering"] = _install_steering(stack, model, steering, identity.get("fingerprint"))
            if steering.mode == "add" and steering.lang is None:
                batches = _by_language(leaves)
        outputs = []
        for lang, names in batches:
            if lang is not None and live is not None:
                live.set_languages(lang)
            outputs.append(_simple_evaluate(lm, names, cfg, manager))
    import lm_eval

    info["lm_eval_version"] = getattr(lm_eval, "__version__", outputs[0].get("lm_eval_version"))
    info["settings"] = {"num_fewshot": cfg.num_fewshot, "limit": cfg.limit, "batch_size": cfg.batch_size,
                        "chat_template": cfg.chat_template, "bootstrap_iters": cfg.bootstrap_iters}
    rows: list[BenchRow] = []
    tasks: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    for out in outputs:
        rows.extend(result_rows(out))
        tasks.update(task_records(out))
        samples.extend(sample_records(out))
    return BenchResult(rows, info, tasks, samples)


def _install_chat_template(stack: ExitStack, tokenizer: Any) -> str:
    """Give lm-eval a chat template to apply: the tokenizer's own, else babeltune's Gemma turn format (a
    base model has none; the same one babeltune trains and generates with). Returns its name."""
    from babeltune.models.chat import RenderError, get_template, with_chat_template

    try:
        template = get_template(tokenizer, "auto")
        stack.enter_context(with_chat_template(tokenizer, template))
    except RenderError as exc:
        raise BenchError(f"--chat-template: {exc}") from None
    return template.name


def _install_steering(stack: ExitStack, model: Any, cfg: Any, fingerprint: str | None) -> tuple[Any, dict[str, Any]]:
    from babeltune.lens.steering import steer
    from babeltune.lens.subspace import LanguageSubspace

    subspace = LanguageSubspace.load(cfg.subspace)
    live = stack.enter_context(steer(model, subspace, mode=cfg.mode, coefficient=cfg.coefficient,
                                     layers=cfg.layers, lang=cfg.lang,
                                     fingerprint=None if cfg.allow_other_model else fingerprint))
    record = {"subspace": subspace.digest(), "mode": cfg.mode, "coefficient": cfg.coefficient,
              "layers": live.layers, "lang": cfg.lang or ("per task" if cfg.mode == "add" else None)}
    return live, record


def _by_language(leaves: Mapping[str, list[str]]) -> list[tuple[str | None, list[str]]]:
    groups: dict[str, list[str]] = {}
    for leaf in (name for names in leaves.values() for name in names):
        lang = task_language(leaf)
        if lang is None:
            raise BenchError(f"task {leaf!r}: its language cannot be read from its name, so add-mode steering "
                             "has no target; pass --steer-lang")
        if leaf not in groups.setdefault(lang, []):
            groups[lang].append(leaf)
    return list(groups.items())


def _simple_evaluate(lm: Any, names: list[str], cfg: BenchConfig, manager: Any) -> dict[str, Any]:
    from lm_eval import evaluator

    with offline():
        out = evaluator.simple_evaluate(
            model=lm, tasks=names, num_fewshot=cfg.num_fewshot, limit=cfg.limit, task_manager=manager,
            log_samples=True, bootstrap_iters=cfg.bootstrap_iters, apply_chat_template=cfg.chat_template,
            verbosity="ERROR")
    if out is None:
        raise BenchError("lm-eval returned no results")
    return dict(out)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def result_rows(out: Mapping[str, Any]) -> list[BenchRow]:
    """lm-eval's `results` (and group aggregates) as tidy rows, with Wilson intervals for shares."""
    groups = set(out.get("groups", {})) | set(out.get("group_subtasks", {}))
    counts = out.get("n-samples", {})
    rows = []
    for task, figures in out.get("results", {}).items():
        is_group = task in groups
        n = int(counts[task]["effective"]) if task in counts else int(figures.get("sample_len", 0) or 0)
        lang = "all" if is_group else (task_language(task) or "all")
        for key, value in figures.items():
            if key in _NOT_METRICS or "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            number = _number(value)
            stderr = _number(figures.get(f"{metric}_stderr,{filt}"))
            low, high = _interval(metric, number, n, stderr)
            rows.append(BenchRow(task, lang, metric, number, low, high, n, filt, stderr, is_group))
    return rows


def _interval(metric: str, value: float, n: int, stderr: float) -> tuple[float, float]:
    if metric in BINARY_METRICS and n > 0 and not math.isnan(value):
        hits = value * n
        if abs(hits - round(hits)) < 1e-6:
            return wilson(round(hits), n)
    if not math.isnan(stderr) and not math.isnan(value):
        return value - 1.96 * stderr, value + 1.96 * stderr
    return float("nan"), float("nan")


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def task_records(out: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task what lm-eval reports of it: version, n-shot, n, a hash of its resolved config, and a
    hash of the items (lm-eval's doc, prompt and target hashes) it evaluated."""
    records: dict[str, dict[str, Any]] = {}
    configs = out.get("configs", {})
    samples = out.get("samples", {})
    for task in out.get("results", {}):
        items = sorted((s["doc_id"], s.get("doc_hash"), s.get("prompt_hash"), s.get("target_hash"))
                       for s in samples.get(task, []))
        records[task] = {
            "version": out.get("versions", {}).get(task), "n_shot": out.get("n-shot", {}).get(task),
            "n_samples": out.get("n-samples", {}).get(task),
            "config_sha256": _sha256(configs[task]) if task in configs else None,
            "items_sha256": _sha256(items) if items else None,
            "subtasks": out.get("group_subtasks", {}).get(task),
        }
    return records


def sample_records(out: Mapping[str, Any]) -> list[dict[str, Any]]:
    records = []
    for task, samples in out.get("samples", {}).items():
        for s in samples:
            metrics = {name: s[name] for name in s.get("metrics", []) if name in s}
            args = s.get("arguments") or [[None]]
            records.append({"task": task, "language": task_language(task) or "all", "doc_id": s["doc_id"],
                            "context": args[0][0] if args[0] else None,  # the text the model saw
                            "target": s.get("target"), "filter": s.get("filter"),
                            "responses": _plain(s.get("filtered_resps")), "metrics": _plain(metrics)})
    return records


def _plain(value: Any) -> Any:
    """JSON-able copy: tuples become lists, numpy scalars numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def write_result(result: BenchResult, out_dir: str | Path) -> Path:
    """results.csv (tidy rows), results.json (rows, identity, tasks) and samples.jsonl into `out_dir`."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [asdict(row) for row in result.rows]
    columns = list(BenchRow.__dataclass_fields__)
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"identity": result.identity, "tasks": result.tasks, "rows": rows}
    (folder / "results.json").write_text(json.dumps(_nan_to_none(payload), indent=1, default=str) + "\n",
                                         encoding="utf-8")
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as handle:
        for sample in result.samples:
            handle.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
    return folder


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def format_rows(rows: Sequence[BenchRow]) -> str:
    """A plain table: task, language, metric (filter), value [95% CI], n."""
    header = ["task", "lang", "metric", "value [95% CI]", "n"]
    body = []
    for row in rows:
        metric = row.metric if row.filter == "none" else f"{row.metric} ({row.filter})"
        interval = "" if math.isnan(row.low) else f" [{row.low:.3f}-{row.high:.3f}]"
        body.append([row.task, row.language, metric, f"{row.value:.3f}{interval}", str(row.n)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_bench(cfg: BenchConfig, out_dir: str | Path | None = None, steering: Any = None,
              prepared: TaskSet | None = None) -> BenchResult:
    """Load `cfg.model` as babeltune does and run `cfg.tasks` on it; write the results when `out_dir` is given.
    `prepared`: tasks already found and loaded (default: `prepare_tasks(cfg)`)."""
    from babeltune.generate.local import loaded_fingerprint
    from babeltune.models.loading import load_model

    prepared = prepared or prepare_tasks(cfg)
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, merge_adapter=cfg.merge_adapter)
    identity = {"model": cfg.model, "path": loaded.path, "adapter": loaded.adapter,
                "fingerprint": loaded_fingerprint(loaded.path, loaded.adapter), "dtype": cfg.dtype,
                "merged_adapter": bool(loaded.adapter and cfg.merge_adapter)}
    result = evaluate_model(loaded.model, loaded.tokenizer, cfg, identity, steering, prepared)
    if out_dir is not None:
        write_result(result, out_dir)
    return result
