"""Market history: the quotes of a market on past business days, read and validated.

The format (docs/history.md) is a Parquet file of three columns, one row per quote per day:
``date`` (a date), ``quote_id`` (a quote of the market the history is for) and ``value`` (the
quote in the market file's units: rates, spreads, vols and correlations as decimals, spots in
the quote currency), sorted by date. The history's days are the dates the file holds; a
quote missing on one of them is a gap, filled with its last value for at most
``max_fill_days`` of those days (:data:`MAX_FILL_DAYS`), else refused.

Every refusal is a :class:`HistoryError` naming the file, the row (1-based, among the data
rows), the column and the value, or the quote and the date of a gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from workbench._types import FloatArray
from workbench.market.model import MarketError, MarketSnapshot

COLUMNS = ("date", "quote_id", "value")
"""The columns of a history file, in this order."""

MAX_FILL_DAYS = 3
"""Most consecutive history days a quote's last value is carried over a gap."""


class HistoryError(MarketError):
    """A history file that cannot be used, with where and why."""


@dataclass(frozen=True)
class MarketHistory:
    """Quote values on the history's days, one column per quote of the market.

    ``dates``: the days (``datetime64[D]``, ascending); ``quote_ids``: the market's quotes in
    its order; ``values``: (days × quotes) in the market file's units; ``filled``: per quote,
    how many of its values were carried over a gap.
    """

    dates: np.ndarray
    quote_ids: tuple[str, ...]
    values: FloatArray
    filled: dict[str, int]

    def frame(self) -> pl.DataFrame:
        """The history in the file's long format (date, quote_id, value), sorted by date."""
        n_days, n_quotes = self.values.shape
        return pl.DataFrame(
            {
                "date": np.repeat(self.dates, n_quotes),
                "quote_id": pl.Series(list(self.quote_ids) * n_days, dtype=pl.Categorical),
                "value": self.values.ravel(),
            }
        ).with_columns(pl.col("date").cast(pl.Date), pl.col("quote_id").cast(pl.String))


def save_history(frame: pl.DataFrame, path: str | Path) -> None:
    """Write a long-format history (:data:`COLUMNS`) as Parquet (zstd)."""
    frame.select(COLUMNS).write_parquet(Path(path), compression="zstd", statistics=True)


def _fail(source: str, row: int, column: str, value: object, why: str) -> HistoryError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return HistoryError(f"{source}: row {row}, column {column} = {shown}: {why}")


def _read(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise HistoryError(f"{path}: no such file")
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise HistoryError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    extra = [c for c in frame.columns if c not in COLUMNS]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing or extra:
        what = "; ".join(
            ([f"missing column {', '.join(missing)}"] if missing else [])
            + ([f"unknown column {', '.join(extra)}"] if extra else [])
        )
        raise HistoryError(f"{path}: {what} (a history has exactly {', '.join(COLUMNS)})")
    return frame.select(COLUMNS)


def _typed(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """``date`` as Date, ``quote_id`` as String, ``value`` as Float64; the first value that is
    not of its type refused."""
    casts = {
        "date": pl.col("date").cast(pl.Date, strict=False),
        "quote_id": pl.col("quote_id").cast(pl.String, strict=False),
        "value": pl.col("value").cast(pl.Float64, strict=False),
    }
    if frame.schema["date"] == pl.String:
        casts["date"] = pl.col("date").str.to_date("%Y-%m-%d", strict=False)
    typed = frame.with_columns(**casts)
    wanted = {"date": "a date (YYYY-MM-DD)", "quote_id": "a quote id", "value": "a number"}
    for col, what in wanted.items():
        bad = typed[col].is_null() & frame[col].is_not_null()
        if bad.any():
            i = int(bad.arg_true()[0])
            raise _fail(source, i + 1, col, frame[col][i], f"not {what}")
        empty = frame[col].is_null()
        if empty.any():
            i = int(empty.arg_true()[0])
            raise _fail(source, i + 1, col, None, "empty")
    return typed


def validate_history(
    frame: pl.DataFrame,
    market: MarketSnapshot,
    *,
    source: str = "<history>",
    max_fill_days: int = MAX_FILL_DAYS,
) -> MarketHistory:
    """A long-format history checked against ``market`` and laid out as a days × quotes table.

    Refused, naming row, column and value: a value that is not of its column's type or is
    empty, a quote id the market does not have, a value that is NaN or infinite, a date
    earlier than the row before (the rows are sorted by date), a (date, quote) given twice.
    Refused, naming the quote and the date: a quote of the market the history never gives, a
    quote missing on the history's first day, a gap longer than ``max_fill_days`` days.
    """
    frame = _typed(frame, source)
    if frame.height == 0:
        raise HistoryError(f"{source}: no rows")
    index = {q: k for k, q in enumerate(market.quote_ids)}
    known = frame["quote_id"].is_in(list(index))
    if not known.all():
        i = int((~known).arg_true()[0])
        n = int((~known).sum())
        raise _fail(source, i + 1, "quote_id", frame["quote_id"][i],
                    f"not a quote of the market ({n} such rows)")  # fmt: skip
    values = frame["value"].to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(source, i + 1, "value", float(values[i]), "not a finite number")
    days = frame["date"].to_numpy().astype("datetime64[D]")
    back = np.flatnonzero(days[1:] < days[:-1])
    if back.size:
        i = int(back[0]) + 1
        raise _fail(source, i + 1, "date", str(days[i]),
                    f"earlier than row {i}'s {days[i - 1]} (rows are sorted by date)")  # fmt: skip
    dates, day_of = np.unique(days, return_inverse=True)
    col = frame["quote_id"].replace_strict(index, return_dtype=pl.Int64).to_numpy()
    cell = day_of.astype(np.int64) * len(index) + col
    order = np.argsort(cell, kind="stable")
    twice = np.flatnonzero(cell[order][1:] == cell[order][:-1])
    if twice.size:
        i = int(order[twice[0] + 1])
        first = int(order[twice[0]])
        raise _fail(source, i + 1, "quote_id", frame["quote_id"][i],
                    f"given twice for {days[i]} (first in row {first + 1})")  # fmt: skip
    table = np.full((dates.size, len(index)), math.nan)
    table[day_of, col] = values
    filled = _fill(table, dates, market.quote_ids, source, max_fill_days)
    return MarketHistory(dates, tuple(market.quote_ids), table, filled)


def _fill(
    table: FloatArray,
    dates: np.ndarray,
    quote_ids: tuple[str, ...],
    source: str,
    max_fill_days: int,
) -> dict[str, int]:
    """Carry each quote's last value over gaps of at most ``max_fill_days`` days (in place);
    the count filled per quote."""
    missing = np.isnan(table)
    filled: dict[str, int] = {}
    for k in np.flatnonzero(missing.any(axis=0)):
        q = quote_ids[int(k)]
        gaps = missing[:, k]
        if gaps.all():
            raise HistoryError(f"{source}: quote {q}: no value on any day (every quote of the "
                               "market needs a history)")  # fmt: skip
        if gaps[0]:
            raise HistoryError(f"{source}: quote {q}: no value on the first day, {dates[0]} "
                               "(a gap is filled from the day before; there is none)")  # fmt: skip
        run = 0
        for t in range(1, gaps.size):
            if gaps[t]:
                run += 1
                if run > max_fill_days:
                    start = dates[t - run + 1]
                    raise HistoryError(
                        f"{source}: quote {q}: no value from {start} to {dates[t]}, more than "
                        f"{max_fill_days} days (the most a last value is carried)"
                    )
                table[t, k] = table[t - 1, k]
            else:
                run = 0
        filled[q] = int(gaps.sum())
    return filled


def load_history(
    path: str | Path, market: MarketSnapshot, *, max_fill_days: int = MAX_FILL_DAYS
) -> MarketHistory:
    """Read and validate a history file for ``market`` (see :func:`validate_history`)."""
    p = Path(path)
    return validate_history(_read(p), market, source=str(path), max_fill_days=max_fill_days)


__all__ = [
    "COLUMNS",
    "MAX_FILL_DAYS",
    "HistoryError",
    "MarketHistory",
    "load_history",
    "save_history",
    "validate_history",
]
