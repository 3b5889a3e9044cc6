"""The one risk snapshot a report is built from: taken from a live service or a batch re-risk.

A :class:`Snapshot` is saved as a folder of files next to the report, so the report can be
re-rendered and audited from them alone:

==============================  ==============================================================
file                            content
==============================  ==============================================================
``snapshot.parquet``            one row per position: labels, raw risk columns and every
                                measure of :mod:`workbench.risk.aggregation` (USD)
``snapshot_key_rates.parquet``  key-rate DV01s (USD per 1bp), long format, with the quote's
                                curve, currency, tenor and tenor in years
``snapshot_curves.parquet``     zero rates of every curve on a grid (decimal per year)
``snapshot.json``               identity (source, generation id, files, as-of), the limits
                                in force and the engine's figures (service) or timings (batch)
==============================  ==============================================================
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl

from workbench.batch import key_rate_frame
from workbench.book.io import load_book
from workbench.book.schema import Book
from workbench.client import ServiceError, connect
from workbench.engine.processes import inputs
from workbench.market.io import load_market
from workbench.market.model import MarketSnapshot
from workbench.market.schedules import tenor_years
from workbench.pricing.curves import CurveSet
from workbench.pricing.portfolio import BookRisk, PortfolioPricer
from workbench.risk.aggregation import risk_frame, static_frame
from workbench.risk.limits import LimitConfig

POSITIONS_FILE: Final = "snapshot.parquet"
KEY_RATES_FILE: Final = "snapshot_key_rates.parquet"
CURVES_FILE: Final = "snapshot_curves.parquet"
IDENTITY_FILE: Final = "snapshot.json"

CURVE_GRID_YEARS: Final = np.concatenate([np.linspace(0.1, 2.0, 20), np.linspace(2.25, 30.0, 112)])
"""Curve times (ACT/365F years) at which ``snapshot_curves.parquet`` holds zero rates."""


class SnapshotError(RuntimeError):
    """The service is missing, not ready or stale: no snapshot can be trusted."""


class SnapshotInputError(ValueError):
    """Bad input: missing files, or a market whose date is not the report's as-of date."""


@dataclass(frozen=True)
class Snapshot:
    """Everything a report reads.

    Attributes
    ----------
    positions
        One row per position: ``position_id``, ``desk``, ``book``, ``currency``,
        ``asset_class``, ``product``, ``underlying`` (String), ``notional``, the raw risk
        columns (``pv``, ``pv_ccy``, ``delta``, ``gamma``, ``vega``, ``theta``), ``stale``,
        ``age_s`` and every measure of :data:`workbench.risk.aggregation.MEASURES` (USD).
    key_rates
        ``position_id``, ``quote_id``, ``curve``, ``currency``, ``tenor``, ``years`` and
        ``kr_dv01`` (USD per +1bp on that quote, first order).
    curves
        ``curve``, ``currency``, ``kind`` (``ois`` or ``term``), ``years`` and ``zero_rate``
        (continuously compounded, decimal per year).
    identity
        JSON-able: ``source`` (``"batch"`` or ``"service"``), ``snapshot_id``, ``as_of``, the
        files it came from, ``taken_at_utc``; in service mode the ``generation``, writer
        ``counters``, ``snapshot_seq`` and ``service`` name; ``key_rates_basis``.
    limits
        The limits in force, as ``{"measure", "limit", "desk"}`` dicts (USD).
    engine
        Service mode: the service's status (processes with their counters). Batch mode: the
        re-risk's timings in seconds.
    """

    positions: pl.DataFrame
    key_rates: pl.DataFrame
    curves: pl.DataFrame
    identity: dict[str, Any]
    limits: list[dict[str, Any]]
    engine: dict[str, Any]

    def save(self, folder: Path) -> None:
        """Write the four files of the module docstring into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.positions.write_parquet(folder / POSITIONS_FILE)
        self.key_rates.write_parquet(folder / KEY_RATES_FILE)
        self.curves.write_parquet(folder / CURVES_FILE)
        meta = {"identity": self.identity, "limits": self.limits, "engine": self.engine}
        (folder / IDENTITY_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def is_snapshot(folder: Path) -> bool:
    """Whether ``folder`` holds a saved snapshot."""
    return all((folder / f).is_file() for f in (POSITIONS_FILE, KEY_RATES_FILE, IDENTITY_FILE))


def load_snapshot(folder: Path) -> Snapshot:
    """Read a snapshot saved by :meth:`Snapshot.save`."""
    if not is_snapshot(folder):
        raise SnapshotInputError(f"{folder}: no saved snapshot ({POSITIONS_FILE}, …) in it")
    meta = json.loads((folder / IDENTITY_FILE).read_text())
    curves_path = folder / CURVES_FILE
    return Snapshot(
        positions=pl.read_parquet(folder / POSITIONS_FILE),
        key_rates=pl.read_parquet(folder / KEY_RATES_FILE),
        curves=pl.read_parquet(curves_path) if curves_path.is_file() else _empty_curves(),
        identity=dict(meta["identity"]),
        limits=list(meta.get("limits", [])),
        engine=dict(meta.get("engine", {})),
    )


# --- shared pieces ---------------------------------------------------------------------------


def _labels_as_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Enum labels as plain strings (portable Parquet), without the shared-memory ``row``."""
    enums = [c for c, t in frame.schema.items() if isinstance(t, pl.Enum | pl.Categorical)]
    out = frame.with_columns(pl.col(enums).cast(pl.String))
    return out.drop([c for c in ("row", "updated_ns") if c in out.columns])


def quote_table(market: MarketSnapshot) -> pl.DataFrame:
    """Every curve quote: ``quote_id``, ``curve``, ``currency``, ``tenor``, ``years``."""
    rows = [
        (inst.quote, spec.id, spec.currency, inst.tenor, tenor_years(inst.tenor))
        for spec in market.curves
        for inst in spec.instruments
    ]
    return pl.DataFrame(
        rows,
        schema={
            "quote_id": pl.String,
            "curve": pl.String,
            "currency": pl.String,
            "tenor": pl.String,
            "years": pl.Float64,
        },
        orient="row",
    )


def _key_rates(book: Book, market: MarketSnapshot, risk: BookRisk) -> pl.DataFrame:
    long = key_rate_frame(book, market, risk)
    return long.join(quote_table(market), on="quote_id", how="left").select(
        "position_id", "quote_id", "curve", "currency", "tenor", "years", "kr_dv01"
    )


def _empty_curves() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "curve": pl.String,
            "currency": pl.String,
            "kind": pl.String,
            "years": pl.Float64,
            "zero_rate": pl.Float64,
        }
    )


def curve_table(market: MarketSnapshot) -> pl.DataFrame:
    """Zero rates of every curve of ``market`` on :data:`CURVE_GRID_YEARS`."""
    curves = CurveSet(market)
    parts = []
    for spec in market.curves:
        z = curves[spec.id].zero_rate(CURVE_GRID_YEARS)
        n = CURVE_GRID_YEARS.size
        parts.append(
            pl.DataFrame(
                {
                    "curve": [spec.id] * n,
                    "currency": [spec.currency] * n,
                    "kind": [spec.kind] * n,
                    "years": CURVE_GRID_YEARS,
                    "zero_rate": z,
                }
            )
        )
    return pl.concat(parts) if parts else _empty_curves()


def _load_market(path: Path, as_of: date) -> MarketSnapshot:
    if not path.is_file():
        raise SnapshotInputError(f"market file {path} does not exist")
    market = load_market(path)
    if market.as_of != as_of:
        raise SnapshotInputError(
            f"market {path} is as of {market.as_of}, the report is as of {as_of}"
        )
    return market


def _snapshot_id(identity: dict[str, Any]) -> str:
    if identity["source"] == "service":
        return f"{identity['service']}:gen{identity['generation']}:seq{identity['snapshot_seq']}"
    return f"batch:{identity['as_of']}:{identity['book_sha']}"


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _limit_dicts(limits: tuple[LimitConfig, ...] | list[LimitConfig]) -> list[dict[str, Any]]:
    return [{"measure": x.measure, "limit": x.limit, "desk": x.desk} for x in limits]


# --- batch ---------------------------------------------------------------------------------


def take_batch(
    *,
    book_path: Path,
    market_path: Path,
    as_of: date,
    n_paths: int = 50_000,
    limits: list[dict[str, Any]] | None = None,
) -> Snapshot:
    """Re-risk the book against the market file in this process (the ``workbench price`` path).

    Raises
    ------
    SnapshotInputError
        A missing file, or a market not dated ``as_of``.
    """
    if not book_path.is_file():
        raise SnapshotInputError(f"book file {book_path} does not exist")
    t0 = time.perf_counter()
    market = _load_market(market_path, as_of)
    book = load_book(book_path, market=market)
    t_load = time.perf_counter() - t0
    pricer = PortfolioPricer(book, market, n_paths=n_paths)
    t0 = time.perf_counter()
    risk = pricer.risk(market)
    t_price = time.perf_counter() - t0
    now = time.monotonic_ns()
    n = len(book)
    cols = {
        "pv": risk.pv,
        "pv_ccy": risk.pv_ccy,
        "delta": risk.delta,
        "gamma": risk.gamma,
        "vega": risk.vega,
        "theta": risk.theta,
        "stale": np.zeros(n),
        "updated_ns": np.full(n, now, dtype=np.int64),
    }
    positions = _labels_as_strings(risk_frame(static_frame(book), cols, now))
    t0 = time.perf_counter()
    key_rates = _key_rates(book, market, risk)
    curves = curve_table(market)
    t_extra = time.perf_counter() - t0
    identity: dict[str, Any] = {
        "source": "batch",
        "as_of": as_of.isoformat(),
        "book": str(book_path.resolve()),
        "market": str(market_path.resolve()),
        "book_sha": _file_digest(book_path),
        "market_sha": _file_digest(market_path),
        "positions": n,
        "n_paths": n_paths,
        "key_rates_basis": "the same re-risk",
        "taken_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    identity["snapshot_id"] = _snapshot_id(identity)
    engine = {
        "mode": "batch",
        "load_s": t_load,
        "setup_s": pricer.setup_seconds,
        "price_s": t_price,
        "key_rates_and_curves_s": t_extra,
        "stages_s": dict(risk.timings),
    }
    return Snapshot(positions, key_rates, curves, identity, list(limits or []), engine)


# --- service -------------------------------------------------------------------------------


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


def take_service(
    name: str | None,
    *,
    as_of: date,
    stale_after_s: float,
    timeout_s: float = 60.0,
    limits: list[dict[str, Any]] | None = None,
) -> Snapshot:
    """One consistent copy of a running service's risk, and its identity.

    The per-position risk and its generation id come from :meth:`Client.snapshot`. Key-rate
    DV01s and curves are not published by the service: they are computed from the market file
    the service was started with (``identity["key_rates_basis"]`` says so; with a live feed
    they are start-of-day figures).

    Parameters
    ----------
    name
        The service's name; ``None`` for the only one running.
    stale_after_s
        The service is stale when a process's last heartbeat, or (with a feed) the oldest
        Greeks, is older than this many seconds, or any position is stale or unpriced.
    limits
        Limits to apply; ``None`` takes the service's configured limits.

    Raises
    ------
    SnapshotError
        No such service, no reply, or a stale service.
    SnapshotInputError
        The service's market is not dated ``as_of``.
    """
    try:
        client = connect(name)
    except ServiceError as exc:
        raise SnapshotError(str(exc)) from None
    client.timeout_s = timeout_s
    try:
        t0 = time.perf_counter()
        status = client.status()
        frame, ident = client.snapshot()
        t_snap = time.perf_counter() - t0
    except ServiceError as exc:
        raise SnapshotError(str(exc)) from None
    finally:
        client.close()
    config = client.descriptor.config
    reasons = _stale_reasons(status, frame, feed_mode=config.feed.mode, stale_after_s=stale_after_s)
    if reasons:
        raise SnapshotError(f"service {client.name} is stale: " + "; ".join(reasons))
    # the copies the service prices, not the files (which the booking system may have
    # rewritten since the service started)
    market_path = Path(inputs.market_path(config))
    book_file = Path(inputs.book_path(config))
    market = _load_market(market_path, as_of)
    t0 = time.perf_counter()
    book = load_book(book_file, market=market)
    risk = PortfolioPricer(book, market, n_paths=config.n_paths).risk(market)
    key_rates = _key_rates(book, market, risk)
    curves = curve_table(market)
    t_extra = time.perf_counter() - t0
    basis = (
        "the service's market file (no feed: the live market)"
        if config.feed.mode == "none"
        else f"the service's market file at start of day (live feed {config.feed.mode!r})"
    )
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
        "book_sha": _file_digest(book_file),
        "market_sha": _file_digest(market_path),
        "positions": frame.height,
        "n_paths": config.n_paths,
        "key_rates_basis": basis,
        "taken_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    identity["snapshot_id"] = _snapshot_id(identity)
    engine = dict(status)
    engine["mode"] = "service"
    engine["snapshot_request_s"] = t_snap
    engine["key_rates_and_curves_s"] = t_extra
    in_force = limits if limits is not None else _limit_dicts(config.limits)
    return Snapshot(_labels_as_strings(frame), key_rates, curves, identity, in_force, engine)


def read_limits(path: Path) -> list[dict[str, Any]]:
    """A limits JSON file (``docs/service.md``) as ``{"measure", "limit", "desk"}`` dicts."""
    try:
        parsed = msgspec.json.decode(path.read_bytes(), type=tuple[LimitConfig, ...])
    except msgspec.DecodeError as exc:
        raise SnapshotInputError(f"{path}: {exc}") from None
    return _limit_dicts(parsed)
