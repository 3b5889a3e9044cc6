"""Black–Scholes / Garman–Kohlhagen: analytic Greeks against central differences, and properties.

Hypothesis profiles: ``fast`` (default, 50 examples) and ``expensive`` (2,000 examples), chosen
with the environment variable ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench._types import FloatArray
from workbench.pricing.black import BlackGreeks, black_greeks, black_price

settings.register_profile(
    "fast", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "expensive", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


# -- finite differences -------------------------------------------------------------------------


def _grid() -> dict[str, FloatArray]:
    """Calls and puts over moneyness, expiry, vol and rates (incl. negative rates)."""
    sign, m, T, vol, r_d, r_f = np.meshgrid(
        [1.0, -1.0],
        [0.6, 0.9, 1.0, 1.1, 1.6],
        [0.05, 0.5, 2.0, 10.0],
        [0.05, 0.2, 0.6],
        [-0.005, 0.04],
        [0.0, 0.03],
        indexing="ij",
    )
    S = np.full(sign.size, 100.0)
    return {
        "sign": sign.ravel(),
        "S": S,
        "K": S * m.ravel(),
        "T": T.ravel(),
        "r_d": r_d.ravel(),
        "r_f": r_f.ravel(),
        "vol": vol.ravel(),
    }


GRID = _grid()
ORDER = ("sign", "S", "K", "T", "r_d", "r_f", "vol")
SPOT_STEP = GRID["S"] * GRID["vol"] * np.sqrt(GRID["T"])
"""A spot step that scales with the spread of log S_T, so truncation error stays below 1e-7."""


def _price(**kw: FloatArray) -> FloatArray:
    return black_price(*(kw[k] for k in ORDER))


def _central(
    f: Callable[..., FloatArray], name: str, h: FloatArray, sign: float = 1.0
) -> FloatArray:
    up = dict(GRID, **{name: GRID[name] + h})
    down = dict(GRID, **{name: GRID[name] - h})
    return sign * (f(**up) - f(**down)) / (2.0 * h)


@pytest.fixture(scope="module")
def analytic() -> BlackGreeks:
    return black_greeks(*(GRID[k] for k in ORDER))


def _assert_close(name: str, value: FloatArray, fd: FloatArray, rtol: float, floor: float) -> None:
    err = np.abs(value - fd)
    bad = np.flatnonzero(err > rtol * np.abs(fd) + floor)
    assert bad.size == 0, (
        f"{name}: {bad.size} of {value.size} off, first at "
        f"{ {k: float(GRID[k][bad[0]]) for k in ORDER} }: analytic {value[bad[0]]!r} "
        f"vs central difference {fd[bad[0]]!r}"
    )


def test_price_is_the_greeks_pv(analytic: BlackGreeks) -> None:
    np.testing.assert_allclose(analytic.pv, _price(**GRID), rtol=1e-15, atol=0.0)


def test_delta_is_the_spot_derivative(analytic: BlackGreeks) -> None:
    fd = _central(_price, "S", SPOT_STEP * 1e-4)
    _assert_close("delta", analytic.delta, fd, 1e-6, 1e-9)


def test_gamma_is_the_derivative_of_delta(analytic: BlackGreeks) -> None:
    def delta(**kw: FloatArray) -> FloatArray:
        return black_greeks(*(kw[k] for k in ORDER)).delta

    fd = _central(delta, "S", SPOT_STEP * 1e-4)
    _assert_close("gamma", analytic.gamma, fd, 1e-6, 1e-10)
    # and the second difference of the price (coarser: rounding / h²)
    h = SPOT_STEP * 3e-3
    up = _price(**dict(GRID, S=GRID["S"] + h))
    down = _price(**dict(GRID, S=GRID["S"] - h))
    _assert_close(
        "gamma (2nd diff)", analytic.gamma, (up - 2 * analytic.pv + down) / h**2, 1e-4, 1e-7
    )


def test_vega_is_the_vol_derivative(analytic: BlackGreeks) -> None:
    fd = _central(_price, "vol", np.full(GRID["vol"].size, 1e-5))
    _assert_close("vega", analytic.vega, fd, 1e-6, 1e-7)


def test_theta_is_minus_the_expiry_derivative(analytic: BlackGreeks) -> None:
    """``theta_t`` is ∂PV/∂t as calendar time passes, i.e. −∂PV/∂T."""
    fd = _central(_price, "T", GRID["T"] * 1e-5, sign=-1.0)
    _assert_close("theta_t", analytic.theta_t, fd, 1e-6, 1e-7)


def test_rho_d_is_the_domestic_rate_derivative(analytic: BlackGreeks) -> None:
    fd = _central(_price, "r_d", np.full(GRID["r_d"].size, 1e-6))
    _assert_close("rho_d", analytic.rho_d, fd, 1e-6, 1e-7)


def test_rho_f_is_the_foreign_rate_derivative(analytic: BlackGreeks) -> None:
    fd = _central(_price, "r_f", np.full(GRID["r_f"].size, 1e-6))
    _assert_close("rho_f", analytic.rho_f, fd, 1e-6, 1e-7)


def test_every_greek_is_checked() -> None:
    """A Greek added to BlackGreeks must get a finite-difference test above."""
    checked = {"pv", "delta", "gamma", "vega", "theta_t", "rho_d", "rho_f"}
    assert set(BlackGreeks.__dataclass_fields__) == checked


# -- properties ---------------------------------------------------------------------------------

spots = st.floats(1e-2, 1e4)
log_moneyness = st.floats(-1.5, 1.5)
expiries = st.floats(1.0 / 365.0, 30.0)
rates = st.floats(-0.02, 0.15)
vols = st.floats(0.01, 2.0)


def _eps(S: float, K: float) -> float:
    """Rounding allowance of a price made of S·e^{−qT}·N(d1) − K·e^{−rT}·N(d2)."""
    return 1e-13 * (S + K)


@given(spots, log_moneyness, expiries, rates, rates, vols)
def test_put_call_parity(S: float, lm: float, T: float, r: float, q: float, vol: float) -> None:
    K = S * float(np.exp(lm))
    call = float(black_price(1.0, S, K, T, r, q, vol))
    put = float(black_price(-1.0, S, K, T, r, q, vol))
    forward_value = S * np.exp(-q * T) - K * np.exp(-r * T)
    assert call - put == pytest.approx(forward_value, abs=_eps(S, K))


@given(spots, log_moneyness, st.floats(1e-4, 0.5), expiries, rates, rates, vols)
def test_monotone_and_convex_in_strike(
    S: float, lm: float, dk: float, T: float, r: float, q: float, vol: float
) -> None:
    k = S * np.exp(lm) * np.array([1.0 - dk, 1.0, 1.0 + dk])
    eps = _eps(S, float(k[-1]))
    call = black_price(np.ones(3), np.full(3, S), k, T, r, q, vol)
    put = black_price(-np.ones(3), np.full(3, S), k, T, r, q, vol)
    assert np.all(np.diff(call) <= eps), "call value must decrease with strike"
    assert np.all(np.diff(put) >= -eps), "put value must increase with strike"
    assert call[0] + call[2] - 2 * call[1] >= -eps, "call value must be convex in strike"
    assert put[0] + put[2] - 2 * put[1] >= -eps, "put value must be convex in strike"


@given(spots, log_moneyness, expiries, rates, rates, vols)
def test_no_arbitrage_bounds(S: float, lm: float, T: float, r: float, q: float, vol: float) -> None:
    K = S * float(np.exp(lm))
    fs, fk = S * np.exp(-q * T), K * np.exp(-r * T)
    eps = _eps(S, K)
    call = float(black_price(1.0, S, K, T, r, q, vol))
    put = float(black_price(-1.0, S, K, T, r, q, vol))
    assert max(fs - fk, 0.0) - eps <= call <= fs + eps
    assert max(fk - fs, 0.0) - eps <= put <= fk + eps


@given(spots, log_moneyness, expiries, rates, rates, vols, st.floats(1e-3, 1e3))
def test_homogeneous_of_degree_one(
    S: float, lm: float, T: float, r: float, q: float, vol: float, lam: float
) -> None:
    K = S * float(np.exp(lm))
    for sign in (1.0, -1.0):
        base = float(black_price(sign, S, K, T, r, q, vol))
        scaled = float(black_price(sign, lam * S, lam * K, T, r, q, vol))
        assert scaled == pytest.approx(lam * base, rel=1e-11, abs=lam * _eps(S, K))


@given(spots, log_moneyness, expiries, rates, rates, vols)
def test_gamma_and_vega_are_positive_and_shared_by_call_and_put(
    S: float, lm: float, T: float, r: float, q: float, vol: float
) -> None:
    K = S * float(np.exp(lm))
    args = [np.array([x]) for x in (S, K, T, r, q, vol)]
    c = black_greeks(np.array([1.0]), *args)
    p = black_greeks(np.array([-1.0]), *args)
    assert c.gamma[0] >= 0.0
    assert c.vega[0] >= 0.0
    assert c.gamma[0] == p.gamma[0]
    assert c.vega[0] == p.vega[0]
    assert c.delta[0] - p.delta[0] == pytest.approx(np.exp(-q * T), rel=1e-12, abs=1e-15)
