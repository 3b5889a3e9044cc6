"""Roll-ups of the live risk: Polars over the risk columns, by any grouping of the book's labels.

Pure functions, no I/O and no clock: the time ``now_ns`` (``time.monotonic_ns``) is passed in.

The risk columns hold one ``delta`` per position whose meaning depends on the product (see
``docs/greeks.md``): a DV01 for a swap, a 1% spot delta for an FX option. Adding them would add
basis points to percent, so :func:`risk_frame` splits them into measures that can be summed,
all in USD:

================  ============================================================================
measure           meaning (USD)
================  ============================================================================
``pv``            present value
``dv01``          rates positions: PV change for +1bp on every quote of their curves, per 1bp
``cs01``          credit positions (index and tranches): PV change for +1bp index spread
``fx_delta``      FX positions: PV change for a +1% relative move of the pair's spot
``eq_delta``      equity positions: PV change for a +1% move of the equity spot
``rates_gamma``   change of ``dv01`` for another +1bp (per 1bp²)
``credit_gamma``  change of ``cs01`` for another +1bp (per 1bp²)
``fx_gamma``      change of ``fx_delta`` for another +1% move
``eq_gamma``      change of ``eq_delta`` for another +1% move
``vega``          FX and equity options: PV change for +1 vol point (0.01) of implied vol
``corr01``        credit tranches: PV change for +1% (0.01 absolute) base correlation
``theta``         PV change for rolling the valuation date one calendar day
================  ============================================================================

A position never priced has NaN Greeks: it is left out of the sums and counted as
``unpriced``; a stale position (its worker is down) keeps its last values, which are
summed, and is counted as ``stale``. ``max_age_s`` is the worst age of a group in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import polars as pl

from workbench.book.schema import ASSET_CLASS, Book, Categorical

ASSET_CLASSES: Final[tuple[str, ...]] = ("rates", "fx", "credit", "equity")
"""Asset classes in display order (the order of ``engine.transport.shm.ASSET_CLASSES``)."""

GROUP_COLUMNS: Final[tuple[str, ...]] = (
    "desk",
    "book",
    "currency",
    "asset_class",
    "product",
    "underlying",
)
"""Columns a roll-up may group by."""

STALE_REASON_TEXT: Final[tuple[str, ...]] = ("", "worker down", "reprice failed", "not priced yet")
"""The text of each ``stale_reason`` code of the risk table
(``engine.transport.shm.STALE_REASONS``)."""

RISK_INPUTS: Final[tuple[str, ...]] = ("pv", "pv_ccy", "delta", "gamma", "vega", "theta")
"""The float64 risk columns :func:`risk_frame` reads (``engine.transport.shm.RISK_COLUMNS``)."""

NETTED: Final[tuple[str, ...]] = ("pv", "dv01", "cs01", "fx_delta", "eq_delta")
"""Measures reported both net and gross (``<measure>_gross``, the sum of absolute values)."""

MEASURES: Final[tuple[str, ...]] = (
    "pv",
    "dv01",
    "cs01",
    "fx_delta",
    "eq_delta",
    "rates_gamma",
    "credit_gamma",
    "fx_gamma",
    "eq_gamma",
    "vega",
    "corr01",
    "theta",
)
"""Every summable measure, in USD (units in the module docstring)."""

DELTA_BY_CLASS: Final[dict[str, str]] = {
    "rates": "dv01",
    "credit": "cs01",
    "fx": "fx_delta",
    "equity": "eq_delta",
}
"""The measure each asset class's ``delta`` is summed into."""
GAMMA_BY_CLASS: Final[dict[str, str]] = {
    "rates": "rates_gamma",
    "credit": "credit_gamma",
    "fx": "fx_gamma",
    "equity": "eq_gamma",
}
"""The measure each asset class's ``gamma`` is summed into."""


def _enum(column: Categorical) -> pl.Series:
    """Codes into labels as a Polars Enum (category order = label order)."""
    labels = pl.Series(list(column.labels), dtype=pl.Enum(list(column.labels)))
    return labels.gather(column.codes)


def static_frame(book: Book) -> pl.DataFrame:
    """The book's static columns, one row per position in book (and risk-table) order.

    Parameters
    ----------
    book
        The loaded positions.

    Returns
    -------
    pl.DataFrame
        ``row`` (Int64, the position's row in the risk columns), ``position_id`` (String),
        ``desk``, ``book``, ``currency``, ``asset_class``, ``product``, ``underlying`` (Enum;
        sorting follows the label order) and ``notional`` (Float64, signed, in ``currency``).
    """
    n = len(book)
    product_class = [ASSET_CLASS[p] for p in book.product.labels]
    class_codes = np.array([ASSET_CLASSES.index(c) for c in product_class], dtype=np.int64)
    asset_class = Categorical(
        class_codes[book.product.codes] if n else np.empty(0, np.int64), ASSET_CLASSES
    )
    return pl.DataFrame(
        [
            pl.Series("row", np.arange(n, dtype=np.int64)),
            pl.Series("position_id", list(book.position_id), dtype=pl.String),
            _enum(book.desk).alias("desk"),
            _enum(book.book).alias("book"),
            _enum(book.currency).alias("currency"),
            _enum(asset_class).alias("asset_class"),
            _enum(book.product).alias("product"),
            _enum(book.underlying).alias("underlying"),
            pl.Series("notional", book.notional, dtype=pl.Float64),
        ]
    )


def _check_inputs(static: pl.DataFrame, cols: Mapping[str, np.ndarray]) -> None:
    needed = [c for c in ("row", "asset_class", "product") if c not in static.columns]
    if needed:
        raise ValueError(f"static frame: missing column {needed[0]!r} (use static_frame)")
    n = static.height
    for name in (*RISK_INPUTS, "stale", "updated_ns"):
        if name not in cols:
            raise ValueError(f"risk columns: missing column {name!r}")
        col = cols[name]
        if col.ndim != 1 or col.shape[0] != n:
            raise ValueError(
                f"risk columns: column {name!r} has shape {col.shape}, expected ({n},)"
            )
        kind = "i" if name == "updated_ns" else "f"
        if col.dtype.kind != kind or col.dtype.itemsize != 8:
            want = "int64" if kind == "i" else "float64"
            raise ValueError(f"risk columns: column {name!r} is {col.dtype}, expected {want}")


def risk_frame(static: pl.DataFrame, cols: Mapping[str, np.ndarray], now_ns: int) -> pl.DataFrame:
    """The static columns joined with the risk columns and the measures of the module docstring.

    Parameters
    ----------
    static
        :func:`static_frame` of the book, in risk-table row order.
    cols
        ``pv``, ``pv_ccy``, ``delta``, ``gamma``, ``vega``, ``theta`` (float64, USD except
        ``pv_ccy``), ``stale`` (float64, 1.0 = stale) and ``updated_ns`` (int64,
        ``time.monotonic_ns`` of the last write, 0 = never), each one value per position — e.g.
        ``RiskTable.snapshot()``; optionally ``stale_reason`` (float64 codes of
        :data:`STALE_REASON_TEXT`). Float columns are wrapped without a copy: pass a consistent
        copy, not the live shared-memory views, if the frame must not change under the reader.
    now_ns
        ``time.monotonic_ns()`` of the evaluation (same clock as ``updated_ns``).

    Returns
    -------
    pl.DataFrame
        The static columns, the risk columns as given (NaN where unpriced), ``updated_ns``,
        ``stale`` (Boolean), ``stale_reason`` (String: ``""`` when fresh, ``"worker down"``,
        ``"reprice failed"``, ``"not priced yet"``; only if given), ``age_s`` (Float64,
        seconds since the last write; +inf if never written) and every measure of
        :data:`MEASURES` (Float64, USD; 0.0 where a measure does not apply, NaN where the
        position is unpriced). ``vega`` is replaced by the options'
        vega; a tranche's correlation sensitivity is in ``corr01``.

    Raises
    ------
    ValueError
        A missing column, a column whose length differs from the book's, or a wrong dtype.
    """
    _check_inputs(static, cols)
    wrapped = [pl.Series(name, cols[name]) for name in RISK_INPUTS]
    updated = cols["updated_ns"]
    age = np.where(updated > 0, (now_ns - updated) / 1e9, np.inf)
    extra = []
    if "stale_reason" in cols:
        codes = np.asarray(cols["stale_reason"]).astype(np.int64)
        known = np.clip(codes, 0, len(STALE_REASON_TEXT) - 1)
        labels = pl.Series(list(STALE_REASON_TEXT), dtype=pl.String)
        extra.append(labels.gather(known).alias("stale_reason"))
    frame = static.hstack(
        [
            *wrapped,
            pl.Series("updated_ns", updated),
            pl.Series("stale", cols["stale"] != 0.0),
            *extra,
            pl.Series("age_s", age),
        ]
    )

    ac = pl.col("asset_class")
    measures = [
        pl.when(ac == cls).then(pl.col("delta")).otherwise(0.0).alias(name)
        for cls, name in DELTA_BY_CLASS.items()
    ]
    measures += [
        pl.when(ac == cls).then(pl.col("gamma")).otherwise(0.0).alias(name)
        for cls, name in GAMMA_BY_CLASS.items()
    ]
    # one with_columns: both read the raw vega before it is replaced by the options' vega
    is_option = ac.is_in(["fx", "equity"])
    is_tranche = pl.col("product") == "CDX_TRANCHE"
    measures.append(pl.when(is_tranche).then(pl.col("vega")).otherwise(0.0).alias("corr01"))
    measures.append(pl.when(is_option).then(pl.col("vega")).otherwise(0.0).alias("vega"))
    return frame.with_columns(measures)


def _check_frame(frame: pl.DataFrame, by: Sequence[str]) -> list[str]:
    if isinstance(by, str):
        raise ValueError(f"by: expected a sequence of column names, got the string {by!r}")
    group = list(by)
    for name in group:
        if name not in GROUP_COLUMNS:
            raise ValueError(f"unknown group column {name!r} (expected any of {GROUP_COLUMNS})")
        if name not in frame.columns:
            raise ValueError(f"group column {name!r} is not in the frame")
    if len(set(group)) != len(group):
        raise ValueError(f"group columns repeated: {group}")
    for name in (*MEASURES, "stale", "age_s"):
        if name not in frame.columns:
            raise ValueError(f"frame: missing column {name!r} (use risk_frame)")
    return group


def _known(name: str) -> pl.Expr:
    """The column with NaN (unpriced) as null, so that sums leave it out."""
    return pl.col(name).fill_nan(None)


def _aggregations(*, local_pv: bool) -> list[pl.Expr]:
    aggs = [
        pl.len().cast(pl.Int64).alias("positions"),
        pl.col("stale").sum().cast(pl.Int64).alias("stale"),
        pl.col("pv").is_nan().sum().cast(pl.Int64).alias("unpriced"),
        pl.col("age_s").max().alias("max_age_s"),
    ]
    for m in MEASURES:
        aggs.append(_known(m).sum().alias(m))
        if m in NETTED:
            aggs.append(_known(m).abs().sum().alias(f"{m}_gross"))
    if local_pv:
        aggs.append(_known("pv_ccy").sum().alias("pv_ccy"))
    return aggs


def rollup_columns(*, local_pv: bool = False) -> list[str]:
    """The columns of a :func:`rollup` after the group columns, in order."""
    return [e.meta.output_name() for e in _aggregations(local_pv=local_pv)]


def rollup(frame: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Sums of every measure per group, with netting, counts and the worst age.

    Parameters
    ----------
    frame
        A :func:`risk_frame`.
    by
        Any of :data:`GROUP_COLUMNS`, in the order of the output's sort; empty for one firm-wide
        row (see :func:`totals`).

    Returns
    -------
    pl.DataFrame
        One row per group present in ``frame``, sorted by ``by``: the group columns,
        ``positions``, ``stale`` and ``unpriced`` counts, ``max_age_s`` (seconds), then each
        measure of :data:`MEASURES` (net sum, USD) with ``<measure>_gross`` (sum of absolute
        values, USD) after each of :data:`NETTED`. Grouped by ``currency``, also ``pv_ccy``
        (the PV in that currency). Unpriced positions count in ``positions`` but not in sums.

    Raises
    ------
    ValueError
        An unknown or repeated group column, or a frame that is not a risk frame.
    """
    group = _check_frame(frame, by)
    aggs = _aggregations(local_pv="currency" in group)
    if not group:
        return frame.select(aggs)
    return frame.group_by(group).agg(aggs).sort(group)


def rollups(frame: pl.DataFrame, groupings: Sequence[Sequence[str]]) -> list[pl.DataFrame]:
    """:func:`rollup` for each grouping, in one pass over the positions: the positions are
    summed by every group column used at once, and each grouping sums those few rows (sums,
    counts and gross sums add up; the worst age is the worst of the worst). Same output."""
    fine = list(dict.fromkeys(c for by in groupings for c in by))
    _check_frame(frame, fine)
    for by in groupings:
        _check_frame(frame, by)
    if not fine:
        return [frame.select(_aggregations(local_pv=False)) for _ in groupings]
    partial = frame.group_by(fine).agg(_aggregations(local_pv="currency" in fine))
    return _combine_partial(partial, groupings, frame.schema)


def _combine_partial(
    partial: pl.DataFrame, groupings: Sequence[Sequence[str]], schema: pl.Schema
) -> list[pl.DataFrame]:
    """Each grouping's :func:`rollup` from partial roll-ups: rows with the group columns used
    and the columns of :func:`rollup` (a group may span several rows; they are added up, the
    worst age taken). ``schema`` gives the group columns' dtypes."""
    out: list[pl.DataFrame] = []
    for by in groupings:
        group = list(by)
        missing = [c for c in group if c not in partial.columns]
        if missing:
            raise ValueError(f"partial roll-ups: no group column {missing[0]!r}")
        sums = [
            pl.col(c).sum()
            for c in partial.columns
            if c not in GROUP_COLUMNS
            and c != "max_age_s"
            and (c != "pv_ccy" or "currency" in group)
        ]
        again = [pl.col("max_age_s").max(), *sums]
        order = rollup_columns(local_pv="currency" in group)
        table = partial.group_by(group).agg(again).sort(group) if group else partial.select(again)
        out.append(table.select([*group, *order]).cast({c: schema[c] for c in group}))
    return out


def totals(frame: pl.DataFrame) -> pl.DataFrame:
    """The firm-wide roll-up: one row with the columns of :func:`rollup` and no group column."""
    return rollup(frame, ())
