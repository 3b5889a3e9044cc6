"""QuantLib as the oracle for curves and swaps.

With log-linear interpolation on discount factors, our bootstrap and QuantLib's
``PiecewiseLogLinearDiscount`` solve the same equations on the same dates, so pillar and
cash-flow discount factors must agree to 1e-10 relative and swap PVs to 1e-6 × notional.

The QuantLib helpers are built from our ``CurveSpec`` — same calendars (``BespokeCalendar``
with the snapshot's weekends and holidays), spot lag, day counts, modified-following
adjustment, annual fixed legs, a term index of the curve's float tenor, ACT/365F curve time
from the as-of date:

* deposits: ``DepositRateHelper`` on an ``IborIndex`` of the deposit's tenor;
* OIS: ``OISRateHelper`` (compounded overnight leg, no payment lag, annual on both legs);
* IRS: ``SwapRateHelper`` discounted on the QuantLib OIS curve, par (not indexed) coupons.

Both roll coupon schedules backward from the *unadjusted* ``spot + tenor`` (ISDA) and put the
pillar on the adjusted end date, so the helpers take the plain tenor and the schedules are
identical (checked below).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import date

import numpy as np
import pytest
import QuantLib as ql  # noqa: N813 - the conventional alias

from workbench import _ext
from workbench.book.io import frame_to_book
from workbench.book.reference import generate_reference_book
from workbench.market.model import Calendar, CurveSpec, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.schedules import add_months, add_tenor, adjust, spot_date
from workbench.pricing.curves import CurveBuilder, CurveSet
from workbench.pricing.rates_book import RatesPricer
from workbench.pricing.swaps import SwapGroup

DF_RTOL = 1e-10
NPV_TOL = 1e-6  # × notional

_DAY_COUNTS = {
    "ACT/360": ql.Actual360(),
    "ACT/365F": ql.Actual365Fixed(),
    "30/360": ql.Thirty360(ql.Thirty360.BondBasis),
}
_CONVENTIONS = {
    "F": ql.Following,
    "MF": ql.ModifiedFollowing,
    "P": ql.Preceding,
    "U": ql.Unadjusted,
}
_WEEKDAYS = (ql.Monday, ql.Tuesday, ql.Wednesday, ql.Thursday, ql.Friday, ql.Saturday, ql.Sunday)


def qdate(d: date) -> ql.Date:
    """A QuantLib date from a Python date."""
    return ql.Date(d.day, d.month, d.year)


def pydate(d: ql.Date) -> date:
    """A Python date from a QuantLib date."""
    return date(d.year(), d.month(), d.dayOfMonth())


def ql_calendar(cal: Calendar) -> ql.Calendar:
    """A QuantLib calendar with exactly the snapshot calendar's weekends and holidays."""
    out = ql.BespokeCalendar(f"wb-{cal.id}")
    for wd in cal.weekend:
        out.addWeekend(_WEEKDAYS[wd])
    for h in cal.holidays:
        out.addHoliday(qdate(h))
    return out


def ql_monotone_convex() -> ql.ConvexMonotone:
    """The QuantLib settings our monotone convex is (docs/pricing.md): Hagan–West with no
    quadratic blend (``quadraticity = 0``), the full monotonicity constraint
    (``monotonicity = 1``) and no forced positivity. QuantLib's defaults (0.3, 0.7, True) are
    another interpolation."""
    return ql.ConvexMonotone(0.0, 1.0, False)


class QlCurves:
    """QuantLib bootstraps of every curve of a snapshot, with the conventions of its specs.

    ``market_standard=True`` builds the OIS and IRS helpers from their tenors (schedules
    rolled from the unadjusted maturity) instead of our adjusted end dates.
    ``interpolation="monotone_convex"`` builds ``PiecewiseConvexMonotoneForward`` curves with
    ``convex`` (:func:`ql_monotone_convex` by default) instead of log-linear discount curves;
    ``currencies`` limits the build to the curves of those currencies.
    """

    def __init__(
        self,
        market: MarketSnapshot,
        *,
        market_standard: bool = False,
        interpolation: str = "log_linear",
        convex: ql.ConvexMonotone | None = None,
        currencies: Collection[str] | None = None,
    ) -> None:
        self.market = market
        self.market_standard = market_standard
        self.interpolation = interpolation
        self.convex = convex if convex is not None else ql_monotone_convex()
        self.calendars = {k: ql_calendar(v) for k, v in market.calendars.items()}
        self.curves: dict[str, ql.YieldTermStructure] = {}
        self.helpers: dict[str, list[ql.RateHelper]] = {}
        self.overnight: dict[str, ql.OvernightIndex] = {}
        self.term_index: dict[str, ql.IborIndex] = {}
        ql.Settings.instance().evaluationDate = qdate(market.as_of)
        for spec in sorted(market.curves, key=lambda s: 0 if s.kind == "ois" else 1):
            if currencies is None or spec.currency in currencies:
                self._build(spec)

    def handle(self, curve_id: str) -> ql.YieldTermStructureHandle:
        return ql.YieldTermStructureHandle(self.curves[curve_id])

    def _tenor(self, spec: CurveSpec, tenor: str) -> ql.Period:
        return ql.Period(tenor)

    def _build(self, spec: CurveSpec) -> None:
        cal = self.calendars[spec.calendar]
        bdc = _CONVENTIONS[spec.business_day]
        dc = _DAY_COUNTS[spec.day_count]
        fixed_dc = _DAY_COUNTS[spec.fixed_day_count]
        fixed_freq = ql.Period(spec.fixed_frequency_months, ql.Months).frequency()
        ccy = ql.Currency()
        helpers: list[ql.RateHelper] = []
        if spec.kind == "ois":
            index = ql.OvernightIndex(spec.id, 0, ccy, cal, dc, ql.YieldTermStructureHandle())
        else:
            assert spec.discount_curve is not None
            disc = self.handle(spec.discount_curve)
        for inst in spec.instruments:
            quote = ql.QuoteHandle(ql.SimpleQuote(self.market.quote(inst.quote)))
            if inst.kind == "deposit":
                dep = ql.IborIndex(
                    inst.quote, ql.Period(inst.tenor), spec.spot_lag, ccy, cal, bdc, False, dc
                )
                helpers.append(ql.DepositRateHelper(quote, dep))
            elif inst.kind == "ois":
                helpers.append(
                    ql.OISRateHelper(
                        spec.spot_lag,
                        self._tenor(spec, inst.tenor),
                        quote,
                        index,
                        paymentFrequency=fixed_freq,
                        pillar=ql.Pillar.MaturityDate,
                        endOfMonth=False,
                        fixedPaymentFrequency=fixed_freq,
                        fixedCalendar=cal,
                        convention=bdc,
                        fixedDayCount=fixed_dc,
                    )
                )
            else:
                term = ql.IborIndex(
                    spec.id,
                    ql.Period(spec.float_frequency_months, ql.Months),
                    spec.spot_lag,
                    ccy,
                    cal,
                    bdc,
                    False,
                    dc,
                )
                helpers.append(
                    ql.SwapRateHelper(
                        quote,
                        self._tenor(spec, inst.tenor),
                        cal,
                        fixed_freq,
                        bdc,
                        fixed_dc,
                        term,
                        ql.QuoteHandle(),
                        ql.Period(0, ql.Days),
                        disc,
                        spec.spot_lag,
                        ql.Pillar.MaturityDate,
                        ql.Date(),
                        False,
                        False,  # par coupons: forward over the accrual period
                    )
                )
        if self.interpolation == "monotone_convex":
            curve = ql.PiecewiseConvexMonotoneForward(
                qdate(self.market.as_of),
                helpers,
                ql.Actual365Fixed(),
                ql.IterativeBootstrap(1e-14),
                self.convex,
            )
        else:
            curve = ql.PiecewiseLogLinearDiscount(
                qdate(self.market.as_of),
                helpers,
                ql.Actual365Fixed(),
                ql.IterativeBootstrap(1e-14),
            )
        curve.enableExtrapolation()
        self.curves[spec.id] = curve
        self.helpers[spec.id] = helpers
        if spec.kind == "ois":
            self.overnight[spec.id] = ql.OvernightIndex(
                spec.id, 0, ccy, cal, dc, ql.YieldTermStructureHandle(curve)
            )
        else:
            self.term_index[spec.id] = ql.IborIndex(
                spec.id,
                ql.Period(spec.float_frequency_months, ql.Months),
                spec.spot_lag,
                ccy,
                cal,
                bdc,
                False,
                dc,
                ql.YieldTermStructureHandle(curve),
            )

    def discount(self, curve_id: str, dates: list[date]) -> np.ndarray:
        curve = self.curves[curve_id]
        return np.array([curve.discount(qdate(d)) for d in dates])


def helper_dates(helper: ql.RateHelper) -> set[date]:
    """Every accrual start, accrual end and payment date of a helper's instrument."""
    if isinstance(helper, ql.DepositRateHelper):
        return {pydate(helper.earliestDate()), pydate(helper.maturityDate())}
    swap = helper.swap()
    legs = (
        (swap.fixedLeg(), swap.overnightLeg())
        if isinstance(swap, ql.OvernightIndexedSwap)
        else (swap.fixedLeg(), swap.floatingLeg())
    )
    out: set[date] = set()
    for leg in legs:
        for cf in leg:
            cp = ql.as_coupon(cf)
            out |= {pydate(cp.accrualStartDate()), pydate(cp.accrualEndDate()), pydate(cf.date())}
    return out


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def curves(market: MarketSnapshot) -> CurveSet:
    return CurveSet(market, interpolation="log_linear")


@pytest.fixture(scope="module")
def qlc(market: MarketSnapshot) -> Iterator[QlCurves]:
    saved = ql.Settings.instance().evaluationDate
    yield QlCurves(market)
    ql.Settings.instance().evaluationDate = saved


_CURVE_IDS = [s.id for s in generate_reference_market().curves]


@pytest.mark.parametrize("curve_id", _CURVE_IDS)
def test_pillar_discount_factors_match_quantlib(
    curve_id: str, curves: CurveSet, qlc: QlCurves
) -> None:
    ours = curves[curve_id]
    nodes = qlc.curves[curve_id].nodes()
    ql_t = np.array([qlc.curves[curve_id].timeFromReference(d) for d, _ in nodes])
    ql_df = np.array([v for _, v in nodes])
    np.testing.assert_array_equal(ours.node_t, ql_t)
    np.testing.assert_allclose(ours.discount(ours.node_t), ql_df, rtol=DF_RTOL, atol=0.0)


@pytest.mark.parametrize("curve_id", _CURVE_IDS)
def test_instrument_schedules_are_the_same(
    curve_id: str, market: MarketSnapshot, qlc: QlCurves
) -> None:
    builder = CurveBuilder(market.curve(curve_id), market, _ext.LOG_LINEAR)
    ours = {d.astype(date) for d in builder.query_dates} | set(builder.d_index)
    theirs = {market.as_of}.union(*(helper_dates(h) for h in qlc.helpers[curve_id]))
    # our OIS float leg telescopes to P(spot) − P(end); QuantLib's annual overnight coupons
    # fall on the fixed-leg dates, so the sets agree for both kinds of curve
    assert ours == theirs


@pytest.mark.parametrize("curve_id", ["USD.SOFR", "USD.TERMSOFR3M", "CHF.SARON", "JPY.TIBOR3M"])
def test_cash_flow_discount_factors_match_quantlib(
    curve_id: str, market: MarketSnapshot, curves: CurveSet, qlc: QlCurves
) -> None:
    dates = sorted(set().union(*(helper_dates(h) for h in qlc.helpers[curve_id])))
    # and a daily grid to the last pillar, which exercises the interpolation everywhere
    last = pydate(qlc.curves[curve_id].maxDate())
    step = max((last - market.as_of).days // 400, 1)
    grid = np.arange(np.datetime64(market.as_of), np.datetime64(last), step)
    dates += [d.astype(date) for d in grid]
    days = np.array([(d - market.as_of).days for d in dates], dtype=np.float64)
    ours = curves[curve_id].discount(days / 365.0)
    np.testing.assert_allclose(ours, qlc.discount(curve_id, dates), rtol=DF_RTOL, atol=0.0)


def test_negative_rate_curve_is_negative(market: MarketSnapshot, curves: CurveSet) -> None:
    """CHF short rates are negative, so the oracle comparison above covers DF > 1."""
    chf = curves["CHF.SARON"]
    assert chf.discount(chf.node_t[1:3]).max() > 1.0


def test_quantlib_reprices_its_helpers(qlc: QlCurves) -> None:
    """The oracle itself is converged: every helper reprices its quote to 1e-12."""
    for curve_id, helpers in qlc.helpers.items():
        for h in helpers:
            assert abs(h.impliedQuote() - h.quote().value()) < 1e-12, curve_id


def test_curves_match_market_standard_quantlib_helpers(
    market: MarketSnapshot, curves: CurveSet
) -> None:
    saved = ql.Settings.instance().evaluationDate
    try:
        std = QlCurves(market, market_standard=True)
        for curve_id in ("USD.SOFR", "USD.TERMSOFR3M"):
            ours = curves[curve_id]
            ql_df = np.array([v for _, v in std.curves[curve_id].nodes()])
            np.testing.assert_allclose(ours.discount(ours.node_t), ql_df, rtol=DF_RTOL, atol=0.0)
    finally:
        ql.Settings.instance().evaluationDate = saved


# -- swaps ------------------------------------------------------------------------------------


def ql_swap_npv(
    qlc: QlCurves,
    spec: CurveSpec,
    disc_id: str,
    *,
    notional: float,
    start: date,
    maturity: date,
    fixed_rate: float,
    spread: float,
) -> float:
    """PV (swap currency) of one swap with QuantLib: + notional receives fixed."""
    swap = ql_swap(
        qlc,
        spec,
        disc_id,
        notional=notional,
        start=start,
        maturity=maturity,
        fixed_rate=fixed_rate,
        spread=spread,
    )
    return float(swap.NPV())


def ql_swap(
    qlc: QlCurves,
    spec: CurveSpec,
    disc_id: str,
    *,
    notional: float,
    start: date,
    maturity: date,
    fixed_rate: float,
    spread: float,
) -> ql.Swap:
    """One swap in QuantLib with its discounting engine: + notional receives fixed."""
    cal = qlc.calendars[spec.calendar]
    bdc = _CONVENTIONS[spec.business_day]
    side = ql.Swap.Receiver if notional > 0 else ql.Swap.Payer
    nominal = abs(notional)

    def sched(months: int) -> ql.Schedule:
        return ql.Schedule(
            qdate(start),
            qdate(maturity),
            ql.Period(months, ql.Months),
            cal,
            bdc,
            bdc,
            ql.DateGeneration.Backward,
            False,
        )

    fixed_dc = _DAY_COUNTS[spec.fixed_day_count]
    if spec.kind == "ois":
        assert spec.fixed_frequency_months == spec.float_frequency_months
        swap = ql.OvernightIndexedSwap(
            side,
            nominal,
            sched(spec.fixed_frequency_months),
            fixed_rate,
            fixed_dc,
            qlc.overnight[spec.id],
            spread,
            0,
            ql.Following,
            cal,
        )
    else:
        swap = ql.VanillaSwap(
            side,
            nominal,
            sched(spec.fixed_frequency_months),
            fixed_rate,
            fixed_dc,
            sched(spec.float_frequency_months),
            qlc.term_index[spec.id],
            spread,
            _DAY_COUNTS[spec.day_count],
            None,
            False,
        )
    swap.setPricingEngine(ql.DiscountingSwapEngine(qlc.handle(disc_id)))
    return swap


_HAND_SWAPS = [
    # curve, forward start (months), tenor, fixed rate, spread, notional
    ("USD.SOFR", 0, "1Y", 0.0380, 0.0, 10e6),
    ("USD.SOFR", 0, "10Y", 0.0410, 0.0, -25e6),
    ("USD.SOFR", 3, "30Y", 0.0450, 0.0015, 5e6),
    ("USD.TERMSOFR3M", 0, "2Y", 0.0395, 0.0, 50e6),
    ("USD.TERMSOFR3M", 12, "7Y", 0.0430, -0.0005, -8e6),
    ("USD.TERMSOFR3M", 0, "89M", 0.0420, 0.0, 3e6),  # 7Y5M: short front stubs on both legs
    ("CHF.SARON", 0, "2Y", -0.0002, 0.0, 20e6),
    ("CHF.TERMSARON3M", 1, "5Y", 0.0030, 0.0, -15e6),
    ("JPY.TONA", 0, "20Y", 0.0150, 0.0, 5e9),
    ("JPY.TIBOR3M", 0, "12Y", 0.0170, 0.0020, -2e9),
    ("EUR.EURIBOR6M", 6, "15Y", 0.0270, 0.0, 10e6),
    ("GBP.SONIA", 0, "3Y", 0.0400, 0.0, 7e6),
]


def test_hand_built_swaps_match_quantlib(
    market: MarketSnapshot, curves: CurveSet, qlc: QlCurves
) -> None:
    as_of = np.datetime64(market.as_of, "D")
    for curve_id, fwd, tenor, rate, spread, notional in _HAND_SWAPS:
        spec = market.curve(curve_id)
        cal = market.calendars[spec.calendar]
        disc_id = market.discount_curve_id(spec.currency)
        start = adjust(add_months(spot_date(market.as_of, spec.spot_lag, cal), fwd), cal, "MF")
        maturity = adjust(add_tenor(start, tenor), cal, "MF")
        group = SwapGroup(
            spec,
            disc_id,
            market,
            notional=np.array([notional]),
            start=np.array([start], dtype="datetime64[D]"),
            maturity=np.array([maturity], dtype="datetime64[D]"),
            fixed_rate=np.array([rate]),
            spread=np.array([spread]),
        )
        ours = float(group.pv(curves, as_of)[0])
        theirs = ql_swap_npv(
            qlc,
            spec,
            disc_id,
            notional=notional,
            start=start,
            maturity=maturity,
            fixed_rate=rate,
            spread=spread,
        )
        assert abs(ours - theirs) <= NPV_TOL * abs(notional), (curve_id, tenor, ours, theirs)
        assert abs(theirs) > 1e-4 * abs(notional), "off-par swaps make the check meaningful"


def test_reference_book_swaps_match_quantlib(
    market: MarketSnapshot, curves: CurveSet, qlc: QlCurves
) -> None:
    """Every IRS of a small reference book (all 7 currencies, OIS and term) through RatesPricer."""
    book = frame_to_book(generate_reference_book(market, positions=300, seed=11))
    rows = book.rows("IRS")
    assert rows.size > 100
    pvs = RatesPricer(book, rows, market).pv(market, curves)
    seen: set[str] = set()
    for row, ours in zip(rows.tolist(), pvs.tolist(), strict=True):
        spec = market.curve(book.underlying.labels[int(book.underlying.codes[row])])
        seen.add(spec.id)
        theirs = ql_swap_npv(
            qlc,
            spec,
            market.discount_curve_id(spec.currency),
            notional=float(book.notional[row]),
            start=book.start[row].astype(date),
            maturity=book.maturity[row].astype(date),
            fixed_rate=float(book.fixed_rate[row]),
            spread=float(book.float_spread[row]),
        )
        assert abs(ours - theirs) <= NPV_TOL * abs(book.notional[row]), (
            book.position_id[row],
            ours,
            theirs,
        )
    assert len(seen) >= 10


def ql_curves_rolled_first(market: MarketSnapshot, **kwargs: object) -> QlCurves:
    """``QlCurves`` whose instruments start where ours do when as-of is not a business day: the
    date rolled to the next business day, then ``spot_lag`` business days on. QuantLib 1.44's
    helpers given their settlement days, as ``QlCurves`` builds them, count the lag from the
    holiday itself, one business day earlier (a ``SwapRateHelper`` that takes them from its
    index rolls first, as ours); so deposits are given their fixing date (the rolled date) and
    OIS and swaps one more settlement day."""
    deposit, ois, swap = ql.DepositRateHelper, ql.OISRateHelper, ql.SwapRateHelper

    def rolled(calendar: ql.Calendar) -> ql.Date:
        return calendar.adjust(qdate(market.as_of))

    def late(lag: int, calendar: ql.Calendar) -> int:
        return int(lag > 0 and rolled(calendar) != qdate(market.as_of))

    def dated_deposit(quote: ql.QuoteHandle, index: ql.IborIndex) -> ql.DepositRateHelper:
        return deposit(quote, rolled(index.fixingCalendar()), index)

    def rolled_ois(lag: int, *args: object, **kw: object) -> ql.OISRateHelper:
        index = args[2]
        assert isinstance(index, ql.OvernightIndex)
        return ois(lag + late(lag, index.fixingCalendar()), *args, **kw)

    def rolled_swap(*args: object) -> ql.SwapRateHelper:
        calendar, lag = args[2], args[10]
        assert isinstance(calendar, ql.Calendar)
        assert isinstance(lag, int)
        return swap(*args[:10], lag + late(lag, calendar), *args[11:])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ql, "DepositRateHelper", dated_deposit)
        patch.setattr(ql, "OISRateHelper", rolled_ois)
        patch.setattr(ql, "SwapRateHelper", rolled_swap)
        return QlCurves(market, **kwargs)  # type: ignore[arg-type]
