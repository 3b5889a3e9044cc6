"""Credit: CDX index legs on a flat hazard, and tranches in a one-factor Gaussian copula.

Premium schedule: quarterly CDS dates (20 Mar/Jun/Sep/Dec, weekends rolled following),
accrual ACT/360 from the last coupon date on or before the valuation date (so the first
coupon includes the accrued premium: PVs are dirty), protection from the valuation date,
accrued-on-default by the mid-period approximation. Times are ACT/365F from the as-of date.

Name ``i`` of an index has the flat hazard ``λ_i = w_i · s / (1 − R)`` (``w`` averages 1, ``s``
the index spread quote), so one index tick moves every name's default threshold. Tranche
``[A, D)`` loss is ``min(max(L − A, 0), D − A) / (D − A)`` with pool loss ``L = n (1 − R)/N``
for ``n`` defaults: every tranche on an index is priced from the same distribution of the
number of defaults at each premium date, from either

* :class:`IndexSimulation` — one Monte Carlo (scrambled Sobol points, drawn once and kept: they
  do not depend on the market; a tick only moves the thresholds ``Φ⁻¹(1 − e^{−λ_i t})``), so
  bumps use common random numbers; or
* :func:`default_distribution_recursion` — conditional independence given the factor, the
  standard recursion over names, Gauss–Hermite quadrature on the factor
  (:mod:`workbench.pricing.default_counts`; the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numba
import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from workbench._types import FloatArray
from workbench.market.schedules import add_months, year_fraction, year_fractions_from

_BATCHES = 16


@dataclass(frozen=True)
class PremiumSchedule:
    """Coupon periods: payment times (years from as-of), accruals (ACT/360), period start times."""

    pay_t: FloatArray
    accrual: FloatArray
    start_t: FloatArray


def cds_schedule(as_of: date, maturity: date) -> PremiumSchedule:
    """The standard quarterly schedule from the last coupon date on or before ``as_of``."""
    if maturity <= as_of:
        raise ValueError(f"CDS maturity {maturity} is not after as-of {as_of}")
    months = (3, 6, 9, 12)
    y = as_of.year
    prev = max(date(yy, mm, 20) for yy in (y - 1, y) for mm in months if date(yy, mm, 20) <= as_of)
    dates = [prev]
    while dates[-1] < maturity:
        dates.append(add_months(dates[-1], 3))
    dates[-1] = maturity
    raw = np.array(dates, dtype="datetime64[D]")
    adj = np.busday_offset(raw, 0, roll="forward")
    adj[-1] = raw[-1]
    adj[0] = raw[0]
    accrual = year_fraction(adj[:-1], adj[1:], "ACT/360")
    pay_t = year_fractions_from(as_of, adj[1:])
    start_t = np.maximum(year_fractions_from(as_of, adj[:-1]), 0.0)
    return PremiumSchedule(pay_t, accrual, start_t)


def index_pv(
    sched: PremiumSchedule,
    df: FloatArray,
    df_mid: FloatArray,
    *,
    spread: float,
    recovery: float,
    coupon: FloatArray,
) -> FloatArray:
    """Dirty PV per unit notional for a protection buyer on a flat index hazard ``s/(1−R)``."""
    lam = spread / (1.0 - recovery)
    q = np.exp(-lam * sched.pay_t)
    q_prev = np.exp(-lam * sched.start_t)
    dq = q_prev - q
    protection = (1.0 - recovery) * float(np.sum(df_mid * dq))
    rpv01 = float(np.sum(sched.accrual * df * q) + np.sum(0.5 * sched.accrual * df_mid * dq))
    return protection - coupon * rpv01


class IndexSimulation:
    """Latent factor and idiosyncratic normals for one index, drawn once and kept.

    ``n_paths`` points of a scrambled Sobol sequence in ``n_names + 1`` dimensions (the first
    ``2^m ≥ n_paths`` points, truncated), mapped to normals.
    """

    def __init__(self, *, n_names: int, n_paths: int = 50_000, seed: int = 0) -> None:
        sobol = qmc.Sobol(d=n_names + 1, scramble=True, seed=seed)
        u = sobol.random_base2(math.ceil(math.log2(max(n_paths, 2))))[:n_paths]
        z = ndtri(np.clip(u, 1e-12, 1.0 - 1e-12))
        self.factor = np.ascontiguousarray(z[:, 0])
        self.idio = np.ascontiguousarray(z[:, 1:])
        self.n_names = n_names
        self.n_paths = n_paths
        self.evaluations = 0

    def default_counts(self, thresholds: FloatArray, rho: float) -> FloatArray:
        """Probability of each number of defaults at each date, per batch: (batches, dates, N+1).

        ``thresholds[i, k]`` = Φ⁻¹(P(τ_i ≤ t_k)), increasing in ``k``.
        """
        out: FloatArray = self.default_counts_many(thresholds[None], rho)[0]
        return out

    def default_counts_many(self, thresholds: FloatArray, rho: float) -> FloatArray:
        """:meth:`default_counts` for S threshold sets (S, N, K) at one correlation, in one pass.

        The latent variables of each path are computed once and compared with every set, so
        the spread bumps of a CS01 cost little more than the base price (common random
        numbers by construction). Returns (S, batches, dates, N+1).
        """
        self.evaluations += 1
        c = np.ascontiguousarray(thresholds, dtype=np.float64)
        hist = _count_defaults(
            self.factor,
            self.idio,
            c,
            np.ascontiguousarray(c[:, :, -1].max(axis=0)),
            math.sqrt(rho),
            math.sqrt(1.0 - rho),
            _BATCHES,
        )
        per_batch = np.bincount(
            np.arange(self.n_paths) * _BATCHES // self.n_paths, minlength=_BATCHES
        )
        out: FloatArray = hist / per_batch[None, :, None, None]
        return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_defaults(
    m: np.ndarray,
    z: np.ndarray,
    c: np.ndarray,
    c_last: np.ndarray,
    a: float,
    b: float,
    batches: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """Histogram of the number of defaults by each date: (sets, batches, dates, names + 1).

    Name ``i`` of path ``p`` has defaulted by date ``k`` of set ``s`` when
    ``a·m_p + b·z_pi ≤ c[s, i, k]``; ``c_last[i]`` is the loosest last-date threshold. Batches
    run in parallel (``NUMBA_NUM_THREADS``); each path adds +1 at its count on the first date
    and moves it at the dates where the count changes, and a running sum over dates at the end
    turns these changes into the histogram.
    """
    n_paths, n_names = z.shape
    n_sets, _, n_dates = c.shape
    change = np.zeros((n_sets, batches, n_dates, n_names + 1))
    for bt in numba.prange(batches):
        x = np.empty(n_names)
        first = np.zeros((n_sets, n_dates + 1), dtype=np.int64)
        for p in range(bt * n_paths // batches, (bt + 1) * n_paths // batches):
            am = a * m[p]
            for i in range(n_names):  # vectorised: the latent variable of every name
                x[i] = am + b * z[p, i]
            for s in range(n_sets):
                for k in range(n_dates + 1):
                    first[s, k] = 0
            for i in range(n_names):
                xi = x[i]
                if xi > c_last[i]:  # survives to the last date in every set (the usual case)
                    continue
                for s in range(n_sets):
                    k = 0
                    for kk in range(n_dates):  # branch-free: dates whose threshold is below
                        k += xi > c[s, i, kk]
                    first[s, k] += 1  # k == n_dates: survives in this set
            for s in range(n_sets):
                d = change[s, bt]
                cum = first[s, 0]
                d[0, cum] += 1.0
                for k in range(1, n_dates):
                    f = first[s, k]
                    if f:
                        d[k, cum] -= 1.0
                        cum += f
                        d[k, cum] += 1.0
    for s in range(n_sets):
        for bt in range(batches):
            for k in range(1, n_dates):
                change[s, bt, k] += change[s, bt, k - 1]
    return change


def tranche_expected_loss(
    dist: FloatArray,
    attach: FloatArray,
    detach: FloatArray,
    recovery: float,
    *,
    mean_count: FloatArray | None = None,
    n_names: int | None = None,
) -> FloatArray:
    """E[tranche loss fraction] per tranche and date from count distributions (…, K, N+1).

    With ``mean_count`` (…, K), ``dist`` may be kept up to ``keep`` defaults (…, K, keep+1; the
    last column the mass at or above ``keep``, see
    :func:`workbench.pricing.default_counts.truncated_distributions`) for a pool of
    ``n_names``: a tranche's loss is ``E[(L−a)⁺] − E[(L−d)⁺]``, and
    ``E[(L−x)⁺] = E[L] − x + E[(x−L)⁺]`` needs the counts below ``x`` only (0 for ``x`` at or
    above the largest loss, ``1 − recovery``).

    Raises
    ------
    ValueError
        If a kept distribution stops short of a tranche point below the largest loss.
    """
    width = detach - attach
    if mean_count is None:
        n = dist.shape[-1] - 1
        loss = np.arange(n + 1) * (1.0 - recovery) / n
        tl = np.clip(loss[None, :] - attach[:, None], 0.0, width[:, None]) / width[:, None]
        return np.einsum("...kn,jn->...jk", dist, tl)  # type: ignore[no-any-return]
    keep = dist.shape[-1] - 1
    n = n_names if n_names is not None else keep
    lgd = 1.0 - recovery
    need = states_needed(attach, detach, recovery, n)
    if keep < need:
        raise ValueError(f"distribution kept to {keep} defaults; these tranches need {need}")
    loss = np.arange(keep) * lgd / n
    mean_loss = mean_count * lgd / n

    def excess(x: FloatArray) -> FloatArray:  # E[(L − x)⁺] per point and date (…, J, K)
        put = np.einsum("...kn,jn->...jk", dist[..., :keep], np.clip(x[:, None] - loss, 0.0, None))
        value = mean_loss[..., None, :] - x[:, None] + put
        return np.where(x[:, None] >= lgd, 0.0, value)

    return (excess(attach) - excess(detach)) / width[:, None]


def states_needed(attach: FloatArray, detach: FloatArray, recovery: float, n_names: int) -> int:
    """The fewest defaults ``keep`` whose loss reaches every tranche point below the pool's
    largest loss (``1 − recovery``): counts below ``keep`` are all these tranches need.

    Examples
    --------
    >>> states_needed(np.array([0.0, 0.03]), np.array([0.03, 0.07]), 0.4, 125)  # 7% = 14.6 names
    15
    """
    lgd = 1.0 - recovery
    points = [float(x) for x in (*attach, *detach) if x < lgd]
    top = max(points, default=0.0)
    keep = max(1, math.ceil(top * n_names / lgd))
    while keep < n_names and keep * lgd / n_names < top:
        keep += 1
    return min(keep, n_names)


def tranche_pv(
    el: FloatArray, sched: PremiumSchedule, df: FloatArray, coupon: FloatArray
) -> FloatArray:
    """PV per unit tranche notional for a protection buyer from expected losses (…, J, K)."""
    prev = np.concatenate([np.zeros((*el.shape[:-1], 1)), el[..., :-1]], axis=-1)
    protection = np.sum(df * (el - prev), axis=-1)
    premium = np.sum(sched.accrual * df * (1.0 - 0.5 * (prev + el)), axis=-1)
    return protection - coupon * premium  # type: ignore[no-any-return]
