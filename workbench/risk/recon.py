"""Reconciliation: the engine's positions against the booking file, by position id.

A pure function over two frames; the service runs it on a timer (reading the file) and raises a
breach (:func:`recon_breach`) when anything does not agree.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from workbench.book.schema import Book, Categorical
from workbench.risk.breaches import Breach

MISSING_IN_ENGINE = "missing in engine"
MISSING_IN_FILE = "missing in file"
NOTIONAL_DIFFERS = "notional differs"
DUPLICATE_IN_FILE = "duplicate in file"
DUPLICATE_IN_ENGINE = "duplicate in engine"
TERMS_DIFFER = "terms differ"

TERM_COLUMNS = (
    "product",
    "desk",
    "book",
    "currency",
    "underlying",
    "start",
    "maturity",
    "fixed_rate",
    "float_spread",
    "strike",
    "option_sign",
    "attach",
    "detach",
    "coupon",
)
"""Every term of a position besides its notional that a recon compares (:func:`terms_frame`)."""
_DETAIL_IDS = 5

RECON_SCHEMA = pl.Schema(
    {
        "position_id": pl.String(),
        "file_notional": pl.Float64(),
        "engine_notional": pl.Float64(),
        "reason": pl.String(),
    }
)
"""The columns of :func:`recon`'s result."""


def terms_frame(book: Book) -> pl.DataFrame:
    """One row per position of ``book`` with ``position_id``, ``notional`` and every column of
    :data:`TERM_COLUMNS` (labels as strings, dates as dates, numbers as Float64; NaN where a
    term does not apply): what :func:`recon` compares."""

    def labels(c: Categorical) -> list[str]:
        return [c.labels[int(i)] for i in c.codes]

    data: dict[str, object] = {
        "position_id": list(book.position_id),
        "notional": book.notional,
    }
    for name in ("product", "desk", "book", "currency", "underlying"):
        data[name] = labels(getattr(book, name))
    for name in ("start", "maturity"):
        data[name] = pl.Series(name, getattr(book, name).astype("datetime64[D]"), dtype=pl.Date)
    for name in ("fixed_rate", "float_spread", "strike", "option_sign", "attach", "detach",
                 "coupon"):  # fmt: skip
        data[name] = np.asarray(getattr(book, name), dtype=np.float64)
    return pl.DataFrame(data)


def _side(frame: pl.DataFrame, what: str, terms: list[str]) -> pl.DataFrame:
    for name in ("position_id", "notional"):
        if name not in frame.columns:
            raise ValueError(f"{what}: missing column {name!r}")
    return frame.select(
        pl.col("position_id").cast(pl.String),
        pl.col("notional").cast(pl.Float64),
        *terms,
    )


def _labels_as_text(frame: pl.DataFrame, terms: list[str]) -> list[pl.Expr]:
    dtypes = frame.schema
    return [
        pl.col(c).cast(pl.String) for c in terms if isinstance(dtypes[c], pl.Enum | pl.Categorical)
    ]


def _term_differs(name: str, dtype: pl.DataType) -> pl.Expr:
    """True where the file's and the engine's ``name`` differ (NaN/null equal to NaN/null)."""
    a, b = pl.col(f"{name}_file"), pl.col(f"{name}_engine")
    if dtype.is_float():
        a, b = a.fill_nan(None), b.fill_nan(None)
    both_null = a.is_null() & b.is_null()
    return ~both_null & (a.is_null() | b.is_null() | (a != b)).fill_null(True)


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
        The engine's positions: :func:`risk.aggregation.static_frame` (same two columns).
        Every column of :data:`TERM_COLUMNS` present in both frames is compared too
        (:func:`terms_frame` gives them all).
    tol
        Largest absolute notional difference that still agrees, in the position's currency.

    Returns
    -------
    pl.DataFrame
        One row per mismatch, sorted by ``position_id``: ``position_id``, ``file_notional``,
        ``engine_notional`` (null on the side where it is missing) and ``reason`` — one of
        ``"missing in engine"``, ``"missing in file"``, ``"notional differs"`` (including a NaN
        or null notional on either side), ``"terms differ"`` (same notional, another term
        differs), ``"duplicate in file"``, ``"duplicate in engine"``.
        Empty (same columns) when everything agrees.

    Raises
    ------
    ValueError
        A missing column, or a negative or NaN ``tol``.
    """
    if not (tol >= 0.0) or math.isinf(tol):
        raise ValueError(f"tol {tol!r}: expected a finite amount >= 0")
    terms = [
        c for c in TERM_COLUMNS if c in book_frame_from_file.columns and c in engine_static.columns
    ]
    file = _side(book_frame_from_file, "book file frame", terms)
    engine = _side(engine_static, "engine static frame", terms)
    dups = [
        _duplicates(file, DUPLICATE_IN_FILE, "file_notional"),
        _duplicates(engine, DUPLICATE_IN_ENGINE, "engine_notional"),
    ]
    file = file.unique("position_id", keep="first", maintain_order=True)
    engine = engine.unique("position_id", keep="first", maintain_order=True)
    file_terms = {c: f"{c}_file" for c in terms}
    engine_terms = {c: f"{c}_engine" for c in terms}
    # compare labels as text: the two sides' Enum categories need not agree
    file = file.with_columns(_labels_as_text(file, terms))
    engine = engine.with_columns(_labels_as_text(engine, terms))
    joined = file.rename({"notional": "file_notional", **file_terms}).join(
        engine.rename({"notional": "engine_notional", **engine_terms}),
        on="position_id",
        how="full",
        coalesce=True,
    )
    a = pl.col("file_notional").fill_nan(None)
    b = pl.col("engine_notional").fill_nan(None)
    differs = [_term_differs(c, file.schema[c]) for c in terms]
    in_file = pl.col("position_id").is_in(file["position_id"].implode())
    in_engine = pl.col("position_id").is_in(engine["position_id"].implode())
    reason = (
        pl.when(~in_engine)
        .then(pl.lit(MISSING_IN_ENGINE))
        .when(~in_file)
        .then(pl.lit(MISSING_IN_FILE))
        .when(a.is_null() | b.is_null() | ((a - b).abs() > tol))
        .then(pl.lit(NOTIONAL_DIFFERS))
        .when(pl.any_horizontal([pl.lit(False), *differs]))
        .then(pl.lit(TERMS_DIFFER))
        .otherwise(None)
    )
    found = joined.with_columns(reason.alias("reason")).filter(pl.col("reason").is_not_null())
    parts = [found, *dups]
    out = pl.concat([p.select(RECON_SCHEMA.names()).cast(RECON_SCHEMA) for p in parts])
    return out.sort("position_id", "reason", maintain_order=True)


def recon_breach(mismatches: pl.DataFrame, now_ns: int) -> Breach | None:
    """A firm-wide ``recon`` breach counting the mismatches of :func:`recon`, or None if none.

    ``value`` is the number of mismatched positions, ``limit`` 0 and ``since_ns`` ``now_ns``;
    ``detail`` names what changed on the booking file: positions added (on file, not priced),
    removed (priced, not on file), changed and duplicated, the first few ids of each.
    """
    if mismatches.height == 0:
        return None
    count = mismatches["position_id"].n_unique()
    return Breach(
        scope="firm",
        measure="recon",
        value=float(count),
        limit=0.0,
        since_ns=now_ns,
        detail=recon_detail(mismatches),
    )


def recon_detail(mismatches: pl.DataFrame) -> str:
    """``"200 removed (IRS-000001, …), 3 added (…), 1 changed (…)"``: :func:`recon`'s result
    in words, from the booking file's side."""
    kinds = (
        ("added", (MISSING_IN_ENGINE,)),
        ("removed", (MISSING_IN_FILE,)),
        ("changed", (NOTIONAL_DIFFERS, TERMS_DIFFER)),
        ("duplicated", (DUPLICATE_IN_FILE, DUPLICATE_IN_ENGINE)),
    )
    parts = []
    for word, reasons in kinds:
        ids = (
            mismatches.filter(pl.col("reason").is_in(list(reasons)))["position_id"]
            .unique(maintain_order=True)
            .to_list()
        )
        if not ids and word == "duplicated":
            continue
        shown = ", ".join(ids[:_DETAIL_IDS]) + (", …" if len(ids) > _DETAIL_IDS else "")
        parts.append(f"{len(ids)} {word}" + (f" ({shown})" if ids else ""))
    return ", ".join(parts)
