"""Report: one self-contained static HTML page per experiment run (`babeltune report RUN_DIR`)."""

from babeltune.report.html import REPORT_HTML, SAMPLES_JSON, build_report

__all__ = ["REPORT_HTML", "SAMPLES_JSON", "build_report"]
