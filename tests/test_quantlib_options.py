"""Garman–Kohlhagen / Black–Scholes against QuantLib's analytic engine and Haug's tables.

QuantLib set-up: ``GeneralizedBlackScholesProcess`` on flat curves (``FlatForward`` with
continuous compounding, ACT/365F, so ``P(T) = e^{−rT}`` with ``T`` = days/365 exactly as ours),
a flat ``BlackConstantVol`` and ``AnalyticEuropeanEngine``. The curves float with the
evaluation date, so moving the evaluation date one day rolls the valuation date with every
quote unchanged — the portfolio ``theta`` convention of docs/greeks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import QuantLib as ql  # noqa: N813 - the conventional alias

from workbench._types import SPOT_BUMP, VOL_POINT
from workbench.pricing.black import black_greeks, black_price

PRICE_RTOL = 1e-10
GREEK_RTOL = 1e-6
_DC = ql.Actual365Fixed()


@dataclass(frozen=True)
class Case:
    sign: float  # +1 call, −1 put
    S: float
    K: float
    days: int  # expiry in calendar days; T = days / 365
    r_d: float
    r_f: float
    vol: float

    @property
    def T(self) -> float:  # noqa: N802 - the formula's name
        return self.days / 365.0


class QlOption:
    """One European option on flat curves that roll with the evaluation date."""

    def __init__(self, case: Case, today: ql.Date) -> None:
        self.spot = ql.SimpleQuote(case.S)
        ql.Settings.instance().evaluationDate = today

        def flat(rate: float) -> ql.YieldTermStructureHandle:
            return ql.YieldTermStructureHandle(
                ql.FlatForward(0, ql.NullCalendar(), rate, _DC, ql.Continuous, ql.Annual)
            )

        vol = ql.BlackVolTermStructureHandle(
            ql.BlackConstantVol(0, ql.NullCalendar(), case.vol, _DC)
        )
        process = ql.GeneralizedBlackScholesProcess(
            ql.QuoteHandle(self.spot), flat(case.r_f), flat(case.r_d), vol
        )
        kind = ql.Option.Call if case.sign > 0 else ql.Option.Put
        self.option = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, case.K), ql.EuropeanExercise(today + case.days)
        )
        self.option.setPricingEngine(ql.AnalyticEuropeanEngine(process))


def _cases() -> list[Case]:
    rng = np.random.default_rng(20261124)
    out = []
    for _ in range(60):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        S = float(np.exp(rng.uniform(np.log(0.5), np.log(200.0))))
        K = S * float(np.exp(rng.normal(0.0, 0.25)))
        out.append(
            Case(
                sign,
                S,
                K,
                int(rng.integers(7, 3650)),
                float(rng.uniform(-0.01, 0.08)),
                float(rng.uniform(-0.01, 0.06)),
                float(rng.uniform(0.04, 0.8)),
            )
        )
    # FX-like and equity-like corner cases: deep ITM/OTM, negative rates, short expiries
    out += [
        Case(1.0, 1.0842, 1.25, 365, 0.0375, 0.0195, 0.075),
        Case(-1.0, 151.35, 120.0, 730, 0.0075, 0.0375, 0.10),
        Case(1.0, 0.8815, 0.88, 3, -0.0005, 0.0375, 0.078),
        Case(-1.0, 250.0, 400.0, 1825, 0.04, 0.0, 0.35),
    ]
    return out


CASES = _cases()


@pytest.fixture(autouse=True)
def _evaluation_date() -> Iterator[None]:
    saved = ql.Settings.instance().evaluationDate
    yield
    ql.Settings.instance().evaluationDate = saved


TODAY = ql.Date(24, 11, 2026)


def _ours(case: Case) -> object:
    a = [np.array([v]) for v in (case.sign, case.S, case.K, case.T, case.r_d, case.r_f, case.vol)]
    return black_greeks(*a)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.sign:+.0f}-{c.days}d")
def test_price_and_greeks_match_quantlib(case: Case) -> None:
    q = QlOption(case, TODAY)
    ours = _ours(case)
    assert float(ours.pv[0]) == pytest.approx(q.option.NPV(), rel=PRICE_RTOL, abs=1e-14 * case.S)
    pv_scalar = black_price(case.sign, case.S, case.K, case.T, case.r_d, case.r_f, case.vol)
    assert float(pv_scalar) == pytest.approx(float(ours.pv[0]), rel=1e-15, abs=0.0)
    # raw partial derivatives: QuantLib's are per unit spot, per 1.0 of vol, per 1.0 of rate
    scale = abs(float(ours.pv[0])) + 1e-12 * case.S
    for name, theirs in (
        ("delta", q.option.delta()),
        ("gamma", q.option.gamma()),
        ("vega", q.option.vega()),
        ("theta_t", q.option.theta()),
        ("rho_d", q.option.rho()),
        ("rho_f", q.option.dividendRho()),
    ):
        value = float(getattr(ours, name)[0])
        # absolute floor for Greeks that vanish (deep ITM/OTM): tiny relative to the price
        assert value == pytest.approx(theirs, rel=GREEK_RTOL, abs=1e-12 * scale), name


@pytest.mark.parametrize("case", CASES[::6], ids=lambda c: f"{c.sign:+.0f}-{c.days}d")
def test_greeks_in_report_units_match_quantlib(case: Case) -> None:
    """docs/greeks.md units, first order: delta per +1% spot, gamma Γ·S²·1e-4, vega per vol pt."""
    q = QlOption(case, TODAY)
    ours = _ours(case)
    S = case.S
    pairs = (
        (float(ours.delta[0]) * S * SPOT_BUMP, q.option.delta() * S / 100.0),
        (float(ours.gamma[0]) * (S * SPOT_BUMP) ** 2, q.option.gamma() * S * S / 1e4),
        (float(ours.vega[0]) * VOL_POINT, q.option.vega() / 100.0),
        (float(ours.theta_t[0]) / 365.0, q.option.thetaPerDay()),
    )
    for value, theirs in pairs:
        assert value == pytest.approx(theirs, rel=GREEK_RTOL, abs=1e-14 * S)


@pytest.mark.parametrize("case", CASES[::4], ids=lambda c: f"{c.sign:+.0f}-{c.days}d")
def test_one_day_theta_matches_quantlib_evaluation_date_roll(case: Case) -> None:
    """Portfolio theta = PV(as-of + 1 calendar day, same quotes) − PV(as-of).

    QuantLib: move the evaluation date one day (flat curves and vol roll with it, expiry date
    fixed). Ours: the same option with T − 1/365, every rate and vol unchanged.
    """
    q = QlOption(case, TODAY)
    pv0 = q.option.NPV()
    ql.Settings.instance().evaluationDate = TODAY + 1
    pv1 = q.option.NPV()
    args = (case.sign, case.S, case.K)
    ours = float(
        black_price(*args, case.T - 1 / 365, case.r_d, case.r_f, case.vol)
        - black_price(*args, case.T, case.r_d, case.r_f, case.vol)
    )
    assert ours == pytest.approx(pv1 - pv0, rel=1e-6, abs=1e-12 * case.S)
    # and the analytic per-day theta is its first-order approximation
    theta_day = float(_ours(case).theta_t[0]) / 365.0
    curvature = abs(theta_day) * 2.0 / max(case.days, 1) + 1e-12 * case.S
    assert ours == pytest.approx(theta_day, abs=curvature + 1e-3 * abs(theta_day))


# -- Haug ---------------------------------------------------------------------------------------

# E.G. Haug, "The Complete Guide to Option Pricing Formulas" (McGraw-Hill, 1998), as tabulated
# in QuantLib's test-suite/europeanoption.cpp, EuropeanOptionTest::testValues:
# type (+1 call / −1 put), strike, spot, q, r, t, vol, value, tolerance.
HAUG_VALUES = [
    # pag 2-8
    (+1, 65.00, 60.00, 0.00, 0.08, 0.25, 0.30, 2.1334, 1.0e-4),
    (-1, 95.00, 100.00, 0.05, 0.10, 0.50, 0.20, 2.4648, 1.0e-4),
    (-1, 19.00, 19.00, 0.10, 0.10, 0.75, 0.28, 1.7011, 1.0e-4),
    (+1, 19.00, 19.00, 0.10, 0.10, 0.75, 0.28, 1.7011, 1.0e-4),
    (+1, 1.60, 1.56, 0.08, 0.06, 0.50, 0.12, 0.0291, 1.0e-4),
    (-1, 70.00, 75.00, 0.05, 0.10, 0.50, 0.35, 4.0870, 1.0e-4),
    # pag 24
    (+1, 100.00, 90.00, 0.10, 0.10, 0.10, 0.15, 0.0205, 1.0e-4),
    (+1, 100.00, 100.00, 0.10, 0.10, 0.10, 0.15, 1.8734, 1.0e-4),
    (+1, 100.00, 110.00, 0.10, 0.10, 0.10, 0.15, 9.9413, 1.0e-4),
    (+1, 100.00, 90.00, 0.10, 0.10, 0.10, 0.25, 0.3150, 1.0e-4),
    (+1, 100.00, 100.00, 0.10, 0.10, 0.10, 0.25, 3.1217, 1.0e-4),
    (+1, 100.00, 110.00, 0.10, 0.10, 0.10, 0.25, 10.3556, 1.0e-4),
    (+1, 100.00, 90.00, 0.10, 0.10, 0.10, 0.35, 0.9474, 1.0e-4),
    (+1, 100.00, 100.00, 0.10, 0.10, 0.10, 0.35, 4.3693, 1.0e-4),
    (+1, 100.00, 110.00, 0.10, 0.10, 0.10, 0.35, 11.1381, 1.0e-4),
    (+1, 100.00, 90.00, 0.10, 0.10, 0.50, 0.15, 0.8069, 1.0e-4),
    (+1, 100.00, 100.00, 0.10, 0.10, 0.50, 0.15, 4.0232, 1.0e-4),
    (+1, 100.00, 110.00, 0.10, 0.10, 0.50, 0.15, 10.5769, 1.0e-4),
    (+1, 100.00, 90.00, 0.10, 0.10, 0.50, 0.25, 2.7026, 1.0e-4),
    (+1, 100.00, 100.00, 0.10, 0.10, 0.50, 0.25, 6.6997, 1.0e-4),
    (+1, 100.00, 110.00, 0.10, 0.10, 0.50, 0.25, 12.7857, 1.0e-4),
    (+1, 100.00, 90.00, 0.10, 0.10, 0.50, 0.35, 4.9329, 1.0e-4),
    (+1, 100.00, 100.00, 0.10, 0.10, 0.50, 0.35, 9.3679, 1.0e-4),
    (+1, 100.00, 110.00, 0.10, 0.10, 0.50, 0.35, 15.3086, 1.0e-4),
    (-1, 100.00, 90.00, 0.10, 0.10, 0.10, 0.15, 9.9210, 1.0e-4),
    (-1, 100.00, 100.00, 0.10, 0.10, 0.10, 0.15, 1.8734, 1.0e-4),
    (-1, 100.00, 110.00, 0.10, 0.10, 0.10, 0.15, 0.0408, 1.0e-4),
    (-1, 100.00, 90.00, 0.10, 0.10, 0.10, 0.25, 10.2155, 1.0e-4),
    (-1, 100.00, 100.00, 0.10, 0.10, 0.10, 0.25, 3.1217, 1.0e-4),
    (-1, 100.00, 110.00, 0.10, 0.10, 0.10, 0.25, 0.4551, 1.0e-4),
    (-1, 100.00, 90.00, 0.10, 0.10, 0.10, 0.35, 10.8479, 1.0e-4),
    (-1, 100.00, 100.00, 0.10, 0.10, 0.10, 0.35, 4.3693, 1.0e-4),
    (-1, 100.00, 110.00, 0.10, 0.10, 0.10, 0.35, 1.2376, 1.0e-4),
    (-1, 100.00, 90.00, 0.10, 0.10, 0.50, 0.15, 10.3192, 1.0e-4),
    (-1, 100.00, 100.00, 0.10, 0.10, 0.50, 0.15, 4.0232, 1.0e-4),
    (-1, 100.00, 110.00, 0.10, 0.10, 0.50, 0.15, 1.0646, 1.0e-4),
    (-1, 100.00, 90.00, 0.10, 0.10, 0.50, 0.25, 12.2149, 1.0e-4),
    (-1, 100.00, 100.00, 0.10, 0.10, 0.50, 0.25, 6.6997, 1.0e-4),
    (-1, 100.00, 110.00, 0.10, 0.10, 0.50, 0.25, 3.2734, 1.0e-4),
    (-1, 100.00, 90.00, 0.10, 0.10, 0.50, 0.35, 14.4452, 1.0e-4),
    (-1, 100.00, 100.00, 0.10, 0.10, 0.50, 0.35, 9.3679, 1.0e-4),
    (-1, 100.00, 110.00, 0.10, 0.10, 0.50, 0.35, 5.7963, 1.0e-4),
    # pag 27
    (+1, 40.00, 42.00, 0.08, 0.04, 0.75, 0.35, 5.0975, 1.0e-4),
]

# Haug (1998) pag 11-16, as tabulated in QuantLib's EuropeanOptionTest::testGreekValues
# (tolerance 1e-4 there): type, strike, spot, q, r, t, vol, Greek, value.
HAUG_GREEKS = [
    (+1, 100.00, 105.00, 0.10, 0.10, 0.5, 0.36, "delta", 0.5946),
    (-1, 100.00, 105.00, 0.10, 0.10, 0.5, 0.36, "delta", -0.3566),
    (-1, 100.00, 105.00, 0.10, 0.10, 0.5, 0.36, "elasticity", -4.8775),
    (+1, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, "gamma", 0.0278),
    (-1, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, "gamma", 0.0278),
    (+1, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, "vega", 18.9358),
    (-1, 60.00, 55.00, 0.00, 0.10, 0.75, 0.30, "vega", 18.9358),
    (-1, 405.00, 430.00, 0.05, 0.07, 1.0 / 12.0, 0.20, "theta", -31.1924),
    (-1, 405.00, 430.00, 0.05, 0.07, 1.0 / 12.0, 0.20, "theta_per_day", -0.0855),
    (+1, 75.00, 72.00, 0.00, 0.09, 1.0, 0.19, "rho", 38.7325),
    (-1, 490.00, 500.00, 0.05, 0.08, 0.25, 0.15, "dividend_rho", 42.2254),
]


@pytest.mark.parametrize(("sign", "K", "S", "q", "r", "t", "vol", "value", "tol"), HAUG_VALUES)
def test_haug_values(
    sign: int,
    K: float,
    S: float,
    q: float,
    r: float,
    t: float,
    vol: float,
    value: float,
    tol: float,
) -> None:
    """Haug (1998) pp. 2-8, 24, 27, rows and tolerances from QuantLib's europeanoption.cpp."""
    assert abs(float(black_price(float(sign), S, K, t, r, q, vol)) - value) <= tol


@pytest.mark.parametrize(("sign", "K", "S", "q", "r", "t", "vol", "greek", "value"), HAUG_GREEKS)
def test_haug_greeks(
    sign: int,
    K: float,
    S: float,
    q: float,
    r: float,
    t: float,
    vol: float,
    greek: str,
    value: float,
) -> None:
    """Haug (1998) pp. 11-16; QuantLib's tolerance 1e-4 (the table is rounded to 4 places)."""
    g = black_greeks(*(np.array([x]) for x in (float(sign), S, K, t, r, q, vol)))
    computed = {
        "delta": g.delta,
        "gamma": g.gamma,
        "vega": g.vega,
        "theta": g.theta_t,
        "theta_per_day": g.theta_t / 365.0,
        "rho": g.rho_d,
        "dividend_rho": g.rho_f,
        "elasticity": g.delta * S / g.pv,
    }[greek]
    assert abs(float(computed[0]) - value) <= 1e-4


# -- a non-flat smile: the strike's vol re-solved at a bumped spot (sticky delta) -------------


def test_fx_smile_resolve_is_sticky_in_quantlib_forward_delta() -> None:
    """docs/pricing.md: at every spot (the base and ±1%) a strike's vol is the smile at that
    strike's forward, premium-unadjusted call delta, as QuantLib's BlackDeltaCalculator
    (DeltaVolQuote.Fwd) computes it at that spot and vol; so the vol moves with spot along the
    reference EURUSD smile, and QuantLib's Garman–Kohlhagen price at it is ours."""
    from workbench.market.reference import generate_reference_market
    from workbench.pricing.fx_book import _CALL_DELTA, tenor_times
    from workbench.pricing.surfaces import FxVolSurfaceModel, SplineCache

    market = generate_reference_market()
    spec = next(s for s in market.fx_vol_surfaces if s.pair == "EURUSD")
    model = FxVolSurfaceModel(
        surface_id=spec.pair,
        version=1,
        expiries=tenor_times(market.as_of, spec.expiries),
        call_deltas=np.array([_CALL_DELTA[d] for d in spec.deltas]),
        vols=np.array([[market.quote(q) for q in row] for row in spec.quotes]),
        cache=SplineCache(),
    )
    spot, r_d, r_f = market.quote("FX.EURUSD"), 0.038, 0.021
    strikes = spot * np.array([0.85, 0.95, 1.0, 1.04, 1.12])
    for days in (55, 219, 620):
        t = days / 365.0
        vols = []
        for move in (0.0, SPOT_BUMP, -SPOT_BUMP):
            s = spot * (1.0 + move)
            n = strikes.size
            sigma = model.vol_for_strike(
                np.full(n, s), strikes, np.full(n, t), np.full(n, r_d), np.full(n, r_f)
            )
            for k, vol in zip(strikes, sigma, strict=True):
                calc = ql.BlackDeltaCalculator(
                    ql.Option.Call,
                    ql.DeltaVolQuote.Fwd,
                    s,
                    np.exp(-r_d * t),
                    np.exp(-r_f * t),
                    vol * np.sqrt(t),
                )
                delta = calc.deltaFromStrike(k)
                assert model.vol_at_delta(np.array([t]), np.array([delta]))[0] == pytest.approx(
                    vol, abs=1e-12
                )
                price = black_price(
                    np.array([1.0]), s, np.array([k]), np.array([t]), r_d, r_f, np.array([vol])
                )[0]
                ql_price = QlOption(Case(1.0, s, k, days, r_d, r_f, vol), TODAY).option.NPV()
                assert price == pytest.approx(ql_price, rel=PRICE_RTOL)
            vols.append(sigma)
        assert np.max(np.abs(vols[1] - vols[0])) > 1e-4  # the smile is not flat: vols move
