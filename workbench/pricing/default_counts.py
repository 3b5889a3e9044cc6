"""The distribution of the number of defaults in a one-factor Gaussian copula, semi-analytically.

Conditional on the common factor ``x`` the names of a pool default independently by ``t_k``
with ``p_i(x) = Φ((c_ik − √ρ x)/√(1 − ρ))``, ``c_ik = Φ⁻¹(P(τ_i ≤ t_k))``. The distribution of
the count is built name by name,

    P_i(n | x) = P_{i−1}(n | x) (1 − p_i) + P_{i−1}(n−1 | x) p_i,

at every node of a Gauss–Hermite rule at once, then integrated over the factor.

Several threshold sets (a base and its bumps: ±1bp spread, +1% correlation, the next day) are
priced in one call. Most of the cost of a set is the ``Φ`` of every name at every node; a set
whose thresholds lie within :data:`TAYLOR_SHIFT` of the first set's (a spread bump, one day
later) takes its ``Φ`` from a Taylor series around the first set's instead of a fresh
``erfc``, accurate to ~1e-15 (the series is kept to sixth order).

Tranches need the distribution only up to their highest attachment or detachment point below
the pool's largest loss: above it a tranche's payoff is known from the mean (see
:func:`workbench.pricing.credit.tranche_expected_loss`). :func:`truncated_distributions`
therefore carries the counts ``0 … keep−1`` exactly and lumps the rest into one absorbing
state, with the expected count beside them; the recursion then costs ``N · keep`` per node
instead of ``N²/2``. At each node it carries only the counts whose probability can exceed
:data:`TAIL` (the Chernoff bound on that node's expected count): a node where few names
default needs a handful of counts, not ``keep``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import ndtri

from workbench._types import FloatArray

QUADRATURE_NODES = 128
"""Gauss–Hermite rule on the factor. Nodes whose weight is below 1e-16 are dropped (58 of 128
remain; the dropped mass is 1.6e-16), so the cost is that of 58 nodes. On the reference
indices the tranche expected losses are within 1.5e-7 (of the tranche notional) of an 800-node
Gauss–Legendre integration; with 64 nodes 2.6e-5, with 48 nodes 9e-5."""

NEGLIGIBLE = 1e-280
"""Conditional count probabilities below this are set to 0 as the recursion goes: in the far
tails of the factor they would otherwise pass through the subnormal range (below 2.2e-308),
where each operation costs ~100 cycles: the recursion ran 2.4× slower on the reference
indices. What is dropped weighs below 1e-280 in any probability (a node's weight is ≤ 1)."""

TAIL = 1e-18
"""A count whose conditional probability at a node is at most this, by the Chernoff bound
``P(n or more defaults) ≤ e^{−μ} (eμ/n)^n`` on the node's expected count ``μ``, is not carried
at that node: it is 0 instead, for every name of the recursion (a partial count is never
likelier than the whole pool's). What is dropped weighs at most ``TAIL`` in any probability
(1e-16 of a tranche's notional on the reference indices; the counts carried are computed as
before, to the bit)."""


def _means_below(eps: float, counts: int) -> FloatArray:
    """``m[n]``: the largest expected count at which the Chernoff bound on ``P(≥ n defaults)``
    is at most ``eps`` (``m[0] = −1``: count 0 is always carried); ``n`` up to ``counts``."""
    n = np.arange(1, counts + 1, dtype=np.float64)
    lo, hi = np.zeros_like(n), n.copy()  # n·log(eμ/n) − μ rises with μ on (0, n), 0 at μ = n
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        small = n * np.log(math.e * np.maximum(mid, 1e-300) / n) - mid <= math.log(eps)
        lo, hi = np.where(small, mid, lo), np.where(small, hi, mid)
    return np.concatenate([[-1.0], lo])


_MEANS_BELOW_TAIL = _means_below(TAIL, 4096)

TAYLOR_SHIFT = 0.02
"""Largest shift of a standardised threshold ``(c_s − c_0)/√(1 − ρ)`` served by the Taylor
series (sixth order: remainder below ~2e-15 in probability); larger shifts get a fresh erfc."""


def thresholds(hazards: FloatArray, times: FloatArray) -> FloatArray:
    """Φ⁻¹(1 − e^{−λ_i t_k}) for names × dates (hazards per year, times in years)."""
    pd = -np.expm1(-np.outer(hazards, times))
    return ndtri(np.clip(pd, 1e-300, 1.0 - 1e-16))  # type: ignore[no-any-return]


def default_distribution_recursion(
    hazards: FloatArray, times: FloatArray, rho: float, *, nodes: int = QUADRATURE_NODES
) -> FloatArray:
    """P(n defaults by t_k) for dates × (N+1): flat hazards per name (per year), times (years)."""
    c = thresholds(hazards, times)
    out: FloatArray = default_distributions(c[None], np.array([rho]), nodes=nodes)[0]
    return out


def default_distributions(
    c: FloatArray,
    rho: FloatArray,
    *,
    nodes: int = QUADRATURE_NODES,
    taylor_shift: float = TAYLOR_SHIFT,
) -> FloatArray:
    """P(n defaults by t_k) for S threshold sets ``c`` (S, N, K) at correlations ``rho`` (S,):
    (S, K, N+1). Sets at the first set's correlation and near its thresholds reuse its ``Φ``
    (``taylor_shift`` 0: never). Dates run in parallel."""
    return truncated_distributions(
        c, rho, c.shape[1], nodes=nodes, taylor_shift=taylor_shift
    ).probabilities


@dataclass(frozen=True)
class CountDistributions:
    """Default-count distributions kept up to ``keep`` defaults.

    ``probabilities`` (S, K, keep+1): P(n defaults by t_k) for ``n < keep``, and in the last
    column P(at least ``keep``) (with ``keep`` = N, the whole distribution); ``mean`` (S, K):
    the expected number of defaults, from the same quadrature.
    """

    probabilities: FloatArray
    mean: FloatArray
    n_names: int


def truncated_distributions(
    c: FloatArray,
    rho: FloatArray,
    keep: int,
    *,
    nodes: int = QUADRATURE_NODES,
    taylor_shift: float = TAYLOR_SHIFT,
) -> CountDistributions:
    """:func:`default_distributions` kept up to ``keep`` defaults (0 < keep ≤ N), with the
    expected count: what tranches attaching and detaching below ``keep`` defaults need."""
    x, w = normal_rule(nodes)
    r = np.asarray(rho, dtype=np.float64)
    if r.shape != (c.shape[0],) or np.any((r < 0.0) | (r >= 1.0)):
        raise ValueError(f"correlations must be one per set in [0, 1): {rho!r}")
    n_names = c.shape[1]
    if not 0 < keep <= n_names:
        raise ValueError(f"keep must be in 1..{n_names} defaults, got {keep}")
    cc = np.ascontiguousarray(c, dtype=np.float64)
    dist, mean = _distributions(cc, np.sqrt(r), np.sqrt(1.0 - r), x, w, taylor_shift, keep)
    return CountDistributions(dist, mean, n_names)


@functools.lru_cache(maxsize=8)
def normal_rule(nodes: int) -> tuple[FloatArray, FloatArray]:
    """Gauss–Hermite nodes and weights for the standard normal, nodes weighing < 1e-16 dropped
    (the far tails weigh nothing at double precision)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2.0 * math.pi)
    keep = w >= 1e-16
    x, w = np.ascontiguousarray(x[keep]), np.ascontiguousarray(w[keep])
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


@numba.njit(cache=True, nogil=True, fastmath=True)
def count_recursion(
    p: np.ndarray, w: np.ndarray, d: np.ndarray, prev: np.ndarray, out: np.ndarray, keep: int
) -> float:  # pragma: no cover - compiled
    """Integrated count distribution into ``out`` (keep+1: counts below ``keep``, then at least
    ``keep``) from conditional default probabilities ``p`` (N, Q); returns the expected count.
    ``d`` (keep+1, Q) and ``prev`` (Q) are scratch. Count ``n`` is carried at the nodes
    ``0 … reach[n]−1`` only: every node whose expected count can give it more than ``TAIL``
    (:data:`TAIL`; the nodes in between it might skip are carried too)."""
    n_names, n_nodes = p.shape
    below = _MEANS_BELOW_TAIL
    reach = np.zeros(keep + 1, dtype=np.int64)
    for q in range(n_nodes):
        prev[q] = 0.0
    for i in range(n_names):
        for q in range(n_nodes):
            prev[q] += p[i, q]
    for q in range(n_nodes):
        counts = keep + 1  # counts 0 … counts−1 are carried at node q
        if keep < below.size - 1:
            counts = min(counts, np.searchsorted(below[: keep + 1], prev[q]))
        for n in range(counts):
            reach[n] = q + 1
    d[:, :] = 0.0
    d[0, :] = 1.0
    mean = 0.0
    for i in range(n_names):
        pi = p[i]
        for q in range(n_nodes):
            mean += w[q] * pi[q]
            prev[q] = d[0, q]
            v = prev[q] * (1.0 - pi[q])
            d[0, q] = v if v > NEGLIGIBLE else 0.0
        top = min(i + 1, keep)  # at most i + 1 defaults among the first i + 1 names
        for n in range(1, top + 1):
            # views of the nodes carried, so that the loop over them vectorises
            width = reach[n]
            row, old, pn = d[n, :width], prev[:width], pi[:width]
            if n < keep:
                for q in range(width):  # nodes innermost: contiguous, vectorised
                    cur = row[q]
                    v = cur + (old[q] - cur) * pn[q]
                    row[q] = v if v > NEGLIGIBLE else 0.0
                    old[q] = cur
            else:  # "at least keep" absorbs: nothing leaves it
                for q in range(width):
                    row[q] = row[q] + old[q] * pn[q]
    for n in range(keep + 1):
        acc = 0.0
        for q in range(n_nodes):
            acc += w[q] * d[n, q]
        out[n] = acc
    return mean


@numba.njit(cache=True, nogil=True)
def _exact(
    c: np.ndarray, a: float, b: float, x: np.ndarray, z: np.ndarray, p: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``z = (c_i − a x_q)/b`` and ``p = Φ(z)`` for thresholds ``c`` (N) at every node."""
    for i in range(c.size):
        for q in range(x.size):
            zz = (c[i] - a * x[q]) / b
            z[i, q] = zz
            p[i, q] = 0.5 * math.erfc(-zz / math.sqrt(2.0))


@numba.njit(cache=True, nogil=True, fastmath=True)
def _shifted(
    z0: np.ndarray, p0: np.ndarray, dens: np.ndarray, shift: np.ndarray, p: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``p = Φ(z0 + shift_i)`` from ``p0 = Φ(z0)`` and ``dens = φ(z0)`` by the Taylor series
    ``Φ(z+δ) = Φ(z) + φ(z) Σ_{n≥1} (−1)^{n−1} He_{n−1}(z) δⁿ/n!`` to n = 6."""
    for i in range(z0.shape[0]):
        dl = shift[i]
        for q in range(z0.shape[1]):
            z = z0[i, q]
            he_prev, he = 0.0, 1.0  # He_{n−2}, He_{n−1}
            term, acc = 1.0, 0.0
            for n in range(1, 7):
                term *= dl / n
                acc += (he if n % 2 == 1 else -he) * term
                he_prev, he = he, z * he - (n - 1) * he_prev
            v = p0[i, q] + dens[i, q] * acc
            p[i, q] = min(max(v, 0.0), 1.0)


@numba.njit(cache=True, nogil=True, parallel=True)
def _distributions(
    c: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    taylor_shift: float,
    keep: int,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n_sets, n_names, n_dates = c.shape
    n_nodes = x.size
    out = np.zeros((n_sets, n_dates, keep + 1))
    mean = np.zeros((n_sets, n_dates))
    for k in numba.prange(n_dates):
        z0 = np.empty((n_names, n_nodes))
        p0 = np.empty((n_names, n_nodes))
        dens = np.empty((n_names, n_nodes))
        have_dens = False
        z = np.empty((n_names, n_nodes))
        p = np.empty((n_names, n_nodes))
        d = np.empty((keep + 1, n_nodes))
        prev = np.empty(n_nodes)
        shift = np.empty(n_names)
        _exact(c[0, :, k], a[0], b[0], x, z0, p0)
        mean[0, k] = count_recursion(p0, w, d, prev, out[0, k], keep)
        for s in range(1, n_sets):
            near = a[s] == a[0] and b[s] == b[0]
            if near:
                for i in range(n_names):
                    shift[i] = (c[s, i, k] - c[0, i, k]) / b[0]
                    if not abs(shift[i]) <= taylor_shift:
                        near = False
            if near:
                if not have_dens:
                    for i in range(n_names):
                        for q in range(n_nodes):
                            zz = z0[i, q]
                            dens[i, q] = math.exp(-0.5 * zz * zz) / math.sqrt(2.0 * math.pi)
                    have_dens = True
                _shifted(z0, p0, dens, shift, p)
            else:
                _exact(c[s, :, k], a[s], b[s], x, z, p)
            mean[s, k] = count_recursion(p, w, d, prev, out[s, k], keep)
    return out, mean
