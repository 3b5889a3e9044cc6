"""Equity options of a book against QuantLib: a non-flat surface and a weekend theta roll.

QuantLib set-up: ``GeneralizedBlackScholesProcess`` with the equity currency's OIS curve
bootstrapped by QuantLib (``QlCurves``, log-linear, equal to ours to 1e-10), a flat continuous
dividend yield (``FlatForward``, ACT/365F) and ``AnalyticEuropeanEngine``. The vol is a
``BlackVarianceSurface`` in *strikes*, built at a given spot from the book's moneyness surface
(strike = moneyness × that spot), so rebuilding it at a bumped spot is the sticky-moneyness
re-solve of docs/greeks.md. It is sampled every 0.001 of moneyness on the expiry pillars and
interpolated bicubically: at the options' strikes and pillar expiries QuantLib's vol is the
surface's own to 3e-14, while the ±1% spot moves move those vols by up to 0.0039.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import QuantLib as ql  # noqa: N813 - the conventional alias
from test_quantlib_curves import QlCurves, qdate, ql_curves_rolled_first

from workbench._types import SPOT_BUMP, VOL_POINT
from workbench.book.io import frame_to_book
from workbench.book.schema import Book
from workbench.market.model import EquitySpec, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.schedules import add_tenor, tenor_times
from workbench.pricing.curves import CurveSet
from workbench.pricing.equity_book import EquityPricer
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.splines import SplineCache
from workbench.pricing.surfaces import EquityVolSurfaceModel

pytestmark = pytest.mark.slow

_DC = ql.Actual365Fixed()
_DENSE = np.round(np.arange(0.7, 1.3 + 5e-4, 0.001), 6)  # moneyness samples for QuantLib
_STRIKES = (0.78, 0.93, 1.0, 1.06, 1.21)  # × spot: off the 0.1-spaced moneyness pillars
_EXPIRIES = ("3M", "1Y", "3Y")  # surface pillars: QuantLib's time interpolation is not read
_UNDERLYINGS = ("AAPL", "SAP")  # a USD and a EUR underlying


@pytest.fixture(autouse=True)
def _evaluation_date() -> Iterator[None]:
    saved = ql.Settings.instance().evaluationDate
    yield
    ql.Settings.instance().evaluationDate = saved


def _spec(market: MarketSnapshot, ticker: str) -> EquitySpec:
    return next(e for e in market.equities if e.id == ticker)


def _book(market: MarketSnapshot, tickers: tuple[str, ...], expiries: tuple[str, ...]) -> Book:
    """Calls and puts on ``tickers`` at the expiry pillars and the strikes above."""
    rows = []
    for ticker in tickers:
        spec = _spec(market, ticker)
        spot = market.quote(spec.spot_quote)
        for tenor in expiries:
            for k, m in enumerate(_STRIKES):
                rows.append(
                    {
                        "position_id": f"{ticker}-{tenor}-{m}",
                        "product": "EQ_OPTION",
                        "desk": "Equity Vol",
                        "book": "EV-FLOW",
                        "currency": spec.currency,
                        "underlying": ticker,
                        "option_type": "C" if k % 2 == 0 else "P",
                        "maturity": add_tenor(market.as_of, tenor),
                        "notional": 1000.0 * (1 + k),
                        "strike": round(m * spot, 4),
                    }
                )
    frame = pl.DataFrame(rows).with_columns(
        pl.lit(None, pl.Date).alias("start"),
        *(
            pl.lit(None, pl.Float64).alias(c)
            for c in ("fixed_rate", "float_spread", "attach", "detach", "coupon")
        ),
    )
    return frame_to_book(frame)


def _model(market: MarketSnapshot, spec: EquitySpec) -> EquityVolSurfaceModel:
    """The surface the pricer reads, from the snapshot's quotes."""
    return EquityVolSurfaceModel(
        surface_id=spec.id,
        version=market.version,
        expiries=tenor_times(market.as_of, spec.vol_expiries),
        moneyness=np.asarray(spec.vol_moneyness),
        vols=np.array([[market.quote(q) for q in row] for row in spec.vol_quotes]),
        cache=SplineCache(),
    )


class QlEquity:
    """QuantLib's view of one underlying on one valuation date."""

    def __init__(self, market: MarketSnapshot, curves: QlCurves, spec: EquitySpec) -> None:
        self.market = market
        self.spec = spec
        self.model = _model(market, spec)
        self.today = qdate(market.as_of)
        self.discount = curves.handle(market.discount_curve_id(spec.currency))
        self.dividend = ql.YieldTermStructureHandle(
            ql.FlatForward(self.today, spec.dividend_yield, _DC, ql.Continuous, ql.Annual)
        )
        self.spot = market.quote(spec.spot_quote)

    def surface(self, spot: float) -> ql.BlackVolTermStructureHandle:
        """The moneyness surface as a strike surface at ``spot`` (bicubic in variance)."""
        dates = [qdate(add_tenor(self.market.as_of, t)) for t in self.spec.vol_expiries]
        times = tenor_times(self.market.as_of, self.spec.vol_expiries)
        vols = self.model.vol_for_strike(
            np.ones((_DENSE.size, times.size)),
            np.repeat(_DENSE[:, None], times.size, axis=1),
            np.repeat(times[None, :], _DENSE.size, axis=0),
        )
        matrix = ql.Matrix(_DENSE.size, times.size)
        for i in range(_DENSE.size):
            for j in range(times.size):
                matrix[i][j] = float(vols[i, j])
        surface = ql.BlackVarianceSurface(
            self.today, ql.NullCalendar(), dates, list(_DENSE * spot), matrix, _DC
        )
        surface.setInterpolation("bicubic")
        return ql.BlackVolTermStructureHandle(surface)

    def option(
        self, sign: float, strike: float, expiry: date, vol: ql.BlackVolTermStructureHandle
    ) -> tuple[ql.VanillaOption, ql.SimpleQuote]:
        spot = ql.SimpleQuote(self.spot)
        process = ql.GeneralizedBlackScholesProcess(
            ql.QuoteHandle(spot), self.dividend, self.discount, vol
        )
        kind = ql.Option.Call if sign > 0 else ql.Option.Put
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, strike), ql.EuropeanExercise(qdate(expiry))
        )
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        return opt, spot


def _ql_spot_greeks(
    eq: QlEquity, sign: float, strike: float, expiry: date, *, sticky: str
) -> tuple[float, float, float, float]:
    """PV, 1% delta, 1% gamma (central, docs/greeks.md) and vega per vol point, per unit.

    ``sticky="moneyness"`` rebuilds the strike surface at each bumped spot; ``"strike"``
    keeps the one built at today's spot (the check that the test tells the two apart)."""
    base_surface = eq.surface(eq.spot)
    pv: list[float] = []
    vega = 0.0
    for move in (0.0, SPOT_BUMP, -SPOT_BUMP):
        s = eq.spot * (1.0 + move)
        vol = eq.surface(s) if sticky == "moneyness" and move else base_surface
        opt, quote = eq.option(sign, strike, expiry, vol)
        quote.setValue(s)
        pv.append(opt.NPV())
        if not move:
            vega = opt.vega() * VOL_POINT
    base, up, down = pv
    return base, (up - down) / 2.0, up - 2.0 * base + down, vega


def test_equity_deltas_on_a_smile_are_quantlibs_with_the_surface_rebuilt_at_each_spot() -> None:
    """docs/greeks.md: equity delta and gamma are central ±1% spot differences with the
    moneyness surface re-solved at the bumped spot; vega is the analytic vega at the option's
    own vol per 0.01. QuantLib, given the same surface as a strike surface rebuilt at each spot,
    gives the same numbers; held at today's strikes (sticky strike) it does not."""
    market = generate_reference_market()
    book = _book(market, _UNDERLYINGS, _EXPIRIES)
    rows = np.arange(len(book), dtype=np.int64)
    pricer = EquityPricer(book, rows, market, cache=SplineCache())
    ours = pricer.risk(market, CurveSet(market, interpolation="log_linear"))
    by_row = {int(r): k for k, r in enumerate(ours.rows)}
    qlc = QlCurves(market, currencies={_spec(market, t).currency for t in _UNDERLYINGS})
    views = {t: QlEquity(market, qlc, _spec(market, t)) for t in _UNDERLYINGS}
    apart = 0
    for i in range(len(book)):
        eq = views[book.underlying.labels[int(book.underlying.codes[i])]]
        sign, strike, n = float(book.option_sign[i]), float(book.strike[i]), book.notional[i]
        expiry = book.maturity[i].astype(date)
        pv, delta, gamma, vega = (
            n * x for x in _ql_spot_greeks(eq, sign, strike, expiry, sticky="moneyness")
        )
        k = by_row[i]
        scale = abs(pv) + 1e-6 * n * eq.spot
        assert ours.pv[k] == pytest.approx(pv, rel=1e-9, abs=1e-12 * scale), i
        assert ours.delta[k] == pytest.approx(delta, rel=1e-6, abs=1e-9 * scale), i
        assert ours.gamma[k] == pytest.approx(gamma, rel=1e-4, abs=1e-8 * scale), i
        assert ours.vega[k] == pytest.approx(vega, rel=1e-9, abs=1e-12 * scale), i
        _, sticky_delta, _, _ = _ql_spot_greeks(eq, sign, strike, expiry, sticky="strike")
        if abs(n * sticky_delta - delta) > 1e-3 * abs(delta):
            apart += 1
    # on this skewed surface sticky strike moves most deltas by more than 0.1%
    assert apart > len(book) // 2, apart


@pytest.mark.parametrize("interpolation", ["log_linear", "monotone_convex"])
def test_friday_theta_rolls_one_calendar_day_to_saturday(interpolation: str) -> None:
    """docs/greeks.md: theta rolls the valuation date one *calendar* day, so a Friday's theta
    is PV(Saturday) − PV(Friday), quotes held (not the three days to Monday). QuantLib with
    its evaluation date moved Friday → Saturday, its curves bootstrapped on each date from
    the spot dates ours use and the surface anchored at each date, gives the same theta."""
    friday = generate_reference_market(as_of=date(2026, 12, 4))
    assert friday.as_of.weekday() == 4
    saturday = friday.with_as_of(friday.as_of + timedelta(days=1))
    tickers = ("AAPL",)  # USD: the book's theta in USD is the option currency's
    book = _book(friday, tickers, ("1M", "1Y"))
    risk = PortfolioPricer(book, friday, interpolation=interpolation).risk(friday)  # type: ignore[arg-type]

    ccy = {_spec(friday, t).currency for t in tickers}
    pv: dict[date, np.ndarray] = {}
    for market in (friday, saturday):
        ql.Settings.instance().evaluationDate = qdate(market.as_of)
        qlc = ql_curves_rolled_first(market, interpolation=interpolation, currencies=ccy)
        eq = QlEquity(market, qlc, _spec(market, tickers[0]))
        vols = eq.model.vol_for_strike(
            np.full(len(book), eq.spot),
            book.strike,
            (book.maturity - np.datetime64(market.as_of, "D")).astype(np.float64) / 365.0,
        )
        pv[market.as_of] = np.array(
            [
                book.notional[i]
                * eq.option(
                    float(book.option_sign[i]),
                    float(book.strike[i]),
                    book.maturity[i].astype(date),
                    ql.BlackVolTermStructureHandle(
                        ql.BlackConstantVol(eq.today, ql.NullCalendar(), float(vols[i]), _DC)
                    ),
                )[0].NPV()
                for i in range(len(book))
            ]
        )
    np.testing.assert_allclose(risk.pv, pv[friday.as_of], rtol=1e-9)
    ql_theta = pv[saturday.as_of] - pv[friday.as_of]
    np.testing.assert_allclose(risk.theta, ql_theta, rtol=1e-6, atol=1e-9 * np.abs(risk.pv).max())
    # a roll to Monday would be about three days of decay: far from what is reported
    monday = friday.with_as_of(friday.as_of + timedelta(days=3))
    to_monday = PortfolioPricer(book, monday, interpolation=interpolation)  # type: ignore[arg-type]
    three_days = to_monday.risk(monday).pv - risk.pv
    short = book.maturity < np.datetime64(friday.as_of + timedelta(days=60), "D")
    assert np.all(np.abs(three_days[short]) > 2.0 * np.abs(risk.theta[short]))
