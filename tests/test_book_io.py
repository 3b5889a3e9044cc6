"""Book files: CSV and Parquet round trips, the reference book, and one clear error per bad cell.

Every test writes a real file and reads it back through ``load_book``; the bad-row cases start
from a valid book and break one cell, so each case can only fail for the reason it names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.book.io import load_book, save_book
from workbench.book.reference import counts, generate_reference_book
from workbench.book.schema import ALL_COLUMNS, FLOAT_COLUMNS, PRODUCTS, Book
from workbench.book.validation import MAX_EXACT_INTEGER, BookError, BookIssue
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market

DOC = Path(__file__).resolve().parents[1] / "docs" / "book-format.md"

HEADER = (
    "position_id,product,desk,book,currency,underlying,option_type,start,maturity,notional,"
    "fixed_rate,float_spread,strike,attach,detach,coupon"
)
GOOD_ROWS = (
    "IRS-1,IRS,USD Rates,UR-FLOW,USD,USD.SOFR,,2026-11-26,2036-11-26,10000000,0.04,0,,,,",
    "FXF-1,FX_FWD,G10 FX Forwards,GFF-FLOW,USD,EURUSD,,,2027-11-26,1000000,,,1.09,,,",
    "FXO-1,FX_OPTION,G10 FX Options,GFO-FLOW,USD,EURUSD,C,,2027-11-26,1000000,,,1.09,,,",
    "CDX-1,CDX_INDEX,Credit Index,CI-FLOW,USD,CDX.IG,,,2031-12-20,10000000,,,,,,0.01",
    "CDT-1,CDX_TRANCHE,Credit Structured,CS-FLOW,USD,CDX.IG,,,2031-12-20,10000000,,,,0.03,0.07,"
    "0.01",
    "EQO-1,EQ_OPTION,US Equity Derivatives,UED-FLOW,USD,AAPL,P,,2027-06-25,1000,,,150,,,",
)
_COLS = HEADER.split(",")


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def frame(market: MarketSnapshot) -> pl.DataFrame:
    return generate_reference_book(market, positions=2_000, seed=1)


@pytest.fixture(scope="module")
def big(market: MarketSnapshot) -> pl.DataFrame:
    return generate_reference_book(market, positions=40_000, seed=1)


def _write_csv(path: Path, rows: list[str] | tuple[str, ...], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _with_cell(row: int, column: str, value: str) -> list[str]:
    """The good rows with one cell replaced (``row`` is 0-based)."""
    rows = list(GOOD_ROWS)
    cells = rows[row].split(",")
    cells[_COLS.index(column)] = value
    rows[row] = ",".join(cells)
    return rows


def _assert_same_book(a: Book, b: Book) -> None:
    assert a.position_id == b.position_id
    for name in ("product", "desk", "book", "currency", "underlying"):
        assert getattr(a, name).values() == getattr(b, name).values(), name
    for name in ("start", "maturity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in (*FLOAT_COLUMNS, "option_sign"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_every_value(
    suffix: str, frame: pl.DataFrame, market: MarketSnapshot, tmp_path: Path
) -> None:
    path = tmp_path / f"book{suffix}"
    save_book(frame, path)
    book = load_book(path, market=market)
    assert len(book) == frame.height == 2_000
    assert book.source == str(path)
    assert book.position_id == tuple(frame["position_id"].to_list())
    for name in ("product", "desk", "book", "currency", "underlying"):
        assert getattr(book, name).values() == frame[name].to_list(), name
    for name in FLOAT_COLUMNS:
        col = getattr(book, name)
        assert col.dtype == np.float64
        expected = frame[name].to_numpy().astype(np.float64)
        if name == "float_spread":
            expected = np.nan_to_num(expected, nan=0.0)
        np.testing.assert_array_equal(col, expected, err_msg=name)  # bit for bit
    np.testing.assert_array_equal(book.maturity, frame["maturity"].to_numpy())
    np.testing.assert_array_equal(book.start, frame["start"].to_numpy().astype("datetime64[D]"))
    opt = frame["option_type"].to_list()
    assert [("C" if s > 0 else "P") for s in book.option_sign[~np.isnan(book.option_sign)]] == [
        t for t in opt if t is not None
    ]


def test_csv_and_parquet_load_to_the_same_book(
    frame: pl.DataFrame, market: MarketSnapshot, tmp_path: Path
) -> None:
    save_book(frame, tmp_path / "b.csv")
    save_book(frame, tmp_path / "b.parquet")
    _assert_same_book(
        load_book(tmp_path / "b.csv", market=market),
        load_book(tmp_path / "b.parquet", market=market),
    )


def test_ids_are_categorical_codes(frame: pl.DataFrame, tmp_path: Path) -> None:
    save_book(frame, tmp_path / "b.parquet")
    book = load_book(tmp_path / "b.parquet")
    assert book.product.labels == PRODUCTS
    for name in ("product", "desk", "book", "currency", "underlying"):
        cat = getattr(book, name)
        assert cat.codes.dtype == np.int64
        assert len(cat.codes) == len(book)
        assert len(set(cat.labels)) == len(cat.labels)
        assert cat.codes.min() >= 0
        assert cat.codes.max() < len(cat.labels)
    assert book.desk.values() == frame["desk"].to_list()
    assert len(book.rows("IRS")) == frame.filter(pl.col("product") == "IRS").height


def test_integer_columns_become_float64(market: MarketSnapshot, tmp_path: Path) -> None:
    frame = pl.read_csv(_write_csv(tmp_path / "b.csv", GOOD_ROWS), infer_schema_length=None)
    assert frame["notional"].dtype == pl.Int64
    frame.write_parquet(tmp_path / "ints.parquet")
    book = load_book(tmp_path / "ints.parquet", market=market)
    assert book.notional.dtype == np.float64
    np.testing.assert_array_equal(book.notional, frame["notional"].to_numpy().astype(np.float64))
    # the largest exactly representable integer is accepted as it is
    exact = frame.with_columns(pl.lit(MAX_EXACT_INTEGER, dtype=pl.Int64).alias("notional"))
    exact.write_parquet(tmp_path / "exact.parquet")
    huge = {"USD": 1e19, "EUR": 1e19}  # far above the default bounds of implausible sizes
    book = load_book(tmp_path / "exact.parquet", max_notional=huge)
    assert (book.notional == float(MAX_EXACT_INTEGER)).all()


# --- the reference book ----------------------------------------------------------------------


def test_reference_book_composition_for_40k(big: pl.DataFrame) -> None:
    got = dict(big.group_by("product").len().rows())
    assert got == {
        "IRS": 22_000,
        "FX_FWD": 2_000,
        "FX_OPTION": 8_000,
        "CDX_INDEX": 1_200,
        "CDX_TRANCHE": 800,
        "EQ_OPTION": 6_000,
    }
    assert counts(40_000) == got
    assert big["position_id"].n_unique() == 40_000
    assert big["desk"].n_unique() == 20
    assert set(big.filter(pl.col("product") == "IRS")["currency"].unique()) == {
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CHF",
        "CAD",
        "AUD",
    }


def test_reference_book_has_60_books_each_in_one_desk(big: pl.DataFrame) -> None:
    pairs = big.select("desk", "book").unique()
    assert pairs.height == 60  # three books per desk
    shared = pairs.group_by("book").len().filter(pl.col("len") > 1)["book"].to_list()
    assert not shared, f"book names used by more than one desk: {sorted(shared)}"
    assert big["book"].n_unique() == 60


def test_reference_book_jpy_notionals_in_billions_load_exactly(
    big: pl.DataFrame, market: MarketSnapshot, tmp_path: Path
) -> None:
    jpy_swaps = big.filter((pl.col("product") == "IRS") & (pl.col("currency") == "JPY"))
    notional = np.abs(jpy_swaps["notional"].to_numpy())
    assert np.median(notional) >= 1e9
    assert notional.max() < MAX_EXACT_INTEGER
    save_book(big, tmp_path / "big.parquet")
    book = load_book(tmp_path / "big.parquet", market=market)
    assert len(book) == 40_000
    assert np.isfinite(book.notional).all()
    np.testing.assert_array_equal(book.notional, big["notional"].to_numpy())


def test_reference_book_is_deterministic_per_seed(market: MarketSnapshot) -> None:
    a = generate_reference_book(market, positions=1_000, seed=5)
    b = generate_reference_book(market, positions=1_000, seed=5)
    c = generate_reference_book(market, positions=1_000, seed=6)
    assert a.equals(b)
    assert not a.equals(c)
    assert a.height == c.height == 1_000


# --- one clear error per bad cell --------------------------------------------------------------

BAD_CELLS = [
    # id, row (0-based), column, text written, value shown, words in the message
    ("unknown product", 0, "product", "SWAPTION", "SWAPTION", "unknown product"),
    ("missing required field", 0, "fixed_rate", "", "", "required for IRS"),
    ("missing maturity", 3, "maturity", "", "", "required for CDX_INDEX"),
    ("NaN", 0, "notional", "NaN", "NaN", "NaN"),
    ("inf", 2, "strike", "inf", "inf", "infinite"),
    ("overflow", 0, "notional", "1e400", "1e400", "overflow"),
    ("beyond 2^53", 0, "notional", "9007199254740993", "9007199254740993", "2^53"),
    ("far beyond 2^53", 5, "notional", "-123456789012345678901", "-123456789012345678901", "2^53"),
    ("text in a number column", 0, "notional", "12abc", "12abc", "not a number"),
    ("hex in a number column", 1, "strike", "0x10", "0x10", "not a number"),
    ("not a date", 1, "maturity", "2026-13-01", "2026-13-01", "not a date"),
    ("maturity before as-of", 1, "maturity", "2025-01-01", "2025-01-01", "as-of"),
    ("maturity on as-of", 2, "maturity", "2026-11-24", "2026-11-24", "as-of"),
    ("negative strike", 5, "strike", "-150", "-150", "positive"),
    ("zero strike", 1, "strike", "0", "0", "positive"),
    ("attach equals detach", 4, "attach", "0.07", "0.07", "attach < detach"),
    ("attach above detach", 4, "attach", "0.1", "0.1", "attach < detach"),
    ("detach above 1", 4, "detach", "1.5", "1.5", "detach above 1"),
    ("unknown curve", 0, "underlying", "USD.LIBOR", "USD.LIBOR", "unknown curve"),
    ("unknown pair", 1, "underlying", "EURXXX", "EURXXX", "unknown FX pair"),
    ("unknown equity", 5, "underlying", "ZZZZ", "ZZZZ", "unknown equity"),
    ("unknown index", 3, "underlying", "CDX.XX", "CDX.XX", "unknown credit index"),
    ("currency of the underlying", 0, "currency", "EUR", "EUR", "USD.SOFR is in USD"),
    ("CDX off the series schedule", 3, "maturity", "2030-12-20", "2030-12-20", "schedule"),
    ("duplicate position id", 1, "position_id", "IRS-1", "IRS-1", "duplicate position id"),
    ("missing desk", 0, "desk", "", "", "missing value"),
    ("blank cell is missing", 0, "book", "   ", "   ", "missing value"),
    ("bad option type", 2, "option_type", "X", "X", "C or P"),
    ("zero notional", 0, "notional", "0", "0", "zero notional"),
    ("negative coupon", 3, "coupon", "-0.01", "-0.01", "negative coupon"),
    ("swap start after maturity", 0, "start", "2037-01-05", "2037-01-05", "before maturity"),
    ("seasoned swap", 0, "start", "2026-01-05", "2026-01-05", "before as-of"),
]


def test_the_good_rows_load(market: MarketSnapshot, tmp_path: Path) -> None:
    book = load_book(_write_csv(tmp_path / "good.csv", GOOD_ROWS), market=market)
    assert len(book) == len(GOOD_ROWS)
    assert set(book.product.values()) == set(PRODUCTS)


@pytest.mark.parametrize(
    ("row", "column", "text", "shown", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CELLS],
)
def test_bad_cell_gives_one_clear_error(
    row: int,
    column: str,
    text: str,
    shown: str,
    words: str,
    market: MarketSnapshot,
    tmp_path: Path,
) -> None:
    path = _write_csv(tmp_path / "bad.csv", _with_cell(row, column, text))
    with pytest.raises(BookError) as info:
        load_book(path, market=market)
    issues = info.value.issues
    assert len(issues) == 1, [str(i) for i in issues]
    (issue,) = issues
    assert (issue.file, issue.row, issue.line, issue.column, issue.value) == (
        str(path),
        row + 1,
        row + 2,
        column,
        shown,
    )
    assert words in issue.message
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: row {row + 1} (line {row + 2}), column {column!r}")
    assert repr(shown) in message


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("notional", 2**53 + 1, "2^53"),
        ("notional", -(2**62), "2^53"),
        ("strike", float("nan"), "NaN"),
        ("notional", float("inf"), "infinite"),
    ],
)
def test_bad_parquet_value_gives_one_clear_error(
    column: str, value: float, words: str, market: MarketSnapshot, tmp_path: Path
) -> None:
    frame = pl.read_csv(_write_csv(tmp_path / "b.csv", GOOD_ROWS), infer_schema_length=None)
    frame = frame.with_columns(
        pl.when(pl.col("position_id") == "EQO-1")
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )
    path = tmp_path / "bad.parquet"
    frame.write_parquet(path)
    with pytest.raises(BookError) as info:
        load_book(path, market=market)
    (issue,) = info.value.issues
    assert (issue.file, issue.row, issue.line, issue.column) == (str(path), 6, None, column)
    assert issue.value == str(value)
    assert words in issue.message


def test_several_bad_rows_are_all_listed_and_good_rows_kept(
    frame: pl.DataFrame, market: MarketSnapshot, tmp_path: Path
) -> None:
    path = tmp_path / "book.csv"
    save_book(frame, path)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    broken = {17: ("notional", "1e400"), 400: ("product", "SWAPTION"), 1500: ("strike", "x")}
    for row, (column, value) in broken.items():
        cells = lines[row].split(",")  # line index == 1-based data row
        cells[header.index(column)] = value
        lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(BookError) as info:
        load_book(path, market=market)
    assert [(i.row, i.column) for i in info.value.issues] == [
        (row, column) for row, (column, _) in sorted(broken.items())
    ]
    message = str(info.value).splitlines()
    assert message[0] == "3 problems in the book"
    assert len(message) == 4

    book, issues = load_book(path, market=market, on_error="collect")
    assert all(isinstance(i, BookIssue) for i in issues)
    assert {i.row for i in issues} == set(broken)
    assert len(book) + len(issues) == frame.height
    dropped = {frame["position_id"][row - 1] for row in broken}
    assert set(book.position_id) == set(frame["position_id"].to_list()) - dropped


def test_collect_mode_returns_every_row_of_a_clean_book(
    frame: pl.DataFrame, market: MarketSnapshot, tmp_path: Path
) -> None:
    save_book(frame, tmp_path / "b.parquet")
    book, issues = load_book(tmp_path / "b.parquet", market=market, on_error="collect")
    assert issues == []
    assert len(book) == frame.height


# --- file-level problems ----------------------------------------------------------------------


def test_unknown_and_missing_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "b.csv", [r + ",x" for r in GOOD_ROWS], HEADER + ",colour")
    with pytest.raises(BookError) as info:
        load_book(path)
    assert [(i.column, i.line) for i in info.value.issues] == [("colour", 1)]
    assert "unknown column" in str(info.value)

    header = HEADER.replace(",maturity,", ",")
    rows = [",".join(c for k, c in enumerate(r.split(",")) if k != 8) for r in GOOD_ROWS]
    with pytest.raises(BookError, match=r"column 'maturity'.*required column is missing"):
        load_book(_write_csv(tmp_path / "m.csv", rows, header))


def test_ragged_csv_line_names_the_line(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "b.csv", _with_cell(2, "notional", "1,000,000"))
    with pytest.raises(BookError) as info:
        load_book(path)
    (issue,) = info.value.issues
    assert (issue.row, issue.line) == (3, 4)
    assert "18 fields where the header has 16" in issue.message


@pytest.mark.parametrize(
    ("name", "content", "error", "words"),
    [
        ("missing.csv", None, FileNotFoundError, "no such book file"),
        ("empty.csv", b"", ValueError, "empty"),
        ("junk.parquet", b"not parquet at all", ValueError, "not a readable Parquet"),
        ("book.xlsx", b"", ValueError, "unknown book format"),
    ],
)
def test_unreadable_files_name_the_file(
    name: str, content: bytes | None, error: type[Exception], words: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error) as info:
        load_book(path)
    assert str(info.value).startswith(str(path))
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_save_book_writes_the_documented_column_order(frame: pl.DataFrame, tmp_path: Path) -> None:
    save_book(frame.select(list(reversed(frame.columns))), tmp_path / "b.csv")
    header = (tmp_path / "b.csv").read_text().splitlines()[0].split(",")
    assert header == [c for c in ALL_COLUMNS if c in frame.columns]
    with pytest.raises(ValueError, match="unknown book format"):
        save_book(frame, tmp_path / "b.json")


# --- the documentation ------------------------------------------------------------------------


def test_documented_example_loads(market: MarketSnapshot, tmp_path: Path) -> None:
    match = re.search(r"## Example.*?```csv\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, "docs/book-format.md has no csv example"
    path = tmp_path / "example.csv"
    path.write_text(match.group(1))
    book = load_book(path, market=market)
    assert len(book) == 7
    assert set(book.product.values()) == set(PRODUCTS)
    jpy = book.currency.values().index("JPY")
    assert book.notional[jpy] == -25e9


def test_every_column_is_documented() -> None:
    text = DOC.read_text()
    for column in ALL_COLUMNS:
        assert f"| `{column}` |" in text, column
    for product in PRODUCTS:
        assert f"| `{product}` |" in text, product


# --- implausible sizes (docs/book-format.md, "Numbers") --------------------------------------


@pytest.mark.parametrize(
    ("row", "value", "words"),
    [
        pytest.param(0, "1e30", "above the bound of 100,000,000,000 USD", id="swap-1e30-USD"),
        pytest.param(1, "2e11", "units of EUR, the base currency of EURUSD", id="fx-fwd-base-EUR"),
        pytest.param(2, "-1.5e11", "bound of 100,000,000,000 EUR", id="fx-option-short"),
        pytest.param(5, "1e9", "shares × strike = 150,000,000,000 USD", id="equity-shares"),
    ],
)
def test_implausible_notionals_are_refused(
    row: int, value: str, words: str, market: MarketSnapshot, tmp_path: Path
) -> None:
    path = _write_csv(tmp_path / "big.csv", _with_cell(row, "notional", value))
    with pytest.raises(BookError) as info:
        load_book(path, market=market)
    (issue,) = info.value.issues
    assert (issue.file, issue.row, issue.line, issue.column, issue.value) == (
        str(path),
        row + 1,
        row + 2,
        "notional",
        value,
    )
    assert "implausible size" in issue.message
    assert words in issue.message
    if row == 1:  # without a market an FX pair's base currency is its first three letters
        with pytest.raises(BookError, match="units of EUR"):
            load_book(path)


def test_notional_bounds_are_configurable_per_currency(
    market: MarketSnapshot, tmp_path: Path
) -> None:
    path = _write_csv(tmp_path / "b.csv", _with_cell(0, "notional", "2e11"))
    with pytest.raises(BookError, match="100,000,000,000 USD"):
        load_book(path, market=market)
    assert len(load_book(path, market=market, max_notional={"USD": 1e12})) == len(GOOD_ROWS)
    with pytest.raises(BookError) as info:  # 10M USD swaps, 1M EUR FX: both above 5e5
        load_book(path, market=market, max_notional={"USD": 1e12, "EUR": 5e5})
    assert [(i.row, i.column) for i in info.value.issues] == [(2, "notional"), (3, "notional")]
    with pytest.raises(ValueError, match="not a positive amount"):
        load_book(path, max_notional={"USD": -1.0})


def test_reference_books_are_within_the_default_bounds(big: pl.DataFrame, tmp_path: Path) -> None:
    save_book(big, tmp_path / "big.parquet")
    assert len(load_book(tmp_path / "big.parquet")) == big.height


# --- Parquet and CSV name the file as given ---------------------------------------------------


def _bad_parquet(path: Path, column: str = "notional", value: object = 0.0) -> Path:
    good = _write_csv(path.parent / "good.csv", GOOD_ROWS)
    frame = pl.read_csv(good, infer_schema_length=None, glob=False)
    frame = frame.with_columns(
        pl.when(pl.col("position_id") == "FXO-1")
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )
    frame.write_parquet(path)
    return path


@pytest.mark.parametrize("given", ["./sub dir/book [v2].parquet", "sub dir/book*.parquet"])
def test_parquet_errors_name_the_file_as_given(
    given: str, market: MarketSnapshot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path is one file, never a pattern polars would expand, and every message names it as
    the caller wrote it (here relative, with ``./``, a space and brackets or a star)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub dir").mkdir()
    _bad_parquet(tmp_path / given)
    _bad_parquet(tmp_path / "sub dir" / "bookA.parquet", "strike", -1.0)  # what * would match
    with pytest.raises(BookError) as info:
        load_book(given, market=market)
    assert str(info.value) == (
        f"{given}: row 3, column 'notional', value '0.0': a zero notional is not a position"
    )
    junk = given.replace(".parquet", ".pq")
    Path(junk).write_bytes(b"PAR1 not parquet")
    with pytest.raises(ValueError, match=re.escape(f"{junk}: not a readable Parquet book file")):
        load_book(junk)


@pytest.mark.parametrize(
    ("column", "series", "words"),
    [
        ("notional", pl.Series([[1.0]] * 6), "List(Float64) cannot be read as numbers"),
        ("notional", pl.Series([1] * 6, dtype=pl.Duration("ms")), "cannot be read as numbers"),
        ("desk", pl.Series([{"a": 1}] * 6), "cannot be read as text"),
    ],
)
def test_parquet_columns_of_another_type_name_file_and_column(
    column: str, series: pl.Series, words: str, tmp_path: Path
) -> None:
    frame = pl.read_csv(_write_csv(tmp_path / "b.csv", GOOD_ROWS), infer_schema_length=None)
    path = tmp_path / "typed.parquet"
    frame.with_columns(series.alias(column)).write_parquet(path)
    with pytest.raises(BookError) as info:
        load_book(path)
    (issue,) = info.value.issues
    assert (issue.file, issue.row, issue.column) == (str(path), 0, column)
    assert words in issue.message


def test_unsigned_parquet_integers_beyond_2_53_are_refused(tmp_path: Path) -> None:
    frame = pl.read_csv(_write_csv(tmp_path / "b.csv", GOOD_ROWS), infer_schema_length=None)
    path = tmp_path / "u.parquet"
    values = pl.Series([10_000_000] * 5 + [2**64 - 1], dtype=pl.UInt64)
    frame.with_columns(values.alias("notional")).write_parquet(path)
    with pytest.raises(BookError) as info:
        load_book(path)
    (issue,) = info.value.issues
    assert (issue.row, issue.column, issue.value) == (6, "notional", str(2**64 - 1))
    assert "2^53" in issue.message


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_book_without_positions_loads_empty(suffix: str, tmp_path: Path) -> None:
    frame = pl.read_csv(_write_csv(tmp_path / "b.csv", GOOD_ROWS), infer_schema_length=None)
    path = tmp_path / f"none{suffix}"
    save_book(frame.head(0), path)
    assert len(load_book(path)) == 0
