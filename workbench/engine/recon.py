"""Reconciliation: the engine's positions against the booking file, by position id.

A pure function over two frames; the service runs it on a timer (reading the file) and raises a
breach (:func:`recon_breach`) when anything does not agree.
"""

from __future__ import annotations

import math

import polars as pl

from workbench.engine.messages import Breach

MISSING_IN_ENGINE = "missing in engine"
MISSING_IN_FILE = "missing in file"
NOTIONAL_DIFFERS = "notional differs"
DUPLICATE_IN_FILE = "duplicate in file"
DUPLICATE_IN_ENGINE = "duplicate in engine"

RECON_SCHEMA = pl.Schema(
    {
        "position_id": pl.String(),
        "file_notional": pl.Float64(),
        "engine_notional": pl.Float64(),
        "reason": pl.String(),
    }
)
"""The columns of :func:`recon`'s result."""


def _side(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    for name in ("position_id", "notional"):
        if name not in frame.columns:
            raise ValueError(f"{what}: missing column {name!r}")
    return frame.select(
        pl.col("position_id").cast(pl.String),
        pl.col("notional").cast(pl.Float64),
    )


def _duplicates(side: pl.DataFrame, reason: str, column: str) -> pl.DataFrame:
    """Every row of a repeated position id, with its notional under ``column``."""
    other = "engine_notional" if column == "file_notional" else "file_notional"
    dup = side.filter(pl.col("position_id").is_duplicated())
    return dup.select(
        "position_id",
        pl.col("notional").alias(column),
        pl.lit(None, dtype=pl.Float64).alias(other),
        pl.lit(reason).alias("reason"),
    )


def recon(
    book_frame_from_file: pl.DataFrame, engine_static: pl.DataFrame, tol: float = 0.0
) -> pl.DataFrame:
    """Positions that differ between the booking file and the engine.

    Parameters
    ----------
    book_frame_from_file
        The file's positions: at least ``position_id`` and ``notional`` (signed, in the
        position's currency), e.g. ``polars.read_parquet`` of the book file.
    engine_static
        The engine's positions: :func:`engine.aggregation.static_frame` (same two columns).
    tol
        Largest absolute notional difference that still agrees, in the position's currency.

    Returns
    -------
    pl.DataFrame
        One row per mismatch, sorted by ``position_id``: ``position_id``, ``file_notional``,
        ``engine_notional`` (null on the side where it is missing) and ``reason`` — one of
        ``"missing in engine"``, ``"missing in file"``, ``"notional differs"`` (including a NaN
        or null notional on either side), ``"duplicate in file"``, ``"duplicate in engine"``.
        Empty (same columns) when everything agrees.

    Raises
    ------
    ValueError
        A missing column, or a negative or NaN ``tol``.
    """
    if not (tol >= 0.0) or math.isinf(tol):
        raise ValueError(f"tol {tol!r}: expected a finite amount >= 0")
    file = _side(book_frame_from_file, "book file frame")
    engine = _side(engine_static, "engine static frame")
    dups = [
        _duplicates(file, DUPLICATE_IN_FILE, "file_notional"),
        _duplicates(engine, DUPLICATE_IN_ENGINE, "engine_notional"),
    ]
    file = file.unique("position_id", keep="first", maintain_order=True)
    engine = engine.unique("position_id", keep="first", maintain_order=True)
    joined = file.rename({"notional": "file_notional"}).join(
        engine.rename({"notional": "engine_notional"}),
        on="position_id",
        how="full",
        coalesce=True,
    )
    a = pl.col("file_notional").fill_nan(None)
    b = pl.col("engine_notional").fill_nan(None)
    in_file = pl.col("position_id").is_in(file["position_id"].implode())
    in_engine = pl.col("position_id").is_in(engine["position_id"].implode())
    reason = (
        pl.when(~in_engine)
        .then(pl.lit(MISSING_IN_ENGINE))
        .when(~in_file)
        .then(pl.lit(MISSING_IN_FILE))
        .when(a.is_null() | b.is_null() | ((a - b).abs() > tol))
        .then(pl.lit(NOTIONAL_DIFFERS))
        .otherwise(None)
    )
    found = joined.with_columns(reason.alias("reason")).filter(pl.col("reason").is_not_null())
    parts = [found, *dups]
    out = pl.concat([p.select(RECON_SCHEMA.names()).cast(RECON_SCHEMA) for p in parts])
    return out.sort("position_id", "reason", maintain_order=True)


def recon_breach(mismatches: pl.DataFrame, now_ns: int) -> Breach | None:
    """A firm-wide ``recon`` breach counting the mismatches of :func:`recon`, or None if none.

    ``value`` is the number of mismatched positions, ``limit`` 0 and ``since_ns`` ``now_ns``.
    """
    if mismatches.height == 0:
        return None
    count = mismatches["position_id"].n_unique()
    return Breach(scope="firm", measure="recon", value=float(count), limit=0.0, since_ns=now_ns)
