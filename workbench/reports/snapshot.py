"""The one risk snapshot a report is built from: taken from a live service or a batch re-risk.

A :class:`Snapshot` is saved as a folder of files next to the report, so the report can be
re-rendered and audited from them alone, and rebuilt (re-risked) from its pinned inputs alone:

==============================  ==============================================================
file                            content
==============================  ==============================================================
``snapshot.parquet``            one row per position: labels, raw risk columns and every
                                measure of :mod:`workbench.risk.aggregation` (USD)
``snapshot_key_rates.parquet``  key-rate DV01s (USD per 1bp), long format, with the quote's
                                curve, currency, tenor and tenor in years
``snapshot_curves.parquet``     zero rates of every curve on a grid (decimal per year)
``snapshot_market.json``        the market priced (a service: its quotes at the snapshot's
                                quote generation), in the market format of ``docs/formats.md``
``snapshot_book.parquet``       the book priced (``snapshot_book.csv`` for a CSV book), its
                                bytes as read
``snapshot.json``               identity (source, generation ids, files, as-of), the limits
                                in force and the engine's figures (service) or timings (batch)
==============================  ==============================================================
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl

from workbench.batch import BatchInputError, rerisk
from workbench.risk.limits import LimitConfig

POSITIONS_FILE: Final = "snapshot.parquet"
KEY_RATES_FILE: Final = "snapshot_key_rates.parquet"
CURVES_FILE: Final = "snapshot_curves.parquet"
MARKET_FILE: Final = "snapshot_market.json"
BOOK_STEM: Final = "snapshot_book"
"""The pinned book is ``snapshot_book`` with the suffix of the file priced (``.parquet``)."""
IDENTITY_FILE: Final = "snapshot.json"


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
        files it came from, ``taken_at_utc``; in service mode the ``generation`` (of the risk
        table), writer ``counters``, ``snapshot_seq``, ``quote_generation`` (of the quotes in
        ``snapshot_market.json``), ``service_pv_max_diff_usd`` and ``service`` name;
        ``key_rates_basis``.
    limits
        The limits in force, as ``{"measure", "limit", "desk"}`` dicts (USD).
    engine
        Service mode: the service's status (processes with their counters). Batch mode: the
        re-risk's timings in seconds.
    inputs
        The pinned inputs, file name → bytes: ``snapshot_market.json`` and
        ``snapshot_book.<suffix>`` (empty for a snapshot saved before inputs were pinned).
    """

    positions: pl.DataFrame
    key_rates: pl.DataFrame
    curves: pl.DataFrame
    identity: dict[str, Any]
    limits: list[dict[str, Any]]
    engine: dict[str, Any]
    inputs: dict[str, bytes] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        """Write the files of the module docstring into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.positions.write_parquet(folder / POSITIONS_FILE)
        self.key_rates.write_parquet(folder / KEY_RATES_FILE)
        self.curves.write_parquet(folder / CURVES_FILE)
        for name, data in self.inputs.items():
            (folder / name).write_bytes(data)
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


def pinned_book(folder: Path) -> Path | None:
    """The pinned book file of a saved snapshot (``snapshot_book.parquet`` or ``.csv``)."""
    found = sorted(folder.glob(f"{BOOK_STEM}.*"))
    return found[0] if found else None


def load_snapshot(folder: Path) -> Snapshot:
    """Read a snapshot saved by :meth:`Snapshot.save`."""
    if not is_snapshot(folder):
        raise SnapshotInputError(f"{folder}: no saved snapshot ({POSITIONS_FILE}, …) in it")
    meta = json.loads((folder / IDENTITY_FILE).read_text())
    curves_path = folder / CURVES_FILE
    book = pinned_book(folder)
    pinned = [p for p in (folder / MARKET_FILE, book) if p is not None and p.is_file()]
    return Snapshot(
        positions=pl.read_parquet(folder / POSITIONS_FILE),
        key_rates=pl.read_parquet(folder / KEY_RATES_FILE),
        curves=pl.read_parquet(curves_path) if curves_path.is_file() else _empty_curves(),
        identity=dict(meta["identity"]),
        limits=list(meta.get("limits", [])),
        engine=dict(meta.get("engine", {})),
        inputs={p.name: p.read_bytes() for p in pinned},
    )


# --- shared pieces ---------------------------------------------------------------------------


def labels_as_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Enum labels as plain strings (portable Parquet), without the shared-memory ``row`` and
    the monotonic ``updated_ns`` stamps (meaningless outside the process that read them)."""
    enums = [c for c, t in frame.schema.items() if isinstance(t, pl.Enum | pl.Categorical)]
    out = frame.with_columns(pl.col(enums).cast(pl.String))
    return out.drop([c for c in ("row", "updated_ns") if c in out.columns])


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


def snapshot_id(identity: dict[str, Any]) -> str:
    """``<service>:gen<generation>:seq<snapshot_seq>`` or ``batch:<as-of>:<book digest>``."""
    if identity["source"] == "service":
        return f"{identity['service']}:gen{identity['generation']}:seq{identity['snapshot_seq']}"
    return f"batch:{identity['as_of']}:{identity['book_sha']}"


def digest(data: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of ``data``: a file's identity in the report."""
    return hashlib.sha256(data).hexdigest()[:16]


def limit_dicts(limits: tuple[LimitConfig, ...] | list[LimitConfig]) -> list[dict[str, Any]]:
    """Limits as the ``{"measure", "limit", "desk"}`` dicts a snapshot records."""
    return [{"measure": x.measure, "limit": x.limit, "desk": x.desk} for x in limits]


def book_file_name(book: Path) -> str:
    """The pinned book's file name for a book file: ``snapshot_book`` and its suffix."""
    return BOOK_STEM + (book.suffix.lower() or ".parquet")


# --- batch ---------------------------------------------------------------------------------


def take_batch(
    *,
    book_path: Path,
    market_path: Path,
    as_of: date,
    n_paths: int = 50_000,
    limits: list[dict[str, Any]] | None = None,
) -> Snapshot:
    """Re-risk the book against the market file in this process (the ``workbench price`` path);
    both files are pinned into the snapshot as they were priced.

    Raises
    ------
    SnapshotInputError
        A missing file, a market not dated ``as_of``, or a file rewritten while it was priced.
    """
    if not book_path.is_file():
        raise SnapshotInputError(f"book file {book_path} does not exist")
    if not market_path.is_file():
        raise SnapshotInputError(f"market file {market_path} does not exist")
    inputs = {
        book_file_name(book_path): book_path.read_bytes(),
        MARKET_FILE: market_path.read_bytes(),
    }
    try:
        done = rerisk(book_path, market_path, as_of=as_of, n_paths=n_paths)
    except BatchInputError as exc:
        raise SnapshotInputError(str(exc)) from None
    for path, name in ((book_path, book_file_name(book_path)), (market_path, MARKET_FILE)):
        if path.read_bytes() != inputs[name]:
            raise SnapshotInputError(f"{path} was rewritten while it was priced: run again")
    positions = labels_as_strings(done.positions)
    identity: dict[str, Any] = {
        "source": "batch",
        "as_of": as_of.isoformat(),
        "book": str(book_path.resolve()),
        "market": str(market_path.resolve()),
        "book_sha": digest(inputs[book_file_name(book_path)]),
        "market_sha": digest(inputs[MARKET_FILE]),
        "pinned_book": book_file_name(book_path),
        "pinned_market": MARKET_FILE,
        "positions": positions.height,
        "n_paths": n_paths,
        "key_rates_basis": "the same re-risk",
        "taken_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    identity["snapshot_id"] = snapshot_id(identity)
    engine = {"mode": "batch", **done.timings}
    return Snapshot(
        positions, done.key_rates, done.curves, identity, list(limits or []), engine, inputs
    )


def read_limits(path: Path) -> list[dict[str, Any]]:
    """A limits JSON file (``docs/service.md``) as ``{"measure", "limit", "desk"}`` dicts."""
    try:
        parsed = msgspec.json.decode(path.read_bytes(), type=tuple[LimitConfig, ...])
    except msgspec.DecodeError as exc:
        raise SnapshotInputError(f"{path}: {exc}") from None
    return limit_dicts(parsed)
