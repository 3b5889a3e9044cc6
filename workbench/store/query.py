"""Queries over a risk store from Python: the day's roll-ups, breaches and per-position risk
as Polars frames, read from the store's finished files (docs/store.md).

Readers never lock and never see a partial file (:mod:`workbench.store.layout`); they may run
in any process while the service writes. Times are UTC nanoseconds since the Unix epoch; a
range is ``[start_ns, end_ns)``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import polars as pl

from workbench.store.layout import files, store_root
from workbench.store.rows import (
    AGGREGATE_MEASURES,
    AGGREGATES_SCHEMA,
    BREACHES_SCHEMA,
    GROUPINGS,
    POSITIONS_SCHEMA,
)

__all__ = ["as_utc_ns", "breaches", "history", "positions", "store_root"]

Moment = dt.datetime | int | None
"""A point in time as users give it: UTC ns since the epoch, a datetime (naive: UTC), or None."""

_Build = Callable[[], pl.LazyFrame]
_RETRIES: Final = 3
"""Reads retried when a file listed went away before it was read (retention, compaction)."""


def _scan(
    root: str | Path,
    kind: str,
    schema: pl.Schema,
    start_ns: int | None,
    end_ns: int | None,
) -> pl.LazyFrame:
    """The rows of ``kind`` in ``[start_ns, end_ns)`` (lazy; an empty store gives no rows)."""
    found = files(Path(root), kind, start_ns=start_ns, end_ns=end_ns)
    if not found:
        return schema.to_frame().lazy()
    frame = pl.scan_parquet(found, schema=schema, hive_partitioning=False)
    if start_ns is not None:
        frame = frame.filter(pl.col("made_ns") >= start_ns)
    if end_ns is not None:
        frame = frame.filter(pl.col("made_ns") < end_ns)
    return frame


def _read(build: _Build) -> pl.DataFrame:
    """``build()`` collected, listed again when a file went away between listing and reading."""
    for attempt in range(_RETRIES):
        try:
            return build().collect()
        except (FileNotFoundError, pl.exceptions.ComputeError):
            if attempt == _RETRIES - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def as_utc_ns(moment: Moment) -> int | None:
    """``moment`` in UTC ns since the epoch (a naive datetime is taken as UTC; None stays).

    Examples
    --------
    >>> as_utc_ns(dt.datetime(1970, 1, 1, 0, 0, 1))
    1000000000
    """
    if moment is None or isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def _check_grouping(grouping: str) -> tuple[str, ...]:
    keys = GROUPINGS.get(grouping)
    if keys is None:
        known = ", ".join(repr(g) for g in GROUPINGS)
        raise ValueError(f"grouping {grouping!r} is not stored (one of {known})")
    return keys


def _check_measures(measures: Sequence[str] | None) -> list[str]:
    if measures is None:
        return list(AGGREGATE_MEASURES)
    if isinstance(measures, str):
        raise ValueError(f"measures: expected a sequence of names, got the string {measures!r}")
    bad = [m for m in measures if m not in AGGREGATE_MEASURES]
    if bad:
        known = ", ".join(AGGREGATE_MEASURES)
        raise ValueError(f"measure {bad[0]!r} is not stored (any of {known})")
    return list(dict.fromkeys(measures))


def history(
    root: str | Path,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    grouping: str = "firm",
    measures: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The stored roll-ups of one grouping over a time range.

    Parameters
    ----------
    root
        The store's folder (:func:`store_root`).
    start_ns, end_ns
        The range ``[start_ns, end_ns)`` of the snapshots' ``made_ns`` (UTC ns since the
        epoch); None: unbounded.
    grouping
        ``"firm"``, ``"desk"``, ``"asset_class"`` or ``"desk,currency"``.
    measures
        Columns of :data:`~workbench.store.rows.AGGREGATE_MEASURES` to return, in this order
        (``pv``, ``dv01``, ``pv_gross``, ``positions``, ``max_age_s`` …); None: all of them.

    Returns
    -------
    pl.DataFrame
        One row per stored snapshot and group: ``made_ns`` (Int64, UTC ns), ``seq`` (Int64),
        the grouping's key columns (String; none for the firm), then the measures (USD;
        counts as Int64, ``max_age_s`` in seconds); sorted by ``made_ns`` then the keys.

    Raises
    ------
    ValueError
        A grouping that is not stored or a measure that is not a stored column (named).
    """
    keys = _check_grouping(grouping)
    wanted = _check_measures(measures)

    def build() -> pl.LazyFrame:
        return (
            _scan(root, "aggregates", AGGREGATES_SCHEMA, start_ns, end_ns)
            .filter(pl.col("grouping") == grouping)
            .select("made_ns", "seq", *keys, *wanted)
        )

    return _read(build).sort(["made_ns", *keys])


def breaches(
    root: str | Path, *, start_ns: int | None = None, end_ns: int | None = None
) -> pl.DataFrame:
    """The stored breaches over ``[start_ns, end_ns)`` (UTC ns; None: unbounded).

    Returns
    -------
    pl.DataFrame
        One row per snapshot and breach it carried (a breach lasting a minute appears in each
        snapshot of that minute): ``made_ns``, ``seq``, ``scope`` (``firm``, ``desk:<name>``,
        ``recon``), ``measure``, ``value``, ``limit`` (USD), ``since_ns`` (UTC ns, when the
        breach began), ``detail``; sorted by ``made_ns``, ``scope``, ``measure``.
    """

    def build() -> pl.LazyFrame:
        return _scan(root, "breaches", BREACHES_SCHEMA, start_ns, end_ns)

    return _read(build).sort(["made_ns", "scope", "measure"])


def positions(root: str | Path, *, at_ns: int | None = None) -> pl.DataFrame:
    """The per-position risk stored last at or before ``at_ns`` (UTC ns; None: the latest).

    Returns
    -------
    pl.DataFrame
        One row per position of that copy, in the service's row order: the columns of
        :data:`~workbench.store.rows.POSITIONS_SCHEMA` (``made_ns``, ``seq``,
        ``position_id``, labels, ``notional``, ``pv_ccy``, every measure in USD, ``stale``,
        ``stale_reason``, ``age_s``). No rows when nothing was stored by then.
    """
    end = None if at_ns is None else at_ns + 1

    def build() -> pl.LazyFrame:
        scan = _scan(root, "positions", POSITIONS_SCHEMA, None, end)
        last = scan.select(pl.col("made_ns").max())
        return scan.join(last, on="made_ns", how="semi")

    return _read(build)
