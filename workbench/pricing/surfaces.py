"""Volatility surfaces with a spline cache.

The essay's Friday-afternoon discovery: 73% of the FX worker's time went into rebuilding an
interpolation object that had not changed since the last tick. Here a fitted spline is kept per
``(surface id, version)`` in a :class:`SplineCache`; a lookup on an unchanged surface rebuilds
nothing. The cache counts hits, misses and the time spent building and looking up, and can be
switched off for experiments.

Both surfaces interpolate the **vol** itself with a bicubic (or lower order, for small grids)
interpolating tensor spline in (expiry time, smile coordinate), the one FITPACK's
``RectBivariateSpline(..., s=0)`` fits; inputs outside the grid are clamped to its edges (flat
extrapolation). A spline reproduces constants, so a parallel shift of every grid vol shifts
every interpolated vol by exactly the same amount.

On a given grid that fit is linear in the vols: the coefficients are ``Ax · Z · Ayᵀ`` with
``Ax``, ``Ay`` the inverses of the grid's B-spline collocation matrices. :class:`GridFit` keeps
them per grid, so a surface whose vols moved is refitted with two small matrix products
(~2 µs) instead of a FITPACK call (~15–25 µs): a live feed moves some vol of nearly every
equity surface at every flush.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numba
import numpy as np
from scipy.interpolate import BSpline, RectBivariateSpline

from workbench._types import FloatArray, IntArray


def surface_version(surface_id: str, as_of: date, vols: FloatArray) -> int:
    """A version number that changes when the surface's vols or the as-of date change."""
    h = hashlib.blake2b(digest_size=8)
    h.update(surface_id.encode())
    h.update(as_of.isoformat().encode())
    h.update(np.ascontiguousarray(vols, dtype=np.float64).tobytes())
    return int.from_bytes(h.digest(), "little")


class SplineCache:
    """Fitted splines keyed by ``(surface id, version)``, least recently used evicted first.

    Counters: ``hits``, ``misses``, ``build_ns`` (total spline construction time) and
    ``lookup_ns`` (total evaluation time), in nanoseconds of a monotonic clock.
    """

    def __init__(self, *, max_entries: int = 256, enabled: bool = True) -> None:
        self.max_entries = max_entries
        self.enabled = enabled
        self._entries: OrderedDict[tuple[str, int], TensorSpline] = OrderedDict()
        self._fits: dict[tuple[bytes, bytes, int, int], GridFit] = {}
        self.hits = 0
        self.misses = 0
        self.build_ns = 0
        self.lookup_ns = 0

    def spline(
        self, surface_id: str, version: int, x: FloatArray, y: FloatArray, z: FloatArray
    ) -> TensorSpline:
        """The spline of ``z`` on the grid ``x × y`` — from the cache when unchanged."""
        key = (surface_id, version)
        if self.enabled:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
        t0 = time.perf_counter_ns()
        fitted = self._fit(x, y).fit(z)
        self.build_ns += time.perf_counter_ns() - t0
        self.misses += 1
        if self.enabled:
            self._entries[key] = fitted
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return fitted

    def _fit(self, x: FloatArray, y: FloatArray) -> GridFit:
        """The fit on grid ``x × y`` (bicubic, or lower order for fewer than four points),
        kept per grid: a live pricer sees the same few grids (one per date and grid shape)."""
        kx, ky = min(3, x.size - 1), min(3, y.size - 1)
        key = (np.ascontiguousarray(x).tobytes(), np.ascontiguousarray(y).tobytes(), kx, ky)
        fit = self._fits.get(key)
        if fit is None:
            if len(self._fits) >= self.max_entries:
                self._fits.clear()
            fit = self._fits[key] = GridFit(x, y, kx=kx, ky=ky)
        return fit

    def stats(self) -> dict[str, float]:
        """Counters for the profiling views: hits, misses, hit rate, build and lookup ms."""
        total = self.hits + self.misses
        return {
            "hits": float(self.hits),
            "misses": float(self.misses),
            "hit_rate": self.hits / total if total else 0.0,
            "build_ms": self.build_ns / 1e6,
            "lookup_ms": self.lookup_ns / 1e6,
            "entries": float(len(self._entries)),
        }

    def clear(self) -> None:
        """Drop every spline and zero the counters."""
        self._entries.clear()
        self.hits = self.misses = self.build_ns = self.lookup_ns = 0


@dataclass(frozen=True, eq=False)
class TensorSpline:
    """A tensor-product B-spline in FITPACK's layout: knots ``tx``, ``ty``, coefficients ``c``
    (row-major in x, ``(tx.size - kx - 1) · (ty.size - ky - 1)``) and degrees ``kx``, ``ky``."""

    tx: FloatArray
    ty: FloatArray
    c: FloatArray
    kx: int
    ky: int

    @property
    def tck(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Knots and coefficients, as ``RectBivariateSpline.tck``."""
        return self.tx, self.ty, self.c

    @property
    def degrees(self) -> tuple[int, int]:
        """``(kx, ky)``, as ``RectBivariateSpline.degrees``."""
        return self.kx, self.ky

    def ev(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """Values at the points ``(x[i], y[i])``, clamped to the knots' span."""
        shape, (xs, ys) = _flattened(x, y)
        box = (self.tx[0], self.tx[-1], self.ty[0], self.ty[-1])
        packed = PackedSplines.of([self], [box])
        out = _spline_ev(packed.args(), np.zeros(xs.size, np.int64), xs, ys[:, None].copy())
        return out[:, 0].reshape(shape)


class GridFit:
    """The interpolating tensor spline of degrees ``(kx, ky)`` on one grid ``x × y`` as a
    linear map of the grid values: FITPACK's knots for that grid (``s=0``) and the inverses
    ``Ax``, ``Ay`` of the collocation matrices, so ``fit(Z)`` has coefficients ``Ax Z Ayᵀ``
    (equal to FITPACK's fit to rounding, tested)."""

    def __init__(self, x: FloatArray, y: FloatArray, *, kx: int, ky: int) -> None:
        xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
        zero = np.zeros((xs.size, ys.size))
        self.tx, self.ty, _ = RectBivariateSpline(xs, ys, zero, kx=kx, ky=ky, s=0.0).tck
        self.kx, self.ky = kx, ky
        self.ax = np.linalg.inv(BSpline.design_matrix(xs, self.tx, kx).toarray())
        self.ay_t = np.ascontiguousarray(
            np.linalg.inv(BSpline.design_matrix(ys, self.ty, ky).toarray()).T
        )

    def fit(self, z: FloatArray) -> TensorSpline:
        """The interpolating spline of the grid values ``z`` (shape ``(x.size, y.size)``)."""
        c = (self.ax @ np.asarray(z, np.float64) @ self.ay_t).ravel()
        return TensorSpline(self.tx, self.ty, c, self.kx, self.ky)


Packed = tuple[
    FloatArray, IntArray, FloatArray, IntArray, FloatArray, IntArray, IntArray, IntArray,
    FloatArray,
]  # fmt: skip
""":meth:`PackedSplines.args`: what the compiled kernels take."""


@dataclass(frozen=True)
class PackedSplines:
    """Several fitted tensor splines laid end to end, for one compiled call over all of them.

    Spline ``s`` has knots ``tx[tx_at[s]:tx_at[s+1]]`` and ``ty[ty_at[s]:ty_at[s+1]]``,
    coefficients ``c[c_at[s]:c_at[s+1]]`` (FITPACK's row-major order), degrees ``kx[s]``,
    ``ky[s]``, and the grid it was fitted on, ``box[s] = (x_lo, x_hi, y_lo, y_hi)``: inputs are
    clamped to it (flat extrapolation).
    """

    tx: FloatArray
    tx_at: IntArray
    ty: FloatArray
    ty_at: IntArray
    c: FloatArray
    c_at: IntArray
    kx: IntArray
    ky: IntArray
    box: FloatArray

    @staticmethod
    def of(splines: Sequence[TensorSpline], boxes: Sequence[tuple[float, ...]]) -> PackedSplines:
        """Pack ``splines``, each with its grid's ``(x_lo, x_hi, y_lo, y_hi)``."""
        tcks = [sp.tck for sp in splines]

        def offsets(parts: list[FloatArray]) -> IntArray:
            return np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)

        def joined(parts: list[FloatArray]) -> FloatArray:
            return np.ascontiguousarray(np.concatenate(parts), dtype=np.float64)

        txs, tys, cs = ([tck[i] for tck in tcks] for i in range(3))
        return PackedSplines(
            tx=joined(txs),
            tx_at=offsets(txs),
            ty=joined(tys),
            ty_at=offsets(tys),
            c=joined(cs),
            c_at=offsets(cs),
            kx=np.array([sp.degrees[0] for sp in splines], dtype=np.int64),
            ky=np.array([sp.degrees[1] for sp in splines], dtype=np.int64),
            box=np.array(boxes, dtype=np.float64).reshape(len(splines), 4),
        )

    def x_knots(self, s: int) -> FloatArray:
        """The knots in x (expiry) of spline ``s``."""
        return self.tx[self.tx_at[s] : self.tx_at[s + 1]]

    def args(self) -> Packed:
        """The arrays as one tuple, in the order :func:`_unpack` reads them."""
        return (
            self.tx, self.tx_at, self.ty, self.ty_at, self.c, self.c_at, self.kx, self.ky, self.box
        )  # fmt: skip


def _flattened(*arrays: FloatArray) -> tuple[tuple[int, ...], list[FloatArray]]:
    """The broadcast shape of ``arrays`` (at least one element) and each as a flat float64
    array of that shape."""
    shape = np.broadcast_shapes(*(np.shape(a) for a in arrays)) or (1,)
    return shape, [np.broadcast_to(np.asarray(a, dtype=np.float64), shape).ravel() for a in arrays]


SmileRows = tuple[FloatArray, FloatArray]
"""Each option's smile at its expiry, as :func:`smile_rows` returns it: the coefficients of the
spline in call delta (options × the widest smile's coefficient count) and the largest of each
row (a B-spline lies below its largest coefficient: the Newton bracket's top)."""

SmileBasis = tuple[IntArray, FloatArray]
"""Each option's B-splines in expiry, as :func:`smile_basis` returns them: the knot span
(options) and the ``kx + 1`` B-splines non-zero there (options × 4)."""


def smile_basis(packed: PackedSplines, which: IntArray, T: FloatArray) -> SmileBasis:
    """Option ``i``'s B-splines in expiry at ``T[i]`` (clamped to the grid) on the knots of
    packed smile ``which[i]``: they depend on the smile's expiry grid and the option's expiry
    only, not on the vols, so a pricer keeps them while the knots are the same
    (:meth:`PackedSplines.x_knots`; ``smile_rows``)."""
    t = np.ascontiguousarray(T, dtype=np.float64)
    span, bx = _smile_basis(packed.args(), np.ascontiguousarray(which, dtype=np.int64), t)
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
        basis = _smile_basis(packed.args(), at, np.ascontiguousarray(T, dtype=np.float64))
    coef, top = _smile_rows(packed.args(), at, *basis)
    return coef, top


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
    fwd = S * np.exp((r_d - r_f) * t)
    log_m = np.ascontiguousarray(np.log(fwd / K), dtype=np.float64)
    if packed is None:
        packed = PackedSplines.of([m.spline() for m in smiles], [m.box() for m in smiles])
    start = (
        np.full(t.size, np.nan) if guess is None else np.ascontiguousarray(guess, dtype=np.float64)
    )
    shifts = np.log1p(np.array([0.0, *spot_moves], dtype=np.float64))
    t0 = time.perf_counter_ns()
    at = np.ascontiguousarray(which, dtype=np.int64)
    coef, top = (
        _smile_rows(packed.args(), at, *_smile_basis(packed.args(), at, t))
        if rows is None
        else rows
    )
    vol = _smile_solve(packed.args(), at, coef, top, t, log_m, start, shifts)
    if smiles:
        smiles[0].cache.lookup_ns += time.perf_counter_ns() - t0
    return vol if spot_moves else vol[:, 0]


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
    vol = _spline_ev(
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
        shape, (s, k, t, rd, rf) = _flattened(S, K, T, r_d, r_f)
        start = None if guess is None else np.broadcast_to(guess, shape).ravel()
        which = np.zeros(s.size, dtype=np.int64)
        return fx_smile_vols([self], which, s, k, t, rd, rf, guess=start).reshape(shape)


@numba.njit(cache=True, nogil=True)
def _span(knots: np.ndarray, k: int, x: float) -> int:  # pragma: no cover - compiled
    """Knot interval ``l``: ``knots[l] ≤ x < knots[l+1]``, ``k ≤ l ≤ n−k−2`` (FITPACK fpbisp)."""
    last = knots.size - k - 2
    lo = k
    while lo < last and x >= knots[lo + 1]:
        lo += 1
    return lo


@numba.njit(cache=True, nogil=True)
def _basis(
    knots: np.ndarray,
    k: int,
    span: int,
    x: float,
    out: np.ndarray,
    lower: np.ndarray,
    work: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """The ``k + 1`` B-splines of degree ``k`` non-zero at ``x`` (Cox–de Boor) into ``out`` and,
    from the same recursion, the ``k`` of degree ``k − 1`` at the same span into ``lower`` (what
    a derivative needs); ``work`` (2 × (k + 1)) is scratch space."""
    left = work[0]
    right = work[1]
    out[0] = 1.0
    if k == 1:
        lower[0] = 1.0
    for j in range(1, k + 1):
        left[j] = x - knots[span + 1 - j]
        right[j] = knots[span + j] - x
        saved = 0.0
        for r in range(j):
            tmp = out[r] / (right[r + 1] + left[j - r])
            out[r] = saved + right[r + 1] * tmp
            saved = left[j - r] * tmp
        out[j] = saved
        if j == k - 1:
            for r in range(k):
                lower[r] = out[r]


@numba.njit(cache=True, nogil=True)
def _unpack(
    packed: tuple[np.ndarray, ...], sp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, np.ndarray]:  # pragma: no cover
    """Knots in x and y, coefficients, degrees and grid box of packed spline ``sp``."""
    tx_all, tx_at, ty_all, ty_at, c_all, c_at, kx_all, ky_all, box = packed
    return (
        tx_all[tx_at[sp] : tx_at[sp + 1]],
        ty_all[ty_at[sp] : ty_at[sp + 1]],
        c_all[c_at[sp] : c_at[sp + 1]],
        kx_all[sp],
        ky_all[sp],
        box[sp],
    )


@numba.njit(cache=True, nogil=True)
def _row_value(
    ty: np.ndarray,
    ky: int,
    row: np.ndarray,
    y: float,
    by: np.ndarray,
    spare: np.ndarray,
    work: np.ndarray,
) -> float:  # pragma: no cover - compiled
    """The spline in y with coefficients ``row`` at ``y``."""
    ly = _span(ty, ky, y)
    _basis(ty, ky, ly, y, by, spare, work)
    v = 0.0
    for b in range(ky + 1):
        v += by[b] * row[ly - ky + b]
    return v


@numba.njit(cache=True, nogil=True)
def _smile_newton(
    row: np.ndarray,
    ty: np.ndarray,
    ky: int,
    d_lo: float,
    d_hi: float,
    top: float,
    x: float,
    st: float,
    v: float,
    by: np.ndarray,
    dy: np.ndarray,
    work: np.ndarray,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """σ with g(σ) = σ − s(Φ(d1(σ))) = 0 for one option whose smile in delta is the spline
    ``(ty, row, ky)``, log-moneyness ``x = log(F/K)`` and ``st = √T``, from ``v``; and
    ∂σ/∂x there (implicit differentiation: −(∂g/∂x)/(∂g/∂σ)).

    Newton inside a bracket that always holds a root: g(1e-6) ≤ 0 (vols are floored at 1e-6)
    and g(top) ≥ 0 (a B-spline lies below its largest coefficient); a step that leaves the
    bracket bisects instead.
    """
    lo, hi = 1e-6, top
    v = min(max(v, lo), hi)
    dv_dx = 0.0
    for _ in range(100):
        d1 = x / (v * st) + 0.5 * v * st
        d = 0.5 * math.erfc(-d1 / math.sqrt(2.0))
        dc = min(max(d, d_lo), d_hi)
        ly = _span(ty, ky, dc)
        _basis(ty, ky, ly, dc, by, dy, work)
        s_v = 0.0
        for b in range(ky + 1):
            s_v += by[b] * row[ly - ky + b]
        s_d = 0.0  # ∂s/∂delta, 0 where the delta is clamped
        if d_lo < d < d_hi and ky > 0:
            for b in range(ky):
                j = ly - ky + 1 + b
                s_d += ky * (row[j] - row[j - 1]) / (ty[j + ky] - ty[j]) * dy[b]
        if s_v < 1e-6:
            s_v, s_d = 1e-6, 0.0
        g = v - s_v
        pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
        slope = 1.0 - s_d * pdf * (-x / (v * v * st) + 0.5 * st)
        if slope != 0.0:
            dv_dx = s_d * pdf / (v * st) / slope
        if abs(g) < 1e-13:
            break
        if g > 0.0:
            hi = v
        else:
            lo = v
        step = v - g / slope if slope != 0.0 else math.nan
        if lo < step < hi:
            moved = abs(step - v)
            v = step
            if moved < 1e-9:  # Newton: the error after this step is ~ C·moved², below 1e-16
                break
        else:
            v = 0.5 * (lo + hi)
        if hi - lo < 1e-15:
            break
    return v, dv_dx


@numba.njit(cache=True, nogil=True)
def _smile_basis(
    packed: tuple[np.ndarray, ...], which: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per option, the knot span in x of packed spline ``which[p]`` at ``t[p]`` (clamped to its
    grid) and the ``kx + 1`` B-splines non-zero there."""
    span = np.empty(t.size, dtype=np.int64)
    bx = np.zeros((t.size, 4))
    work = np.empty((2, 8))
    out = np.empty(8)
    spare = np.empty(8)  # lower-degree B-splines nobody reads
    for p in range(t.size):
        tx, _, _, kx, _, box = _unpack(packed, which[p])
        tc = min(max(t[p], box[0]), box[1])
        span[p] = _span(tx, kx, tc)
        _basis(tx, kx, span[p], tc, out, spare, work)
        for a in range(kx + 1):
            bx[p, a] = out[a]
    return span, bx


@numba.njit(cache=True, nogil=True)
def _smile_rows(
    packed: tuple[np.ndarray, ...], which: np.ndarray, span: np.ndarray, bx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per option, packed spline ``which[p]`` at its expiry as a spline in y, from that
    expiry's B-splines ``bx[p]`` on knot span ``span[p]`` (:func:`_smile_basis`): the
    coefficients (row ``p``, the first ``n_cy`` of that spline) and the largest of them (at
    least 1e-6)."""
    ty_at, ky_all = packed[3], packed[7]
    width = 1
    for sp in range(ky_all.size):
        width = max(width, ty_at[sp + 1] - ty_at[sp] - ky_all[sp] - 1)
    coef = np.zeros((span.size, width))
    top = np.empty(span.size)
    for p in range(span.size):
        _, ty, c, kx, ky, _ = _unpack(packed, which[p])
        n_cy = ty.size - ky - 1
        first = span[p] - kx
        best = -math.inf
        for j in range(n_cy):
            acc = 0.0
            for a in range(kx + 1):
                acc += bx[p, a] * c[(first + a) * n_cy + j]
            coef[p, j] = acc
            best = max(best, acc)
        top[p] = max(1e-6, best)
    return coef, top


@numba.njit(cache=True, nogil=True)
def _smile_solve(
    packed: tuple[np.ndarray, ...],
    which: np.ndarray,
    coef: np.ndarray,
    top: np.ndarray,
    t: np.ndarray,
    log_m: np.ndarray,
    start: np.ndarray,
    shifts: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """σ = s(T, Φ(d1(σ))) per option and log-moneyness shift, ``s`` the tensor spline of vol
    in (expiry, call delta) number ``which[p]`` of the packed splines (:class:`PackedSplines`),
    inputs clamped to its grid; ``coef[p]`` and ``top[p]`` are that spline at the option's
    expiry as a spline in delta (:func:`_smile_rows`). Column ``j`` solves at
    ``log_m + shifts[j]``; ``shifts[0]`` should be 0 (the others start from the first column's
    solution moved to first order). ``start`` NaN: start at the 0.5 delta vol.

    The plain iteration σ ← s(Φ(d1(σ))) does not converge for short-dated far-from-the-money
    strikes, where |∂d1/∂σ| is large; the bracketed Newton of :func:`_smile_newton` does, to
    |g| < 1e-13.
    """
    out = np.empty((t.size, shifts.size))
    work = np.empty((2, 8))
    by = np.empty(8)
    dy = np.empty(8)
    spare = np.empty(8)  # lower-degree B-splines nobody reads
    for p in range(t.size):
        _, ty, _, _, ky, box = _unpack(packed, which[p])
        d_lo, d_hi = box[2], box[3]
        row = coef[p]
        st = math.sqrt(t[p])
        v = start[p]
        if math.isnan(v):
            v = _row_value(ty, ky, row, 0.5, by, spare, work)
        base, dv_dx = _smile_newton(
            row, ty, ky, d_lo, d_hi, top[p], log_m[p] + shifts[0], st, v, by, dy, work
        )
        out[p, 0] = base
        for j in range(1, shifts.size):
            guess = base + dv_dx * (shifts[j] - shifts[0])
            if not 1e-6 < guess < top[p]:
                guess = base
            out[p, j], _ = _smile_newton(
                row, ty, ky, d_lo, d_hi, top[p], log_m[p] + shifts[j], st, guess, by, dy, work
            )
    return out


@numba.njit(cache=True, nogil=True)
def _spline_ev(
    packed: tuple[np.ndarray, ...], which: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """Value of packed spline ``which[p]`` at ``(x[p], y[p, j])`` for every column ``j`` of
    ``y``, clamped to its grid (FITPACK's bispev, one point at a time; the ``x`` basis is
    computed once per point, and only the (kx+1)·(ky+1) coefficients a point reads are read:
    setting up the whole spline in y, as the smile solve does, costs more here)."""
    out = np.empty(y.shape)
    work = np.empty((2, 8))
    bx = np.empty(8)
    by = np.empty(8)
    spare = np.empty(8)  # lower-degree B-splines nobody reads
    for p in range(x.size):
        tx, ty, c, kx, ky, box = _unpack(packed, which[p])
        n_cy = ty.size - ky - 1
        xc = min(max(x[p], box[0]), box[1])
        lx = _span(tx, kx, xc)
        _basis(tx, kx, lx, xc, bx, spare, work)
        for j in range(y.shape[1]):
            yc = min(max(y[p, j], box[2]), box[3])
            ly = _span(ty, ky, yc)
            _basis(ty, ky, ly, yc, by, spare, work)
            acc = 0.0
            for a in range(kx + 1):
                base = (lx - kx + a) * n_cy + ly - ky
                inner = 0.0
                for b in range(ky + 1):
                    inner += by[b] * c[base + b]
                acc += bx[a] * inner
            out[p, j] = acc
    return out


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
        shape, (s, k, t) = _flattened(S, K, T)
        which = np.zeros(s.size, dtype=np.int64)
        return equity_vols([self], which, s, k, t).reshape(shape)
