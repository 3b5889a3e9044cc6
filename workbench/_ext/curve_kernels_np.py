"""Curve kernels in NumPy: log-DF interpolation (log-linear, monotone convex) and bootstrap.

Monotone convex follows Hagan & West, "Interpolation Methods for Curve Construction" (Applied
Mathematical Finance, 2006), on the instantaneous forward ``f`` with ``log P(t) = −∫₀ᵗ f``:
discrete forwards ``fd_i`` on each node interval, node forwards ``f_i`` by the weighted
average of the neighbouring ``fd``, boundary rule ``f_0 = fd_1 − (f_1 − fd_1)/2`` (same at the
far end), and the piecewise-quadratic ``g(x)`` of the paper's four regions, which keeps the
forward monotone between nodes where the data are. The integral of ``f`` over each interval
equals ``fd_i`` times its length, so node discount factors are reproduced exactly. The
positivity collar (``f_i`` clipped to ``[0, 2 min(fd_i, fd_{i+1})]``) applies only when every
discrete forward is positive: negative-rate curves (CHF, JPY, EUR history) are left unclipped.
Past the last node the forward is flat at ``f_n``.

Every function accepts a batch of curves (``node_logdf`` of shape ``(B, n)``) so that
finite-difference Jacobians cost one vectorised call.
"""

from __future__ import annotations

import numpy as np

from workbench._types import FloatArray, IntArray

LOG_LINEAR = 0
MONOTONE_CONVEX = 1
_STEP = 1e-20  # complex step: exact to rounding, no subtraction error (Squire & Trapp 1998)


def _interp_batch(
    method: int, node_t: FloatArray, y: FloatArray, query_t: FloatArray
) -> FloatArray:
    """log P at ``query_t`` for a batch of node vectors ``y`` (B × n) → (B × m)."""
    n = node_t.size
    dt = np.diff(node_t)  # (n-1,)
    fd = -(y[:, 1:] - y[:, :-1]) / dt  # (B, n-1)
    idx = np.clip(np.searchsorted(node_t, query_t, side="right"), 1, n - 1)  # interval i
    t0 = node_t[idx - 1]
    h = dt[idx - 1]
    beyond = query_t > node_t[-1]
    x = np.minimum((query_t - t0) / h, 1.0)
    y0 = y[:, idx - 1]
    if method == LOG_LINEAR:
        out = y0 - fd[:, idx - 1] * h * x
        f_end = fd[:, -1]
    else:
        f = _node_forwards(node_t, fd)  # (B, n)
        fdi = fd[:, idx - 1]
        g0 = f[:, idx - 1] - fdi
        g1 = f[:, idx] - fdi
        out = y0 - h * (fdi * x + _g_integral(g0, g1, x))
        f_end = f[:, -1]
    if beyond.any():
        tail = y[:, -1:] - f_end[:, None] * (query_t - node_t[-1])
        out = np.where(beyond, tail, out)
    return out


def _node_forwards(node_t: FloatArray, fd: FloatArray) -> FloatArray:
    """Instantaneous forwards at the nodes (Hagan–West); positivity collar if all fd > 0."""
    b, m = fd.shape
    f = np.empty((b, m + 1), dtype=fd.dtype)
    if m == 1:
        f[:, 0] = fd[:, 0]
        f[:, 1] = fd[:, 0]
        return f
    dt = np.diff(node_t)
    w_next = dt[:-1] / (dt[:-1] + dt[1:])  # weight of fd_{i+1} at node i
    f[:, 1:-1] = w_next * fd[:, 1:] + (1.0 - w_next) * fd[:, :-1]
    f[:, 0] = fd[:, 0] - 0.5 * (f[:, 1] - fd[:, 0])
    f[:, -1] = fd[:, -1] - 0.5 * (f[:, -2] - fd[:, -1])
    positive = np.all(fd.real > 0.0, axis=1)
    if positive.any():
        hi = np.empty_like(f)
        hi[:, 0] = 2.0 * fd[:, 0]
        hi[:, -1] = 2.0 * fd[:, -1]
        hi[:, 1:-1] = 2.0 * np.where(fd[:, :-1].real <= fd[:, 1:].real, fd[:, :-1], fd[:, 1:])
        # decisions on the real part: a complex-step Jacobian follows the active branch
        low = positive[:, None] & (f.real < 0.0)
        high = positive[:, None] & ~low & (f.real > hi.real)
        f = np.where(low, 0.0, np.where(high, hi, f))
    return f


def _g_integral(g0: FloatArray, g1: FloatArray, x: FloatArray) -> FloatArray:
    """∫₀ˣ g(u) du for Hagan–West's g with g(0) = g0, g(1) = g1 and ∫₀¹ g = 0."""
    out = np.zeros(np.broadcast(g0, g1, x).shape, dtype=np.result_type(g0, g1, x))
    x = np.broadcast_to(x, out.shape)
    a0, a1 = g0.real, g1.real  # regions are chosen on the real part (complex-step safe)
    zero = (a0 == 0.0) & (a1 == 0.0)
    r1 = ((a0 < 0) & (-0.5 * a0 <= a1) & (a1 <= -2.0 * a0)) | (
        (a0 > 0) & (-0.5 * a0 >= a1) & (a1 >= -2.0 * a0)
    )
    r2 = ~r1 & (((a0 < 0) & (a1 > -2.0 * a0)) | ((a0 > 0) & (a1 < -2.0 * a0)))
    r3 = (
        ~r1
        & ~r2
        & (((a0 > 0) & (a1 < 0) & (a1 > -0.5 * a0)) | ((a0 < 0) & (a1 > 0) & (a1 < -0.5 * a0)))
    )
    r4 = ~zero & ~r1 & ~r2 & ~r3
    with np.errstate(divide="ignore", invalid="ignore"):
        # (i) quadratic
        v1 = g0 * (x - 2 * x**2 + x**3) + g1 * (x**3 - x**2)
        # (ii) flat at g0, then a quadratic rise to g1
        eta2 = (g1 + 2 * g0) / (g1 - g0)
        rise = (g1 - g0) * (x - eta2) ** 3 / (3 * (1 - eta2) ** 2)
        v2 = g0 * x + np.where(x > eta2.real, rise, 0.0)
        # (iii) quadratic from g0 to g1, then flat at g1
        eta3 = 3 * g1 / (g1 - g0)
        v3 = g1 * x + (g0 - g1) * (eta3 / 3) * (
            1 - np.where(x < eta3.real, ((eta3 - x) / eta3) ** 3, 0.0)
        )
        # (iv) two quadratics meeting at A
        s = g0 + g1
        eta4 = g1 / s
        a = -g0 * g1 / s
        left = a * x + (g0 - a) * (eta4 / 3) * (1 - ((eta4 - x) / eta4) ** 3)
        right = a * x + (g0 - a) * eta4 / 3 + (g1 - a) * (x - eta4) ** 3 / (3 * (1 - eta4) ** 2)
        v4 = np.where(x < eta4.real, left, right)
    out = np.where(r1, v1, out)
    out = np.where(r2, v2, out)
    out = np.where(r3, v3, out)
    out = np.where(r4, v4, out)
    # at the interval ends the integral is 0 by construction (g integrates to 0 over [0, 1]);
    # pin it, so a node's derivative does not follow a region piece that degenerates there
    return np.where((x == 0.0) | (x == 1.0), 0.0, out)


def interp_log_df(
    method: int, node_t: FloatArray, node_logdf: FloatArray, query_t: FloatArray, out: FloatArray
) -> None:
    """Write log P(``query_t``) into ``out``; nodes start at ``(0, 0)``."""
    out[:] = _interp_batch(method, node_t, node_logdf[None, :], query_t)[0]


def interp_log_df_rows(
    method: int, node_t: FloatArray, node_logdf: FloatArray, query_t: FloatArray, out: FloatArray
) -> None:
    """Write log P(``query_t``) of the curve in each row of ``node_logdf`` (curves on the same
    node times) into the same row of ``out``."""
    if out.shape != (node_logdf.shape[0], query_t.size):
        raise ValueError(
            f"out has shape {out.shape}, expected ({node_logdf.shape[0]}, {query_t.size})"
        )
    out[:] = _interp_batch(method, node_t, node_logdf, query_t)


def interp_log_df_jacobian(
    method: int,
    node_t: FloatArray,
    node_logdf: FloatArray,
    query_t: FloatArray,
    out: FloatArray,
    jac: FloatArray,
) -> None:
    """log P at ``query_t`` and its Jacobian ``jac[k, j] = ∂ out[k] / ∂ node_logdf[j]``."""
    n = node_t.size
    out[:] = _interp_batch(method, node_t, node_logdf[None, :], query_t)[0]
    jac[:, 0] = 0.0
    if method == LOG_LINEAR:
        idx = np.clip(np.searchsorted(node_t, query_t, side="right"), 1, n - 1)
        x = (query_t - node_t[idx - 1]) / (node_t[idx] - node_t[idx - 1])
        jac[:, 1:] = 0.0
        rows = np.arange(query_t.size)
        inside = query_t <= node_t[-1]
        jac[rows[inside], idx[inside] - 1] += 1.0 - x[inside]
        jac[rows[inside], idx[inside]] += x[inside]
        out_rows = rows[~inside]
        if out_rows.size:
            xe = x[~inside]  # > 1: linear extrapolation of the last interval
            jac[out_rows, n - 2] += 1.0 - xe
            jac[out_rows, n - 1] += xe
        jac[:, 0] = 0.0
        return
    vals = _interp_batch(method, node_t, _complex_steps(node_logdf), query_t)
    jac[:, 1:] = (vals.imag / _STEP).T


def _complex_steps(y: FloatArray) -> np.ndarray:
    """(n−1) × n complex copies of ``y``, row j−1 with ``i·_STEP`` added to node j ≥ 1.

    Branch decisions in the kernels (Hagan–West regions, the positivity collar) read the real
    part only, so the imaginary part carries the exact derivative of the active branch.
    """
    n = y.size
    steps = np.repeat(y[None, :].astype(np.complex128), n - 1, axis=0)
    j = np.arange(1, n)
    steps[j - 1, j] += 1j * _STEP
    return steps


def _residuals(
    method: int,
    node_t: FloatArray,
    y: FloatArray,
    query_t: FloatArray,
    c0: FloatArray,
    term_ptr: IntArray,
    term_w: FloatArray,
    term_a: IntArray,
    term_b: IntArray,
    term_inst: IntArray,
) -> FloatArray:
    logp = _interp_batch(method, node_t, y, query_t)  # (B, q)
    vals = term_w * np.exp(logp[:, term_a] - logp[:, term_b])  # (B, T)
    # every instrument owns a non-empty, contiguous run of terms (term_ptr)
    res: np.ndarray = np.add.reduceat(vals, term_ptr[:-1], axis=1) + c0
    return res


def bootstrap(
    method: int,
    node_t: FloatArray,
    query_t: FloatArray,
    c0: FloatArray,
    term_ptr: IntArray,
    term_w: FloatArray,
    term_a: IntArray,
    term_b: IntArray,
    logdf: FloatArray,
    tol: float,
    max_iter: int,
) -> int:
    """Newton solve of the instruments' residuals for ``logdf[1:]`` (in place, warm start).

    Instrument ``i`` pins node ``i + 1``; its residual is
    ``c0[i] + Σ_t term_w[t] · exp(L(query_t[term_a[t]]) − L(query_t[term_b[t]]))``.
    Returns the iterations used; raises ValueError if the residuals stay above ``tol``.
    """
    n = node_t.size
    if max_iter < 0:
        raise ValueError(f"max_iter must be ≥ 0, not {max_iter}")
    empty = np.flatnonzero(np.diff(term_ptr) <= 0)
    if empty.size:
        raise ValueError(f"instrument {int(empty[0])} has no terms")
    term_inst = np.repeat(np.arange(n - 1), np.diff(term_ptr))
    args = (query_t, c0, term_ptr, term_w, term_a, term_b, term_inst)
    y = logdf.copy()
    y[0] = 0.0
    for it in range(max_iter + 1):
        res = _residuals(method, node_t, y[None, :], *args)[0]
        worst = float(np.max(np.abs(res)))
        if worst <= tol:
            logdf[:] = y
            return it
        if it == max_iter:
            break
        r = _residuals(method, node_t, _complex_steps(y), *args)
        jac = (r.imag / _STEP).T  # (inst, node)
        try:
            step = np.linalg.solve(jac, res)
        except np.linalg.LinAlgError:
            raise ValueError(
                "bootstrap Jacobian is singular: two instruments pin the same node"
            ) from None
        y[1:] -= step
    i = int(np.argmax(np.abs(res)))
    raise ValueError(
        f"bootstrap did not converge in {max_iter} iterations: instrument {i} residual {res[i]:.3e}"
    )


def bootstrap_rows(
    method: int,
    node_t: FloatArray,
    query_t: FloatArray,
    c0: FloatArray,
    term_ptr: IntArray,
    term_w: FloatArray,
    term_a: IntArray,
    term_b: IntArray,
    logdf: FloatArray,
    tol: float,
    max_iter: int,
    status: IntArray,
) -> None:
    """:func:`bootstrap` of each row: instruments of one structure (``term_ptr``, ``term_a``,
    ``term_b``) with the coefficients ``c0[r]``, ``term_w[r]``, solved from ``logdf[r]`` in
    place. No row raises: ``status[r]`` is its iterations, −1 for a singular Jacobian, −2
    when the residuals stay above ``tol``; such a row's ``logdf`` is left as it was."""
    rows = logdf.shape[0]
    if c0.shape[0] != rows or term_w.shape[0] != rows or status.shape[0] != rows:
        raise ValueError(
            f"{rows} rows of logdf: c0 has {c0.shape[0]}, term_w {term_w.shape[0]}, "
            f"status {status.shape[0]}"
        )
    if max_iter < 0:
        raise ValueError(f"max_iter must be ≥ 0, not {max_iter}")
    empty = np.flatnonzero(np.diff(term_ptr) <= 0)
    if empty.size:
        raise ValueError(f"instrument {int(empty[0])} has no terms")
    for r in range(rows):
        y = logdf[r].copy()
        try:
            status[r] = bootstrap(
                method, node_t, query_t, c0[r], term_ptr, term_w[r], term_a, term_b, y, tol,
                max_iter,
            )  # fmt: skip
        except ValueError as exc:
            status[r] = -1 if "singular" in str(exc) else -2
            continue
        logdf[r] = y
