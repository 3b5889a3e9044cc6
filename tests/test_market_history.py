"""Market history: the reference generator's properties, the file format's validation, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.market.history import (
    MAX_FILL_DAYS,
    HistoryError,
    load_history,
    save_history,
    validate_history,
)
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def short(market: MarketSnapshot) -> pl.DataFrame:
    """Ten days of history (29,340 rows)."""
    return generate_history(market, days=10, seed=3)


@pytest.fixture(scope="module")
def long(market: MarketSnapshot) -> np.ndarray:
    """The reference history (750 days), as days × quotes."""
    return validate_history(generate_history(market, days=750, seed=7), market).values


def _col(market: MarketSnapshot, values: np.ndarray, quote: str) -> np.ndarray:
    return values[:, list(market.quote_ids).index(quote)]


# --- the generator ------------------------------------------------------------------------


def test_the_last_day_is_the_market_and_the_days_are_weekdays(
    market: MarketSnapshot, short: pl.DataFrame
) -> None:
    hist = validate_history(short, market)
    assert hist.values.shape == (10, len(market.quote_ids))
    assert np.array_equal(hist.values[-1], market.quote_values(list(market.quote_ids)))
    assert hist.dates[-1] == np.datetime64(market.as_of, "D")
    weekday = (hist.dates.astype("datetime64[D]").view("int64") - 4) % 7  # 1970-01-05: Monday
    assert np.all(weekday < 5)
    assert np.all(np.diff(hist.dates).astype(int) > 0)
    assert hist.filled == {}
    again = generate_history(market, days=10, seed=3)
    assert again.equals(short), "the same seed gives the same history"
    assert not generate_history(market, days=10, seed=4).equals(short)


def test_the_reference_history_moves_as_markets_do(
    market: MarketSnapshot, long: np.ndarray
) -> None:
    """Fat tails, volatility clustering, the usual signs between classes, crosses consistent."""
    spots = np.column_stack([_col(market, long, e.spot_quote) for e in market.equities])
    index = np.diff(np.log(spots), axis=0).mean(axis=1)  # the names' noise averages out
    kurt = float(((index - index.mean()) ** 4).mean() / index.var() ** 2 - 3.0)
    assert kurt > 0.5, f"equity index excess kurtosis {kurt:.2f}: tails not fat"
    sq = (index - index.mean()) ** 2
    clustering = float(np.corrcoef(sq[1:], sq[:-1])[0, 1])
    assert clustering > 0.05, f"squared returns' autocorrelation {clustering:.3f}"
    vols = np.column_stack([_col(market, long, e.vol_quotes[2][3]) for e in market.equities])
    vol_move = np.diff(np.log(vols), axis=0).mean(axis=1)
    assert np.corrcoef(index, vol_move)[0, 1] < -0.5, "equities down, their vols up"
    ig = np.diff(np.log(_col(market, long, "CDX.IG.5Y")))
    assert np.corrcoef(index, ig)[0, 1] < -0.2, "equities down, credit spreads wider"
    short_rate = np.diff(_col(market, long, "USD.SOFR.OIS.1Y"))
    long_rate = np.diff(_col(market, long, "USD.TERMSOFR3M.IRS.30Y"))
    assert np.corrcoef(short_rate, long_rate)[0, 1] > 0.3, "a curve moves together"
    # every value usable: vols, spreads and correlations in range
    assert np.all(np.isfinite(long))
    for ix in market.credit_indices:
        rho = _col(market, long, ix.correlation_quote)
        assert np.all((rho > 0.0) & (rho < 1.0))
        assert np.all(_col(market, long, ix.spread_quote) > 0.0)
    # a cross keeps its ratio to the pairs it crosses (the reference market's own, to 1e-12)
    eur, gbp, cross = (_col(market, long, q) for q in ("FX.EURUSD", "FX.GBPUSD", "FX.EURGBP"))
    ratio = cross / (eur / gbp)
    assert np.ptp(ratio) / ratio[-1] < 1e-12


# --- the format's validation ----------------------------------------------------------------


def _write(frame: pl.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "history.parquet"
    frame.write_parquet(path)  # as given: a malformed frame too
    return path


def _refused(frame: pl.DataFrame, market: MarketSnapshot, tmp_path: Path) -> str:
    path = _write(frame, tmp_path)
    with pytest.raises(HistoryError) as err:
        load_history(path, market)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    return text


def test_an_unknown_quote_is_refused_naming_row_column_and_value(
    market: MarketSnapshot, short: pl.DataFrame, tmp_path: Path
) -> None:
    bad = short.with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.lit("USD.SOFR.OIS.99Y"))
        .otherwise(pl.col("quote_id"))
        .alias("quote_id")
    )
    text = _refused(bad, market, tmp_path)
    assert "row 8, column quote_id = 'USD.SOFR.OIS.99Y': not a quote of the market" in text


def test_nan_and_infinite_values_are_refused(
    market: MarketSnapshot, short: pl.DataFrame, tmp_path: Path
) -> None:
    for value, shown in ((float("nan"), "nan"), (float("inf"), "inf")):
        bad = short.with_columns(
            pl.when(pl.int_range(pl.len()) == 100)
            .then(pl.lit(value))
            .otherwise(pl.col("value"))
            .alias("value")
        )
        text = _refused(bad, market, tmp_path)
        assert f"row 101, column value = {shown}: not a finite number" in text


def test_a_quote_given_twice_on_a_day_is_refused(
    market: MarketSnapshot, short: pl.DataFrame, tmp_path: Path
) -> None:
    bad = pl.concat([short.head(5), short.slice(2, 1), short.slice(5)])
    text = _refused(bad, market, tmp_path)
    q = short["quote_id"][2]
    assert f"row 6, column quote_id = {q!r}: given twice for" in text
    assert "first in row 3" in text


def test_unsorted_dates_are_refused(
    market: MarketSnapshot, short: pl.DataFrame, tmp_path: Path
) -> None:
    n = len(market.quote_ids)
    bad = pl.concat([short.slice(n, n), short.head(n), short.slice(2 * n)])
    text = _refused(bad, market, tmp_path)
    assert f"row {n + 1}, column date = " in text
    assert "rows are sorted by date" in text


def test_gaps_up_to_the_fill_rule_are_carried_longer_ones_refused(
    market: MarketSnapshot, short: pl.DataFrame, tmp_path: Path
) -> None:
    quote = "EQVOL.AAPL.1Y.100"
    save_history(short, tmp_path / "full.parquet")
    assert load_history(tmp_path / "full.parquet", market).filled == {}
    days = short["date"].unique().sort()
    held = days[2 : 2 + MAX_FILL_DAYS].to_list()
    gap = short.filter(~((pl.col("quote_id") == quote) & pl.col("date").is_in(held)))
    hist = load_history(_write(gap, tmp_path), market)
    k = list(market.quote_ids).index(quote)
    assert hist.filled == {quote: MAX_FILL_DAYS}
    assert np.all(hist.values[2 : 2 + MAX_FILL_DAYS, k] == hist.values[1, k])
    longer = days[2 : 3 + MAX_FILL_DAYS].to_list()
    bad = short.filter(~((pl.col("quote_id") == quote) & pl.col("date").is_in(longer)))
    text = _refused(bad, market, tmp_path)
    assert f"quote {quote}: no value from {longer[0]} to {longer[-1]}" in text
    first = short.filter(~((pl.col("quote_id") == quote) & (pl.col("date") == days[0])))
    assert f"quote {quote}: no value on the first day, {days[0]}" in _refused(
        first, market, tmp_path
    )
    never = short.filter(pl.col("quote_id") != quote)
    assert f"quote {quote}: no value on any day" in _refused(never, market, tmp_path)


def test_wrong_columns_types_and_files_are_refused(
    market: MarketSnapshot, short: pl.DataFrame, tmp_path: Path
) -> None:
    text = _refused(short.rename({"value": "px"}), market, tmp_path)
    assert "missing column value; unknown column px" in text
    as_text = short.with_columns(pl.col("date").cast(pl.String))
    bad = as_text.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("24/11/2026"))
        .otherwise(pl.col("date"))
        .alias("date")
    )
    assert "row 4, column date = '24/11/2026': not a date (YYYY-MM-DD)" in _refused(
        bad, market, tmp_path
    )
    assert load_history(_write(as_text, tmp_path), market).values.shape[0] == 10
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(HistoryError, match=r"junk\.parquet: not a readable Parquet file"):
        load_history(junk, market)
    with pytest.raises(HistoryError, match=r"missing\.parquet: no such file"):
        load_history(tmp_path / "missing.parquet", market)


# --- the command ----------------------------------------------------------------------------


def test_workbench_market_history_writes_a_history_the_loader_accepts(
    market: MarketSnapshot, tmp_path: Path
) -> None:
    save_market(market, tmp_path / "market.json")
    out = tmp_path / "hist.parquet"
    market_json = str(tmp_path / "market.json")
    cmd = [sys.executable, "-m", "workbench.cli", "market", "history",
           "--market", market_json, "--days", "20", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "20 days" in done.stdout
    hist = load_history(out, market)
    assert hist.values.shape == (20, len(market.quote_ids))
    bad = subprocess.run([*cmd[:-4], "--days", "1", "--out", str(out)], capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "workbench: error: a history needs at least 2 days, got 1"
    ]


def test_the_same_seed_gives_the_same_history_in_every_process(tmp_path: Path) -> None:
    """Two processes (each with its own string hashing) write the same file for one seed."""
    code = (
        "from workbench.market.reference import generate_reference_market\n"
        "from workbench.market.reference_history import generate_history\n"
        "import sys\n"
        "generate_history(generate_reference_market(), days=15, seed=7)"
        ".write_parquet(sys.argv[1])\n"
    )
    for i, hashseed in enumerate(("1", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"h{i}.parquet")], env=env,
                       check=True, timeout=120)  # fmt: skip
    first, second = (pl.read_parquet(tmp_path / f"h{i}.parquet") for i in (0, 1))
    assert first.equals(second)
