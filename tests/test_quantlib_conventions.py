"""The conventions docs/pricing.md writes down, each checked against QuantLib.

* monotone convex is QuantLib's ``ConvexMonotone(0, 1, False)`` (its defaults are another
  interpolation, and do not bootstrap negative rates);
* past the last pillar the forward is flat at the last node's instantaneous forward (QuantLib:
  at the last interval's discrete forward); log-linear extrapolates as QuantLib does;
* ``30/360`` is QuantLib's ``Thirty360.BondBasis``;
* swap schedules have no end-of-month rule (``endOfMonth=False``);
* theta rolls the valuation date with no fixings: a period that has started, or whose fixing
  date has passed, is valued from the rolled curve as from the new valuation date (QuantLib
  needs the fixings this implies).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import numpy as np
import pytest
import QuantLib as ql  # noqa: N813 - the conventional alias
from test_quantlib_curves import (
    _DAY_COUNTS,
    QlCurves,
    pydate,
    qdate,
    ql_calendar,
    ql_curves_rolled_first,
    ql_swap,
)

from workbench.market.model import CurveSpec, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.schedules import add_tenor, adjust, adjust_array, spot_date, year_fraction
from workbench.pricing.curves import CurveSet
from workbench.pricing.swaps import SwapGroup, backward_periods

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(autouse=True)
def _quantlib_state() -> Iterator[None]:
    saved = ql.Settings.instance().evaluationDate
    yield
    ql.Settings.instance().evaluationDate = saved
    ql.IndexManager.instance().clearHistories()


def _daily(market: MarketSnapshot, curve: ql.YieldTermStructure, beyond_days: int) -> list[date]:
    last = pydate(curve.maxDate())
    step = max((last - market.as_of).days // 500, 1)
    days = list(range(0, (last - market.as_of).days + 1, step))
    days += [(last - market.as_of).days + k for k in range(1, beyond_days, 30)]
    return [market.as_of + timedelta(days=d) for d in days]


def test_monotone_convex_is_quantlib_convex_monotone_0_1_false(market: MarketSnapshot) -> None:
    ours = CurveSet(market)
    qlc = QlCurves(market, interpolation="monotone_convex")
    for curve_id, curve in qlc.curves.items():
        dates = _daily(market, curve, 0)
        t = np.array([(d - market.as_of).days for d in dates]) / 365.0
        theirs = np.array([curve.discount(qdate(d)) for d in dates])
        np.testing.assert_allclose(ours[curve_id].discount(t), theirs, rtol=1e-10, err_msg=curve_id)


def test_quantlib_defaults_are_another_interpolation(market: MarketSnapshot) -> None:
    """ConvexMonotone(0.3, 0.7, True): other discount factors, and no CHF curve at all."""
    ours = CurveSet(market)
    qlc = QlCurves(
        market, interpolation="monotone_convex", convex=ql.ConvexMonotone(), currencies={"USD"}
    )
    curve = qlc.curves["USD.SOFR"]
    dates = _daily(market, curve, 0)
    t = np.array([(d - market.as_of).days for d in dates]) / 365.0
    theirs = np.array([curve.discount(qdate(d)) for d in dates])
    assert np.max(np.abs(ours["USD.SOFR"].discount(t) / theirs - 1.0)) > 1e-5
    chf = QlCurves(
        market, interpolation="monotone_convex", convex=ql.ConvexMonotone(), currencies={"CHF"}
    )
    with pytest.raises(RuntimeError, match="root not bracketed"):
        chf.curves["CHF.SARON"].discount(1.0)


def _node_forwards_at_end(node_t: np.ndarray, node_logdf: np.ndarray) -> tuple[float, float]:
    """(last discrete forward, last node's instantaneous forward) by Hagan–West's end rule and
    the positivity collar, written out independently of the kernels."""
    fd = -np.diff(node_logdf) / np.diff(node_t)
    dt = np.diff(node_t)
    f_prev = (dt[-1] * fd[-2] + dt[-2] * fd[-1]) / (dt[-2] + dt[-1])  # node n−1
    f_end = fd[-1] - 0.5 * (f_prev - fd[-1])
    if np.all(fd > 0.0):
        f_end = min(max(f_end, 0.0), 2.0 * fd[-1])
    return float(fd[-1]), float(f_end)


@pytest.mark.parametrize("curve_id", ["USD.SOFR", "GBP.TERMSONIA3M", "CHF.SARON", "JPY.TIBOR3M"])
def test_extrapolation_past_the_last_pillar(market: MarketSnapshot, curve_id: str) -> None:
    ours = CurveSet(market)[curve_id]
    ccy = market.curve(curve_id).currency
    qlc = QlCurves(market, interpolation="monotone_convex", currencies={ccy})
    curve = qlc.curves[curve_id]
    fd_n, f_n = _node_forwards_at_end(ours.node_t, ours.node_logdf)
    t_n, y_n = ours.node_t[-1], ours.node_logdf[-1]
    t = t_n + np.array([0.25, 1.0, 5.0, 10.0])
    np.testing.assert_allclose(ours.log_discount(t), y_n - f_n * (t - t_n), rtol=0, atol=1e-14)
    theirs = np.log([curve.discount(x, True) for x in t])
    np.testing.assert_allclose(theirs, y_n - fd_n * (t - t_n), rtol=0, atol=1e-12)
    assert abs(f_n - fd_n) > 1e-6  # the two conventions do differ on this market

    linear = CurveSet(market, interpolation="log_linear")[curve_id]
    qll = QlCurves(market, currencies={ccy}).curves[curve_id]
    np.testing.assert_allclose(
        linear.discount(t), [qll.discount(x, True) for x in t], rtol=1e-10, atol=0
    )


def test_30_360_is_quantlib_bond_basis() -> None:
    rng = np.random.default_rng(5)
    start = np.datetime64("2026-01-01") + rng.integers(0, 4000, 4000).astype("timedelta64[D]")
    end = start + rng.integers(1, 900, 4000).astype("timedelta64[D]")
    month_ends = np.arange("2026-02", "2031-02", dtype="datetime64[M]").astype("datetime64[D]") - 1
    start = np.concatenate([start, month_ends[:-6], month_ends[:-6] + 1])
    end = np.concatenate([end, month_ends[6:], month_ends[6:]])
    ours = year_fraction(start, end, "30/360")

    def theirs(convention: int) -> np.ndarray:
        dc = ql.Thirty360(convention)
        pairs = zip(start.astype(date), end.astype(date), strict=True)
        return np.array([dc.yearFraction(qdate(a), qdate(b)) for a, b in pairs])

    np.testing.assert_array_equal(ours, theirs(ql.Thirty360.BondBasis))
    for other in (ql.Thirty360.USA, ql.Thirty360.European, ql.Thirty360.ISDA):
        assert np.max(np.abs(ours - theirs(other))) > 1e-3


@pytest.mark.parametrize("maturity", [date(2031, 4, 30), date(2033, 2, 28), date(2036, 2, 29)])
def test_schedules_have_no_end_of_month_rule(market: MarketSnapshot, maturity: date) -> None:
    cal = market.calendars["EUR"]
    start = date(2026, 11, 30)
    eom_differs = []
    for months in (3, 6, 12):
        _, s, e = backward_periods(
            np.array([start], "datetime64[D]"), np.array([maturity], "datetime64[D]"), months
        )
        bounds = np.unique(np.concatenate([s, e]))  # periods come from the maturity back
        ours = [d.astype(date) for d in adjust_array(bounds, cal, "MF")]

        def schedule(eom: bool, m: int = months) -> list[date]:
            dates = ql.Schedule(
                qdate(start),
                qdate(maturity),
                ql.Period(m, ql.Months),
                ql_calendar(cal),
                ql.ModifiedFollowing,
                ql.ModifiedFollowing,
                ql.DateGeneration.Backward,
                eom,
            )
            return [pydate(d) for d in dates]

        assert ours == schedule(False)
        eom_differs.append(ours != schedule(True))
    assert any(eom_differs)  # the end-of-month rule would move some dates to month ends


# -- theta ------------------------------------------------------------------------------------

# curve, start: "as_of" (the valuation date) / "spot" / months after spot, tenor, rate, notional
_THETA_SWAPS = [
    ("GBP.SONIA", "as_of", "5Y", 0.0400, 50e6),  # GBP spot lag 0: starts on the valuation date
    ("GBP.TERMSONIA3M", "as_of", "7Y", 0.0420, -30e6),
    ("USD.TERMSOFR3M", "spot", "10Y", 0.0410, 40e6),  # fixes on as-of, accrues from spot
    ("USD.SOFR", "spot", "12Y", 0.0405, -20e6),
    ("EUR.EURIBOR6M", 6, "10Y", 0.0270, 25e6),
    ("JPY.TIBOR3M", 3, "15Y", 0.0180, 3e9),
]


def _start(market: MarketSnapshot, curve_id: str, when: str | int) -> date:
    spec = market.curve(curve_id)
    cal = market.calendars[spec.calendar]
    if when == "as_of":
        return market.as_of
    spot = spot_date(market.as_of, spec.spot_lag, cal)
    return spot if when == "spot" else adjust(add_tenor(spot, f"{when}M"), cal, "MF")


def _ql_pv_with_implied_fixings(
    qlc: QlCurves, curve_id: str, *, start: date, maturity: date, rate: float, notional: float
) -> float:
    """QuantLib's PV with the fixings our no-fixings convention implies: an overnight rate of 0
    for each elapsed day of a started OIS period (its compounding starts on the valuation
    date), and for a term coupon whose fixing date has passed the rate that pays
    ``P(max(s, as_of)) / P(e) − 1`` on the rolled projection curve (par coupons)."""
    market = qlc.market
    spec = market.curve(curve_id)
    disc_id = market.discount_curve_id(spec.currency)
    swap = ql_swap(
        qlc,
        spec,
        disc_id,
        notional=notional,
        start=start,
        maturity=maturity,
        fixed_rate=rate,
        spread=0.0,
    )
    today = qdate(market.as_of)
    if spec.kind == "ois":
        index = qlc.overnight[spec.id]
        cal, dc, curve = index.fixingCalendar(), index.dayCounter(), qlc.curves[spec.id]
        day = cal.adjust(qdate(start))
        while day < today:
            # a fixing's period that runs past the valuation date (a Friday's, seen from the
            # Saturday) compounds from the valuation date on the rolled curve
            end = cal.advance(day, 1, ql.Days)
            growth = curve.discount(today) / curve.discount(end) - 1.0 if end > today else 0.0
            index.addFixing(day, growth / dc.yearFraction(day, end))
            day = end
    else:
        index = qlc.term_index[spec.id]
        proj = qlc.curves[spec.id]
        for cf in swap.floatingLeg():
            cp = ql.as_floating_rate_coupon(cf)
            if cp.fixingDate() < today:
                s, e = cp.accrualStartDate(), cp.accrualEndDate()
                growth = proj.discount(max(s, today)) / proj.discount(e) - 1.0
                index.addFixing(cp.fixingDate(), growth / cp.accrualPeriod())
    return float(swap.NPV())


@pytest.mark.parametrize("as_of", [None, date(2026, 12, 4)], ids=["reference", "friday"])
def test_swap_theta_matches_quantlib_with_the_implied_fixings(
    market: MarketSnapshot, as_of: date | None
) -> None:
    """Theta rolls the valuation date one calendar day with quotes and trades held and no
    fixings stored; QuantLib reproduces it once given the fixings this implies. Swaps that
    start on the valuation date roll into seasoned ones. A Friday rolls to the Saturday, whose
    curve instruments start where the Monday's do (QuantLib's deposits and OIS moved there)."""
    if as_of is not None:
        market = generate_reference_market(as_of=as_of)
    rolled = market.with_as_of(market.as_of + timedelta(days=1))
    ccys = {market.curve(c).currency for c, *_ in _THETA_SWAPS}
    ql_today = QlCurves(market, interpolation="monotone_convex", currencies=ccys)
    today_pv = {}
    for curve_id, when, tenor, rate, notional in _THETA_SWAPS:
        start = _start(market, curve_id, when)
        cal = market.calendars[market.curve(curve_id).calendar]
        maturity = adjust(add_tenor(start, tenor), cal, "MF")
        today_pv[curve_id] = (start, maturity, rate, notional)
    ql_theta = {}
    base = {}
    for curve_id, (start, maturity, rate, notional) in today_pv.items():
        base[curve_id] = _ql_pv_with_implied_fixings(
            ql_today, curve_id, start=start, maturity=maturity, rate=rate, notional=notional
        )
    ql_next = ql_curves_rolled_first(rolled, interpolation="monotone_convex", currencies=ccys)
    for curve_id, (start, maturity, rate, notional) in today_pv.items():
        ql.IndexManager.instance().clearHistories()
        pv_next = _ql_pv_with_implied_fixings(
            ql_next, curve_id, start=start, maturity=maturity, rate=rate, notional=notional
        )
        ql_theta[curve_id] = pv_next - base[curve_id]

    for curve_id, (start, maturity, rate, notional) in today_pv.items():
        spec = market.curve(curve_id)

        terms = (start, maturity, rate, notional)

        def ours(m: MarketSnapshot, sp: CurveSpec = spec, terms: tuple = terms) -> float:
            s, e, k, n = terms
            group = SwapGroup(
                sp,
                m.discount_curve_id(sp.currency),
                m,
                notional=np.array([n]),
                start=np.array([s], "datetime64[D]"),
                maturity=np.array([e], "datetime64[D]"),
                fixed_rate=np.array([k]),
                spread=np.array([0.0]),
            )
            return float(group.pv(CurveSet(m), np.datetime64(m.as_of, "D"))[0])

        assert ours(market) == pytest.approx(base[curve_id], abs=1e-7 * abs(notional))
        theta = ours(rolled) - ours(market)
        assert theta == pytest.approx(ql_theta[curve_id], rel=1e-6, abs=1e-9 * abs(notional)), (
            curve_id,
            theta,
            ql_theta[curve_id],
        )


def test_day_counts_used_by_the_oracle_are_the_documented_ones() -> None:
    """What test_quantlib_curves maps each day count to (the docs name the same)."""
    assert _DAY_COUNTS["30/360"] == ql.Thirty360(ql.Thirty360.BondBasis)
    assert _DAY_COUNTS["ACT/360"] == ql.Actual360()
    assert _DAY_COUNTS["ACT/365F"] == ql.Actual365Fixed()


def test_the_docs_name_the_quantlib_settings_these_tests_use() -> None:
    """docs/pricing.md and docs/formats.md write down the settings checked above (they did
    not: a reader had to guess the monotone-convex variant and which 30/360)."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    pricing = (docs / "pricing.md").read_text()
    formats = (docs / "formats.md").read_text()
    section = pricing[pricing.index("## Conventions to reproduce a price") :]
    for words in (
        "ConvexMonotone(0, 1, False)",
        "Thirty360(Thirty360.BondBasis)",
        "endOfMonth=False",
        "useIndexedCoupons=False",
        "includeReferenceDateEvents=False",
        "last *discrete* forward",
        "an overnight rate of 0",
        "rolled to Monday when they fall on a weekend",
        "1.5e-7",
    ):
        assert words in section, words
    assert "`ConvexMonotone(0, 1, False)`" in formats
    assert "one flat hazard rate `spread / (1 − recovery)`" in formats
    assert "premium schedule adjustment" not in formats  # the calendar is not read


@pytest.mark.parametrize(
    "as_of", [date(2026, 11, 30), date(2027, 2, 26), date(2028, 2, 29)], ids=str
)
def test_month_end_valuation_dates_match_quantlib(as_of: date) -> None:
    """Valuation on a month end (and the last business day of February): spot dates, the
    instruments' end dates rolled from month ends and the curves agree with QuantLib."""
    market = generate_reference_market(as_of=as_of)
    for interpolation in ("log_linear", "monotone_convex"):
        ours = CurveSet(market, interpolation=interpolation)  # type: ignore[arg-type]
        qlc = QlCurves(market, interpolation=interpolation, currencies={"USD", "EUR", "GBP"})
        for curve_id, curve in qlc.curves.items():
            dates = _daily(market, curve, 0)
            t = np.array([(d - market.as_of).days for d in dates]) / 365.0
            theirs = np.array([curve.discount(qdate(d)) for d in dates])
            np.testing.assert_allclose(ours[curve_id].discount(t), theirs, rtol=1e-10)
        for curve_id in ("EUR.EURIBOR6M", "GBP.SONIA"):
            spec = market.curve(curve_id)
            cal = market.calendars[spec.calendar]
            start = spot_date(market.as_of, spec.spot_lag, cal)
            end = adjust(add_tenor(start, "10Y"), cal, "MF")
            _check_swap(market, ours, qlc, curve_id, start, end)


def _check_swap(
    market: MarketSnapshot, ours: CurveSet, qlc: QlCurves, curve_id: str, start: date, end: date
) -> None:
    spec = market.curve(curve_id)
    disc = market.discount_curve_id(spec.currency)
    group = SwapGroup(
        spec,
        disc,
        market,
        notional=np.array([1e8]),
        start=np.array([start], "datetime64[D]"),
        maturity=np.array([end], "datetime64[D]"),
        fixed_rate=np.array([0.03]),
        spread=np.array([0.001]),
    )
    pv = float(group.pv(ours, np.datetime64(market.as_of, "D"))[0])
    swap = ql_swap(
        qlc,
        spec,
        disc,
        notional=1e8,
        start=start,
        maturity=end,
        fixed_rate=0.03,
        spread=0.001,
    )
    assert pv == pytest.approx(float(swap.NPV()), abs=1e-6 * 1e8), (curve_id, start, end)


@pytest.mark.parametrize("curve_id", ["USD.TERMSOFR3M", "JPY.TONA"])
def test_swaps_past_30_years_match_quantlib_under_log_linear(
    market: MarketSnapshot, curve_id: str
) -> None:
    """A 40Y swap and a 30Y swap starting in 5Y end past the last pillar (30Y from spot): under
    log-linear both extrapolations are QuantLib's; under monotone convex they differ as the
    docs say (the forward flat at f_n, not fd_n)."""
    spec = market.curve(curve_id)
    cal = market.calendars[spec.calendar]
    spot = spot_date(market.as_of, spec.spot_lag, cal)
    ours = CurveSet(market, interpolation="log_linear")
    qlc = QlCurves(market, currencies={spec.currency})
    for start, tenor in ((spot, "40Y"), (adjust(add_tenor(spot, "5Y"), cal, "MF"), "30Y")):
        _check_swap(market, ours, qlc, curve_id, start, adjust(add_tenor(start, tenor), cal, "MF"))
