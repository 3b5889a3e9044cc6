"""FX smiles and equity vol surfaces: the models and the vectorised vol lookups over many of them.

Both interpolate the **vol** (decimal) itself with the interpolating tensor spline of their grid
in (expiry time in years, smile coordinate: call delta for FX, moneyness ``K/S`` for equity),
fitted and cached by :mod:`workbench.pricing.splines` and evaluated by the compiled kernels of
:mod:`workbench.pricing.spline_kernels`; inputs outside the grid are clamped to its edges (flat
extrapolation). A spline reproduces constants, so a parallel shift of every grid vol shifts
every interpolated vol by exactly the same amount.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import date

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.pricing.spline_kernels import (
    expiry_basis,
    expiry_rows,
    smile_slopes,
    smile_solve,
    spline_values,
)
from workbench.pricing.splines import (
    GridFit,
    PackedSplines,
    SplineCache,
    TensorSpline,
    flattened,
)


def surface_version(surface_id: str, as_of: date, vols: FloatArray) -> int:
    """A version number that changes when the surface's vols or the as-of date change."""
    h = hashlib.blake2b(digest_size=8)
    h.update(surface_id.encode())
    h.update(as_of.isoformat().encode())
    h.update(np.ascontiguousarray(vols, dtype=np.float64).tobytes())
    return int.from_bytes(h.digest(), "little")


SmileRows = tuple[FloatArray, FloatArray]
"""Each option's smile at its expiry, as :func:`smile_rows` returns it: the spline in call
delta as one cubic per knot span (options × the most spans × 4: the coefficients of
``b0 + b1·u + b2·u² + b3·u³``, ``u`` the delta less the span's first knot; what a Newton step
evaluates, with no B-spline recursion) and the largest of its B-spline coefficients (the spline
lies below it: the Newton bracket's top)."""

SmileBasis = tuple[IntArray, FloatArray]
"""Each option's B-splines in expiry, as :func:`smile_basis` returns them: the knot span
(options) and the ``kx + 1`` B-splines non-zero there (options × 4)."""


def smile_basis(packed: PackedSplines, which: IntArray, T: FloatArray) -> SmileBasis:
    """Option ``i``'s B-splines in expiry at ``T[i]`` (clamped to the grid) on the knots of
    packed smile ``which[i]``: they depend on the smile's expiry grid and the option's expiry
    only, not on the vols, so a pricer keeps them while the knots are the same
    (:meth:`PackedSplines.x_knots`; ``smile_rows``)."""
    t = np.ascontiguousarray(T, dtype=np.float64)
    span, bx = expiry_basis(packed.args(), np.ascontiguousarray(which, dtype=np.int64), t)
    return span, bx


def smile_rows(
    packed: PackedSplines,
    which: IntArray,
    T: FloatArray,
    *,
    basis: SmileBasis | None = None,
) -> SmileRows:
    """Option ``i``'s smile (packed smile ``which[i]``) at its expiry ``T[i]`` (clamped to the
    grid) as a spline in call delta: what a strike solve reads at every step. It depends on the
    smile's vols and the expiry only, not on spot or rates, so a pricer can keep it while the
    smile's version is unchanged (:func:`fx_smile_vols` ``rows=``). ``basis``:
    :func:`smile_basis` of the same smiles' knots, options and expiries (computed when not
    given)."""
    at = np.ascontiguousarray(which, dtype=np.int64)
    if basis is None:
        basis = expiry_basis(packed.args(), at, np.ascontiguousarray(T, dtype=np.float64))
    cubics, top = expiry_rows(packed.args(), at, *basis)
    return cubics, top


def _log_moneyness(
    S: FloatArray, K: FloatArray, t: FloatArray, r_d: FloatArray, r_f: FloatArray
) -> FloatArray:
    """log(F/K) with the forward F = S·exp((r_d − r_f)·t), contiguous for the kernels."""
    return np.ascontiguousarray(np.log(S * np.exp((r_d - r_f) * t) / K), dtype=np.float64)


def fx_smile_vols(
    smiles: Sequence[FxVolSurfaceModel],
    which: IntArray,
    S: FloatArray,
    K: FloatArray,
    T: FloatArray,
    r_d: FloatArray,
    r_f: FloatArray,
    *,
    guess: FloatArray | None = None,
    spot_moves: Sequence[float] = (),
    rows: SmileRows | None = None,
    packed: PackedSplines | None = None,
) -> FloatArray:
    """Vols of options on several smiles in one compiled solve: option ``i`` reads
    ``smiles[which[i]]``; the other arguments are per option, as in
    :meth:`FxVolSurfaceModel.vol_for_strike`.

    With ``spot_moves`` (relative, e.g. ``(0.01, -0.01)``) the result has one column per
    spot: the given one, then each moved one, shape ``(n, 1 + len(spot_moves))``. Each option's
    smile row is set up once for all of them (or given: ``rows``, from :func:`smile_rows` on
    the same smiles, options and expiries; ``packed``: the smiles' splines already packed, so
    each smile is looked up in the cache once per price), and each moved solve starts from the
    first-order
    prediction ``σ + ∂σ/∂log F · log(1 + move)`` (the implicit derivative at the solution), so it
    usually needs one or two Newton steps.
    """
    t = np.ascontiguousarray(T, dtype=np.float64)
    log_m = _log_moneyness(S, K, t, r_d, r_f)
    if packed is None:
        packed = PackedSplines.of([m.spline() for m in smiles], [m.box() for m in smiles])
    start = (
        np.full(t.size, np.nan) if guess is None else np.ascontiguousarray(guess, dtype=np.float64)
    )
    shifts = np.log1p(np.array([0.0, *spot_moves], dtype=np.float64))
    t0 = time.perf_counter_ns()
    at = np.ascontiguousarray(which, dtype=np.int64)
    cubics, top = (
        expiry_rows(packed.args(), at, *expiry_basis(packed.args(), at, t))
        if rows is None
        else rows
    )
    vol = smile_solve(packed.args(), at, cubics, top, t, log_m, start, shifts)
    if smiles:
        smiles[0].cache.lookup_ns += time.perf_counter_ns() - t0
    return vol if spot_moves else vol[:, 0]


def fx_smile_slopes(
    packed: PackedSplines,
    which: IntArray,
    rows: SmileRows,
    S: FloatArray,
    K: FloatArray,
    T: FloatArray,
    r_d: FloatArray,
    r_f: FloatArray,
    vol: FloatArray,
) -> FloatArray:
    """∂σ/∂log F of options at their solved vols ``vol`` (:func:`fx_smile_vols` on the same
    smiles ``packed``, options ``which``, smile ``rows`` and inputs): how each vol moves with
    its forward on a smile sticky in delta, exact (the implicit derivative of the solve)."""
    t = np.ascontiguousarray(T, dtype=np.float64)
    log_m = _log_moneyness(S, K, t, r_d, r_f)
    at = np.ascontiguousarray(which, dtype=np.int64)
    v = np.ascontiguousarray(vol, dtype=np.float64)
    return smile_slopes(packed.args(), at, rows[0], rows[1], t, log_m, v)


def equity_vols(
    surfaces: Sequence[EquityVolSurfaceModel],
    which: IntArray,
    S: FloatArray,
    K: FloatArray,
    T: FloatArray,
    *,
    spot_moves: Sequence[float] = (),
) -> FloatArray:
    """Vols of options on several surfaces in one compiled evaluation: option ``i`` reads
    ``surfaces[which[i]]`` at expiry ``T[i]`` and moneyness ``K[i] / S[i]``. With
    ``spot_moves`` (relative), one column per spot: the given one, then each moved one (sticky
    moneyness), shape ``(n, 1 + len(spot_moves))``; each option's expiry basis is set up once."""
    packed = PackedSplines.of([m.spline() for m in surfaces], [m.box() for m in surfaces])
    m = np.ascontiguousarray(K / S, dtype=np.float64)
    y = np.stack([m, *(m / (1.0 + move) for move in spot_moves)], axis=1)
    t0 = time.perf_counter_ns()
    vol = spline_values(
        packed.args(),
        np.ascontiguousarray(which, dtype=np.int64),
        np.ascontiguousarray(T, dtype=np.float64),
        y,
    )
    if surfaces:
        surfaces[0].cache.lookup_ns += time.perf_counter_ns() - t0
    floored: FloatArray = np.maximum(vol, 1e-6)
    return floored if spot_moves else floored[:, 0]


class FxVolSurfaceModel:
    """A delta × expiry smile: expiry times (years), call-delta pillars and a vol grid.

    Call delta is the forward, premium-unadjusted ``Φ(d1)``; the 25-delta put sits at 0.75.
    """

    def __init__(
        self,
        *,
        surface_id: str,
        version: int,
        expiries: FloatArray,
        call_deltas: FloatArray,
        vols: FloatArray,
        cache: SplineCache,
    ) -> None:
        order = np.argsort(call_deltas)
        self.expiries = np.asarray(expiries, dtype=np.float64)
        self.deltas = np.asarray(call_deltas, dtype=np.float64)[order]
        self.vols = np.asarray(vols, dtype=np.float64)[:, order]
        self.cache = cache
        self._key = (surface_id, version)

    @property
    def surface_id(self) -> str:
        """The pair the smile is of."""
        return self._key[0]

    @property
    def version(self) -> int:
        """Changes with the smile's vols and its as-of date (:func:`surface_version`)."""
        return self._key[1]

    def spline(self) -> TensorSpline:
        """The fitted spline of vol in (expiry, call delta), from the cache when unchanged."""
        return self.cache.spline(self._key[0], self._key[1], self.expiries, self.deltas, self.vols)

    def box(self) -> tuple[float, float, float, float]:
        """The grid's (first expiry, last expiry, lowest delta, highest delta)."""
        return (
            float(self.expiries[0]),
            float(self.expiries[-1]),
            float(self.deltas[0]),
            float(self.deltas[-1]),
        )

    def vol_at_delta(self, t: FloatArray, call_delta: FloatArray) -> FloatArray:
        """Vol at a call delta and expiry (years)."""
        spline = self.spline()
        t0 = time.perf_counter_ns()
        tc = np.clip(t, self.expiries[0], self.expiries[-1])
        dc = np.clip(call_delta, self.deltas[0], self.deltas[-1])
        vol = spline.ev(tc, dc)
        self.cache.lookup_ns += time.perf_counter_ns() - t0
        floored: FloatArray = np.maximum(vol, 1e-6)
        return floored

    def vol_for_strike(
        self,
        S: FloatArray,
        K: FloatArray,
        T: FloatArray,
        r_d: FloatArray,
        r_f: FloatArray,
        *,
        guess: FloatArray | None = None,
    ) -> FloatArray:
        """The vol of strike ``K``: the fixed point σ = smile(T, Φ(d1(K, σ))).

        Solved per option to |σ − smile(T, Φ(d1))| < 1e-13 by a safeguarded Newton method;
        ``guess`` (e.g. the vols at an unbumped spot) starts it nearer the answer. The whole
        solve runs compiled on the fitted spline's knots and coefficients (the B-spline FITPACK
        evaluates), so a solve costs one spline lookup, not one per step.
        """
        shape, (s, k, t, rd, rf) = flattened(S, K, T, r_d, r_f)
        start = None if guess is None else np.broadcast_to(guess, shape).ravel()
        which = np.zeros(s.size, dtype=np.int64)
        return fx_smile_vols([self], which, s, k, t, rd, rf, guess=start).reshape(shape)


class EquityVolSurfaceModel:
    """A strike × expiry surface on moneyness ``K/S`` and expiry times (years)."""

    def __init__(
        self,
        *,
        surface_id: str,
        version: int,
        expiries: FloatArray,
        moneyness: FloatArray,
        vols: FloatArray,
        cache: SplineCache,
    ) -> None:
        self.expiries = np.asarray(expiries, dtype=np.float64)
        self.moneyness = np.asarray(moneyness, dtype=np.float64)
        self.vols = np.asarray(vols, dtype=np.float64)
        self.cache = cache
        self._key = (surface_id, version)

    def spline(self) -> TensorSpline:
        """The fitted spline of vol in (expiry, moneyness), from the cache when unchanged."""
        return self.cache.spline(
            self._key[0], self._key[1], self.expiries, self.moneyness, self.vols
        )

    def box(self) -> tuple[float, float, float, float]:
        """The grid's (first expiry, last expiry, lowest moneyness, highest moneyness)."""
        return (
            float(self.expiries[0]),
            float(self.expiries[-1]),
            float(self.moneyness[0]),
            float(self.moneyness[-1]),
        )

    def vol_for_strike(self, S: FloatArray, K: FloatArray, T: FloatArray) -> FloatArray:
        """Vol at strike ``K`` and expiry ``T`` for spot ``S``."""
        shape, (s, k, t) = flattened(S, K, T)
        which = np.zeros(s.size, dtype=np.int64)
        return equity_vols([self], which, s, k, t).reshape(shape)


__all__ = [
    "EquityVolSurfaceModel",
    "FxVolSurfaceModel",
    "GridFit",
    "PackedSplines",
    "SmileBasis",
    "SmileRows",
    "SplineCache",
    "TensorSpline",
    "equity_vols",
    "fx_smile_slopes",
    "fx_smile_vols",
    "smile_basis",
    "smile_rows",
    "surface_version",
]
