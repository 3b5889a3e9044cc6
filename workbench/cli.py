"""The ``workbench`` command.

``workbench market generate``  write the reference market snapshot (JSON)
``workbench market history``   write a reference history ending on a market (Parquet)
``workbench book generate``    write the reference book (Parquet or CSV)
``workbench price``            re-risk a book against a market, write one row per position
``workbench var``              historical VaR and ES of a book by full revaluation
``workbench stress``           a book's PnL under named stress scenarios
``workbench explain``          a book's PnL between two markets, explained by its Greeks
``workbench api``              serve the HTTP API of a running service (docs/api.md)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from workbench.client import ServiceError, connect, start
from workbench.market.model import MarketError
from workbench.reports.cli import iso_date


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _cmd_market_history(args: argparse.Namespace) -> int:
    from workbench.market.history import save_history
    from workbench.market.io import load_market
    from workbench.market.reference_history import generate_history

    market = load_market(args.market)
    frame = generate_history(market, days=args.days, seed=args.seed)
    save_history(frame, args.out)
    first, last = str(frame["date"].min()), str(frame["date"].max())
    print(
        f"wrote {args.out}: {args.days} days ({first} to {last}) × {len(market.quote_ids)} "
        f"quotes, the last day equal to {args.market}"
    )
    return 0


_BY_HELP = ("groupings beside the desks, comma-separated: desk, book, product, asset_class, "
            "currency, underlying (pnl_by.parquet, measures_by.parquet)")  # fmt: skip


def _by(text: str) -> tuple[str, ...]:
    from workbench.risk.groupings import parse_by

    try:
        return parse_by(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_var(args: argparse.Namespace) -> int:
    from workbench import scenario_risk

    where = scenario_risk.Where(args.in_process, args.scheduler, args.dask_workers)
    result = scenario_risk.historical(
        args.book, args.market, args.history, window=args.window, where=where, progress=sys.stderr,
        greeks=args.greeks, by=args.by,
    )  # fmt: skip
    scenario_risk.write(result, args.out)
    return 0


def _cmd_stress(args: argparse.Namespace) -> int:
    from workbench import scenario_risk
    from workbench.risk.scenarios import STRESS_LIBRARY

    path = args.scenarios if args.scenarios is not None else STRESS_LIBRARY
    result = scenario_risk.stress(args.book, args.market, path, progress=sys.stderr, by=args.by)
    scenario_risk.write(result, args.out)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    import polars as pl

    from workbench import scenario_risk

    positions, by_desk = scenario_risk.explain(args.book, args.from_market, args.to_market)
    args.out.mkdir(parents=True, exist_ok=True)
    positions.write_parquet(args.out / "explain_positions.parquet")
    by_desk.write_parquet(args.out / "explain.parquet")
    with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=12, thousands_separator=","):
        print(by_desk)
    print(f"wrote {args.out}/explain.parquet and explain_positions.parquet")
    return 0


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
        key_rates=args.key_rates,
        max_notional=args.max_notional,
        stream=sys.stdout,
    )
    return 0


def _amounts(text: str) -> dict[str, float]:
    """``USD=5e9,JPY=1e12`` → a positive amount per currency (``*``: every other currency)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        ccy, _, amount = part.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = float("nan")
        if not (ccy.strip() and value > 0.0 and value != float("inf")):
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected CCY=AMOUNT with a positive amount (USD=5e9)"
            )
        out[ccy.strip()] = value
    return out


def _workers(text: str) -> dict[str, int]:
    """``rates=1,fx=2`` → worker counts per asset class."""
    out: dict[str, int] = {}
    for part in text.split(","):
        cls, _, count = part.partition("=")
        if cls not in ("rates", "fx", "credit", "equity") or not count.isdigit():
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected CLASS=COUNT with CLASS in rates, fx, credit, equity"
            )
        out[cls] = int(count)
    return out


def _service_options(args: argparse.Namespace) -> dict[str, object]:
    import msgspec

    from workbench.client import LimitConfig

    limits: tuple[LimitConfig, ...] = ()
    if args.limits is not None:
        try:
            limits = msgspec.json.decode(args.limits.read_bytes(), type=tuple[LimitConfig, ...])
        except msgspec.DecodeError as exc:
            raise ValueError(f"{args.limits}: {exc}") from None
    workers = dict(args.workers or {})  # a class left out: 1 worker if the book holds it
    out: dict[str, object] = {
        "name": args.name,
        "feed": args.feed,
        "rate": args.rate,
        "workers": workers,
        "limits": limits,
        "n_paths": args.paths,
        "tranche_method": args.tranche_method,
        "standby": not getattr(args, "no_standby", False),
    }
    loss_every = getattr(args, "loss_every", None)
    if loss_every is not None:
        from workbench.client import LossConfig

        out["loss"] = LossConfig(enabled=loss_every > 0, every_s=loss_every or 60.0)
    if getattr(args, "sources", None) is not None:
        from workbench.client import load_sources

        out["sources"] = load_sources(args.sources)
    if getattr(args, "remote_host", None):
        from workbench.client import RemoteConfig

        if args.remote_key is None or args.authorized_keys is None:
            raise ValueError("--remote-host needs --remote-key and --authorized-keys (CurveZMQ)")
        out["remote"] = RemoteConfig(
            host=args.remote_host,
            server_key=str(args.remote_key),
            authorized_keys=str(args.authorized_keys),
            control_port=args.remote_control_port,
            snapshots_port=args.remote_snapshots_port,
        )
    return out


def _cmd_keys(args: argparse.Namespace) -> int:
    from workbench.client import generate_keys

    public, secret = generate_keys(args.folder, args.name)
    print(f"public key {public} (give it out); secret key {secret} (keep it; mode 600)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import time

    svc = start(args.book, args.market, **_service_options(args))  # type: ignore[arg-type]
    where = svc.descriptor.config.run_dir
    print(f"service {svc.name} ready (pid {svc.descriptor.pid}); run dir {where}")
    if args.detach:
        svc.close()
        return 0
    stop = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print("serving; Ctrl-C stops the service")
    while not stop["now"] and svc.process is not None and svc.process.poll() is None:
        time.sleep(0.2)
    if svc.process is not None and svc.process.poll() is None:
        svc.stop()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    svc = connect(args.name)
    try:
        st = svc.status(timeout_s=0.5)  # the whole command answers within a second
    finally:
        svc.close()
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    if st.get("answered_by") == "client":  # the supervisor did not answer in time
        print(
            f"service {st['name']}  pid {st['pid']}  supervisor {st['supervisor']}: {st['error']}"
        )
    else:
        print(
            f"service {st['name']}  pid {st['pid']}  up {st['uptime_s']:.0f} s  "
            f"{st['positions']:,} positions  book generation {st.get('book_generation', 0)}  "
            f"ready: {st['ready']}  metrics: {st['metrics']}"
        )
    print(f"{'process':<12}{'pid':>8}  {'state':<9}{'restarts':>9}{'beat age s':>12}")
    for p in sorted(st["processes"], key=lambda p: p["name"]):
        age = p.get("heartbeat_age_s")
        print(
            f"{p['name']:<12}{p['pid']:>8}  {p['state']:<9}{p['restarts']:>9}"
            + (f"{age:>12.2f}" if age is not None else f"{'-':>12}")
        )
    agg = st.get("aggregator", {})
    if agg:
        print(
            f"stale positions {agg.get('stale', 0):.0f}, "
            f"worst age {agg.get('max_age_s', 0):.2f} s, "
            f"flush→publish p99 {agg.get('flush_to_publish_p99_ms', 0):.1f} ms"
        )
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    svc = connect(args.name)
    svc.stop()
    print(f"service {svc.name} stopped")
    return 0


def _cmd_reload_book(args: argparse.Namespace) -> int:
    svc = connect(args.name)
    try:
        out = svc.reload_book(args.book)
    finally:
        svc.close()
    print(
        f"service {svc.name}: book {out['book']} taken as generation {out['book_generation']}"
        f" ({out['positions']:,} positions, every one priced)"
    )
    return 0


def _cmd_reap(args: argparse.Namespace) -> int:
    from workbench.client import reap

    gone = reap(dry_run=args.dry_run)
    verb = "would unlink" if args.dry_run else "unlinked"
    print(f"{verb} {len(gone)} orphaned segment(s)" + "".join(f"\n  {g}" for g in gone))
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
    gen.add_argument("--as-of", type=iso_date, default=date(2026, 11, 24), dest="as_of")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=_cmd_market_generate)
    hist = market.add_parser(
        "history", help="write a reference history of daily quotes ending on a market"
    )
    hist.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    hist.add_argument("--days", type=int, default=750, help="weekdays of history (750)")
    hist.add_argument("--seed", type=int, default=7)
    hist.add_argument("--out", type=Path, required=True, help="output Parquet file")
    hist.set_defaults(func=_cmd_market_history)

    book = sub.add_parser("book", help="position books").add_subparsers(
        dest="action", required=True
    )
    bgen = book.add_parser("generate", help="write the reference book")
    bgen.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    bgen.add_argument("--positions", type=_positive_int, default=40_000)
    bgen.add_argument("--seed", type=int, default=1)
    bgen.add_argument("--out", type=Path, required=True, help="output .parquet or .csv")
    bgen.set_defaults(func=_cmd_book_generate)

    var = sub.add_parser("var", help="historical VaR and ES of a book by full revaluation")
    var.add_argument("--book", required=True, help="book .parquet or .csv")
    var.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    var.add_argument("--history", type=Path, required=True, help="market history .parquet")
    var.add_argument("--window", type=_positive_int, default=500, help="1-day changes (500)")
    var.add_argument("--out", type=Path, required=True, help="output folder")
    var.add_argument("--scheduler", default=None,
                     help="a Dask scheduler (tcp://host:8786); default $DASK_SCHEDULER_ADDRESS, "
                          "else a local cluster of one worker per core")  # fmt: skip
    var.add_argument("--workers", type=_positive_int, default=None, dest="dask_workers",
                     help="workers of the local cluster (default: one per core)")  # fmt: skip
    var.add_argument("--in-process", action="store_true", dest="in_process",
                     help="revalue in this process, without Dask")  # fmt: skip
    var.add_argument("--greeks", action="store_true",
                     help="also the Greeks' estimate of every day and where it misses")  # fmt: skip
    var.add_argument("--by", type=_by, default=("desk",), help=_BY_HELP)
    var.set_defaults(func=_cmd_var)
    stress = sub.add_parser("stress", help="a book's PnL under named stress scenarios")
    stress.add_argument("--book", required=True, help="book .parquet or .csv")
    stress.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    stress.add_argument("--scenarios", type=Path, default=None,
                        help="stress file JSON (default: the shipped library)")  # fmt: skip
    stress.add_argument("--out", type=Path, required=True, help="output folder")
    stress.add_argument("--by", type=_by, default=("desk",), help=_BY_HELP)
    stress.set_defaults(func=_cmd_stress)

    expl = sub.add_parser("explain", help="a book's PnL between two markets, explained")
    expl.add_argument("--book", required=True, help="book .parquet or .csv")
    expl.add_argument("--from", type=Path, required=True, dest="from_market",
                      help="the first market snapshot JSON")  # fmt: skip
    expl.add_argument("--to", type=Path, required=True, dest="to_market",
                      help="the second market snapshot JSON")  # fmt: skip
    expl.add_argument("--out", type=Path, required=True, help="output folder")
    expl.set_defaults(func=_cmd_explain)

    price = sub.add_parser("price", help="re-risk a book: pv and Greeks per position")
    price.add_argument("--book", required=True, help="book .parquet or .csv")
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
        "--tranche-method", choices=("mc", "recursion"), default="recursion", dest="tranche_method"
    )
    price.add_argument(
        "--key-rates",
        choices=("bump", "jacobian"),
        default="bump",
        dest="key_rates",
        help="key-rate DV01s by central ±1bp bumps of each quote, curves re-bootstrapped "
        "(default), or by the bootstrap's exact Jacobian (docs/greeks.md)",
    )
    price.add_argument(
        "--max-notional",
        type=_amounts,
        default=None,
        dest="max_notional",
        help="notional bounds per currency, e.g. USD=5e9,JPY=1e12 ('*' for the others; "
        "defaults in docs/book-format.md)",
    )
    price.set_defaults(func=_cmd_price)

    serve = sub.add_parser("serve", help="run the live risk service on a book")
    serve.add_argument("--book", type=Path, required=True, help="book .parquet or .csv")
    serve.add_argument("--market", type=Path, required=True, help="market snapshot JSON")
    serve.add_argument("--name", default=None, help="service name (default wb<pid>)")
    serve.add_argument(
        "--feed",
        default="synthetic",
        help="synthetic | none | a replay .parquet | an external tcp:// publisher",
    )
    serve.add_argument("--rate", type=float, default=5_000.0, help="synthetic ticks per second")
    serve.add_argument("--workers", type=_workers, default=None, help="e.g. rates=1,fx=2")
    serve.add_argument(
        "--no-standby",
        action="store_true",
        dest="no_standby",
        help="no warm standby process (saves its memory; a dead worker restarts cold)",
    )
    serve.add_argument(
        "--loss-every",
        type=float,
        default=None,
        dest="loss_every",
        help="seconds between two runs of the live VaR/ES and stresses (default 60; 0: no "
        "loss process; docs/var.md, 'Live')",
    )
    serve.add_argument("--limits", type=Path, default=None, help="limits JSON (docs/service.md)")
    serve.add_argument(
        "--sources", type=Path, default=None, help="HTTP polling sources JSON (docs/ticks.md)"
    )
    serve.add_argument("--paths", type=_positive_int, default=50_000, help="tranche MC paths")
    serve.add_argument(
        "--tranche-method", choices=("mc", "recursion"), default="recursion", dest="tranche_method"
    )
    serve.add_argument("--detach", action="store_true", help="return once the service is ready")
    remote = serve.add_argument_group(
        "remote access", "CurveZMQ listeners for clients on other machines (docs/service.md)"
    )
    remote.add_argument("--remote-host", dest="remote_host", default=None, help="listen address")
    remote.add_argument(
        "--remote-key", dest="remote_key", type=Path, default=None, help="server *.key_secret"
    )
    remote.add_argument(
        "--authorized-keys", dest="authorized_keys", type=Path, default=None,
        help="folder of admitted clients' *.key files",
    )  # fmt: skip
    remote.add_argument("--remote-control-port", dest="remote_control_port", type=int, default=0)
    remote.add_argument(
        "--remote-snapshots-port", dest="remote_snapshots_port", type=int, default=0
    )
    serve.set_defaults(func=_cmd_serve)

    keys = sub.add_parser("keys", help="make a CurveZMQ key pair for remote access")
    keys.add_argument("folder", type=Path, help="where to write NAME.key and NAME.key_secret")
    keys.add_argument("name", help="e.g. server, or the client's user name")
    keys.set_defaults(func=_cmd_keys)

    status = sub.add_parser("status", help="processes and health of a running service")
    status.add_argument("--name", default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    stop = sub.add_parser("stop", help="stop a running service")
    stop.add_argument("--name", default=None)
    stop.set_defaults(func=_cmd_stop)

    reload_book = sub.add_parser(
        "reload-book",
        help="take a new book: validate the booking file, then swap it in atomically",
    )
    reload_book.add_argument(
        "book", nargs="?", default=None, help="booking file (default: the one the service uses)"
    )
    reload_book.add_argument("--name", default=None)
    reload_book.set_defaults(func=_cmd_reload_book)

    from workbench.api.command import add_api_parser
    from workbench.reports.cli import add_eod_parser
    from workbench.widgets.dashboard import add_dashboard_parser

    add_eod_parser(sub)
    add_dashboard_parser(sub)
    add_api_parser(sub)

    reap = sub.add_parser("reap", help="unlink shared memory left by dead services")
    reap.add_argument("--dry-run", action="store_true", dest="dry_run")
    reap.set_defaults(func=_cmd_reap)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; bad input exits with status 2 and one clear message, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (MarketError, ValueError, FileNotFoundError, OSError, ServiceError) as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
