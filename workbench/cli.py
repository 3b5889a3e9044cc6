"""The ``workbench`` command.

``workbench market generate``  write the reference market snapshot (JSON)
``workbench book generate``    write the reference book (Parquet or CSV)
``workbench price``            re-risk a book against a market, write one row per position
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from workbench.market.model import MarketError


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _cmd_market_generate(args: argparse.Namespace) -> int:
    from workbench.market.io import save_market
    from workbench.market.reference import generate_reference_market

    market = generate_reference_market(as_of=args.as_of, seed=args.seed)
    save_market(market, args.out)
    print(
        f"wrote {args.out}: as of {market.as_of}, {len(market.quote_ids)} quotes, "
        f"{len(market.curves)} curves, {len(market.fx_pairs)} FX pairs, "
        f"{len(market.equities)} equities, {len(market.credit_indices)} credit indices"
    )
    return 0


def _cmd_book_generate(args: argparse.Namespace) -> int:
    from workbench.book.io import save_book
    from workbench.book.reference import generate_reference_book
    from workbench.market.io import load_market

    market = load_market(args.market)
    frame = generate_reference_book(market, positions=args.positions, seed=args.seed)
    save_book(frame, args.out)
    counts = frame.group_by("product").len().sort("product").rows()
    summary = ", ".join(f"{n:,} {p}" for p, n in counts)
    print(f"wrote {args.out}: {frame.height:,} positions ({summary})")
    return 0


def _cmd_price(args: argparse.Namespace) -> int:
    from workbench.batch import run_batch

    run_batch(
        book_path=args.book,
        market_path=args.market,
        out_path=args.out,
        interpolation=args.interpolation,
        n_paths=args.paths,
        tranche_method=args.tranche_method,
        stream=sys.stdout,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``workbench`` command."""
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    market = sub.add_parser("market", help="market snapshots").add_subparsers(
        dest="action", required=True
    )
    gen = market.add_parser("generate", help="write the reference market snapshot")
    gen.add_argument("--out", type=Path, required=True, help="output JSON file")
    gen.add_argument("--as-of", type=_parse_date, default=date(2026, 11, 24), dest="as_of")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=_cmd_market_generate)

    book = sub.add_parser("book", help="position books").add_subparsers(
        dest="action", required=True
    )
    bgen = book.add_parser("generate", help="write the reference book")
    bgen.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    bgen.add_argument("--positions", type=_positive_int, default=40_000)
    bgen.add_argument("--seed", type=int, default=1)
    bgen.add_argument("--out", type=Path, required=True, help="output .parquet or .csv")
    bgen.set_defaults(func=_cmd_book_generate)

    price = sub.add_parser("price", help="re-risk a book: pv and Greeks per position")
    price.add_argument("--book", type=Path, required=True, help="book .parquet or .csv")
    price.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    price.add_argument("--out", type=Path, required=True, help="output .parquet")
    price.add_argument(
        "--interpolation",
        choices=("monotone_convex", "log_linear"),
        default=None,
        help="override every curve's interpolation",
    )
    price.add_argument("--paths", type=_positive_int, default=50_000, help="tranche MC paths")
    price.add_argument(
        "--tranche-method", choices=("mc", "recursion"), default="mc", dest="tranche_method"
    )
    price.set_defaults(func=_cmd_price)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; bad input exits with status 2 and one clear message, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (MarketError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
