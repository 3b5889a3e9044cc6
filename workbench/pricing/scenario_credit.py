"""A book's CDX index and tranche positions under many scenarios at once.

A scenario moves an index's spread and correlation quotes and, through its curves, the
discount factors. Each scenario's default-count distributions are those of
:mod:`workbench.pricing.default_counts` — the same thresholds, Gauss–Hermite rule and recursion
over names, kept to the same number of defaults — computed for every (scenario, premium date)
pair of an index in one compiled loop, with each name's conditional default probability at
every node from a vectorised normal distribution function (:func:`_phi_at_nodes`, the same
probabilities to ~1e-16; most of the cost was the libm ``erfc``); every tranche on the index
reads them
(:func:`workbench.pricing.credit.tranche_expected_loss`), and index legs are the flat-hazard
formula of :func:`workbench.pricing.credit.index_pv`, one scenario at a time.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import CreditIndex, MarketSnapshot
from workbench.pricing.credit import (
    PremiumSchedule,
    cds_schedule,
    index_pv,
    states_needed,
    tranche_expected_loss,
    tranche_pv,
)
from workbench.pricing.default_counts import (
    QUADRATURE_NODES,
    count_recursion,
    normal_rule,
    thresholds,
)
from workbench.pricing.scenario_curves import SolvedCurves


def scenario_count_distributions(
    spec: CreditIndex, times: FloatArray, spreads: FloatArray, rho: FloatArray, keep: int
) -> tuple[FloatArray, FloatArray]:
    """Default-count distributions of index ``spec`` under S scenarios.

    Parameters
    ----------
    spec
        The index (names' hazard weights, recovery).
    times
        Premium dates, years from the as-of date (K).
    spreads, rho
        Each scenario's index spread (decimal per year) and correlation (S each, in [0, 1)).
    keep
        Counts carried exactly (``0 … keep−1``); the last column is ``P(≥ keep)``.

    Returns
    -------
    (S, K, keep+1) probabilities and (S, K) expected counts: for each scenario what
    :func:`workbench.pricing.default_counts.truncated_distributions` gives.
    """
    weights = np.asarray(spec.hazard_weights, np.float64) / (1.0 - spec.recovery)
    c = np.stack([thresholds(weights * s, times) for s in np.asarray(spreads, np.float64)])
    r = np.asarray(rho, np.float64)
    if np.any((r < 0.0) | (r >= 1.0)):
        raise ValueError(f"correlations must be in [0, 1): {r!r}")
    x, w = normal_rule(QUADRATURE_NODES)
    dist, mean = _distributions(np.ascontiguousarray(c), np.sqrt(r), np.sqrt(1.0 - r), x, w, keep)
    return dist, mean


_ERFC_CHEBYSHEV = np.array([
    -1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2, -9.561514786808631e-3,
    -9.46595344482036e-4, 3.66839497852761e-4, 4.2523324806907e-5, -2.0278578112534e-5,
    -1.624290004647e-6, 1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8, 6.529054439e-9,
    5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11, 2.394038e-12,
    -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13, 3.81e-16, 7.106e-15, -1.523e-15,
    -9.4e-17, 1.21e-16, -2.8e-17,
])  # fmt: skip
"""Chebyshev coefficients of ``erfc(u) = t·exp(−u² + P(t))``, ``t = 2/(2 + u)``, u ≥ 0
(Press et al., Numerical Recipes, 3rd ed., §6.2.2): relative error below 1e-14 where erfc is
above 1e-300."""

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (Cody and Waite): k·ln 2 exact
_LN2_LO = 1.90821492927058770002e-10
_ROOT_HALF = 0.7071067811865476


@numba.njit(cache=True, nogil=True, fastmath=True)
def _phi_at_nodes(
    c: np.ndarray,
    a: float,
    b: float,
    x: np.ndarray,
    p: np.ndarray,
    scratch: np.ndarray,
    bits: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``p[i, q] = Φ((c_i − a·x_q)/b)`` for thresholds ``c`` (N) at every node, to ~1e-16
    absolute: erfc from :data:`_ERFC_CHEBYSHEV` and exp by range reduction and a degree-12
    polynomial, written so the loops over nodes vectorise (the libm erfc does not). Results
    below ~1e-308 are not resolved (the recursion drops anything below ``NEGLIGIBLE``).
    ``scratch`` (5, Q) float64 and ``bits`` (Q) int64 are work space."""
    cof = _ERFC_CHEBYSHEV
    n = x.size
    y, t, ty, d, dd = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    scale = bits.view(np.float64)
    for i in range(c.size):
        ci = c[i]
        for q in range(n):  # Φ(z) = erfc(y)/2 with y = −z/√2
            yy = (a * x[q] - ci) / b * _ROOT_HALF
            y[q] = yy
            tq = 2.0 / (2.0 + abs(yy))
            t[q] = tq
            ty[q] = 4.0 * tq - 2.0
            d[q] = 0.0
            dd[q] = 0.0
        for j in range(cof.size - 1, 0, -1):  # Clenshaw, every node at once
            cj = cof[j]
            for q in range(n):
                prev = d[q]
                d[q] = ty[q] * prev - dd[q] + cj
                dd[q] = prev
        for q in range(n):  # the exponent, split as k·ln 2 + r with |r| ≤ ln 2 / 2
            u = abs(y[q])
            arg = max(-u * u + 0.5 * (cof[0] + ty[q] * d[q]) - dd[q], -708.0)
            k = math.floor(arg * _LOG2E + 0.5)
            d[q] = (arg - k * _LN2_HI) - k * _LN2_LO
            bits[q] = (np.int64(k) + 1023) << 52  # 2^k
        for q in range(n):
            r = d[q]
            e = 1.0 + r * (
                1.0
                + r
                * (
                    1.0 / 2.0
                    + r
                    * (
                        1.0 / 6.0
                        + r
                        * (
                            1.0 / 24.0
                            + r
                            * (
                                1.0 / 120.0
                                + r
                                * (
                                    1.0 / 720.0
                                    + r
                                    * (
                                        1.0 / 5040.0
                                        + r
                                        * (
                                            1.0 / 40320.0
                                            + r
                                            * (
                                                1.0 / 362880.0
                                                + r
                                                * (
                                                    1.0 / 3628800.0
                                                    + r
                                                    * (1.0 / 39916800.0 + r * (1.0 / 479001600.0))
                                                )
                                            )
                                        )
                                    )
                                )
                            )
                        )
                    )
                )
            )  # e^r, Taylor to r^12: below 1e-16
            half = 0.5 * t[q] * e * scale[q]
            p[i, q] = half if y[q] >= 0.0 else 1.0 - half


@numba.njit(cache=True, nogil=True, parallel=True)
def _distributions(
    c: np.ndarray, a: np.ndarray, b: np.ndarray, x: np.ndarray, w: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Every (scenario, date) of ``c`` (S, N, K): Φ at each node, then the count recursion of
    :mod:`workbench.pricing.default_counts`; (scenario, date) pairs run in parallel
    (``NUMBA_NUM_THREADS``)."""
    n_sets, n_names, n_dates = c.shape
    n_nodes = x.size
    out = np.zeros((n_sets, n_dates, keep + 1))
    mean = np.zeros((n_sets, n_dates))
    for item in numba.prange(n_sets * n_dates):
        s = item // n_dates
        k = item % n_dates
        p = np.empty((n_names, n_nodes))
        scratch = np.empty((5, n_nodes))
        bits = np.empty(n_nodes, dtype=np.int64)
        d = np.empty((keep + 1, n_nodes))
        prev = np.empty(n_nodes)
        _phi_at_nodes(np.ascontiguousarray(c[s, :, k]), a[s], b[s], x, p, scratch, bits)
        mean[s, k] = count_recursion(p, w, d, prev, out[s, k], keep)
    return out, mean


class ScenarioCredit:
    """A book's credit positions (rows ``rows``, ascending), grouped by index."""

    def __init__(self, book: Book, rows: IntArray, market: MarketSnapshot) -> None:
        self.rows = rows
        specs = {c.id: c for c in market.credit_indices}
        tranche = book.product.codes[rows] == book.product.labels.index("CDX_TRANCHE") if (
            "CDX_TRANCHE" in book.product.labels) else np.zeros(rows.size, bool)  # fmt: skip
        under = book.underlying.codes[rows]
        self._indices = []
        for code in np.unique(under):
            spec = specs[book.underlying.labels[int(code)]]
            on = under == code
            idx, tr = np.flatnonzero(on & ~tranche), np.flatnonzero(on & tranche)
            attach, detach = book.attach[rows[tr]], book.detach[rows[tr]]
            keep = states_needed(attach, detach, spec.recovery, len(spec.names)) if tr.size else 0
            self._indices.append(
                (spec, cds_schedule(market.as_of, spec.maturity), idx, tr, keep,
                 market.quote_index[spec.spread_quote], market.quote_index[spec.correlation_quote],
                 market.discount_curve_id(spec.currency))
            )  # fmt: skip
        self._notional = book.notional[rows]
        self._coupon = book.coupon[rows]
        self._attach = book.attach[rows]
        self._detach = book.detach[rows]

    def pv(self, values: FloatArray, curves: SolvedCurves) -> FloatArray:
        """PV per position (S × ``rows``), protection buyer positive, index currency."""
        out = np.empty((values.shape[0], self.rows.size))
        for spec, sched, idx, tr, keep, s_row, r_row, disc in self._indices:
            df, df_mid = self._discount(curves, disc, sched)
            spreads = values[:, s_row]
            for s in range(values.shape[0]):
                out[s, idx] = self._notional[idx] * index_pv(
                    sched, df[s], df_mid[s], spread=float(spreads[s]), recovery=spec.recovery,
                    coupon=self._coupon[idx],
                )  # fmt: skip
            if not tr.size:
                continue
            dist, mean = scenario_count_distributions(
                spec, sched.pay_t, spreads, values[:, r_row], keep
            )
            el = tranche_expected_loss(dist, self._attach[tr], self._detach[tr], spec.recovery,
                                       mean_count=mean, n_names=len(spec.names))  # fmt: skip
            out[:, tr] = self._notional[tr] * tranche_pv(el, sched, df[:, None, :],
                                                         self._coupon[tr])  # fmt: skip
        return out

    @staticmethod
    def _discount(
        curves: SolvedCurves, curve_id: str, sched: PremiumSchedule
    ) -> tuple[FloatArray, FloatArray]:
        both = np.concatenate([sched.pay_t, 0.5 * (sched.start_t + sched.pay_t)])
        df = np.exp(curves.log_discount(curve_id, both))
        k = sched.pay_t.size
        return df[:, :k], df[:, k:]


__all__ = ["ScenarioCredit", "scenario_count_distributions"]
