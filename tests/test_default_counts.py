"""The compiled default-count recursion: against a plain NumPy recursion, its Taylor shortcut
against fresh erfc, and the next-day losses the credit pricer keeps against a cold price."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from scipy.special import ndtr

from workbench._types import CORR_POINT, FloatArray
from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.market.reference import generate_reference_market
from workbench.pricing.credit import cds_schedule, states_needed, tranche_expected_loss
from workbench.pricing.credit_book import CreditPricer
from workbench.pricing.curves import CurveSet
from workbench.pricing.default_counts import (
    QUADRATURE_NODES,
    default_distributions,
    thresholds,
    truncated_distributions,
)

STANDARD_TRANCHES = {
    "CDX.IG": (0.0, 0.03, 0.07, 0.15, 1.0),
    "CDX.HY": (0.0, 0.15, 0.25, 0.35, 1.0),
    "ITRAXX.MAIN": (0.0, 0.03, 0.06, 0.12, 1.0),
    "ITRAXX.XOVER": (0.0, 0.10, 0.20, 0.35, 1.0),
}
"""The reference book's tranches (workbench.book.reference)."""


def _numpy_recursion(c: FloatArray, rho: float, nodes: int) -> FloatArray:
    """The textbook recursion, full Gauss–Hermite rule, NumPy only: (K, N+1)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2.0 * math.pi)
    p = ndtr((c[:, :, None] - math.sqrt(rho) * x[None, None, :]) / math.sqrt(1.0 - rho))
    n = c.shape[0]
    dist = np.zeros((c.shape[1], nodes, n + 1))
    dist[:, :, 0] = 1.0
    for i in range(n):
        shifted = np.zeros_like(dist)
        shifted[:, :, 1:] = dist[:, :, :-1]
        dist = dist * (1.0 - p[i][:, :, None]) + shifted * p[i][:, :, None]
    return np.einsum("kqn,q->kn", dist, w)  # type: ignore[no-any-return]


def _pool(seed: int, n: int = 60) -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.6, n)
    hazards = weights / weights.mean() * rng.uniform(0.003, 0.05) / 0.6
    times = np.cumsum(rng.uniform(0.1, 0.3, 12))
    return hazards, times


@pytest.mark.parametrize("rho", [0.0, 0.2, 0.5, 0.85])
def test_compiled_recursion_matches_numpy(rho: float) -> None:
    hazards, times = _pool(1)
    c = thresholds(hazards, times)
    got = default_distributions(c[None], np.array([rho]))[0]
    want = _numpy_recursion(c, rho, QUADRATURE_NODES)
    # the dropped nodes weigh < 2e-16 in all
    np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-14)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0.0, atol=1e-13)


def test_taylor_shortcut_matches_fresh_erfc() -> None:
    hazards, times = _pool(2, n=125)
    rho = 0.3
    spreads = (1.0, 1.0 + 1e-4 / 0.0055, 1.0 - 1e-4 / 0.0055)  # ±1bp on a 55bp index
    sets = [thresholds(hazards * f, times) for f in spreads]
    sets.append(thresholds(hazards, np.maximum(times - 1 / 365, 0.0)))  # tomorrow
    sets.append(thresholds(hazards, times))  # + 1% correlation: always fresh
    c = np.stack(sets)
    rhos = np.array([rho, rho, rho, rho, rho + CORR_POINT])
    shortcut = default_distributions(c, rhos)
    fresh = default_distributions(c, rhos, taylor_shift=0.0)
    np.testing.assert_allclose(shortcut, fresh, rtol=0.0, atol=1e-14)
    # and the bumps are resolved: the ±1bp difference is far above that error
    assert np.abs(shortcut[1] - shortcut[2]).max() > 1e-5


def test_thresholds_far_from_the_base_get_fresh_erfc() -> None:
    hazards, times = _pool(3)
    c = np.stack([thresholds(hazards, times), thresholds(hazards * 3.0, times)])
    got = default_distributions(c, np.array([0.3, 0.3]))
    alone = default_distributions(c[1:], np.array([0.3]))
    np.testing.assert_allclose(got[1], alone[0], rtol=0.0, atol=1e-15)


@pytest.mark.parametrize("keep", [1, 17, 59, 60])
def test_a_kept_distribution_is_the_full_one_with_its_tail_lumped(keep: int) -> None:
    hazards, times = _pool(5)
    c = thresholds(hazards, times)[None]
    full = default_distributions(c, np.array([0.35]))[0]
    kept = truncated_distributions(c, np.array([0.35]), keep)
    got = kept.probabilities[0]
    np.testing.assert_allclose(got[:, :keep], full[:, :keep], rtol=0.0, atol=1e-15)
    np.testing.assert_allclose(got[:, keep], full[:, keep:].sum(axis=1), rtol=0.0, atol=1e-14)
    counts = np.arange(c.shape[1] + 1)
    np.testing.assert_allclose(kept.mean[0], full @ counts, rtol=1e-13)


def test_tranche_losses_from_kept_distributions_equal_the_full_ones() -> None:
    """Each reference index with its standard tranches and the bumps a price uses: counts kept
    to the highest tranche point below the largest loss give the same expected losses."""
    market = generate_reference_market()
    times = np.linspace(0.25, 5.0, 20)
    for spec in market.credit_indices:
        lgd = 1.0 - spec.recovery
        points = np.array([0.0, 0.03, 0.07, 0.15, 0.35, 1.0])
        attach, detach = points[:-1], points[1:]
        n = len(spec.names)
        keep = states_needed(attach, detach, spec.recovery, n)
        assert keep < n
        assert keep * lgd / n >= 0.35 > (keep - 1) * lgd / n
        weights = np.asarray(spec.hazard_weights) / lgd
        s = market.quote(spec.spread_quote)
        c = np.stack([thresholds(weights * x, times) for x in (s, s + 1e-4, s - 1e-4)])
        rho = np.full(3, market.quote(spec.correlation_quote))
        full = default_distributions(c, rho)
        kept = truncated_distributions(c, rho, keep)
        want = tranche_expected_loss(full, attach, detach, spec.recovery)
        got = tranche_expected_loss(
            kept.probabilities, attach, detach, spec.recovery, mean_count=kept.mean, n_names=n
        )
        np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-13, err_msg=spec.id)
        with pytest.raises(ValueError, match=f"need {keep}"):
            tranche_expected_loss(
                kept.probabilities[..., : keep - 1],
                attach,
                detach,
                spec.recovery,
                mean_count=kept.mean,
                n_names=n,
            )


def test_bad_correlations_are_refused() -> None:
    c = thresholds(*_pool(4))[None]
    with pytest.raises(ValueError, match="correlations"):
        default_distributions(c, np.array([1.0]))
    with pytest.raises(ValueError, match="correlations"):
        default_distributions(c, np.array([0.2, 0.3]))


@pytest.mark.parametrize("method", ["recursion", "mc"])
def test_theta_from_kept_next_day_losses_equals_a_cold_price(
    method: Literal["recursion", "mc"], tmp_path: Path
) -> None:
    market = generate_reference_market()
    path = tmp_path / "book.parquet"
    save_book(generate_reference_book(market, positions=2_000, seed=3), path)
    book = load_book(path, market=market)
    credit = [book.product.labels.index(p) for p in ("CDX_INDEX", "CDX_TRANCHE")]
    rows = np.flatnonzero(np.isin(book.product.codes, credit))
    tomorrow = market.with_as_of(market.as_of + timedelta(days=1))
    curves, curves_next = CurveSet(market), CurveSet(tomorrow)
    warm = CreditPricer(book, rows, market, n_paths=4_096, method=method)
    warm.risk(market, curves)
    misses = warm.loss_misses
    kept = warm.pv(tomorrow, curves_next)
    assert warm.loss_misses == misses  # tomorrow's losses came with today's risk
    cold = CreditPricer(book, rows, market, n_paths=4_096, method=method)
    fresh = cold.pv(tomorrow, curves_next)
    assert cold.loss_misses > 0
    np.testing.assert_allclose(kept, fresh, rtol=1e-11, atol=1e-6)


def test_quadrature_accuracy_on_the_reference_tranches() -> None:
    """docs/pricing.md: with the 128-node Gauss–Hermite rule (58 nodes kept) the expected
    losses of the reference book's tranches are within 1.5e-7 of the tranche notional of an
    800-node Gauss–Legendre integration over [−12, 12]; 64 nodes are not (2.6e-5)."""
    from workbench.pricing.default_counts import _distributions

    xl, wl = np.polynomial.legendre.leggauss(800)
    x = np.ascontiguousarray(12.0 * xl)
    w = np.ascontiguousarray(12.0 * wl * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))
    market = generate_reference_market()
    worst = {QUADRATURE_NODES: 0.0, 64: 0.0}
    for spec in market.credit_indices:
        points = STANDARD_TRANCHES[spec.id]
        attach, detach = np.array(points[:-1]), np.array(points[1:])
        spread, rho = market.quote(spec.spread_quote), market.quote(spec.correlation_quote)
        pay_t = cds_schedule(market.as_of, spec.maturity).pay_t
        hazards = np.asarray(spec.hazard_weights) * spread / (1.0 - spec.recovery)
        c = thresholds(hazards, pay_t)[None]
        n, keep = len(spec.names), states_needed(attach, detach, spec.recovery, len(spec.names))
        ref, ref_mean = _distributions(
            np.ascontiguousarray(c), np.sqrt([rho]), np.sqrt([1.0 - rho]), x, w, 0.0, keep
        )
        want = tranche_expected_loss(
            ref[0], attach, detach, spec.recovery, mean_count=ref_mean[0], n_names=n
        )
        for nodes in worst:
            got = truncated_distributions(c, np.array([rho]), keep, nodes=nodes)
            el = tranche_expected_loss(
                got.probabilities[0],
                attach,
                detach,
                spec.recovery,
                mean_count=got.mean[0],
                n_names=n,
            )
            worst[nodes] = max(worst[nodes], float(np.abs(el - want).max()))
    assert worst[QUADRATURE_NODES] <= 1.6e-7
    assert worst[64] > 1e-5


def _recursion_at_5y(
    index: str, keep: int
) -> tuple[FloatArray, float, FloatArray, FloatArray, FloatArray, FloatArray]:
    """The compiled recursion of reference index ``index`` at 5 years, ``keep`` counts kept:
    thresholds, correlation, conditional default probabilities (names × nodes), node weights,
    the per-node distributions it leaves in its scratch and the integrated one."""
    from workbench.pricing.default_counts import count_recursion, normal_rule

    market = generate_reference_market()
    spec = next(ix for ix in market.credit_indices if ix.id == index)
    weights = np.asarray(spec.hazard_weights) / (1.0 - spec.recovery)
    c = thresholds(weights * market.quote(spec.spread_quote), np.array([5.0]))[:, 0]
    rho = market.quote(spec.correlation_quote)
    x, w = normal_rule(QUADRATURE_NODES)
    p = np.ascontiguousarray(
        ndtr((c[:, None] - math.sqrt(rho) * x[None, :]) / math.sqrt(1.0 - rho))
    )
    d, prev, out = np.empty((keep + 1, x.size)), np.empty(x.size), np.empty(keep + 1)
    count_recursion(p, w, d, prev, out, keep)
    return c, rho, p, w, d, out


def test_the_recursion_never_computes_in_the_subnormal_range() -> None:
    """In the far tails of the factor the conditional count probabilities fall below 2.2e-308,
    where each floating-point operation costs ~100 cycles (the credit slot's reprice was 2.4×
    slower for it): they are set to 0 below NEGLIGIBLE instead, and the distribution is the
    same to rounding."""
    from workbench.pricing.default_counts import NEGLIGIBLE

    c, rho, _, _, d, out = _recursion_at_5y("CDX.IG", keep := 63)
    subnormal = (d != 0.0) & (np.abs(d) < np.finfo(np.float64).tiny)
    assert not subnormal.any(), f"{np.count_nonzero(subnormal)} subnormal probabilities"
    assert d[d != 0.0].min() >= NEGLIGIBLE
    # the same distribution as the plain recursion (which keeps every tiny value)
    full = _numpy_recursion(c[:, None], rho, QUADRATURE_NODES)[0]
    kept = [*full[:keep].tolist(), full[keep:].sum()]
    np.testing.assert_allclose(out, kept, rtol=1e-9, atol=1e-15)


def test_counts_a_node_cannot_reach_are_not_carried() -> None:
    """At a node where few names default the recursion carries only the counts whose
    probability there can exceed TAIL (the Chernoff bound on the node's expected count): the
    others are exactly 0, their true values are at most TAIL, and the counts carried are the
    full recursion's."""
    from workbench.pricing.default_counts import TAIL

    _, _, p, w, d, out = _recursion_at_5y("CDX.HY", keep := 63)
    # the same recursion per node, every count carried
    full = np.zeros((w.size, p.shape[0] + 1))
    full[:, 0] = 1.0
    for i in range(p.shape[0]):
        moved = np.zeros_like(full)
        moved[:, 1:] = full[:, :-1]
        full = full * (1.0 - p[i][:, None]) + moved * p[i][:, None]
    per_node = np.concatenate([full[:, :keep], full[:, keep:].sum(axis=1, keepdims=True)], 1).T
    dropped = (d == 0.0) & (per_node > 1e-280)
    assert dropped.sum() > 0.25 * d.size, "the quiet nodes still carry every count"
    assert per_node[dropped].max() <= TAIL
    carried = d != 0.0
    # (below ~1e-270 the recursion differs: it sets what falls under NEGLIGIBLE to 0)
    np.testing.assert_allclose(d[carried], per_node[carried], rtol=1e-9, atol=1e-270)
    np.testing.assert_allclose(out, per_node @ w, rtol=1e-9, atol=2 * TAIL)


@pytest.mark.parametrize("n", [1, 2, 5, 20, 63, 125])
def test_the_chernoff_means_bound_the_exact_tail(n: int) -> None:
    """At the largest expected count the table allows for count ``n``, a pool of 125 equal
    names (binomial: the largest ``P(≥ n)`` for its mean when ``n ≥ μ + 1``, Hoeffding 1956)
    has ``P(≥ n)`` at most TAIL, and a mean 1% above it is past the Chernoff bound."""
    from scipy.stats import binom

    from workbench.pricing.default_counts import _MEANS_BELOW_TAIL, TAIL

    mu = float(_MEANS_BELOW_TAIL[n])
    assert 0.0 < mu < n
    assert float(binom.sf(n - 1, 125, mu / 125)) <= TAIL
    bound = n * math.log(math.e * mu * 1.01 / n) - mu * 1.01
    assert bound > math.log(TAIL)
