"""`babeltune report RUN_DIR`: write the run's static HTML report."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("report", help="write a self-contained HTML report of an experiment run",
                            description="Write RUN_DIR/report.html (plots embedded, no server needed) from the "
                                        "results table that `babeltune run` or `babeltune demo` wrote.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="an experiment run directory (has results.json)")
    parser.add_argument("--out", default=None, help="where to write the page (default RUN_DIR/report.html)")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from babeltune.outputs import check_output
    from babeltune.report import build_report

    if args.out is not None:
        check_output(args.out, "file")
    path = build_report(args.run_dir, args.out)
    print(f"report: {path}")
    return 0
