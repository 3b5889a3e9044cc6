"""The close of a live service: its per-position risk and the quotes it priced them at, of one
quote generation, pinned into the snapshot so the report can be rebuilt from the folder alone.

Everything comes through the public client (:func:`workbench.client.connect`): the quotes from
:meth:`~workbench.client.Client.market`, the risk from :meth:`~workbench.client.Client.snapshot`,
the frozen book's path from the descriptor. The key-rate DV01s and curves, which the service
does not publish, are priced here (:func:`workbench.batch.rerisk`) on the pinned files: the
close market (the service's start-of-day market file with the quotes it held at the snapshot)
and the book it runs.

One generation: the quotes are read before and after the risk. When the service priced other
quotes in between (the two reads differ in quote generation or in quotes), or when the service's
PVs do not agree with the reprice on the pinned quotes to :data:`SAME_QUOTES_RELATIVE` of each
position's notional or PV (a worker had not yet priced that generation), all three reads are
taken again, until ``timeout_s`` has passed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from workbench.batch import BatchInputError, Rerisk, pin_market, rerisk
from workbench.client import Client, MarketView, ServiceError, connect
from workbench.client.stored import store_root
from workbench.reports.snapshot import (
    MARKET_FILE,
    Snapshot,
    SnapshotError,
    SnapshotInputError,
    book_file_name,
    digest,
    labels_as_strings,
    limit_dicts,
    snapshot_id,
)

SAME_QUOTES_RELATIVE: Final = 1e-9
"""The service's PV of a position and its reprice on the pinned quotes agree to this fraction of
the larger of its notional and its PV (both in its own currency) when they price the same
quotes: the two re-solve their curves from different starting points, which moves the PVs by
1e-13 of notional; one quote tick moves them by 1e-6 or more."""

RETRY_PAUSE_S: Final = 0.05
"""Seconds between two attempts at a consistent read."""


@dataclass(frozen=True)
class _Reads:
    """The three reads of one attempt: quotes, risk (with its identity), quotes again."""

    before: MarketView
    frame: pl.DataFrame
    ident: dict[str, Any]
    after: MarketView


def _read(client: Client) -> _Reads:
    before = client.market()
    frame, ident = client.snapshot()
    return _Reads(before, frame, ident, client.market())


def _stale_reasons(
    status: dict[str, Any], positions: pl.DataFrame, *, feed_mode: str, stale_after_s: float
) -> list[str]:
    reasons: list[str] = []
    if not status.get("ready", False):
        down = [p["name"] for p in status.get("processes", []) if p.get("state") != "ready"]
        reasons.append(f"not ready ({', '.join(down) or 'starting'})")
    for p in status.get("processes", []):
        age = float(p.get("heartbeat_age_s", 0.0))
        if age > stale_after_s:
            reasons.append(f"{p['name']} last heartbeat {age:.1f} s ago")
    n_stale = int(positions["stale"].sum()) if positions.height else 0
    if n_stale:
        reasons.append(f"{n_stale} stale positions (worker down)")
    n_unpriced = int(positions["pv"].is_nan().sum()) if positions.height else 0
    if n_unpriced:
        reasons.append(f"{n_unpriced} positions never priced")
    if feed_mode != "none" and positions.height:
        worst = float(positions["age_s"].max())  # type: ignore[arg-type]
        if worst > stale_after_s:
            reasons.append(f"oldest Greeks {worst:.1f} s old")
    return reasons


def pv_disagreement(service: pl.DataFrame, reprice: pl.DataFrame) -> tuple[float, float]:
    """How far the service's PVs are from a reprice of the same positions.

    Returns
    -------
    tuple[float, float]
        The largest absolute PV difference over the positions (USD), and the largest absolute
        difference in own currency as a fraction of the larger of the position's absolute
        notional and absolute PV (compare with :data:`SAME_QUOTES_RELATIVE`); ``inf`` for both
        when the two do not hold the same positions.
    """
    keep = ["position_id", "notional", "pv", "pv_ccy"]
    joined = service.select(keep).join(
        reprice.select(keep), on="position_id", how="inner", suffix="_r"
    )
    if joined.height != service.height or joined.height != reprice.height:
        return float("inf"), float("inf")
    if joined.height == 0:
        return 0.0, 0.0
    scale = pl.max_horizontal(pl.col("notional").abs(), pl.col("pv_ccy_r").abs(), pl.lit(1.0))
    out = joined.select(
        (pl.col("pv") - pl.col("pv_r")).abs().max().alias("usd"),
        ((pl.col("pv_ccy") - pl.col("pv_ccy_r")).abs() / scale).max().alias("rel"),
    )
    usd, rel = out.row(0)
    return float(usd), float(rel)


def _price_close(client: Client, reads: _Reads, folder: Path) -> tuple[Rerisk, dict[str, Any]]:
    """Pin the quotes of ``reads`` into ``folder``, reprice the frozen book on them; the
    re-risk and what the identity records of it."""
    config = client.descriptor.config
    start_market = Path(config.frozen_market or config.market)
    book = Path(config.frozen_book or config.book)
    market_file = folder / MARKET_FILE
    try:
        pinned = pin_market(start_market, reads.after.quotes, market_file)
    except BatchInputError as exc:
        raise SnapshotError(f"service {client.name}: {exc}") from None
    done = rerisk(book, market_file, n_paths=config.n_paths, tranche_method=config.tranche_method)
    usd, rel = pv_disagreement(reads.frame, done.positions)
    facts = {
        "quote_generation": reads.after.generation,
        "quotes_moved": pinned.moved,
        "service_pv_max_diff_usd": usd,
        "service_pv_max_diff_relative": rel,
        "start_market": str(start_market),
        "start_market_sha": digest(start_market.read_bytes()),
    }
    return done, facts


def take_service(
    name: str | None,
    *,
    as_of: date,
    stale_after_s: float,
    timeout_s: float = 60.0,
    limits: list[dict[str, Any]] | None = None,
) -> Snapshot:
    """The close of a running service: its per-position risk, and key-rate DV01s and curves
    priced on the quotes of the same quote generation, with those quotes and its book pinned.

    Parameters
    ----------
    name
        The service's name; ``None`` for the only one running.
    stale_after_s
        The service is stale when a process's last heartbeat, or (with a feed) the oldest
        Greeks, is older than this many seconds, or any position is stale or unpriced.
    timeout_s
        Seconds each request may take, and for which reads are retried until quotes and risk
        are of one generation.
    limits
        Limits to apply; ``None`` takes the service's configured limits.

    Raises
    ------
    SnapshotError
        No such service, no reply, a stale service, or no consistent read within ``timeout_s``.
    SnapshotInputError
        The service's market is not dated ``as_of``.
    """
    try:
        client = connect(name)
    except ServiceError as exc:
        raise SnapshotError(str(exc)) from None
    client.timeout_s = timeout_s
    try:
        return _take(client, as_of, stale_after_s, timeout_s, limits)
    except ServiceError as exc:
        raise SnapshotError(str(exc)) from None
    finally:
        client.close()


def _take(
    client: Client,
    as_of: date,
    stale_after_s: float,
    timeout_s: float,
    limits: list[dict[str, Any]] | None,
) -> Snapshot:
    config = client.descriptor.config
    deadline = time.monotonic() + timeout_s
    attempts = 0
    why = ""
    with tempfile.TemporaryDirectory(prefix="workbench-close-") as tmp:
        folder = Path(tmp)
        while True:
            attempts += 1
            t0 = time.perf_counter()
            status = client.status()
            reads = _read(client)
            t_snap = time.perf_counter() - t0
            reasons = _stale_reasons(
                status, reads.frame, feed_mode=config.feed.mode, stale_after_s=stale_after_s
            )
            if reasons:
                raise SnapshotError(f"service {client.name} is stale: " + "; ".join(reasons))
            if reads.after.as_of != as_of.isoformat():
                raise SnapshotInputError(
                    f"service {client.name} prices a market as of {reads.after.as_of}, "
                    f"the report is as of {as_of}"
                )
            if reads.ident.get("book_id", config.book_id) != config.book_id:
                raise SnapshotError(f"service {client.name} reloaded its book meanwhile: run again")
            if reads.before.generation != reads.after.generation or not (
                reads.before.quotes.equals(reads.after.quotes)
            ):
                why = (
                    f"quotes moved during the read (generation {reads.before.generation} "
                    f"then {reads.after.generation})"
                )
            else:
                t0 = time.perf_counter()
                done, facts = _price_close(client, reads, folder)
                t_extra = time.perf_counter() - t0
                if facts["service_pv_max_diff_relative"] <= SAME_QUOTES_RELATIVE:
                    break
                why = (
                    f"the service's PVs are {facts['service_pv_max_diff_usd']:,.2f} USD from a "
                    f"reprice on its quotes of generation {reads.after.generation}"
                )
            if time.monotonic() + RETRY_PAUSE_S > deadline:
                raise SnapshotError(
                    f"service {client.name}: no read of one quote generation in "
                    f"{timeout_s:g} s ({attempts} attempts; last: {why})"
                )
            time.sleep(RETRY_PAUSE_S)
        book = Path(config.frozen_book or config.book)
        inputs = {
            book_file_name(book): book.read_bytes(),
            MARKET_FILE: (folder / MARKET_FILE).read_bytes(),
        }
    ident = reads.ident
    identity: dict[str, Any] = {
        "source": "service",
        "as_of": as_of.isoformat(),
        "service": ident.get("service", client.name),
        "generation": int(ident["generation"]),
        "counters": [int(c) for c in ident.get("counters", [])],
        "snapshot_seq": int(ident.get("snapshot_seq", 0)),
        "service_pid": client.descriptor.pid,
        "feed": config.feed.mode,
        "book": config.book,
        "market": config.market,
        "book_id": config.book_id,
        "book_generation": config.book_generation,
        "book_sha": digest(inputs[book_file_name(book)]),
        "market_sha": digest(inputs[MARKET_FILE]),
        "pinned_book": book_file_name(book),
        "pinned_market": MARKET_FILE,
        **facts,
        "attempts": attempts,
        "positions": reads.frame.height,
        "n_paths": config.n_paths,
        "tranche_method": config.tranche_method,
        "key_rates_basis": (
            f"the service's quotes of generation {facts['quote_generation']} ({MARKET_FILE})"
        ),
        "taken_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": str(store_root(client.descriptor)),
    }
    identity["snapshot_id"] = snapshot_id(identity)
    engine = dict(status)
    engine["mode"] = "service"
    engine["snapshot_request_s"] = t_snap
    engine["key_rates_and_curves_s"] = t_extra
    in_force = limits if limits is not None else limit_dicts(config.limits)
    return Snapshot(
        labels_as_strings(reads.frame),
        done.key_rates,
        done.curves,
        identity,
        in_force,
        engine,
        inputs,
    )
