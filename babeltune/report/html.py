"""`babeltune report RUN_DIR`: one self-contained static HTML page from an experiment's results.

The page reads `results.json` (the tidy table, see `babeltune.experiments.results`) and, when present,
`samples.json` (responses per prompt and condition). Figures are PNGs embedded as base64 data URIs,
styles are inline: the file can be mailed, archived or opened from disk with no server and no network.
A small inline script counts the figures the browser decoded into `<body data-plots-loaded="N">`, which
the tests read through headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babeltune.experiments.results import ResultRow, pivot, read_results
from babeltune.report import plots

SAMPLES_JSON = "samples.json"
POOLED = ("all", "seen", "unseen")
"""Pseudo-languages of the results table: pooled over all, over the tuning languages, over the others."""
REPORT_HTML = "report.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.9em; } .samples td { max-width: 22em; white-space: pre-wrap; }
.missing { color: #a00; } .excludes-zero { font-weight: bold; }
"""

CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot');
  var ok = 0;
  imgs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { ok += 1; } });
  document.body.setAttribute('data-plots-loaded', String(ok));
  document.body.setAttribute('data-plots-total', String(imgs.length));
});
</script>
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * scale:.{digits}f}"


def _with_ci(row: ResultRow | None, scale: float = 1.0, digits: int = 1) -> str:
    if row is None:
        return "&ndash;"
    text = _fmt(row.value, scale, digits)
    if row.low is not None and row.high is not None and row.value is not None and row.n > 1:
        text += f" <small>[{_fmt(row.low, scale, digits)}, {_fmt(row.high, scale, digits)}]</small>"
    if row.invalid:
        text += f" <small class='missing'>({row.invalid} invalid)</small>"
    return text


def _figure(png: bytes | None, caption: str, missing: str) -> str:
    if png is None:
        return f"<p class='note missing'>{_e(missing)}</p>"
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img class='plot' alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _ordered(names: Sequence[str], found: Sequence[str]) -> list[str]:
    seen = [n for n in names if n in found]
    return seen + sorted(n for n in set(found) if n not in seen)


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run_dir` (default: RUN_DIR/report.html) and return its path."""
    run_dir = Path(run_dir)
    rows, meta = read_results(run_dir)
    conditions = _ordered(meta.get("conditions", []), [r.condition for r in rows])
    languages = _ordered(meta.get("languages", []), [r.lang for r in rows if r.lang not in POOLED])
    judge = meta.get("primary_judge") or next((r.judge for r in rows if r.metric == "sxs"), None)
    parts = [_header(meta, conditions, languages, judge), _summary(rows, conditions, judge)]
    parts.append(_sxs_section(rows, conditions, languages, judge, meta))
    parts.append(_language_section(rows, conditions, languages))
    parts.append(_modifier_section(rows, conditions))
    parts.append(_rubric_section(rows, conditions))
    parts.append(_agreement_section(rows, conditions))
    parts.append(_bench_section(rows, conditions, meta))
    parts.append(_compute_section(meta, conditions))
    samples_path = run_dir / SAMPLES_JSON
    samples = json.loads(samples_path.read_text(encoding="utf-8")) if samples_path.exists() else None
    parts.append(_samples_section(samples, conditions, languages))
    parts.append(f"<p class='note'>Everything behind this page is in {_e(run_dir)}: results.csv / results.json (the "
                 "tidy table), run.json and config.yaml (config, seed, package versions, data fingerprints), and per "
                 "condition its mixture, tuned model, generations, evaluation and judgements. `babeltune report "
                 f"{_e(run_dir)}` writes this page again.</p>")
    body = "\n".join(parts)
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>babeltune report: {_e(meta.get('experiment', run_dir.name))}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n{CHECK_SCRIPT}</body></html>\n")
    target = Path(out) if out is not None else run_dir / REPORT_HTML
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _header(meta: dict[str, Any], conditions: list[str], languages: list[str], judge: str | None) -> str:
    info = meta.get("condition_info", {})
    lines = [f"<h1>babeltune report: {_e(meta.get('experiment', ''))}</h1>",
             f"<p class='note'>model <b>{_e(meta.get('model', '?'))}</b>; {len(conditions)} tuning condition(s); "
             f"evaluated in {len(languages)} language(s): {_e(', '.join(languages))}; judge: {_e(judge or 'none')}."
             f" {_e(meta.get('note', ''))}</p>"]
    if info:
        lines.append("<table><tr><th>condition</th><th>mixture</th><th>examples per language</th>"
                     "<th>reference for SxS</th></tr>")
        for cond in conditions:
            ci = info.get(cond, {})
            per_lang = ", ".join(f"{k} {v}" for k, v in ci.get("per_language", {}).items())
            lines.append(f"<tr><td>{_e(cond)}</td><td>{_e(ci.get('mixture', ''))}</td><td>{_e(per_lang)}</td>"
                         f"<td>{_e(ci.get('reference', ''))}</td></tr>")
        lines.append("</table>")
    return "\n".join(lines)


def _summary(rows: list[ResultRow], conditions: list[str], judge: str | None) -> str:
    metrics = [("sxs", "SxS score (0-100)", 1.0), ("correct_language", "correct language (%)", 100.0),
               ("lpr", "line-level pass rate, LPR (%)", 100.0), ("lcpr", "LCPR (%)", 100.0),
               ("modifier", "modifiers passed (%)", 100.0), ("train_loss", "final train loss", 1.0)]
    present = [(m, label, s) for m, label, s in metrics if any(r.metric == m for r in rows)]
    if not present:
        return "<p class='missing'>The results table has no rows yet.</p>"
    tables = {m: pivot(rows, m, judge if m == "sxs" else None) for m, _, _ in present}
    out = ["<h2>Summary (all evaluation languages pooled)</h2><table><tr><th>condition</th>"]
    out += [f"<th>{_e(label)}</th>" for _, label, _ in present]
    out.append("</tr>")
    for cond in conditions:
        cells = [f"<td class='num'>{_with_ci(tables[m].get(cond, {}).get('all'), s, 3 if m == 'train_loss' else 1)}"
                 f"</td>" for m, _, s in present]
        out.append(f"<tr><td>{_e(cond)}</td>{''.join(cells)}</tr>")
    out.append("</table><p class='note'>Brackets: 95% confidence intervals (Wilson score intervals for rates; "
               "bootstrap over prompts for means, whole prompts resampled when pooled over languages).</p>")
    out.append(_differences(rows, [(m, label, s) for m, label, s in present if m != "train_loss"], judge))
    return "".join(out)


def _differences(rows: list[ResultRow], metrics: list[tuple[str, str, float]], judge: str | None) -> str:
    """Paired differences against the baseline condition, pooled over languages, CIs excluding 0 marked."""
    from babeltune.experiments.results import format_difference

    diffs = [r for r in rows if r.is_difference and r.lang == "all" and (r.metric != "sxs" or r.judge == judge)]
    if not diffs:
        return ""
    baseline = diffs[0].baseline
    table = {(r.condition, r.metric): r for r in diffs}
    conditions = list(dict.fromkeys(r.condition for r in diffs))
    present = [(m, label, s) for m, label, s in metrics if any(r.metric == m for r in diffs)]
    out = [f"<h2>Differences from {_e(baseline)}</h2><table class='differences'><tr><th>condition</th>"]
    out += [f"<th>{_e(label)}</th>" for _, label, _ in present]
    out.append("</tr>")
    for cond in conditions:
        out.append(f"<tr><td>{_e(cond)}</td>")
        for metric, _, scale in present:
            r = table.get((cond, metric))
            text = "&ndash;" if r is None else _e(format_difference(r, scale))
            mark = " class='num excludes-zero'" if r is not None and r.excludes_zero() else " class='num'"
            out.append(f"<td{mark}>{text}</td>")
        out.append("</tr>")
    out.append(f"</table><p class='note'>Each cell: the condition minus {_e(baseline)} on the prompts both answered "
               "(rates in percentage points), with a paired bootstrap 95% CI over prompts; <b>*</b> and bold: the CI "
               "excludes 0. Per-language differences are in results.csv (rows with a baseline).</p>")
    return "".join(out)


def _sxs_section(rows: list[ResultRow], conditions: list[str], languages: list[str], judge: str | None,
                 meta: dict[str, Any]) -> str:
    table = pivot(rows, "sxs", judge)
    out = ["<h2>Cross-lingual transfer: side-by-side scores</h2>",
           "<p class='note'>Each cell: the condition's responses judged against the reference model's in that "
           "language, both orders; win 1, tie 0.5, loss 0, x 100. 50 = as good as the reference. "
           f"{_e(meta.get('reference_note', ''))}</p>"]
    out.append(_figure(plots.heatmap(table, conditions, languages, title=f"SxS score ({judge})",
                                     center_label="50 = as good as the reference"),
                       "Transfer heatmap: tuning condition x evaluation language (SxS score).",
                       "No side-by-side scores in this run (judge stage not run or no reference)."))
    out.append(_figure(plots.scores_with_ci(table, conditions, languages, title="SxS score per language, 95% CI",
                                            ylabel="SxS score", reference_line=50.0),
                       "Per-language SxS scores with bootstrap 95% confidence intervals over prompts.",
                       "No per-language SxS scores to plot."))
    pooled = [(c, table[c]) for c in conditions if c in table and ("seen" in table[c] or "unseen" in table[c])]
    if pooled:
        out.append("<table><tr><th>condition</th><th>seen languages (tuned on)</th><th>unseen languages</th>"
                   "<th>all</th></tr>")
        for c, t in pooled:
            cells = "".join(f"<td class='num'>{_with_ci(t.get(group))}</td>" for group in ("seen", "unseen", "all"))
            out.append(f"<tr><td>{_e(c)}</td>{cells}</tr>")
        out.append("</table><p class='note'>SxS pooled over the languages each condition was tuned on and over the "
                   "others.</p>")
    invalid = sum(r.invalid for r in rows if r.metric == "sxs" and r.lang not in POOLED)
    out.append(f"<p class='note'>Pairs excluded as invalid (verdict unparseable after one retry): {invalid}.</p>")
    return "\n".join(out)


def _language_section(rows: list[ResultRow], conditions: list[str], languages: list[str]) -> str:
    table = pivot(rows, "correct_language")
    out = ["<h2>Language fidelity</h2>"]
    out.append(_figure(plots.heatmap(table, conditions, languages, title="responses in the expected language (%)",
                                     scale=100.0),
                       "Correct-language rate per condition and evaluation language (%).",
                       "No correct-language rates in this run."))
    out.append(_figure(plots.scores_with_ci(table, conditions, languages, title="correct-language rate, 95% CI",
                                            ylabel="% in expected language", scale=100.0),
                       "Correct-language rate with Wilson 95% confidence intervals.", "No rates to plot."))
    return "\n".join(out)


def _modifier_section(rows: list[ResultRow], conditions: list[str]) -> str:
    by_cond: dict[str, dict[str, ResultRow]] = {}
    for r in rows:
        if r.metric.startswith("modifier:") and r.lang == "all" and not r.is_difference:
            by_cond.setdefault(r.condition, {})[r.metric.split(":", 1)[1]] = r
    kinds = sorted({k for v in by_cond.values() for k in v})
    out = ["<h2>Modifier instructions (study B)</h2>"]
    out.append(_figure(plots.grouped_bars(by_cond, kinds, conditions, title="modifier pass rate (%), all languages",
                                          ylabel="% passed", scale=100.0, ylim=(0, 100)),
                       "Share of modifier prompts whose check passed, per kind, with 95% CIs.",
                       "No modifier results in this run."))
    per_lang = pivot(rows, "modifier")
    if per_lang:
        langs = sorted({lang for v in per_lang.values() for lang in v if lang != "all"})
        out.append("<table><tr><th>condition</th>" + "".join(f"<th>{_e(x)}</th>" for x in [*langs, "all"]) + "</tr>")
        for cond in conditions:
            cells = "".join(f"<td class='num'>{_with_ci(per_lang.get(cond, {}).get(x), 100.0)}</td>"
                            for x in [*langs, "all"])
            out.append(f"<tr><td>{_e(cond)}</td>{cells}</tr>")
        out.append("</table><p class='note'>Modifier pass rate (%) per prompt language.</p>")
    return "\n".join(out)


def _rubric_section(rows: list[ResultRow], conditions: list[str]) -> str:
    by_cond: dict[str, dict[str, ResultRow]] = {}
    for r in rows:
        if r.metric.startswith("rubric:") and r.lang == "all" and not r.is_difference:
            by_cond.setdefault(r.condition, {})[r.metric.split(":", 1)[1]] = r
    if not by_cond:
        return ""
    criteria = ["language", "fluency", "helpfulness", "accuracy", "logical_coherence", "harmlessness"]
    return "<h2>Rubric (study B)</h2>" + _figure(
        plots.grouped_bars(by_cond, criteria, conditions, title="rubric score (1-3)", ylabel="mean score",
                           ylim=(1, 3)),
        "Mean rubric score per criterion with 95% CIs.", "No rubric scores.")


def _agreement_section(rows: list[ResultRow], conditions: list[str]) -> str:
    agree = [r for r in rows if r.metric == "judge_agreement" and r.lang == "all"]
    kappas = {(r.condition, r.judge): r for r in rows if r.metric == "judge_kappa" and r.lang == "all"}
    if not agree:
        return ("<h2>Judge agreement</h2><p class='note'>Only one judge was run; agreement between judges is "
                "measured when a second judge (e.g. an LLM judge next to the offline one) judges the same pairs."
                "</p>")
    out = ["<h2>Judge agreement</h2><table><tr><th>condition</th><th>judges</th><th>pairs</th>"
           "<th>same outcome (%)</th><th>Cohen's kappa</th></tr>"]
    for r in sorted(agree, key=lambda r: conditions.index(r.condition) if r.condition in conditions else 0):
        kappa = kappas.get((r.condition, r.judge))
        out.append(f"<tr><td>{_e(r.condition)}</td><td>{_e(r.judge)}</td><td class='num'>{r.n}</td>"
                   f"<td class='num'>{_fmt(r.value, 100.0)}</td><td class='num'>"
                   f"{_fmt(kappa.value if kappa else None, 1.0, 2)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _bench_section(rows: list[ResultRow], conditions: list[str], meta: dict[str, Any]) -> str:
    """lm-evaluation-harness figures (the bench stage): one line per task, language and metric, one column
    per condition; nothing when the run had no bench stage."""
    from babeltune.experiments.bench import split_bench_metric
    from babeltune.experiments.results import format_difference

    cells: dict[tuple[str, str, str], dict[str, ResultRow]] = {}
    diffs: dict[tuple[str, str, str, str], ResultRow] = {}
    for r in rows:
        parsed = split_bench_metric(r.metric)
        if parsed is not None and r.is_difference:
            diffs[(parsed[0], r.lang, parsed[1], r.condition)] = r
        elif parsed is not None:
            cells.setdefault((parsed[0], r.lang, parsed[1]), {})[r.condition] = r
    if not cells:
        return ""
    versions = sorted({str(info.get("lm_eval_version")) for info in meta.get("bench", {}).values()})
    out = ["<h2>Standard benchmarks (lm-evaluation-harness)</h2>",
           f"<p class='note'>lm-eval {_e(', '.join(versions) or 'n/a')}; values in %, 95% CI in brackets; task "
           "versions and hashes in results.json (bench).</p><table><tr><th>task</th><th>language</th><th>metric</th>",
           *(f"<th>{_e(c)}</th>" for c in conditions), "</tr>"]
    for (task, lang, metric), by_cond in sorted(cells.items()):
        out.append(f"<tr><td>{_e(task)}</td><td>{_e(lang)}</td><td>{_e(metric)}</td>")
        for c in conditions:
            diff = diffs.get((task, lang, metric, c))
            mark = " class='excludes-zero'" if diff is not None and diff.excludes_zero() else ""
            shown = "" if diff is None else f"<br><span{mark}>{_e(format_difference(diff, 100.0))}</span>"
            out.append(f"<td class='num'>{_with_ci(by_cond.get(c), 100.0)}{shown}</td>")
        out.append("</tr>")
    baseline = next(iter(diffs.values())).baseline if diffs else None
    out.append("</table>" + ("" if baseline is None else
                             f"<p class='note'>Second line: the condition minus {_e(baseline)} over the documents "
                             "both answered (points), paired bootstrap 95% CI; <b>*</b> and bold: the CI excludes 0. "
                             "Groups have no per-document samples, so no difference.</p>"))
    return "".join(out)


COMPUTE_KEYS = ("model_seconds", "train_tokens", "train_flops")


def _compute_section(meta: dict[str, Any], conditions: list[str]) -> str:
    """What each condition cost (the run meta's `compute`), per stage; nothing in runs without it."""
    compute: dict[str, Any] = meta.get("compute") or {}
    if not compute:
        return ""
    stages = list(dict.fromkeys(stage for info in compute.values() for stage in info.get("stages", {})))
    out = ["<h2>Compute</h2><p class='note'>Seconds per stage; model_seconds: the stages that made the condition's "
           "model (mixture, train, probe, lens; 0 for the base model); train_tokens / train_flops: the training "
           "steps' logged totals.</p><table><tr><th>condition</th>",
           *(f"<th>{_e(k)}</th>" for k in (*COMPUTE_KEYS, *stages)), "</tr>"]
    for cond in conditions:
        info = compute.get(cond, {})
        cells = [info.get(k) for k in COMPUTE_KEYS] + [info.get("stages", {}).get(s) for s in stages]
        out.append(f"<tr><td>{_e(cond)}</td>" + "".join(
            f"<td class='num'>{'&ndash;' if v is None else f'{v:.4g}'}</td>" for v in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _samples_section(samples: dict[str, Any] | None, conditions: list[str], languages: list[str]) -> str:
    if not samples:
        return "<h2>Sample responses</h2><p class='note'>No samples.json in this run.</p>"
    out = ["<h2>Sample responses, side by side</h2>"]
    by_lang: dict[str, list[dict[str, Any]]] = samples.get("languages", {})
    for lang in _ordered(languages, list(by_lang)):
        out.append(f"<h3>{_e(lang)}</h3><table class='samples'><tr><th>prompt</th><th>reference answer</th>")
        conds = _ordered(conditions, sorted({c for item in by_lang[lang] for c in item.get("responses", {})}))
        out += [f"<th>{_e(c)}</th>" for c in conds]
        out.append("</tr>")
        for item in by_lang[lang]:
            cells = "".join(f"<td>{_e(item.get('responses', {}).get(c, ''))}</td>" for c in conds)
            out.append(f"<tr><td>{_e(item.get('prompt', ''))}</td><td>{_e(item.get('reference') or '')}</td>"
                       f"{cells}</tr>")
        out.append("</table>")
    return "\n".join(out)
