"""Book files: CSV and Parquet in, a validated column-oriented :class:`Book` out.

Every numeric column becomes float64. Integer input is converted; an integer beyond 2^53 (not
exactly representable) or a number that overflows to infinity is refused, never wrapped or
rounded. Every problem is reported with file, row, column and value (see ``docs/book-format.md``).
"""

from __future__ import annotations

import csv as _csv
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, overload

import numpy as np
import polars as pl

from workbench.book.schema import (
    ALL_COLUMNS,
    DATE_COLUMNS,
    FLOAT_COLUMNS,
    PRODUCTS,
    REQUIRED_COLUMNS,
    STRING_COLUMNS,
    Book,
    Categorical,
)
from workbench.book.validation import MAX_EXACT_INTEGER, BookError, BookIssue, check_rows
from workbench.market.model import MarketSnapshot

_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def _read(path: Path, name: str) -> tuple[pl.DataFrame, bool]:
    """The file as read (CSV: every column as text), and whether it is a CSV file. ``name`` is
    the path as the caller gave it, for the messages. The path is one file, never a pattern
    (``book[1].parquet``, ``book*.csv``: polars would expand them)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such book file")
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{name}: unknown book format {suffix!r} (expected .csv or .parquet)")
    if not path.is_file():
        raise ValueError(f"{name}: not a file")
    csv = suffix == ".csv"
    try:
        if csv:
            return pl.read_csv(path, infer_schema=False, null_values=[""], glob=False), True
        return pl.read_parquet(path, glob=False), False
    except pl.exceptions.NoDataError:
        raise ValueError(f"{name}: the book file is empty") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError) as exc:
        if csv:
            ragged = _ragged_line(path, name)
            if ragged is not None:
                raise BookError([ragged]) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = "CSV" if csv else "Parquet"
        raise ValueError(f"{name}: not a readable {kind} book file: {first}") from None


def _ragged_line(path: Path, name: str) -> BookIssue | None:
    """The first CSV line whose field count differs from the header's, as an issue."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = _csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return None
            for k, fields in enumerate(reader, start=1):
                if fields and len(fields) != len(header):
                    text = ",".join(fields)
                    return BookIssue(
                        name,
                        k,
                        "",
                        text if len(text) <= 60 else text[:57] + "...",
                        f"{len(fields)} fields where the header has {len(header)} "
                        "(a comma inside a number or an unquoted text?)",
                        reader.line_num,
                    )
    except (OSError, UnicodeDecodeError, _csv.Error):
        return None
    return None


def _typed(frame: pl.DataFrame, file: str, csv: bool) -> tuple[pl.DataFrame, list[BookIssue]]:
    """Columns converted to String / Date / Float64, with an issue for every cell that failed."""
    issues: list[BookIssue] = []

    def issue(i: int, col: str, value: object, message: str) -> None:
        issues.append(BookIssue(file, i + 1, col, str(value), message, i + 2 if csv else None))

    unknown = [c for c in frame.columns if c not in ALL_COLUMNS]
    for c in unknown:
        issues.append(
            BookIssue(
                file, 0, c, "", "unknown column (see docs/book-format.md)", 1 if csv else None
            )
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    for c in missing:
        issues.append(BookIssue(file, 0, c, "", "required column is missing", 1 if csv else None))
    if unknown or missing:
        raise BookError(issues)
    for c in frame.columns:  # a Parquet column of a type no cell of it could be read from
        dtype = frame[c].dtype
        want = "numbers" if c in FLOAT_COLUMNS else "dates" if c in DATE_COLUMNS else "text"
        if dtype.is_nested() or dtype == pl.Object or (want == "numbers" and dtype.is_temporal()):
            issues.append(
                BookIssue(
                    file,
                    0,
                    c,
                    str(dtype),
                    f"a column of type {dtype} cannot be read as {want} (docs/book-format.md)",
                )
            )
    if issues:
        raise BookError(issues)
    n = frame.height
    cols: dict[str, pl.Series] = {}
    for c in STRING_COLUMNS:
        s = frame[c] if c in frame.columns else pl.Series(c, [None] * n, dtype=pl.String)
        cols[c] = _blank_to_null(s.cast(pl.String))
    for c in DATE_COLUMNS:
        s = frame[c] if c in frame.columns else pl.Series(c, [None] * n, dtype=pl.Date)
        if s.dtype == pl.Date:
            cols[c] = s
            continue
        if s.dtype == pl.Datetime:
            cols[c] = s.dt.date()
            continue
        text = _blank_to_null(s.cast(pl.String))
        parsed = text.str.to_date("%Y-%m-%d", strict=False)
        for i in np.flatnonzero((parsed.is_null() & text.is_not_null()).to_numpy()):
            issue(int(i), c, text[int(i)], "not a date (expected YYYY-MM-DD)")
        cols[c] = parsed
    for c in FLOAT_COLUMNS:
        s = frame[c] if c in frame.columns else pl.Series(c, [None] * n, dtype=pl.Float64)
        if s.dtype.is_integer():
            beyond = s > MAX_EXACT_INTEGER
            if s.dtype.is_signed_integer():
                beyond = beyond | (s < -MAX_EXACT_INTEGER)
            big = beyond.fill_null(False).to_numpy()
            for i in np.flatnonzero(big):
                issue(
                    int(i),
                    c,
                    s[int(i)],
                    "integer too large to hold exactly in float64 (above 2^53)",
                )
            cols[c] = s.cast(pl.Float64)
            continue
        if s.dtype.is_float():
            cols[c] = s.cast(pl.Float64)
            continue
        text = _blank_to_null(s.cast(pl.String))
        parsed = text.cast(pl.Float64, strict=False)
        bad = (parsed.is_null() & text.is_not_null()).to_numpy()
        for i in np.flatnonzero(bad):
            issue(int(i), c, text[int(i)], "not a number")
        values = text.to_list()
        # 2^53 + 1 parses to 2^53: look at the text of everything at or beyond 2^53
        for i in np.flatnonzero(parsed.abs().to_numpy() >= MAX_EXACT_INTEGER):
            v = values[int(i)]
            if v is not None and _INT_TEXT.match(v) and abs(int(v)) > MAX_EXACT_INTEGER:
                issue(int(i), c, v, "integer too large to hold exactly in float64 (above 2^53)")
        cols[c] = parsed
    return pl.DataFrame([cols[c] for c in ALL_COLUMNS]), issues


def _blank_to_null(text: pl.Series) -> pl.Series:
    """Text with surrounding spaces removed; empty or blank cells become null."""
    stripped = text.str.strip_chars()
    return stripped.set(stripped == "", None)


@overload
def load_book(
    path: str | Path,
    *,
    market: MarketSnapshot | None = ...,
    on_error: Literal["raise"] = ...,
    max_notional: Mapping[str, float] | None = ...,
) -> Book: ...
@overload
def load_book(
    path: str | Path,
    *,
    market: MarketSnapshot | None = ...,
    on_error: Literal["collect"],
    max_notional: Mapping[str, float] | None = ...,
) -> tuple[Book, list[BookIssue]]: ...
def load_book(
    path: str | Path,
    *,
    market: MarketSnapshot | None = None,
    on_error: Literal["raise", "collect"] = "raise",
    max_notional: Mapping[str, float] | None = None,
) -> Book | tuple[Book, list[BookIssue]]:
    """Load and validate a book.

    ``on_error="raise"`` raises :class:`BookError` listing every problem; ``"collect"`` keeps the
    valid rows and returns the problems of the others. Without a market only the market-free
    checks run (unknown underlyings and maturities are then not checked). ``max_notional``
    changes the bounds of :data:`~workbench.book.validation.MAX_NOTIONAL` per currency (amounts
    in that currency). Every message names the file as ``path`` gives it.
    """
    name = os.fspath(path)
    p = Path(path)
    raw, csv = _read(p, name)
    frame, issues = _typed(raw, name, csv)
    flagged = {(x.row, x.column) for x in issues}
    for i, col, message in check_rows(frame, market, max_notional=max_notional):
        if (i + 1, col) in flagged:
            continue  # the cell's own problem (not a number, not a date) is already listed
        flagged.add((i + 1, col))
        issues.append(
            BookIssue(name, i + 1, col, _cell(raw, frame, i, col), message, i + 2 if csv else None)
        )
    issues.sort(key=lambda x: (x.row, x.column))
    if issues and on_error == "raise":
        raise BookError(issues)
    bad_rows = {x.row - 1 for x in issues}
    keep = np.array([i not in bad_rows for i in range(frame.height)], dtype=bool)
    book = frame_to_book(frame.filter(pl.Series(keep)), source=name)
    return (book, issues) if on_error == "collect" else book


def _cell(raw: pl.DataFrame, frame: pl.DataFrame, i: int, col: str) -> str:
    """The cell as the file has it (the text for CSV), else as typed."""
    v = raw[col][i] if col in raw.columns else frame[col][i]
    return "" if v is None else str(v)


def _categorical(series: pl.Series, labels: tuple[str, ...] | None = None) -> Categorical:
    values = series.fill_null("").to_list()
    labs = labels if labels is not None else tuple(sorted(set(values)))
    index = {v: i for i, v in enumerate(labs)}
    return Categorical(np.array([index[v] for v in values], dtype=np.int64), labs)


def frame_to_book(frame: pl.DataFrame, *, source: str = "<memory>") -> Book:
    """A typed, validated frame as a :class:`Book`."""
    opt = frame["option_type"].to_list()
    sign = np.array([1.0 if t == "C" else -1.0 if t == "P" else np.nan for t in opt])

    def col(c: str) -> np.ndarray:
        return frame[c].to_numpy().astype(np.float64)

    def dates(c: str) -> np.ndarray:
        return frame[c].to_numpy().astype("datetime64[D]")

    return Book(
        position_id=tuple(frame["position_id"].to_list()),
        product=_categorical(frame["product"], PRODUCTS),
        desk=_categorical(frame["desk"]),
        book=_categorical(frame["book"]),
        currency=_categorical(frame["currency"]),
        underlying=_categorical(frame["underlying"]),
        start=dates("start"),
        maturity=dates("maturity"),
        notional=col("notional"),
        fixed_rate=col("fixed_rate"),
        float_spread=np.nan_to_num(col("float_spread"), nan=0.0),
        strike=col("strike"),
        option_sign=sign,
        attach=col("attach"),
        detach=col("detach"),
        coupon=col("coupon"),
        source=source,
    )


def save_book(frame: pl.DataFrame, path: str | Path) -> None:
    """Write a book frame as CSV or Parquet, by the file's suffix."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ordered = frame.select([c for c in ALL_COLUMNS if c in frame.columns])
    if p.suffix.lower() == ".csv":
        ordered.write_csv(p)
    elif p.suffix.lower() in (".parquet", ".pq"):
        ordered.write_parquet(p)
    else:
        raise ValueError(f"{p}: unknown book format {p.suffix!r} (expected .csv or .parquet)")
