"""Compiled B-spline kernels over :class:`~workbench.pricing.splines.PackedSplines` arrays.

Each kernel takes the packed splines as the tuple :meth:`PackedSplines.args` returns (knots,
coefficients and their offsets, degrees, grid boxes) and works one option at a time: FITPACK's
knot search and Cox–de Boor recursion, the smile of an expiry as a spline in call delta (set
up once per smile as one cubic per knot span, so that a Newton step evaluates a polynomial),
the bracketed Newton solve of a strike's vol on that smile, and plain evaluation. Inputs outside a
spline's grid are clamped to it (flat extrapolation). Vols are decimals, times in years.
"""

from __future__ import annotations

import math

import numba
import numpy as np


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
def _value_slope(
    ty: np.ndarray,
    ky: int,
    row: np.ndarray,
    span: int,
    y: float,
    by: np.ndarray,
    lower: np.ndarray,
    work: np.ndarray,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Value and slope at ``y`` of the polynomial piece on knot span ``span`` of the spline in
    y with coefficients ``row`` (``y`` may be the span's right end: that piece's limit)."""
    _basis(ty, ky, span, y, by, lower, work)
    v = 0.0
    for b in range(ky + 1):
        v += by[b] * row[span - ky + b]
    d = 0.0
    for b in range(ky):
        j = span - ky + 1 + b
        d += ky * (row[j] - row[j - 1]) / (ty[j + ky] - ty[j]) * lower[b]
    return v, d


@numba.njit(cache=True, nogil=True)
def _span_cubics(
    ty: np.ndarray,
    ky: int,
    row: np.ndarray,
    out: np.ndarray,
    by: np.ndarray,
    lower: np.ndarray,
    work: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """The spline in y with coefficients ``row`` on each knot span ``l = ky … n−1`` as
    ``b0 + b1·u + b2·u² + b3·u³``, ``u = y − ty[l]``, into ``out[l − ky]``: from the piece's
    value and slope at both ends of the span (the cubic Hermite form, exact for a piece of
    degree ≤ 3)."""
    for span in range(ky, ty.size - ky - 1):
        h = ty[span + 1] - ty[span]
        if not h > 0.0:
            continue
        s0, d0 = _value_slope(ty, ky, row, span, ty[span], by, lower, work)
        s1, d1 = _value_slope(ty, ky, row, span, ty[span + 1], by, lower, work)
        out[span - ky, 0] = s0
        out[span - ky, 1] = d0
        out[span - ky, 2] = (3.0 * (s1 - s0) / h - 2.0 * d0 - d1) / h
        out[span - ky, 3] = (2.0 * (s0 - s1) / h + d0 + d1) / (h * h)


@numba.njit(cache=True, nogil=True)
def _cubic_at(
    cubics: np.ndarray, ty: np.ndarray, ky: int, y: float
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Value and slope at ``y`` (inside the spline's range) of the spline whose pieces are
    ``cubics`` (:func:`_span_cubics`)."""
    k = _span(ty, ky, y) - ky
    b = cubics[k]
    u = y - ty[ky + k]
    return b[0] + u * (b[1] + u * (b[2] + u * b[3])), b[1] + u * (2.0 * b[2] + 3.0 * u * b[3])


@numba.njit(cache=True, nogil=True)
def _smile_newton(
    cubics: np.ndarray,
    ty: np.ndarray,
    ky: int,
    d_lo: float,
    d_hi: float,
    top: float,
    x: float,
    st: float,
    v: float,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """σ with g(σ) = σ − s(Φ(d1(σ))) = 0 for one option whose smile in delta is the spline
    with knots ``ty`` and degree ``ky``, given as its pieces ``cubics`` (:func:`_span_cubics`),
    log-moneyness ``x = log(F/K)`` and ``st = √T``, from ``v``; and ∂σ/∂x there (implicit
    differentiation: −(∂g/∂x)/(∂g/∂σ)).

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
        s_v, s_d = _cubic_at(cubics, ty, ky, dc)
        if not (d_lo < d < d_hi and ky > 0):
            s_d = 0.0  # ∂s/∂delta, 0 where the delta is clamped
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
def expiry_basis(
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
def expiry_rows(
    packed: tuple[np.ndarray, ...], which: np.ndarray, span: np.ndarray, bx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per option, packed spline ``which[p]`` at its expiry as a spline in y, from that
    expiry's B-splines ``bx[p]`` on knot span ``span[p]`` (:func:`expiry_basis`): its pieces
    (row ``p``: one cubic per knot span in y, :func:`_span_cubics`, as many rows as the most
    spans of any spline, zeros past its own) and the largest of its B-spline coefficients (at
    least 1e-6: a B-spline lies below it). The pieces are the same combination of the pieces
    of the tensor's coefficient rows, each set up once."""
    ty_at, c_at, ky_all = packed[3], packed[5], packed[7]
    n_splines = ky_all.size
    width = 1
    first_row = np.zeros(n_splines + 1, dtype=np.int64)
    for sp in range(n_splines):
        n_cy = ty_at[sp + 1] - ty_at[sp] - ky_all[sp] - 1
        width = max(width, n_cy - ky_all[sp])
        first_row[sp + 1] = first_row[sp] + (c_at[sp + 1] - c_at[sp]) // n_cy
    work = np.empty((2, 8))
    by = np.empty(8)
    lower = np.empty(8)
    table = np.zeros((first_row[n_splines], width, 4))
    for sp in range(n_splines):
        _, ty, c, _, ky, _ = _unpack(packed, sp)
        n_cy = ty.size - ky - 1
        for i in range(first_row[sp + 1] - first_row[sp]):
            _span_cubics(ty, ky, c[i * n_cy : (i + 1) * n_cy], table[first_row[sp] + i], by,
                         lower, work)  # fmt: skip
    cubics = np.zeros((span.size, width, 4))
    top = np.empty(span.size)
    for p in range(span.size):
        sp = which[p]
        _, ty, c, kx, ky, _ = _unpack(packed, sp)
        n_cy = ty.size - ky - 1
        first = span[p] - kx
        best = -math.inf
        for j in range(n_cy):
            acc = 0.0
            for a in range(kx + 1):
                acc += bx[p, a] * c[(first + a) * n_cy + j]
            best = max(best, acc)
        top[p] = max(1e-6, best)
        for a in range(kx + 1):
            weight = bx[p, a]
            src = table[first_row[sp] + first + a]
            for k in range(n_cy - ky):
                for m in range(4):
                    cubics[p, k, m] += weight * src[k, m]
    return cubics, top


@numba.njit(cache=True, nogil=True)
def smile_solve(
    packed: tuple[np.ndarray, ...],
    which: np.ndarray,
    cubics: np.ndarray,
    top: np.ndarray,
    t: np.ndarray,
    log_m: np.ndarray,
    start: np.ndarray,
    shifts: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """σ = s(T, Φ(d1(σ))) per option and log-moneyness shift, ``s`` the tensor spline of vol
    in (expiry, call delta) number ``which[p]`` of the packed splines (:class:`PackedSplines`),
    inputs clamped to its grid; ``cubics[p]`` and ``top[p]`` are that spline at the option's
    expiry as pieces in delta (:func:`expiry_rows`). Column ``j`` solves at
    ``log_m + shifts[j]``; ``shifts[0]`` should be 0 (the others start from the first column's
    solution moved to first order). ``start`` NaN: start at the 0.5 delta vol.

    The plain iteration σ ← s(Φ(d1(σ))) does not converge for short-dated far-from-the-money
    strikes, where |∂d1/∂σ| is large; the bracketed Newton of :func:`_smile_newton` does, to
    |g| < 1e-13.
    """
    out = np.empty((t.size, shifts.size))
    for p in range(t.size):
        _, ty, _, _, ky, box = _unpack(packed, which[p])
        d_lo, d_hi = box[2], box[3]
        pieces = cubics[p]
        st = math.sqrt(t[p])
        v = start[p]
        if math.isnan(v):
            v = _cubic_at(pieces, ty, ky, 0.5)[0]
        base, dv_dx = _smile_newton(pieces, ty, ky, d_lo, d_hi, top[p], log_m[p] + shifts[0], st, v)
        out[p, 0] = base
        for j in range(1, shifts.size):
            guess = base + dv_dx * (shifts[j] - shifts[0])
            if not 1e-6 < guess < top[p]:
                guess = base
            out[p, j], _ = _smile_newton(
                pieces, ty, ky, d_lo, d_hi, top[p], log_m[p] + shifts[j], st, guess
            )
    return out


@numba.njit(cache=True, nogil=True)
def smile_slopes(
    packed: tuple[np.ndarray, ...],
    which: np.ndarray,
    cubics: np.ndarray,
    top: np.ndarray,
    t: np.ndarray,
    log_m: np.ndarray,
    vol: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """∂σ/∂log(F/K) per option at its solved vol ``vol`` (:func:`smile_solve`'s answer for the
    same inputs): the implicit derivative of σ = s(T, Φ(d1(σ))), the smile held."""
    out = np.empty(t.size)
    for p in range(t.size):
        _, ty, _, _, ky, box = _unpack(packed, which[p])
        _, out[p] = _smile_newton(
            cubics[p], ty, ky, box[2], box[3], top[p], log_m[p], math.sqrt(t[p]), vol[p]
        )
    return out


@numba.njit(cache=True, nogil=True)
def spline_values(
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


__all__ = ["expiry_basis", "expiry_rows", "smile_slopes", "smile_solve", "spline_values"]
