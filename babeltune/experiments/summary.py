"""The summary `babeltune run` and `babeltune demo` print when a run finishes: the levels of the main
metrics per condition and the paired differences against the baseline condition."""

from __future__ import annotations

from collections.abc import Sequence

from babeltune.experiments.results import format_differences
from babeltune.tidy import ResultRow

DIFFERENCE_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("sxs", "SxS (points)", 1.0), ("correct_language", "correct language (pp)", 100.0), ("lpr", "LPR (pp)", 100.0),
    ("modifier", "modifiers passed (pp)", 100.0))
"""(metric, header, scale) of the printed table of paired differences."""


def summary_table(rows: Sequence[ResultRow], conditions: Sequence[str], judges: Sequence[str] = ()) -> str:
    """The table `babeltune demo` and `babeltune run` print: per condition, the final training loss, SxS vs
    the reference (all languages; the first of `judges`) and the evaluation rates with their CIs, then
    the paired differences against the baseline and the SxS scores per language."""
    judge = judges[0] if judges else None

    def cell(cond: str, metric: str, scale: float, lang: str = "all", digits: int = 1) -> str:
        found = [r for r in rows if r.condition == cond and r.metric == metric and r.lang == lang
                 and not r.is_difference and (metric != "sxs" or r.judge == judge)]
        r = found[0] if found else None
        if r is None or r.value is None:
            return "n/a"
        if metric == "sxs" and r.reference == cond:
            return "(itself)"  # judged against its own responses: 50 by construction, no interval
        text = f"{r.value * scale:.{digits}f}"
        if r.low is not None and r.high is not None and r.n > 1:
            text += f" [{r.low * scale:.{digits}f}-{r.high * scale:.{digits}f}]"
        return text

    header = ["condition", "train loss", f"SxS vs reference ({judge or 'not judged'})", "correct language %", "LPR %",
              "modifiers passed %"]
    table = [header]
    for cond in conditions:
        table.append([cond, cell(cond, "train_loss", 1.0, digits=3), cell(cond, "sxs", 1.0),
                      cell(cond, "correct_language", 100.0), cell(cond, "lpr", 100.0), cell(cond, "modifier", 100.0)])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    differences = format_differences(rows, DIFFERENCE_COLUMNS, judge)
    if differences:
        lines += ["", differences]
    langs = sorted({r.lang for r in rows if r.metric == "sxs" and r.lang not in ("all", "seen", "unseen")})
    if langs:
        lines.append("")
        lines.append("SxS score per language (50 = as good as the reference):")
        lines.append("condition      " + " ".join(f"{lang:>4}" for lang in langs))
        for cond in conditions:
            values = [cell(cond, "sxs", 1.0, lang, 0).split(" ")[0].replace("(itself)", "ref") for lang in langs]
            lines.append(f"{cond:<14} " + " ".join(f"{v:>4}" for v in values))
    return "\n".join(lines)
