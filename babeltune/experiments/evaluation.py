"""The evaluate stage of an experiment: the evaluation stage's result rows, under the results table's
metric names and with its condition.

Open prompts (`eval` split) give the language-fidelity rows; modifier prompts give the modifier pass
rates (per kind and all kinds together). Scope "overall" becomes lang "all". Everything the
evaluation stage writes (scored responses, its own tables) is kept beside, in `eval/SPLIT/`.
"""

from __future__ import annotations

from pathlib import Path

from babeltune.evaluate.runner import EvalConfig
from babeltune.tidy import ResultRow

# (split, evaluation metric, kind or None for any) -> result metric name; None kind keeps the kind.
EVAL_METRICS: dict[str, str] = {
    "correct_language_rate": "correct_language",
    "code_switching_rate": "code_switching",
    "response_length": "response_words",
    "failed_rate": "failed",
    "line_pass_rate": "lpr",
    "word_pass_rate": "wpr",
    "lcpr": "lcpr",
}


def result_metric(split: str, metric: str, kind: str) -> str | None:
    """The results-table name of an evaluation metric of `split` (None: not carried into the table)."""
    if split == "eval" and metric == "identifier_agreement":
        return f"identifier_agreement:{kind}"  # e.g. identifier_agreement:line_pass:fasttext
    if split == "eval" and metric in EVAL_METRICS:
        return EVAL_METRICS[metric]
    if split == "modifiers" and metric == "modifier_pass_rate":
        return "modifier" if kind == "all" else f"modifier:{kind}"
    return None


def evaluation_rows(condition: str, generations: dict[str, Path], config: EvalConfig | None = None
                    ) -> list[ResultRow]:
    """Result rows of one condition from its generation files (keys: 'eval', 'modifiers'), scored with
    `config` (default: `babeltune eval`'s defaults)."""
    from babeltune.evaluate import evaluate

    config = config or EvalConfig()
    rows: list[ResultRow] = []
    for split, path in generations.items():
        result = evaluate(path, path.parent.parent / "eval" / split, config)
        for m in result.metrics:
            lang = "all" if m.lang == "overall" else m.lang
            name = result_metric(split, m.metric, m.kind)
            if name is None:
                continue
            rows.append(ResultRow(condition, lang, name, m.value, m.low, m.high, m.n))
    return rows
