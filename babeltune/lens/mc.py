"""Multiple-choice items in any language, scored by lm-evaluation-harness (`babeltune lens mc-eval`).

Items are JSONL rows `{"lang", "question" and/or "premise", "choices": [...], "label", "id"?}` (label: the
index of the right choice, or its letter). babeltune does not score them itself: `write_mc_tasks` turns
them into an lm-eval task per language (a local JSONL dataset and its task YAML), and `babeltune.bench`
runs those tasks on the loaded (optionally steered) model. Two methods:

- `loglik`: the log-likelihood of each choice's text after the question; lm-eval's `acc` (highest total)
  and `acc_norm` (highest total per character, which does not favour short choices);
- `letter`: the question with lettered options, then "Answer:"; each option is scored by the
  log-likelihood of its letter (study C's option-letter scoring); `acc_norm` equals `acc` there.

`template: none` scores raw text (usual for base models); `auto|gemma|tokenizer` writes the question as a
user turn in that chat template, and the choice (or letter) starts the model's turn. Accuracy is reported
per language with a 95% Wilson interval (the tidy rows of `babeltune.bench`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from babeltune.data.jsonl import iter_jsonl
from babeltune.data.records import Message
from babeltune.languages import normalize_code
from babeltune.stats import wilson

if TYPE_CHECKING:
    from babeltune.bench.harness import BenchResult, BenchRow, TaskSet
    from babeltune.lens.config import MCEvalConfig, SteerConfig

Method = Literal["loglik", "letter"]
LETTERS = "ABCDEFGHIJ"
TASK_PREFIX = "babeltune_mc"
"""Task names are `babeltune_mc_<method>_<lang>`: bench reads the language from the last part."""


@dataclass(frozen=True)
class MCItem:
    id: str
    lang: str
    question: str
    choices: tuple[str, ...]
    label: int


def read_mc_items(path: str | Path, languages: Sequence[str] | None = None) -> list[MCItem]:
    """Read and validate multiple-choice items; errors name the file, line and field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"multiple-choice file not found: {path}")
    items: list[MCItem] = []
    for lineno, raw in iter_jsonl(path):
        items.append(_parse_item(raw, f"{path}:{lineno}"))
    if languages:
        items = [i for i in items if i.lang in languages]
    if not items:
        raise ValueError(f"{path}: no multiple-choice items" + (f" in {list(languages)}" if languages else ""))
    return items


def _parse_item(raw: Any, where: str) -> MCItem:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a row must be a JSON object")
    lang = normalize_code(str(raw.get("lang", "")))
    if lang is None:
        raise ValueError(f"{where}: field 'lang': missing or unknown language code {raw.get('lang')!r}")
    parts = [str(raw[k]).strip() for k in ("premise", "question") if raw.get(k)]
    if not parts:
        raise ValueError(f"{where}: field 'question': missing (give 'question' and/or 'premise')")
    choices = raw.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise ValueError(f"{where}: field 'choices': must be a list of at least 2 non-empty strings")
    if len(choices) > len(LETTERS):
        raise ValueError(f"{where}: field 'choices': at most {len(LETTERS)} choices")
    label = raw.get("label")
    if isinstance(label, str) and len(label) == 1 and label.upper() in LETTERS:
        label = LETTERS.index(label.upper())
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise ValueError(f"{where}: field 'label': must be a choice index 0..{len(choices) - 1} or its letter, "
                         f"got {raw.get('label')!r}")
    return MCItem(str(raw.get("id", where)), lang, "\n".join(parts), tuple(c.strip() for c in choices), label)


def letter_prompt(item: MCItem) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
    return f"{item.question}\n{options}\nAnswer:"


Renderer = Callable[[str], str]
"""Question text -> the prompt text lm-eval sees (a chat-templated user turn, or the text as it is)."""


def chat_renderer(tokenizer: Any, template_name: str) -> Renderer | None:
    """None for `template: none`; else the question as a user turn of that chat template, followed by
    the model turn's header, as text (control tokens spelled out, as lm-eval tokenizes them)."""
    if template_name == "none":
        return None
    from babeltune.models.chat import get_template

    template = get_template(tokenizer, template_name)  # type: ignore[arg-type]

    def render(text: str) -> str:
        return "".join(seg.text for seg in template.segments([Message("user", text)], add_generation_prompt=True))

    return render


def task_name(method: Method, lang: str) -> str:
    return f"{TASK_PREFIX}_{method}_{lang}"


def write_mc_tasks(items: Sequence[MCItem], folder: str | Path, method: Method,
                   render: Renderer | None = None) -> list[str]:
    """One lm-eval task per language into `folder` (`<lang>.jsonl` + `babeltune_mc_<method>_<lang>.yaml`);
    returns the task names. Each row holds the prompt lm-eval scores after and the texts it scores."""
    import yaml

    from babeltune.bench.harness import task_language

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    by_lang: dict[str, list[MCItem]] = {}
    for item in items:
        by_lang.setdefault(item.lang, []).append(item)
    names = []
    for lang, group in sorted(by_lang.items()):
        name = task_name(method, lang)
        if task_language(name) != lang:  # bench steers (add mode) and reports by this language
            raise ValueError(f"language {lang!r}: not read back from the task name {name!r}")
        data = folder / f"{method}_{lang}.jsonl"
        with open(data, "w", encoding="utf-8") as handle:
            for item in group:
                handle.write(json.dumps(_task_row(item, method, render), ensure_ascii=False) + "\n")
        spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "prompt",
                "doc_to_choice": "targets", "doc_to_target": "label",
                "target_delimiter": " " if render is None else "",
                "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                for m in ("acc", "acc_norm")],
                "metadata": {"version": 1.0}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False),
                                             encoding="utf-8")
        names.append(name)
    return names


def _task_row(item: MCItem, method: Method, render: Renderer | None) -> dict[str, Any]:
    text = item.question if method == "loglik" else letter_prompt(item)
    targets = list(item.choices) if method == "loglik" else list(LETTERS[:len(item.choices)])
    return {"id": item.id, "prompt": text if render is None else render(text), "targets": targets,
            "label": item.label}


def local_tasks(folder: str | Path, names: Sequence[str]) -> TaskSet:
    """The tasks in `folder` only (lm-eval's built-in tasks are not indexed: that takes many seconds)."""
    from lm_eval.tasks import TaskManager

    from babeltune.bench.harness import TaskSet, check_tasks, quiet_lm_eval

    quiet_lm_eval()
    manager = TaskManager(include_path=str(Path(folder).resolve()), include_defaults=False)
    return TaskSet(manager, check_tasks(names, manager))


@dataclass
class MCSummary:
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    overall: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"per_language": self.per_language, "overall": self.overall}

    def table(self) -> str:
        lines = ["| lang | n | acc | 95% CI | acc_norm | chance |", "|---|---:|---:|---|---:|---:|"]
        for lang, r in [*self.per_language.items(), ("all", self.overall)]:
            lines.append(f"| {lang} | {int(r['n'])} | {r['acc']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
                         f"{r['acc_norm']:.3f} | {r['chance']:.3f} |")
        return "\n".join(lines)


def summarize_rows(rows: Sequence[BenchRow], items: Sequence[MCItem]) -> MCSummary:
    """bench's rows of the mc tasks -> accuracy per language (and over all items, n-weighted) with Wilson
    95% intervals, lm-eval's acc_norm, the chance level; macro average over languages."""
    figures: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.task.startswith(TASK_PREFIX + "_") and not row.group and row.metric in ("acc", "acc_norm"):
            figures.setdefault(row.language, {})[row.metric] = row
    chance: dict[str, list[float]] = {}
    for item in items:
        chance.setdefault(item.lang, []).append(1 / len(item.choices))
    missing = sorted(set(chance) - set(figures))
    if missing:
        raise ValueError(f"lm-eval returned no accuracy for languages {missing}")
    per_language = {}
    for lang in sorted(figures):
        acc, norm = figures[lang]["acc"], figures[lang]["acc_norm"]
        per_language[lang] = {"n": acc.n, "acc": acc.value, "ci_low": acc.low, "ci_high": acc.high,
                              "acc_norm": norm.value, "chance": sum(chance[lang]) / len(chance[lang])}
    n = sum(int(r["n"]) for r in per_language.values())
    hits = sum(round(r["acc"] * r["n"]) for r in per_language.values())
    low, high = wilson(hits, n)
    overall = {"n": n, "acc": hits / n, "ci_low": low, "ci_high": high,
               "acc_norm": sum(r["acc_norm"] * r["n"] for r in per_language.values()) / n,
               "chance": sum(sum(c) for c in chance.values()) / n,
               "macro_acc": sum(r["acc"] for r in per_language.values()) / len(per_language)}
    return MCSummary(per_language, overall)


@dataclass
class MCResult:
    summary: MCSummary
    bench: BenchResult
    """bench's tidy rows, model identity, lm-eval version, task hashes and per-item log-likelihoods."""


@contextmanager
def _task_folder(keep: str | Path | None) -> Iterator[Path]:
    if keep is not None:
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory(prefix="babeltune-mc-") as tmp:
        yield Path(tmp)


def evaluate_mc(model: Any, tokenizer: Any, items: Sequence[MCItem], *, method: Method = "loglik",
                template: str = "none", batch_size: int = 8, steering: SteerConfig | None = None,
                identity: dict[str, Any] | None = None, tasks_dir: str | Path | None = None) -> MCResult:
    """Score `items` on an already-loaded model through `babeltune.bench` (lm-eval), optionally steered."""
    from babeltune.bench.config import BenchConfig
    from babeltune.bench.harness import evaluate_model

    device = str(next(model.parameters()).device)
    with _task_folder(tasks_dir) as folder:
        names = write_mc_tasks(items, folder, method, chat_renderer(tokenizer, template))
        cfg = BenchConfig(tasks=names, include_path=str(folder), num_fewshot=0, batch_size=batch_size, device=device)
        result = evaluate_model(model, tokenizer, cfg, identity or {"fingerprint": None}, steering,
                                local_tasks(folder, names))
    return MCResult(summarize_rows(result.rows, items), result)


def run_mc_eval(cfg: MCEvalConfig) -> MCResult:
    """`babeltune lens mc-eval`: read the items, write their tasks, load `cfg.model` and run bench on it."""
    from babeltune.bench.config import BenchConfig
    from babeltune.bench.harness import run_bench

    items = read_mc_items(cfg.data, cfg.languages or None)
    render = None
    if cfg.template != "none":
        from babeltune.models.loading import load_tokenizer

        render = chat_renderer(load_tokenizer(cfg.model), cfg.template)
    with _task_folder(cfg.tasks_dir) as folder:
        names = write_mc_tasks(items, folder, cfg.method, render)
        bench_cfg = BenchConfig(model=cfg.model, tasks=names, include_path=str(folder), num_fewshot=0,
                                batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device)
        result = run_bench(bench_cfg, cfg.tasks_dir, cfg.steer, local_tasks(folder, names))
    return MCResult(summarize_rows(result.rows, items), result)
