"""Scenario PnL of a sample of positions against QuantLib repricing of each scenario.

For each scenario QuantLib bootstraps its own curves from the scenario's quotes (log-linear
discount, ``QlCurves`` of tests/test_quantlib_curves.py, the same as our curves under
``interpolation="log_linear"``) and prices, in each position's currency: swaps with its
discounting swap engines; FX and equity options with ``AnalyticEuropeanEngine`` on flat
continuous curves at the zero rates its bootstrapped curves give to expiry (the FX forward from
both currencies' curves and the spot date, as docs/pricing.md) and at the vol our smile or
surface gives under the scenario's vol quotes (QuantLib has no delta smile to solve). The PnL
is the scenario's PV less today's, both QuantLib's; ours comes from the vectorised revaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date

import numpy as np
import pytest
import QuantLib as ql  # noqa: N813 - the conventional alias
from test_quantlib_curves import QlCurves, qdate, ql_swap_npv

from workbench.book.io import frame_to_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.history import validate_history
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.market.schedules import spot_date, tenor_times, year_fractions_from
from workbench.pricing.fx_book import _CALL_DELTA
from workbench.pricing.scenario_book import ScenarioBook
from workbench.pricing.splines import SplineCache
from workbench.pricing.surfaces import EquityVolSurfaceModel, FxVolSurfaceModel
from workbench.risk.scenarios import historical_scenarios

PNL_RTOL = 1e-8
_DC = ql.Actual365Fixed()


@pytest.fixture(autouse=True)
def _evaluation_date() -> Iterator[None]:
    saved = ql.Settings.instance().evaluationDate
    yield
    ql.Settings.instance().evaluationDate = saved


def _flat(today: ql.Date, rate: float) -> ql.YieldTermStructureHandle:
    return ql.YieldTermStructureHandle(ql.FlatForward(today, rate, _DC, ql.Continuous, ql.Annual))


def _black(
    today: ql.Date, sign: float, spot: float, strike: float, expiry: date,
    r_d: float, r_f: float, vol: float,
) -> float:  # fmt: skip
    """QuantLib's analytic European price per unit of underlying, domestic currency."""
    process = ql.GeneralizedBlackScholesProcess(
        ql.QuoteHandle(ql.SimpleQuote(spot)), _flat(today, r_f), _flat(today, r_d),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, _DC)),
    )  # fmt: skip
    kind = ql.Option.Call if sign > 0 else ql.Option.Put
    option = ql.VanillaOption(ql.PlainVanillaPayoff(kind, strike),
                              ql.EuropeanExercise(qdate(expiry)))  # fmt: skip
    option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return float(option.NPV())


def _ql_pv(market: MarketSnapshot, book: Book, row: int) -> float:
    """One position's PV in its own currency, priced by QuantLib against ``market``."""
    qlc = QlCurves(market)
    today = qdate(market.as_of)
    product = book.product.labels[int(book.product.codes[row])]
    under = book.underlying.labels[int(book.underlying.codes[row])]
    expiry = book.maturity[row].astype(date)
    t = float(year_fractions_from(market.as_of, book.maturity[row : row + 1])[0])
    sign, strike = float(book.option_sign[row]), float(book.strike[row])
    notional = float(book.notional[row])
    if product == "IRS":
        spec = market.curve(under)
        return ql_swap_npv(
            qlc, spec, market.discount_curve_id(spec.currency), notional=notional,
            start=book.start[row].astype(date), maturity=expiry,
            fixed_rate=float(book.fixed_rate[row]), spread=float(book.float_spread[row]),
        )  # fmt: skip
    if product == "FX_OPTION":
        pair = next(p for p in market.fx_pairs if p.pair == under)
        surf = next(s for s in market.fx_vol_surfaces if s.pair == under)
        spot = market.quote(pair.spot_quote)
        settle = spot_date(market.as_of, pair.spot_lag, market.calendars[pair.calendar])
        base = qlc.curves[market.discount_curve_id(pair.base_ccy)]
        quote = qlc.curves[market.discount_curve_id(pair.quote_ccy)]
        fwd = spot * (base.discount(qdate(expiry)) / base.discount(qdate(settle))) / (
            quote.discount(qdate(expiry)) / quote.discount(qdate(settle)))  # fmt: skip
        r_d = -math.log(quote.discount(qdate(expiry))) / t
        r_f = r_d - math.log(fwd / spot) / t
        smile = FxVolSurfaceModel(
            surface_id=under, version=market.version,
            expiries=tenor_times(market.as_of, surf.expiries),
            call_deltas=np.array([_CALL_DELTA[d] for d in surf.deltas]),
            vols=np.array([[market.quote(q) for q in r] for r in surf.quotes]),
            cache=SplineCache(),
        )  # fmt: skip
        one = np.array([1.0])
        vol = float(smile.vol_for_strike(spot * one, strike * one, t * one, r_d * one,
                                         r_f * one)[0])  # fmt: skip
        return notional * _black(today, sign, spot, strike, expiry, r_d, r_f, vol)
    assert product == "EQ_OPTION", product
    spec_e = next(e for e in market.equities if e.id == under)
    spot = market.quote(spec_e.spot_quote)
    curve = qlc.curves[market.discount_curve_id(spec_e.currency)]
    r = -math.log(curve.discount(qdate(expiry))) / t
    surface = EquityVolSurfaceModel(
        surface_id=under, version=market.version,
        expiries=tenor_times(market.as_of, spec_e.vol_expiries),
        moneyness=np.asarray(spec_e.vol_moneyness),
        vols=np.array([[market.quote(q) for q in r] for r in spec_e.vol_quotes]),
        cache=SplineCache(),
    )  # fmt: skip
    vol = float(surface.vol_for_strike(np.array([spot]), np.array([strike]), np.array([t]))[0])
    return notional * _black(today, sign, spot, strike, expiry, r, spec_e.dividend_yield, vol)


@pytest.mark.slow
def test_sampled_positions_scenario_pnl_is_quantlibs() -> None:
    market = generate_reference_market()
    book = frame_to_book(generate_reference_book(market, positions=300, seed=11))
    hist = validate_history(generate_history(market, days=4, seed=7), market)
    values = historical_scenarios(hist, market, window=2).values(market)
    today = np.asarray(market.quotes, np.float64)
    priced = ScenarioBook(book, market, interpolation="log_linear")
    every = np.vstack([today, values])
    ours = priced.pv(every) / priced.fx_rates(every)[:, book.currency.codes]  # own currency
    rows = {p: book.rows(p)[:6] for p in ("IRS", "FX_OPTION", "EQ_OPTION")}
    for product, sample in rows.items():
        assert sample.size == 6, product
        for row in sample.tolist():
            theirs = [_ql_pv(market.with_quote_values(v), book, row) for v in every]
            for s in range(1, every.shape[0]):
                pnl, want = ours[s, row] - ours[0, row], theirs[s] - theirs[0]
                assert abs(want) > 1e-7 * abs(book.notional[row]), "the scenario moves it"
                assert abs(pnl - want) <= PNL_RTOL * abs(want), (
                    book.position_id[row], s, pnl, want,
                )  # fmt: skip
