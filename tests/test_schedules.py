"""The date helpers every pricer and generator shares: month arithmetic, tenors, curve time, FX
conversion rates and quote rows, checked against their scalar definitions and the quote table."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.market.crosses import base_per_unit
from workbench.market.model import MarketError, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.schedules import (
    add_months,
    add_months_array,
    add_tenor,
    tenor_days,
    tenor_times,
    tenor_years,
    year_fractions_from,
)
from workbench.pricing.risk import ClassRisk


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


def test_add_months_array_clips_to_the_month_end_like_add_months() -> None:
    days = [date(2023, 1, 1) + timedelta(days=k) for k in range(3 * 366)]  # 2024 has a 29 February
    months = np.arange(-25, 41)
    grid = np.array(days, dtype="datetime64[D]")[:, None].repeat(months.size, axis=1)
    got = add_months_array(grid, np.broadcast_to(months, grid.shape))
    want = np.array([[add_months(d, int(m)) for m in months] for d in days], dtype="datetime64[D]")
    assert np.array_equal(got, want)
    assert add_months_array(np.array(["2024-01-31"], "datetime64[D]"), np.array([1]))[0] == (
        np.datetime64("2024-02-29")
    )


@settings(max_examples=200, deadline=None)
@given(
    st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)),
    st.integers(min_value=-600, max_value=600),
)
def test_add_months_array_agrees_with_add_months_anywhere(day: date, months: int) -> None:
    got = add_months_array(np.array([day], "datetime64[D]"), np.array([months]))[0]
    assert got == np.datetime64(add_months(day, months), "D")


def test_tenor_days_orders_tenors_by_mean_length() -> None:
    assert tenor_days("52W") < tenor_days("1Y")
    assert tenor_days("365D") < tenor_days("1Y") < tenor_days("366D")
    assert tenor_days("12M") == tenor_days("1Y") == 365.25
    assert tenor_days("ON") == tenor_days("1D") == 1.0
    assert tenor_days("3M") == pytest.approx(365.25 / 4)
    with pytest.raises(ValueError, match="bad tenor '5X'"):
        tenor_days("5X")


def test_tenor_years_of_the_reference_tenors() -> None:
    assert [tenor_years(t) for t in ("1W", "18M", "10Y", "30D")] == [
        7 / 365,
        1.5,
        10.0,
        30 / 365,
    ]


def test_tenor_times_are_act365_years_to_the_unadjusted_tenor_dates() -> None:
    as_of = date(2026, 11, 24)
    tenors = ("1W", "1M", "2M", "1Y", "5Y")
    dates = np.array([add_tenor(as_of, t) for t in tenors], dtype="datetime64[D]")
    days = (dates - np.datetime64(as_of, "D")).astype(np.int64)
    assert np.array_equal(tenor_times(as_of, tenors), days / 365.0)
    assert tenor_times(as_of, ["1Y"])[0] == 365 / 365.0


def test_year_fractions_from_a_date_or_a_datetime64_agree() -> None:
    dates = np.array(["2026-11-23", "2026-11-24", "2027-11-24", "2056-02-29"], "datetime64[D]")
    from_date = year_fractions_from(date(2026, 11, 24), dates)
    from_day = year_fractions_from(np.datetime64("2026-11-24", "D"), dates)
    assert np.array_equal(from_date, from_day)
    assert from_date.dtype == np.float64
    assert from_date[:3].tolist() == [-1 / 365, 0.0, 1.0]


def test_base_per_unit_walks_the_fx_pairs_to_the_base_currency(market: MarketSnapshot) -> None:
    rates = base_per_unit(market)
    assert rates["USD"] == 1.0
    assert rates["EUR"] == market.quote("FX.EURUSD")
    assert rates["JPY"] == 1.0 / market.quote("FX.USDJPY")
    assert set(market.currencies()) <= set(rates)
    moved = market.with_quotes({"FX.EURUSD": 2.0})
    assert base_per_unit(moved)["EUR"] == 2.0


def test_quote_rows_index_the_quote_table(market: MarketSnapshot) -> None:
    ids = [market.quote_ids[5], market.quote_ids[0], market.quote_ids[-1]]
    rows = market.quote_rows(ids)
    assert rows.dtype == np.int64
    assert rows.tolist() == [5, 0, len(market.quote_ids) - 1]
    assert np.array_equal(market.quotes[rows], market.quote_values(ids))
    with pytest.raises(MarketError, match="unknown quote id 'NOPE'"):
        market.quote_rows([ids[0], "NOPE"])


def test_the_risk_of_no_positions_is_typed_and_empty() -> None:
    empty = ClassRisk.empty()
    assert empty.rows.dtype == np.int64
    assert empty.rows.size == 0
    for column in (empty.pv, empty.delta, empty.gamma, empty.vega, empty.key_rates.values):
        assert column.dtype == np.float64
        assert column.size == 0
