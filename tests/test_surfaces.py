"""The FX smile's strike solve: the compiled solve against FITPACK's own evaluation.

The reference iterates σ ← spline(T, Φ(d1(σ))) with SciPy's ``RectBivariateSpline.ev`` (FITPACK
``bispev``) step by step; the compiled solve evaluates the same B-spline from its knots and
coefficients. Where the plain iteration converges both must agree to rounding (inside the grid
and where inputs are clamped to its edges); everywhere, the answer must be a fixed point of the
smile — including short-dated far strikes, where the plain iteration oscillates.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest
from scipy.interpolate import RectBivariateSpline, bisplev
from scipy.special import ndtr

from workbench._types import FloatArray
from workbench.pricing.fx_book import _kept_blocks
from workbench.pricing.surfaces import FxVolSurfaceModel, GridFit, SplineCache

EXPIRIES = np.array([7 / 365, 30 / 365, 91 / 365, 182 / 365, 1.0, 2.0, 5.0])
DELTAS = np.array([0.10, 0.25, 0.50, 0.75, 0.90])


def _smile(rng: np.random.Generator, cache: SplineCache) -> FxVolSurfaceModel:
    atm = 0.08 + 0.04 * rng.random(EXPIRIES.size)
    skew = rng.normal(0.0, 0.02, EXPIRIES.size)
    fly = 0.005 + 0.01 * rng.random(EXPIRIES.size)
    x = DELTAS - 0.5
    vols = atm[:, None] + skew[:, None] * x[None, :] + fly[:, None] * (x[None, :] / 0.4) ** 2
    return FxVolSurfaceModel(
        surface_id="TEST",
        version=int(rng.integers(1 << 60)),
        expiries=EXPIRIES,
        call_deltas=DELTAS,
        vols=vols,
        cache=cache,
    )


def _reference(
    smile: FxVolSurfaceModel, s: FloatArray, k: FloatArray, t: FloatArray, rd: FloatArray,
    rf: FloatArray,
) -> FloatArray:  # fmt: skip
    spline = RectBivariateSpline(smile.expiries, smile.deltas, smile.vols, kx=3, ky=3, s=0.0)

    def at(tt: FloatArray, d: FloatArray) -> FloatArray:
        tc = np.clip(tt, smile.expiries[0], smile.expiries[-1])
        dc = np.clip(d, smile.deltas[0], smile.deltas[-1])
        return np.maximum(spline.ev(tc, dc), 1e-6)  # type: ignore[no-any-return]

    log_m = np.log(s * np.exp((rd - rf) * t) / k)
    vol = at(t, np.full(t.size, 0.5))
    for _ in range(200):
        d1 = log_m / (vol * np.sqrt(t)) + 0.5 * vol * np.sqrt(t)
        vol, last = at(t, ndtr(d1)), vol
    return np.where(np.abs(vol - last) < 1e-13, vol, np.nan)  # NaN: did not converge


def _off_the_smile(smile: FxVolSurfaceModel, vol: FloatArray, s: FloatArray, k: FloatArray,
                   t: FloatArray, rd: FloatArray, rf: FloatArray) -> FloatArray:  # fmt: skip
    d1 = np.log(s * np.exp((rd - rf) * t) / k) / (vol * np.sqrt(t)) + 0.5 * vol * np.sqrt(t)
    return np.abs(smile.vol_at_delta(t, ndtr(d1)) - vol)  # type: ignore[no-any-return]


Case = tuple[FxVolSurfaceModel, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]


def _case(seed: int, n: int = 400) -> Case:
    """A random smile; strikes from deep ITM to deep OTM; expiries inside and outside the grid."""
    rng = np.random.default_rng(seed)
    smile = _smile(rng, SplineCache())
    s = np.full(n, 1.1)
    k = s * np.exp(rng.normal(0.0, 0.25, n))
    t = np.exp(rng.uniform(np.log(1 / 365), np.log(10.0), n))
    rd, rf = rng.uniform(-0.01, 0.06, n), rng.uniform(-0.01, 0.06, n)
    return smile, s, k, t, rd, rf


@pytest.mark.parametrize("seed", range(5))
def test_compiled_solve_matches_fitpack_iteration(seed: int) -> None:
    smile, s, k, t, rd, rf = _case(seed)
    got = smile.vol_for_strike(s, k, t, rd, rf)
    want = _reference(smile, s, k, t, rd, rf)
    converged = ~np.isnan(want)
    assert converged.sum() > 0.95 * s.size
    np.testing.assert_allclose(got[converged], want[converged], rtol=0.0, atol=1e-12)
    assert _off_the_smile(smile, got, s, k, t, rd, rf).max() < 1e-12
    # from a warm start at a moved spot: the same answer as from cold
    warm = smile.vol_for_strike(s * 1.01, k, t, rd, rf, guess=got)
    cold = smile.vol_for_strike(s * 1.01, k, t, rd, rf)
    np.testing.assert_allclose(warm, cold, rtol=0.0, atol=1e-12)
    assert _off_the_smile(smile, warm, s * 1.01, k, t, rd, rf).max() < 1e-12


def test_strikes_where_the_plain_iteration_fails_are_solved() -> None:
    smile, s, k, t, rd, rf = _case(4)
    plain = _reference(smile, s, k, t, rd, rf)
    failed = np.isnan(plain)
    assert failed.any()  # the case exists: 200 plain steps leave these off the smile
    got = smile.vol_for_strike(s, k, t, rd, rf)
    assert np.all(np.isfinite(got))
    assert _off_the_smile(smile, got[failed], s[failed], k[failed], t[failed], rd[failed],
                          rf[failed]).max() < 1e-12  # fmt: skip


def test_the_solve_counts_one_spline_lookup_and_respects_the_cache() -> None:
    rng = np.random.default_rng(7)
    cache = SplineCache()
    smile = _smile(rng, cache)
    args = (np.full(3, 1.0), np.array([0.9, 1.0, 1.1]), np.full(3, 0.5), np.zeros(3), np.zeros(3))
    smile.vol_for_strike(*args)
    smile.vol_for_strike(*args)
    assert (cache.misses, cache.hits) == (1, 1)
    cache.enabled = False
    cache.clear()
    a = smile.vol_for_strike(*args)
    b = smile.vol_for_strike(*args)
    assert (cache.misses, cache.hits) == (2, 0)  # rebuilt every time with the cache off
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("nx", "ny"), [(7, 5), (10, 5), (8, 7), (3, 4), (2, 2), (12, 6)])
def test_the_grid_fit_is_fitpacks_interpolating_spline(nx: int, ny: int) -> None:
    """The kept linear map gives FITPACK's knots and coefficients for any vols on the grid, and
    the spline evaluates as FITPACK's does (inside the grid)."""
    rng = np.random.default_rng(nx * 100 + ny)
    x = np.sort(rng.uniform(0.01, 10.0, nx))
    y = np.sort(rng.uniform(0.05, 2.0, ny))
    kx, ky = min(3, nx - 1), min(3, ny - 1)
    fit = GridFit(x, y, kx=kx, ky=ky)
    for _ in range(3):
        z = 0.1 + 0.3 * rng.random((nx, ny))
        ref = RectBivariateSpline(x, y, z, kx=kx, ky=ky, s=0.0)
        ours = fit.fit(z)
        np.testing.assert_array_equal(ours.tx, ref.tck[0])
        np.testing.assert_array_equal(ours.ty, ref.tck[1])
        np.testing.assert_allclose(ours.c, ref.tck[2], rtol=0.0, atol=1e-12)
        assert ours.degrees == tuple(ref.degrees)
        px, py = rng.uniform(x[0], x[-1], 200), rng.uniform(y[0], y[-1], 200)
        np.testing.assert_allclose(ours.ev(px, py), ref.ev(px, py), rtol=0.0, atol=1e-12)
        np.testing.assert_allclose(ours.ev(x[:, None], y[None, :]), z, rtol=0.0, atol=1e-12)


def test_per_pair_blocks_are_made_once_per_tag_and_padded_to_the_widest() -> None:
    """The FX pricer's store of per-option arrays: a pair's block is made again only when its
    tag changes, only the missing pairs' options are made, and blocks of different widths
    come back padded with zeros."""
    store: dict[Any, Any] = {}
    made: list[list[int]] = []

    def make(at: Any, missing: list[int]) -> tuple[np.ndarray, ...]:
        made.append(list(missing))
        width = 3 if missing == [1] else 2
        return (at.astype(float), np.tile(at[:, None].astype(float), (1, width)))

    keys = [("A", date(2026, 1, 1)), ("B", date(2026, 1, 1))]
    ranges = [(0, 2), (2, 5)]
    first = _kept_blocks(store, keys, [1, 1], ranges, make, 2)
    np.testing.assert_array_equal(first[0], [0, 1, 2, 3, 4])
    again = _kept_blocks(store, keys, [1, 1], ranges, make, 2)
    assert made == [[0, 1]]  # nothing made the second time
    np.testing.assert_array_equal(again[1], first[1])
    moved = _kept_blocks(store, keys, [1, 2], ranges, make, 2)  # B's tag changed
    assert made == [[0, 1], [1]]
    assert moved[1].shape == (5, 3)
    np.testing.assert_array_equal(moved[1][:2], [[0, 0, 0], [1, 1, 0]])  # A's block padded
    np.testing.assert_array_equal(moved[1][2:], np.tile([[2.0], [3.0], [4.0]], (1, 3)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_smile_row_is_the_spline_at_the_expiry_one_cubic_per_knot_span(seed: int) -> None:
    """What the solve reads at each Newton step: the smile at an option's expiry as one cubic
    per knot span in delta. Its values are FITPACK's evaluation of the tensor spline at that
    expiry (to rounding), its slopes the spline's, and its top bounds the smile."""
    from workbench.pricing.spline_kernels import _span
    from workbench.pricing.splines import PackedSplines
    from workbench.pricing.surfaces import smile_rows

    rng = np.random.default_rng(seed)
    smile = _smile(rng, SplineCache())
    packed = PackedSplines.of([smile.spline()], [smile.box()])
    t = np.concatenate([rng.uniform(EXPIRIES[0], EXPIRIES[-1], 40), EXPIRIES])
    cubics, top = smile_rows(packed, np.zeros(t.size, dtype=np.int64), t)
    ty, ky = packed.ty, int(packed.ky[0])
    tck = (*smile.spline().tck, *smile.spline().degrees)
    deltas = np.linspace(DELTAS[0], DELTAS[-1], 97)
    for p in range(t.size):
        k = np.array([_span(ty, ky, d) - ky for d in deltas])
        u = deltas - ty[ky + k]
        b = cubics[p, k]
        value = b[:, 0] + u * (b[:, 1] + u * (b[:, 2] + u * b[:, 3]))
        slope = b[:, 1] + u * (2.0 * b[:, 2] + 3.0 * u * b[:, 3])
        want = bisplev(t[p], deltas, tck)
        want_slope = bisplev(t[p], deltas, tck, dy=1)
        np.testing.assert_allclose(value, want, rtol=0.0, atol=1e-14)
        np.testing.assert_allclose(slope, want_slope, rtol=0.0, atol=1e-11)
        assert top[p] >= want.max() - 1e-15
