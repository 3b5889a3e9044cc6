"""A book's CDX index and tranche positions under many scenarios at once.

A scenario moves an index's spread and correlation quotes and, through its curves, the
discount factors. Each scenario's default-count distributions are those of
:mod:`workbench.pricing.default_counts` — the same thresholds, Gauss–Hermite rule and recursion
over names, kept to the same number of defaults — computed for every (scenario, premium date)
pair of an index in one compiled loop; every tranche on the index reads them
(:func:`workbench.pricing.credit.tranche_expected_loss`), and index legs are the flat-hazard
formula of :func:`workbench.pricing.credit.index_pv`, one scenario at a time.
"""

from __future__ import annotations

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
    _count_recursion,
    _exact,
    _rule,
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
    x, w = _rule(QUADRATURE_NODES)
    dist, mean = _distributions(np.ascontiguousarray(c), np.sqrt(r), np.sqrt(1.0 - r), x, w, keep)
    return dist, mean


@numba.njit(cache=True, nogil=True, parallel=True)
def _distributions(
    c: np.ndarray, a: np.ndarray, b: np.ndarray, x: np.ndarray, w: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Every (scenario, date) of ``c`` (S, N, K): the exact Φ at each node, then the count
    recursion; (scenario, date) pairs run in parallel (``NUMBA_NUM_THREADS``)."""
    n_sets, n_names, n_dates = c.shape
    n_nodes = x.size
    out = np.zeros((n_sets, n_dates, keep + 1))
    mean = np.zeros((n_sets, n_dates))
    for item in numba.prange(n_sets * n_dates):
        s = item // n_dates
        k = item % n_dates
        z = np.empty((n_names, n_nodes))
        p = np.empty((n_names, n_nodes))
        d = np.empty((keep + 1, n_nodes))
        prev = np.empty(n_nodes)
        _exact(np.ascontiguousarray(c[s, :, k]), a[s], b[s], x, z, p)
        mean[s, k] = _count_recursion(p, w, d, prev, out[s, k], keep)
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
