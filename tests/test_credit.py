"""Tranches: expected-loss properties, and the Monte Carlo against the semi-analytic recursion.

Hypothesis profiles: ``fast`` (default, 50 examples) and ``expensive`` (2,000 examples), chosen
with the environment variable ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench._types import FloatArray
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.credit import (
    IndexSimulation,
    cds_schedule,
    index_pv,
    tranche_expected_loss,
    tranche_pv,
)
from workbench.pricing.curves import CurveSet
from workbench.pricing.default_counts import default_distribution_recursion, thresholds

settings.register_profile(
    "fast", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "expensive", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

STANDARD_TRANCHES = {
    "CDX.IG": (0.0, 0.03, 0.07, 0.15, 1.0),
    "CDX.HY": (0.0, 0.15, 0.25, 0.35, 1.0),
    "ITRAXX.MAIN": (0.0, 0.03, 0.06, 0.12, 1.0),
    "ITRAXX.XOVER": (0.0, 0.10, 0.20, 0.35, 1.0),
}
"""Attachment points of each index's standard capital structure (as in the reference book)."""


@st.composite
def pools(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, float, float]:
    """Hazards (names), increasing times, correlation and recovery of a small random pool."""
    n = draw(st.integers(3, 40))
    weights = np.array(draw(st.lists(st.floats(0.2, 5.0), min_size=n, max_size=n)))
    spread = draw(st.floats(1e-4, 0.08))
    recovery = draw(st.floats(0.0, 0.9))
    hazards = weights / weights.mean() * spread / (1.0 - recovery)
    steps = draw(st.lists(st.floats(0.05, 2.0), min_size=1, max_size=6))
    times = np.cumsum(np.array(steps))
    rho = draw(st.floats(0.0, 0.9))
    return hazards, times, rho, recovery


def _pool_expected_loss(hazards: FloatArray, times: FloatArray, recovery: float) -> FloatArray:
    """E[pool loss fraction] at each time: (1 − R) × the average default probability."""
    return (1.0 - recovery) * np.mean(-np.expm1(-np.outer(hazards, times)), axis=0)


@given(pools(), st.lists(st.floats(0.005, 0.995), min_size=1, max_size=5, unique=True))
def test_tranche_losses_over_a_full_structure_sum_to_the_pool_loss(
    pool: tuple[FloatArray, FloatArray, float, float], inner: list[float]
) -> None:
    hazards, times, rho, recovery = pool
    points = np.array([0.0, *sorted(inner), 1.0])
    attach, detach = points[:-1], points[1:]
    dist = default_distribution_recursion(hazards, times, rho)
    el = tranche_expected_loss(dist, attach, detach, recovery)  # (J, K) loss fractions
    total = (detach - attach) @ el
    n = hazards.size
    from_dist = dist @ (np.arange(n + 1) * (1.0 - recovery) / n)
    np.testing.assert_allclose(total, from_dist, rtol=1e-12, atol=1e-15)
    # and the recursion's pool loss is the analytic one, up to the Gauss–Hermite error, which
    # is ~1e-13 up to rho = 0.7 and grows to ~1e-4 relative at rho = 0.9 (48 nodes)
    rtol = 1e-10 if rho <= 0.7 else 1e-3
    np.testing.assert_allclose(
        total, _pool_expected_loss(hazards, times, recovery), rtol=rtol, atol=1e-15
    )


@given(pools(), st.floats(0.0, 0.5), st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6))
def test_tranche_loss_is_monotone_in_detachment(
    pool: tuple[FloatArray, FloatArray, float, float], attach: float, widths: list[float]
) -> None:
    hazards, times, rho, recovery = pool
    detach = np.minimum(attach + np.sort(np.array(widths)), 1.0)
    detach = np.unique(detach)
    if detach.size < 2:
        return
    a = np.full(detach.size, attach)
    dist = default_distribution_recursion(hazards, times, rho)
    el = tranche_expected_loss(dist, a, detach, recovery)  # fractions of each tranche
    tol = 1e-13
    # the loss amount of [A, D] grows with D; its loss as a fraction of the width shrinks
    assert np.all(np.diff((detach - attach)[:, None] * el, axis=0) >= -tol)
    assert np.all(np.diff(el, axis=0) <= tol)
    # every tranche's expected loss is a fraction that grows with time
    assert np.all((el >= -tol) & (el <= 1.0 + tol))
    assert np.all(np.diff(el, axis=1) >= -tol)


@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6), st.floats(0.0, 0.9))
def test_full_structure_sums_for_any_count_distribution(
    probs: list[float], recovery: float
) -> None:
    """The identity is algebraic: it holds for any distribution of the number of defaults."""
    p = np.array(probs) + 1e-3
    dist = (p / p.sum())[None, :]
    points = np.array([0.0, 0.03, 0.07, 0.15, 1.0])
    el = tranche_expected_loss(dist, points[:-1], points[1:], recovery)
    n = p.size - 1
    expected = float(dist[0] @ (np.arange(n + 1) * (1.0 - recovery) / n))
    assert float(np.diff(points) @ el[:, 0]) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def curves(market: MarketSnapshot) -> CurveSet:
    return CurveSet(market)


@pytest.mark.parametrize("index_id", list(STANDARD_TRANCHES))
def test_monte_carlo_is_within_three_standard_errors_of_the_recursion(
    index_id: str, market: MarketSnapshot, curves: CurveSet
) -> None:
    """One Sobol simulation per index serves every tranche; 16 batches give the standard error."""
    spec = next(c for c in market.credit_indices if c.id == index_id)
    sched = cds_schedule(market.as_of, spec.maturity)
    df = curves[market.discount_curve_id(spec.currency)].discount(sched.pay_t)
    spread = market.quote(spec.spread_quote)
    rho = market.quote(spec.correlation_quote)
    hazards = np.asarray(spec.hazard_weights) * spread / (1.0 - spec.recovery)
    points = np.array(STANDARD_TRANCHES[index_id])
    attach = np.append(points[:-1], 0.0)  # the standard tranches and the whole index
    detach = np.append(points[1:], 1.0)
    coupon = np.full(attach.size, spec.coupon)

    exact = tranche_pv(
        tranche_expected_loss(
            default_distribution_recursion(hazards, sched.pay_t, rho), attach, detach, spec.recovery
        ),
        sched,
        df,
        coupon,
    )
    sim = IndexSimulation(n_names=len(spec.names), n_paths=2**14, seed=sum(index_id.encode()))
    dist = sim.default_counts(thresholds(hazards, sched.pay_t), rho)  # (batches, K, N+1)
    per_batch = tranche_pv(
        tranche_expected_loss(dist, attach, detach, spec.recovery), sched, df, coupon
    )
    assert sim.evaluations == 1, "one simulation for every tranche of the index"
    mc = per_batch.mean(axis=0)
    se = per_batch.std(axis=0, ddof=1) / np.sqrt(per_batch.shape[0])
    assert np.all(se > 0.0)
    z = (mc - exact) / se
    assert np.all(np.abs(z) <= 3.0), f"{index_id}: MC − recursion in standard errors: {z}"


def test_index_legs_follow_the_documented_conventions(market: MarketSnapshot) -> None:
    """docs/pricing.md, CDX index: quarterly 20ths rolled over weekends only (no calendar),
    the accrual starting on the unrolled 20th on or before the valuation date, the maturity
    unrolled; one flat hazard s/(1−R); premium on survival and discount at each period's end;
    accrued on default half the period's accrual, protection and accrued discounted at the
    period's middle; protection from the valuation date."""
    curves = CurveSet(market)
    for spec in market.credit_indices:
        sched = cds_schedule(market.as_of, spec.maturity)
        y = market.as_of.year
        years = range(y - 1, spec.maturity.year + 1)
        twentieths = [date(yy, mm, 20) for yy in years for mm in (3, 6, 9, 12)]
        first = max(d for d in twentieths if d <= market.as_of)
        dates = [first] + [d for d in twentieths if first < d < spec.maturity] + [spec.maturity]

        def weekday_roll(d: date) -> date:
            return d + timedelta(days=(7 - d.weekday()) % 7 if d.weekday() >= 5 else 0)

        rolled = [dates[0]] + [weekday_roll(d) for d in dates[1:-1]] + [dates[-1]]
        days = np.array([(d - market.as_of).days for d in rolled], dtype=float)
        accrual = np.diff([d.toordinal() for d in rolled]) / 360.0
        np.testing.assert_array_equal(sched.accrual, accrual)
        np.testing.assert_array_equal(sched.pay_t, days[1:] / 365.0)
        np.testing.assert_array_equal(sched.start_t, np.maximum(days[:-1], 0.0) / 365.0)

        s, r, coupon = market.quote(spec.spread_quote), spec.recovery, spec.coupon
        disc = curves[market.discount_curve_id(spec.currency)]
        end, start = sched.pay_t, sched.start_t
        mid = 0.5 * (start + end)
        q_end, q_start = np.exp(-s / (1 - r) * end), np.exp(-s / (1 - r) * start)
        premium = np.sum(accrual * disc.discount(end) * q_end)
        accrued = np.sum(0.5 * accrual * disc.discount(mid) * (q_start - q_end))
        protection = (1 - r) * np.sum(disc.discount(mid) * (q_start - q_end))
        got = index_pv(
            sched,
            disc.discount(end),
            disc.discount(mid),
            spread=s,
            recovery=r,
            coupon=np.array([coupon]),
        )
        np.testing.assert_allclose(got, protection - coupon * (premium + accrued), rtol=1e-14)


def test_tranche_legs_follow_the_documented_conventions() -> None:
    """Protection on each period's loss increase discounted at its end; premium on the
    period's average outstanding notional, 1 − (EL_{k−1} + EL_k)/2, with no loss at the
    valuation date."""
    sched = cds_schedule(date(2026, 11, 24), date(2031, 12, 20))
    rng = np.random.default_rng(3)
    el = np.sort(rng.uniform(0.0, 0.4, sched.pay_t.size))
    df = np.exp(-0.04 * sched.pay_t)
    prev = np.concatenate([[0.0], el[:-1]])
    protection = np.sum(df * (el - prev))
    premium = np.sum(sched.accrual * df * (1.0 - 0.5 * (prev + el)))
    got = tranche_pv(el[None, :], sched, df, np.array([0.01]))
    np.testing.assert_allclose(got, [protection - 0.01 * premium], rtol=1e-14)
