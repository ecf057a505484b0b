"""Readable tables of the tidy metrics: language fidelity per language, modifier pass rates per kind."""

from __future__ import annotations

from collections.abc import Sequence

from babeltune.evaluate.metrics import OVERALL
from babeltune.tidy import ResultRow

_FIDELITY: tuple[tuple[str, str, bool], ...] = (
    # (metric, header, is a rate)
    ("failed_rate", "failed", True),
    ("correct_language_rate", "right language", True),
    ("undetermined_rate", "undetermined", True),
    ("code_switching_rate", "code-switching", True),
    ("truncated_rate", "truncated", True),
    ("response_length", "length", False),
    ("response_tokens", "tokens", False),
)


_CONFUSION: tuple[tuple[str, str], ...] = (("line_pass_rate", "LPR"), ("word_pass_rate", "WPR"), ("lcpr", "LCPR"))


def _cell(row: ResultRow | None, rate: bool) -> str:
    if row is None or row.value is None:
        return "-"
    scale = 100.0 if rate else 1.0
    digits = 1 if rate or row.value < 10 else 0
    value = f"{row.value * scale:.{digits}f}"
    if row.low is None or row.high is None:
        return value
    low, high = row.low * scale, row.high * scale
    digits = 0 if rate or high >= 10 else 1
    return f"{value} [{low:.{digits}f}-{high:.{digits}f}]"


def _render(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(headers[i]), *(len(r[i]) for r in body)) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def format_tables(rows: Sequence[ResultRow]) -> str:
    """Two text tables (rates in %, 95% CI in brackets): fidelity, then modifiers (if any)."""
    index = {(r.lang, r.metric, r.kind): r for r in rows}
    scopes = [*dict.fromkeys(r.lang for r in rows if r.lang != OVERALL), OVERALL]
    headers = ["language", "n", *(h for _, h, _ in _FIDELITY)]
    body = []
    for scope in scopes:
        n = index.get((scope, "responses", ""))
        line = [scope, str(n.n) if n else "0"]
        for metric, _, rate in _FIDELITY:
            cell = _cell(index.get((scope, metric, "")), rate)
            if metric == "response_length" and (scope, metric, "") in index:
                cell += " " + ("ch" if index[(scope, metric, "")].unit == "chars" else "w")
            line.append(cell)
        body.append(line)
    text = "Language fidelity (rates in %, [95% CI])\n" + _render(headers, body)
    kinds = sorted({r.kind for r in rows if r.metric == "modifier_pass_rate" and r.kind != "all"})
    if kinds:
        headers = ["language", *kinds, "all"]
        body = []
        for scope in scopes:
            line = [scope]
            for kind in [*kinds, "all"]:
                row = index.get((scope, "modifier_pass_rate", kind))
                line.append(f"{_cell(row, True)} n={row.n}" if row else "-")
            body.append(line)
        text += "\n\nModifier pass rate (%, [95% CI], n = decided checks)\n" + _render(headers, body)
    confusion = [s for s in scopes if any((s, m, "") in index for m, _ in _CONFUSION)]
    if confusion:
        headers = ["language", *(h for _, h in _CONFUSION), "skipped"]
        body = []
        for scope in confusion:
            line = [scope]
            for metric, _ in _CONFUSION:
                row = index.get((scope, metric, ""))
                line.append(f"{_cell(row, True)} n={row.n}" if row else "-")
            skipped = index.get((scope, "confusion_skipped", ""))
            line.append(str(skipped.n if skipped else 0))
            body.append(line)
        text += ("\n\nLanguage confusion (Marchisio et al. 2024; %, [95% CI]; skipped = no line of 5+ tokens)\n"
                 + _render(headers, body))
    agreement = sorted({r.kind for r in rows if r.metric == "identifier_agreement"})
    if agreement:
        headers = ["language", *agreement]
        body = []
        for scope in scopes:
            cells = [index.get((scope, "identifier_agreement", k)) for k in agreement]
            if any(cells):
                body.append([scope, *(f"{_cell(c, True)} n={c.n}" if c else "-" for c in cells)])
        text += "\n\nAgreement between language identifiers (% of responses, same verdict)\n" + _render(headers, body)
    judged = [r for r in rows if r.metric == "modifier_judge_scored" and r.lang == OVERALL]
    if judged:
        text += ("\n\nJudge-scored modifiers (no rule decides; see the rubric's 'modifier' criterion): "
                 + ", ".join(f"{r.kind} {r.n}" for r in judged))
    invalid = [r for r in rows if r.metric == "modifier_invalid" and r.lang == OVERALL]
    if invalid:
        text += f"\n\n{invalid[0].n} response(s) with an invalid modifier spec were not scored."
    return text
