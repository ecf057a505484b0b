"""The static HTML report: content from a synthetic results table, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from babeltune.experiments.results import ResultRow, read_results, write_results
from babeltune.report import SAMPLES_JSON, build_report

CONDITIONS = ["english_only", "pinch40", "uniform"]
LANGS = ["en", "es", "zh", "sw"]


def make_run(run_dir: Path, *, with_agreement: bool = True) -> Path:
    rows = []
    for c, cond in enumerate(CONDITIONS):
        for lang in [*LANGS, "all"]:
            score = 50.0 + 10 * c - (5 if lang == "sw" else 0)
            rows.append(ResultRow(cond, lang, "sxs", score, score - 8, score + 8, 20, invalid=1 if lang == "zh" else 0,
                                  judge="reference", reference="english_only"))
            rows.append(ResultRow(cond, lang, "correct_language", 0.5 + 0.1 * c, 0.4, 0.8, 20))
            rows.append(ResultRow(cond, lang, "modifier", 0.3, 0.2, 0.4, 12))
        for kind in ("list_items", "all_caps", "answer_language"):
            rows.append(ResultRow(cond, "all", f"modifier:{kind}", 0.2 + 0.1 * c, 0.1, 0.5, 12))
        rows.append(ResultRow(cond, "all", "train_loss", 1.5 - 0.1 * c, n=160))
        for group in ("seen", "unseen"):
            rows.append(ResultRow(cond, group, "sxs", 40.0 + c, 30.0, 50.0, 10, judge="reference"))
        if with_agreement:
            rows.append(ResultRow(cond, "all", "judge_agreement", 0.7, n=40, judge="reference vs llm"))
            rows.append(ResultRow(cond, "all", "judge_kappa", 0.41, n=40, judge="reference vs llm"))
    meta = {"experiment": "unit<test>", "model": "tiny", "conditions": CONDITIONS, "languages": LANGS,
            "primary_judge": "reference",
            "condition_info": {c: {"mixture": "pinch", "per_language": {"en": 120, "es": 40}, "reference":
                                   "english_only"} for c in CONDITIONS}}
    write_results(rows, run_dir, meta)
    samples = {"languages": {lang: [{"pid": "p1", "prompt": f"prompt <{lang}> 怎样",
                                     "reference": "ref answer", "responses": {c: f"answer of {c} & more" for c in
                                                                              CONDITIONS}}] for lang in LANGS}}
    (run_dir / SAMPLES_JSON).write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return run_dir


def test_results_round_trip(tmp_path: Path) -> None:
    make_run(tmp_path)
    rows, meta = read_results(tmp_path)
    assert meta["experiment"] == "unit<test>" and len(rows) == 3 * (5 * 3 + 3 + 1 + 2 + 2)
    assert rows[0] == ResultRow("english_only", "en", "sxs", 50.0, 42.0, 58.0, 20, 0, "reference", "english_only")
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("condition,lang,metric,value")


def test_report_is_self_contained_with_all_sections(tmp_path: Path) -> None:
    path = build_report(make_run(tmp_path))
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "report.html"
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 5  # SxS heatmap + CIs, language heatmap + CIs, modifier bars
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
    for text in ("Cross-lingual transfer", "Language fidelity", "Modifier instructions", "Judge agreement",
                 "Sample responses", "reference vs llm", "unit&lt;test&gt;", "prompt &lt;zh&gt; 怎样",
                 "answer of pinch40 &amp; more", "after one retry): 3.", "unseen languages"):
        assert text in page, text
    assert "<test>" not in page  # escaped
    assert ">seen<" not in page  # pooled groups are not plotted as languages


def test_report_without_judge_or_samples_says_what_is_missing(tmp_path: Path) -> None:
    rows = [ResultRow("a", "en", "correct_language", 0.9, 0.8, 1.0, 10)]
    write_results(rows, tmp_path, {"experiment": "x", "conditions": ["a"], "languages": ["en"]})
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "No side-by-side scores" in page and "No samples.json" in page and "Only one judge" in page
    assert page.count("data:image/png") == 2


def test_report_of_a_directory_without_results_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="babeltune run"):
        build_report(tmp_path)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (.ci/run installs Debian's `chromium`)")


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = chromium()
    path = build_report(make_run(tmp_path / "run"))
    common = [browser, *CHROMIUM_FLAGS, "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    loaded = re.search(r'data-plots-loaded="(\d+)"', dom)
    total = re.search(r'data-plots-total="(\d+)"', dom)
    assert loaded and total, dom[:500]
    assert int(loaded.group(1)) == int(total.group(1)) == 5  # every plot decoded by the browser
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1280,2400",
                    f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").resize((64, 120)).getcolors(maxcolors=64 * 120)
    assert colours is not None and len(colours) > 50  # a rendered page with coloured figures, not a blank one
