"""Vectorised interest-rate swaps: fixed vs OIS-compounded, and fixed vs a term index.

Cash-flow dates are fixed when the book is loaded. Many swaps share dates, so each curve's
discount factors are computed once on the unique dates and gathered; a swap's PV is a sum over
its cash flows (a sparse matrix–vector product written as ``bincount``).

Per unit of signed notional ``N`` (+ receives fixed), with ``D`` the currency's OIS discount
curve and ``P`` the projection curve (``P = D`` for OIS swaps, where compounding the overnight
rate over a period pays ``P(s)/P(e) − 1``)::

    PV = N · [ K Σ_j a_j D(p_j) − Σ_k D(e_k) (P(s_k)/P(e_k) − 1) − spread Σ_k α_k D(e_k) ]

Fixed and float schedules are generated backward from maturity (short front stub), adjusted
modified-following on the curve's calendar; payment on the adjusted period end. Cash flows paid
on or before the valuation date are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from workbench._types import DateArray, FloatArray, IntArray
from workbench.market.model import CurveSpec, MarketSnapshot
from workbench.market.schedules import adjust_array, year_fraction
from workbench.pricing.curves import CurveSet


def _add_months(d: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Dates plus months, the day clipped to the target month's end (vectorised)."""
    m = d.astype("datetime64[M]")
    day = (d - m.astype("datetime64[D]")).astype(np.int64)
    target = m + months.astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    out: np.ndarray = first + np.minimum(day, length - 1).astype("timedelta64[D]")
    return out


def backward_periods(
    start: DateArray, end: DateArray, months: int
) -> tuple[IntArray, DateArray, DateArray]:
    """Unadjusted periods of many schedules, generated backward from ``end``.

    Returns (swap index, period start, period end) flattened over all swaps; the first period
    of each swap starts on its ``start`` (a short stub when the term is not whole periods).
    """
    span = (end.astype("datetime64[M]") - start.astype("datetime64[M]")).astype(np.int64)
    k_max = int(span.max() // months) + 2 if span.size else 1
    k = np.arange(k_max)
    dates = _add_months(
        np.repeat(end[:, None], k_max, axis=1), -months * np.broadcast_to(k, (end.size, k_max))
    )
    inside = dates > start[:, None]
    # period k ends at dates[:, k] and starts at dates[:, k+1] or the swap start
    nxt = np.concatenate([dates[:, 1:], dates[:, -1:]], axis=1)
    nxt_inside = np.concatenate([inside[:, 1:], np.zeros((end.size, 1), bool)], axis=1)
    p_start = np.where(nxt_inside, nxt, start[:, None])
    idx = np.nonzero(inside)
    return idx[0].astype(np.int64), p_start[idx], dates[idx]


@dataclass(frozen=True)
class _Leg:
    swap: IntArray  # index within the group
    pay: IntArray  # index into the group's unique dates (pay = adjusted period end)
    start: IntArray  # unique-date index of the adjusted period start (float legs)
    accrual: FloatArray


class SwapGroup:
    """Swaps on one curve (one currency, one float index), with their cash flows laid out."""

    def __init__(
        self,
        spec: CurveSpec,
        disc_id: str,
        market: MarketSnapshot,
        *,
        notional: FloatArray,
        start: DateArray,
        maturity: DateArray,
        fixed_rate: FloatArray,
        spread: FloatArray,
    ) -> None:
        self.spec = spec
        self.proj_id = spec.id
        self.disc_id = disc_id
        self.notional = notional
        self.fixed_rate = fixed_rate
        self.spread = spread
        cal = market.calendars[spec.calendar]
        legs_raw = []
        for months, dc in (
            (spec.fixed_frequency_months, spec.fixed_day_count),
            (spec.float_frequency_months, spec.day_count),
        ):
            sw, s, e = backward_periods(start, maturity, months)
            s_adj = adjust_array(s, cal, spec.business_day)
            e_adj = adjust_array(e, cal, spec.business_day)
            legs_raw.append((sw, s_adj, e_adj, year_fraction(s_adj, e_adj, dc)))
        all_dates = np.concatenate([np.concatenate([r[1], r[2]]) for r in legs_raw])
        self.dates, inverse = np.unique(all_dates.astype("datetime64[D]"), return_inverse=True)
        self._times_for: np.datetime64 | None = None
        self._t: FloatArray = np.empty(0)
        legs = []
        at = 0
        for sw, _s_adj, _e_adj, acc in legs_raw:
            m = sw.size
            s_idx = inverse[at : at + m]
            e_idx = inverse[at + m : at + 2 * m]
            at += 2 * m
            legs.append(_Leg(sw, e_idx.astype(np.int64), s_idx.astype(np.int64), acc))
        self.fixed, self.float = legs

    def _curves(
        self, curves: CurveSet, as_of: np.datetime64
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        t = self._times(as_of)
        d = curves[self.disc_id].discount(np.maximum(t, 0.0))
        p = d if self.proj_id == self.disc_id else curves[self.proj_id].discount(np.maximum(t, 0.0))
        return t, d, p

    def _times(self, as_of: np.datetime64) -> FloatArray:
        """ACT/365F years from ``as_of`` to each of the group's dates (kept for the last date)."""
        if self._times_for != as_of:
            self._t = (self.dates - as_of).astype(np.int64).astype(np.float64) / 365.0
            self._times_for = as_of
        return self._t

    def pv(self, curves: CurveSet, as_of: np.datetime64) -> FloatArray:
        """PV per swap in the swap currency."""
        out: FloatArray = self.pv_many([curves], as_of)[0]
        return out

    def pv_many(self, curve_sets: Sequence[CurveSet], as_of: np.datetime64) -> FloatArray:
        """PV per swap (swap currency) on each of several curve sets (base, bumped …):
        (sets, swaps), in one pass over the cash flows."""
        t = self._times(as_of)
        parts = [self._curves(curves, as_of) for curves in curve_sets]
        d = np.stack([x[1] for x in parts])
        p = np.stack([x[2] for x in parts])
        fx, fl = self.fixed, self.float
        out: FloatArray = _swap_pv(
            t, d, p, fx.swap, fx.pay, fx.accrual, fl.swap, fl.start, fl.pay, fl.accrual,
            self.notional, self.fixed_rate, self.spread,
        )  # fmt: skip
        return out

    def log_df_exposure(
        self, curves: CurveSet, as_of: np.datetime64
    ) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        """∂PV/∂log D and ∂PV/∂log P on the unique dates (swaps × dates, sparse)."""
        t, d, p = self._curves(curves, as_of)
        n, m = self.notional.size, self.dates.size
        fx, fl = self.fixed, self.float
        live_f = t[fx.pay] > 0.0
        live_l = t[fl.pay] > 0.0
        nf = self.notional[fx.swap]
        nl = self.notional[fl.swap]
        ratio = p[fl.start] / p[fl.pay]
        w_fix = np.where(live_f, nf * self.fixed_rate[fx.swap] * fx.accrual * d[fx.pay], 0.0)
        w_d_float = np.where(
            live_l, -nl * d[fl.pay] * (ratio - 1.0 + self.spread[fl.swap] * fl.accrual), 0.0
        )
        w_p = np.where(live_l, -nl * d[fl.pay] * ratio, 0.0)  # on log P(s); minus that on log P(e)
        rows_d = np.concatenate([fx.swap, fl.swap])
        cols_d = np.concatenate([fx.pay, fl.pay])
        vals_d = np.concatenate([w_fix, w_d_float])
        rows_p = np.concatenate([fl.swap, fl.swap])
        cols_p = np.concatenate([fl.start, fl.pay])
        vals_p = np.concatenate([w_p, -w_p])
        if self.proj_id == self.disc_id:
            rows = np.concatenate([rows_d, rows_p])
            cols = np.concatenate([cols_d, cols_p])
            vals = np.concatenate([vals_d, vals_p])
            return sp.csr_matrix((vals, (rows, cols)), shape=(n, m)), None
        s_d = sp.csr_matrix((vals_d, (rows_d, cols_d)), shape=(n, m))
        s_p = sp.csr_matrix((vals_p, (rows_p, cols_p)), shape=(n, m))
        return s_d, s_p

    def key_rates(
        self, curves: CurveSet, as_of: np.datetime64, market: MarketSnapshot
    ) -> tuple[IntArray, FloatArray]:
        """Quote indices and PV change per +1bp of each (swaps × quotes), first order."""
        t = (self.dates - as_of).astype(np.int64).astype(np.float64) / 365.0
        t = np.maximum(t, 0.0)
        s_d, s_p = self.log_df_exposure(curves, as_of)
        q_d, j_d = curves.log_df_sensitivity(self.disc_id, t)
        blocks: dict[str, FloatArray] = {}
        for q, col in zip(q_d, (s_d @ j_d).T, strict=True):
            blocks[q] = col
        if s_p is not None:
            q_p, j_p = curves.log_df_sensitivity(self.proj_id, t)
            for q, col in zip(q_p, (s_p @ j_p).T, strict=True):
                blocks[q] = blocks[q] + col if q in blocks else col
        quotes = np.array([market.quote_index[q] for q in blocks], dtype=np.int64)
        return quotes, np.column_stack(list(blocks.values()))


@numba.njit(cache=True, nogil=True)
def _swap_pv(
    t: np.ndarray,
    d: np.ndarray,
    p: np.ndarray,
    fx_swap: np.ndarray,
    fx_pay: np.ndarray,
    fx_acc: np.ndarray,
    fl_swap: np.ndarray,
    fl_start: np.ndarray,
    fl_pay: np.ndarray,
    fl_acc: np.ndarray,
    notional: np.ndarray,
    fixed_rate: np.ndarray,
    spread: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """The module formula for each curve set (rows of ``d`` and ``p``: discount factors at the
    group's dates), one pass over the cash flows (those paid by today are skipped)."""
    n_sets = d.shape[0]
    # sets innermost: a cash flow reads and writes one cache line for all of them
    dt = np.ascontiguousarray(d.T)
    pt = np.ascontiguousarray(p.T)
    acc = np.zeros((notional.size, n_sets))
    for j in range(fx_swap.size):
        k = fx_pay[j]
        if t[k] > 0.0:
            s = fx_swap[j]
            a = fixed_rate[s] * fx_acc[j]
            for m in range(n_sets):
                acc[s, m] += a * dt[k, m]
    for j in range(fl_swap.size):
        k = fl_pay[j]
        if t[k] > 0.0:
            s = fl_swap[j]
            b = spread[s] * fl_acc[j]
            st = fl_start[j]
            for m in range(n_sets):
                acc[s, m] -= dt[k, m] * (pt[st, m] / pt[k, m] - 1.0 + b)
    out = np.empty((n_sets, notional.size))
    for s in range(notional.size):
        for m in range(n_sets):
            out[m, s] = acc[s, m] * notional[s]
    return out
