"""The report's figures, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

Each function takes the tidy rows already pivoted (condition -> lang -> ResultRow) and returns None
when there is nothing to draw, so the page simply leaves that figure out (and says so).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from babeltune.experiments.results import ResultRow

Table = dict[str, dict[str, ResultRow]]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _error_bar(row: ResultRow, scale: float) -> tuple[float, float]:
    """Distances from the value down to the CI's low bound and up to its high bound (0 where absent)."""
    if row.value is None:
        return 0.0, 0.0
    y = row.value * scale
    low = y - row.low * scale if row.low is not None else 0.0
    high = row.high * scale - y if row.high is not None else 0.0
    return max(low, 0.0), max(high, 0.0)


def _present(table: Table, outer: Sequence[str], inner: Sequence[str]) -> tuple[list[str], list[str]]:
    """The `outer` keys `table` has (in the order given), and the `inner` keys at least one of them has."""
    kept = [key for key in outer if key in table]
    return kept, [key for key in inner if any(key in table[k] for k in kept)]


def _series_points(rows: Sequence[ResultRow | None], left: float, width: float, k: int,
                   scale: float) -> tuple[list[float], list[float], list[float], list[float]]:
    """x, y and the lower and upper CI whiskers of the k-th series' rows that have a value: row j sits at
    x = j + left + width * (k + 0.5)."""
    xs: list[float] = []
    ys: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    for j, row in enumerate(rows):
        if row is None or row.value is None:
            continue
        xs.append(j + left + width * (k + 0.5))
        ys.append(row.value * scale)
        lo, hi = _error_bar(row, scale)
        lows.append(lo)
        highs.append(hi)
    return xs, ys, lows, highs


def heatmap(table: Table, conditions: Sequence[str], languages: Sequence[str], *, title: str, scale: float = 1.0,
            vmin: float = 0.0, vmax: float = 100.0, center_label: str = "") -> bytes | None:
    """Conditions (rows) x languages (columns), each cell annotated with its value."""
    import numpy as np

    rows, cols = _present(table, conditions, languages)
    if not rows or not cols:
        return None
    plt = _plt()
    values = np.full((len(rows), len(cols)), np.nan)  # (conditions, languages)
    for i, cond in enumerate(rows):
        for j, lang in enumerate(cols):
            row = table[cond].get(lang)
            if row is not None and row.value is not None:
                values[i, j] = row.value * scale
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 0.9 + 0.45 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluation language")
    ax.set_ylabel("tuning condition")
    ax.set_title(title, fontsize=10)
    for i in range(len(rows)):
        for j in range(len(cols)):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black")
    cbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    if center_label:
        cbar.set_label(center_label, fontsize=8)
    return _png(fig)


def scores_with_ci(table: Table, conditions: Sequence[str], languages: Sequence[str], *, title: str, ylabel: str,
                   scale: float = 1.0, reference_line: float | None = None) -> bytes | None:
    """Per-language values with their CI as error bars, one marker series per condition."""
    rows, cols = _present(table, conditions, languages)
    if not rows or not cols:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(cols) + 2), 3.6))
    width = 0.7 / max(1, len(rows))
    for k, cond in enumerate(rows):
        xs, ys, lows, highs = _series_points([table[cond].get(lang) for lang in cols], -0.35, width, k, scale)
        ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", capsize=3, markersize=4, label=cond)
    if reference_line is not None:
        ax.axhline(reference_line, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(rows)), loc="best")
    return _png(fig)


def grouped_bars(values: dict[str, dict[str, ResultRow]], groups: Sequence[str], series: Sequence[str], *,
                 title: str, ylabel: str, scale: float = 1.0, ylim: tuple[float, float] | None = None) -> bytes | None:
    """Bars per group (x axis) and series (colours), with CI whiskers. values: series -> group -> row."""
    series, groups = _present(values, series, groups)
    if not series or not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(groups) + 2), 3.6))
    width = 0.8 / len(series)
    for k, name in enumerate(series):
        xs, ys, err_lo, err_hi = _series_points([values[name].get(group) for group in groups], -0.4, width, k, scale)
        ax.bar(xs, ys, width=width * 0.95, yerr=[err_lo, err_hi], capsize=2, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if max(len(g) for g in groups) > 6 else 0, ha="right"
                  if max(len(g) for g in groups) > 6 else "center")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(series)))
    return _png(fig)
