"""``workbench eod``: the end-of-day report from the command line.

Wiring into ``workbench.cli.build_parser``: ``add_eod_parser(sub)``; the parser's ``func`` is
:func:`cmd_eod`, whose return value is the exit code (``docs/eod.md``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any


def iso_date(text: str) -> date:
    """An argparse type: a ``YYYY-MM-DD`` date, or a usage error naming the text."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def add_eod_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eod`` command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    eod: argparse.ArgumentParser = subparsers.add_parser(
        "eod",
        help="run the end-of-day report (papermill) and publish it",
        description="Run notebooks/eod_report.ipynb on one risk snapshot and publish "
        "OUT/<as-of>/ (report.ipynb, report.html, summary.json, snapshot files). Exit codes: "
        "0 ok, 2 bad input, 3 failed cell, 4 service missing or stale, 5 timeout.",
    )
    eod.add_argument("--as-of", type=iso_date, required=True, dest="as_of", help="YYYY-MM-DD")
    eod.add_argument("--out", type=Path, required=True, help="reports folder")
    source = eod.add_mutually_exclusive_group()
    source.add_argument("--service", default=None, help="service name (default: the only one)")
    source.add_argument("--batch", action="store_true", help="re-risk --book on --market")
    eod.add_argument("--book", type=Path, default=None, help="book file (batch)")
    eod.add_argument("--market", type=Path, default=None, help="market JSON (batch)")
    eod.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        dest="parameters",
        help="notebook parameter, e.g. -p limits_path limits.json -p book_filter 'Rates*'",
    )
    eod.add_argument("--cell-timeout", type=_seconds, default=600.0, dest="cell_timeout_s")
    eod.add_argument("--run-timeout", type=_seconds, default=1800.0, dest="run_timeout_s")
    eod.add_argument("--stale-after", type=_seconds, default=300.0, dest="stale_after_s")
    eod.add_argument("--quiet", action="store_true", help="no progress output")
    eod.set_defaults(func=cmd_eod)
    return eod


def cmd_eod(args: argparse.Namespace) -> int:
    """Run :func:`workbench.reports.runner.run_eod` from parsed arguments; the exit code."""
    from workbench.reports.runner import parse_value, run_eod

    return run_eod(
        as_of=args.as_of,
        out_dir=args.out,
        service=args.service,
        batch=args.batch,
        book=args.book,
        market=args.market,
        parameters={key: parse_value(value) for key, value in args.parameters},
        cell_timeout_s=args.cell_timeout_s,
        run_timeout_s=args.run_timeout_s,
        stale_after_s=args.stale_after_s,
        progress=not args.quiet,
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.reports.cli eod …`` until the command is wired into ``workbench``."""
    parser = argparse.ArgumentParser(prog="workbench")
    add_eod_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
