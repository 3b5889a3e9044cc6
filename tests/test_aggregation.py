"""Roll-ups of the risk columns: hand-computed sums, properties over random books, the reference
book priced for real, and the time of a roll-up over 40,000 positions."""

from __future__ import annotations

import itertools
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from workbench.book.io import frame_to_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import PRODUCTS, Book, Categorical
from workbench.engine.protocol import messages as msg
from workbench.market.reference import generate_reference_market
from workbench.pricing.portfolio import PortfolioPricer
from workbench.risk.aggregation import (
    GROUP_COLUMNS,
    MEASURES,
    NETTED,
    RISK_INPUTS,
    risk_frame,
    rollup,
    rollups,
    static_frame,
    totals,
)
from workbench.risk.cells import CellSums

SECOND = 1_000_000_000
UNDERLYING = {
    "IRS": "USD.SOFR",
    "FX_FWD": "EURUSD",
    "FX_OPTION": "USDJPY",
    "CDX_INDEX": "CDX.IG",
    "CDX_TRANCHE": "CDX.HY",
    "EQ_OPTION": "AAPL",
}


def _cat(values: list[str], labels: tuple[str, ...] | None = None) -> Categorical:
    labs = labels if labels is not None else tuple(sorted(set(values)))
    return Categorical(np.array([labs.index(v) for v in values], dtype=np.int64), labs)


def make_book(
    products: list[str],
    desks: list[str],
    notional: list[float],
    *,
    books: list[str] | None = None,
    currencies: list[str] | None = None,
) -> Book:
    """A book of the given products and desks (book = desk + "-A" and currency USD unless
    given)."""
    n = len(products)
    nan = np.full(n, np.nan)
    return Book(
        position_id=tuple(f"P{i:04d}" for i in range(n)),
        product=_cat(products, PRODUCTS),
        desk=_cat(desks),
        book=_cat(books if books is not None else [d + "-A" for d in desks]),
        currency=_cat(currencies if currencies is not None else ["USD"] * n),
        underlying=_cat([UNDERLYING[p] for p in products]),
        start=np.full(n, np.datetime64("NaT"), dtype="datetime64[D]"),
        maturity=np.full(n, np.datetime64("2030-01-02"), dtype="datetime64[D]"),
        notional=np.asarray(notional, dtype=np.float64),
        fixed_rate=nan.copy(),
        float_spread=np.zeros(n),
        strike=nan.copy(),
        option_sign=nan.copy(),
        attach=nan.copy(),
        detach=nan.copy(),
        coupon=nan.copy(),
    )


def risk_columns(n: int, **given: list[float]) -> dict[str, np.ndarray]:
    """Risk columns of ``n`` positions: zeros, fresh, written at t = 1 s, except ``given``."""
    cols: dict[str, np.ndarray] = {c: np.zeros(n) for c in RISK_INPUTS}
    cols["stale"] = np.zeros(n)
    cols["updated_ns"] = np.full(n, SECOND, dtype=np.int64)
    for name, values in given.items():
        cols[name] = np.asarray(values, dtype=cols[name].dtype)
    return cols


def test_static_frame_has_one_labelled_row_per_position() -> None:
    book = make_book(["IRS", "FX_OPTION", "CDX_TRANCHE"], ["Rates", "FX", "Rates"], [1, -2, 3])
    frame = static_frame(book)
    assert frame.columns == [
        "row",
        "position_id",
        "desk",
        "book",
        "currency",
        "asset_class",
        "product",
        "underlying",
        "notional",
    ]
    assert frame["row"].to_list() == [0, 1, 2]
    assert frame["position_id"].to_list() == ["P0000", "P0001", "P0002"]
    assert frame["desk"].cast(pl.String).to_list() == ["Rates", "FX", "Rates"]
    assert frame["asset_class"].cast(pl.String).to_list() == ["rates", "fx", "credit"]
    assert frame["product"].cast(pl.String).to_list() == ["IRS", "FX_OPTION", "CDX_TRANCHE"]
    assert frame["underlying"].cast(pl.String).to_list() == ["USD.SOFR", "USDJPY", "CDX.HY"]
    assert frame["notional"].to_list() == [1.0, -2.0, 3.0]
    for name in GROUP_COLUMNS:
        assert isinstance(frame.schema[name], pl.Enum), name


def test_delta_gamma_vega_are_split_by_their_meaning() -> None:
    products = list(PRODUCTS)  # IRS, FX_FWD, FX_OPTION, CDX_INDEX, CDX_TRANCHE, EQ_OPTION
    n = len(products)
    book = make_book(products, ["D"] * n, [1.0] * n)
    delta = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    gamma = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    vega = [0.0, 0.0, 7.0, 0.0, 8.0, 9.0]
    cols = risk_columns(n, delta=delta, gamma=gamma, vega=vega)
    frame = risk_frame(static_frame(book), cols, now_ns=3 * SECOND)
    assert frame["dv01"].to_list() == [10.0, 0, 0, 0, 0, 0]
    assert frame["fx_delta"].to_list() == [0, 20.0, 30.0, 0, 0, 0]
    assert frame["cs01"].to_list() == [0, 0, 0, 40.0, 50.0, 0]
    assert frame["eq_delta"].to_list() == [0, 0, 0, 0, 0, 60.0]
    assert frame["rates_gamma"].to_list() == [1.0, 0, 0, 0, 0, 0]
    assert frame["fx_gamma"].to_list() == [0, 2.0, 3.0, 0, 0, 0]
    assert frame["credit_gamma"].to_list() == [0, 0, 0, 4.0, 5.0, 0]
    assert frame["eq_gamma"].to_list() == [0, 0, 0, 0, 0, 6.0]
    assert frame["vega"].to_list() == [0, 0, 7.0, 0, 0, 9.0]  # per vol point: options only
    assert frame["corr01"].to_list() == [0, 0, 0, 0, 8.0, 0]  # per +1% correlation: tranches
    assert frame["age_s"].to_list() == [2.0] * n


def test_rollup_by_desk_hand_computed() -> None:
    # desk A: a swap (dv01 -90) and an FX option; desk B: two swaps that net (dv01 +50, -30)
    book = make_book(["IRS", "FX_OPTION", "IRS", "IRS"], ["A", "A", "B", "B"], [1, 1, 1, 1])
    cols = risk_columns(
        4,
        pv=[100.0, -40.0, 5.0, -7.0],
        delta=[-90.0, 12.0, 50.0, -30.0],
        vega=[0.0, 3.0, 0.0, 0.0],
        theta=[-1.0, -2.0, 0.5, 0.25],
        stale=[0.0, 1.0, 0.0, 0.0],
        updated_ns=[SECOND, 2 * SECOND, 4 * SECOND, 9 * SECOND],
    )
    frame = risk_frame(static_frame(book), cols, now_ns=10 * SECOND)
    out = rollup(frame, ["desk"])
    assert out["desk"].cast(pl.String).to_list() == ["A", "B"]
    assert out["positions"].to_list() == [2, 2]
    assert out["stale"].to_list() == [1, 0]
    assert out["unpriced"].to_list() == [0, 0]
    assert out["max_age_s"].to_list() == [9.0, 6.0]
    assert out["pv"].to_list() == [60.0, -2.0]
    assert out["pv_gross"].to_list() == [140.0, 12.0]
    assert out["dv01"].to_list() == [-90.0, 20.0]
    assert out["dv01_gross"].to_list() == [90.0, 80.0]
    assert out["fx_delta"].to_list() == [12.0, 0.0]
    assert out["vega"].to_list() == [3.0, 0.0]
    assert out["theta"].to_list() == [-3.0, 0.75]
    assert "pv_ccy" not in out.columns  # PV in local currency only makes sense per currency
    assert "pv_ccy" in rollup(frame, ["currency"]).columns

    firm = totals(frame)
    assert firm.height == 1
    assert firm["positions"].item() == 4
    assert firm["dv01"].item() == -70.0
    assert firm["dv01_gross"].item() == 170.0
    assert firm["max_age_s"].item() == 9.0
    assert [c for c in firm.columns if c in GROUP_COLUMNS] == []


def test_unpriced_positions_are_counted_not_summed() -> None:
    book = make_book(["IRS", "IRS", "EQ_OPTION"], ["A", "A", "A"], [1, 1, 1])
    nan = float("nan")
    cols = risk_columns(
        3,
        pv=[10.0, nan, 4.0],
        delta=[1.0, nan, 2.0],
        stale=[0.0, 1.0, 0.0],
        updated_ns=[SECOND, 0, SECOND],  # the second was never written
    )
    frame = risk_frame(static_frame(book), cols, now_ns=2 * SECOND)
    out = totals(frame)
    assert out["unpriced"].item() == 1
    assert out["stale"].item() == 1
    assert out["pv"].item() == 14.0
    assert out["dv01"].item() == 1.0
    assert out["eq_delta"].item() == 2.0
    assert out["max_age_s"].item() == float("inf")


def test_risk_columns_are_wrapped_without_a_copy() -> None:
    book = make_book(["IRS", "FX_FWD"], ["A", "B"], [1, 1])
    cols = risk_columns(2, delta=[1.0, 2.0], pv_ccy=[3.0, 4.0])
    frame = risk_frame(static_frame(book), cols, now_ns=SECOND)
    for name in ("delta", "gamma", "pv_ccy"):
        assert np.shares_memory(frame[name].to_numpy(), cols[name]), name


def test_wrong_inputs_name_the_problem() -> None:
    book = make_book(["IRS", "FX_FWD"], ["A", "B"], [1, 1])
    static = static_frame(book)
    cols = risk_columns(2)
    with pytest.raises(ValueError, match="'gamma'"):
        risk_frame(static, {k: v for k, v in cols.items() if k != "gamma"}, now_ns=0)
    with pytest.raises(ValueError, match="'theta' has shape"):
        risk_frame(static, {**cols, "theta": np.zeros(3)}, now_ns=0)
    with pytest.raises(ValueError, match="'pv' is float32"):
        risk_frame(static, {**cols, "pv": np.zeros(2, dtype=np.float32)}, now_ns=0)
    frame = risk_frame(static, cols, now_ns=0)
    with pytest.raises(ValueError, match="'trader'"):
        rollup(frame, ["desk", "trader"])
    with pytest.raises(ValueError, match="repeated"):
        rollup(frame, ["desk", "desk"])
    with pytest.raises(ValueError, match="string 'desk'"):
        rollup(frame, "desk")
    with pytest.raises(ValueError, match="missing column 'pv'"):
        rollup(static, ["desk"])


# --- properties -------------------------------------------------------------------------------

_amount = st.floats(-1e9, 1e9, allow_nan=False) | st.just(float("nan"))


@st.composite
def books_with_risk(draw: st.DrawFn) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    n = draw(st.integers(1, 25))
    products = draw(st.lists(st.sampled_from(PRODUCTS), min_size=n, max_size=n))
    desks = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=n, max_size=n))
    books = draw(st.lists(st.sampled_from(["A-1", "A-2", "B-1"]), min_size=n, max_size=n))
    ccys = draw(st.lists(st.sampled_from(["EUR", "JPY", "USD"]), min_size=n, max_size=n))
    book = make_book(products, desks, [1.0] * n, books=books, currencies=ccys)
    cols = risk_columns(n)
    for name in RISK_INPUTS:
        cols[name] = np.array(draw(st.lists(_amount, min_size=n, max_size=n)))
    cols["stale"] = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n)))
    cols["updated_ns"] = np.array(
        draw(st.lists(st.integers(0, 100 * SECOND), min_size=n, max_size=n)), dtype=np.int64
    )
    return risk_frame(static_frame(book), cols, now_ns=100 * SECOND), cols


@settings(max_examples=60, deadline=None)
@given(
    data=books_with_risk(),
    by=st.lists(st.sampled_from(GROUP_COLUMNS), unique=True, min_size=1, max_size=3),
)
def test_rollup_totals_equal_column_sums(
    data: tuple[pl.DataFrame, dict[str, np.ndarray]], by: list[str]
) -> None:
    frame, cols = data
    out = rollup(frame, by)
    # one row per distinct group, sorted
    assert out.height == frame.select(by).unique().height
    assert out.select(by).equals(out.select(by).sort(by))
    assert out["positions"].sum() == frame.height
    assert out["stale"].sum() == int(np.count_nonzero(cols["stale"]))
    assert out["unpriced"].sum() == int(np.count_nonzero(np.isnan(cols["pv"])))
    assert out["max_age_s"].max() == frame["age_s"].max()
    for m in MEASURES:
        column = frame[m].to_numpy()
        scale = 1.0 + float(np.nansum(np.abs(column)))
        assert out[m].sum() == pytest.approx(float(np.nansum(column)), abs=1e-12 * scale)
        if m in NETTED:
            gross = float(np.nansum(np.abs(column)))
            assert out[f"{m}_gross"].sum() == pytest.approx(gross, abs=1e-12 * scale)
            assert (out[m].abs() <= out[f"{m}_gross"] * (1 + 1e-12) + 1e-9).all()
    firm = totals(frame)
    for m in MEASURES:
        assert firm[m].item() == pytest.approx(out[m].sum(), abs=1e-9 * (1.0 + abs(firm[m].item())))


@settings(max_examples=60, deadline=None)
@given(
    data=books_with_risk(),
    groupings=st.lists(
        st.lists(st.sampled_from(GROUP_COLUMNS), unique=True, max_size=2), min_size=1, max_size=3
    ),
)
def test_rollups_in_one_pass_equal_each_rollup(
    data: tuple[pl.DataFrame, dict[str, np.ndarray]], groupings: list[list[str]]
) -> None:
    frame, _ = data
    for by, table in zip(groupings, rollups(frame, groupings), strict=True):
        assert_frame_equal(table, rollup(frame, by), check_exact=False, rel_tol=1e-9, abs_tol=1e-3)


STATIC_COLUMNS = list(static_frame(make_book(["IRS"], ["A"], [1.0])).columns)
CELL_GROUPINGS = [
    *msg.SNAPSHOT_GROUPINGS,
    ("asset_class", "desk"),
    ("currency", "book", "product"),
    GROUP_COLUMNS,
]


@settings(max_examples=80, deadline=None)
@given(data=books_with_risk())
def test_cell_sums_give_the_rollups_of_the_positions(
    data: tuple[pl.DataFrame, dict[str, np.ndarray]],
) -> None:
    """What the aggregator publishes (per-cell sums, no position frame) equals the roll-ups of
    the risk frame: NaN left out, stale and unpriced counted, the worst age, every measure."""
    frame, cols = data
    cells = CellSums(frame.select(STATIC_COLUMNS))
    got = cells.rollups(cols, 100 * SECOND, CELL_GROUPINGS)
    for table, want in zip(got, rollups(frame, CELL_GROUPINGS), strict=True):
        assert_frame_equal(table, want, check_exact=False, rel_tol=1e-9, abs_tol=1e-3)


def test_cell_sums_refuse_what_they_cannot_group_or_read() -> None:
    book = make_book(["IRS", "CDX_TRANCHE"], ["A", "B"], [1, 1])
    cells = CellSums(static_frame(book))
    cols = risk_columns(2)
    with pytest.raises(ValueError, match="unknown group column 'trader'"):
        cells.rollups(cols, 0, [("desk", "trader")])
    with pytest.raises(ValueError, match="repeated"):
        cells.rollups(cols, 0, [("desk", "desk")])
    with pytest.raises(ValueError, match="string 'desk'"):
        cells.rollups(cols, 0, ["desk"])
    with pytest.raises(ValueError, match="'vega'"):
        cells.rollups({k: v for k, v in cols.items() if k != "vega"}, 0, [()])
    with pytest.raises(ValueError, match="'pv' has shape"):
        cells.rollups({**cols, "pv": np.zeros(3)}, 0, [()])


# --- the reference book -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def priced() -> tuple[Book, dict[str, np.ndarray]]:
    market = generate_reference_market()
    book = frame_to_book(generate_reference_book(market, positions=2000, seed=1))
    risk = PortfolioPricer(book, market, n_paths=1024, tranche_method="recursion").risk(market)
    n = len(book)
    cols = {name: getattr(risk, name) for name in RISK_INPUTS}
    cols["stale"] = np.zeros(n)
    cols["updated_ns"] = np.full(n, SECOND, dtype=np.int64)
    return book, cols


def test_reference_book_cell_sums_equal_the_rollups(
    priced: tuple[Book, dict[str, np.ndarray]],
) -> None:
    book, cols = priced
    static = static_frame(book)
    frame = risk_frame(static, cols, now_ns=2 * SECOND)
    got = CellSums(static).rollups(cols, 2 * SECOND, CELL_GROUPINGS)
    for by, table in zip(CELL_GROUPINGS, got, strict=True):
        # Greeks priced for real: counts and ages exact, sums within 1e-12 relative
        assert_frame_equal(table, rollup(frame, by), check_exact=False, rel_tol=1e-12, abs_tol=0)


def test_reference_book_rollups_match_the_positions(
    priced: tuple[Book, dict[str, np.ndarray]],
) -> None:
    book, cols = priced
    frame = risk_frame(static_frame(book), cols, now_ns=2 * SECOND)
    by_desk = rollup(frame, ["desk"])
    assert by_desk.height == len(set(book.desk.codes.tolist()))
    products = np.array(book.product.labels)[book.product.codes]
    desks = np.array(book.desk.labels)[book.desk.codes]
    for row in by_desk.iter_rows(named=True):
        mine = desks == row["desk"]
        swaps = mine & (products == "IRS")
        options = mine & np.isin(products, ["FX_OPTION", "EQ_OPTION"])
        assert row["positions"] == int(mine.sum())
        assert row["pv"] == pytest.approx(cols["pv"][mine].sum(), rel=1e-9, abs=1e-6)
        assert row["dv01"] == pytest.approx(cols["delta"][swaps].sum(), rel=1e-9, abs=1e-6)
        assert row["vega"] == pytest.approx(cols["vega"][options].sum(), rel=1e-9, abs=1e-6)
    by_class = rollup(frame, ["asset_class"]).rows_by_key("asset_class", named=True, unique=True)
    assert by_class["rates"]["cs01"] == 0.0
    assert by_class["credit"]["dv01"] == 0.0
    assert by_class["credit"]["cs01"] != 0.0
    assert by_class["fx"]["fx_delta"] != 0.0
    assert by_class["equity"]["eq_delta"] != 0.0
    # every grouping of two columns adds up to the firm
    firm = totals(frame)
    for pair in itertools.combinations(GROUP_COLUMNS, 2):
        out = rollup(frame, pair)
        for m in ("pv", "dv01", "cs01", "theta"):
            assert out[m].sum() == pytest.approx(firm[m].item(), rel=1e-9, abs=1e-3), (pair, m)


def test_rollup_of_40000_positions_takes_a_few_milliseconds() -> None:
    market = generate_reference_market()
    book = frame_to_book(generate_reference_book(market, positions=40_000, seed=1))
    n = len(book)
    rng = np.random.default_rng(5)
    cols: dict[str, np.ndarray] = {name: rng.normal(0.0, 1e4, n) for name in RISK_INPUTS}
    cols["stale"] = (rng.random(n) < 0.01).astype(np.float64)
    cols["updated_ns"] = rng.integers(1, 10 * SECOND, n)
    static = static_frame(book)
    timings: dict[str, list[float]] = {"risk_frame": [], "desk": [], "desk+book": [], "firm": []}
    for _ in range(15):
        t0 = time.perf_counter()
        frame = risk_frame(static, cols, now_ns=10 * SECOND)
        t1 = time.perf_counter()
        by_desk = rollup(frame, ["desk"])
        t2 = time.perf_counter()
        rollup(frame, ["desk", "book"])
        t3 = time.perf_counter()
        firm = totals(frame)
        t4 = time.perf_counter()
        for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            timings[key].append(dt)
    medians = {k: 1e3 * float(np.median(v)) for k, v in timings.items()}
    print(f"\n{n} positions, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    assert by_desk["positions"].sum() == n
    assert firm["dv01"].item() == pytest.approx(by_desk["dv01"].sum(), rel=1e-9)
    assert medians["desk"] < 250.0  # target a few ms; generous for a shared 2-core machine
