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

from workbench._types import BoolArray, DateArray, FloatArray, IntArray, KeyRateMethod
from workbench.market.model import CurveSpec, MarketSnapshot
from workbench.market.schedules import (
    add_months_array,
    adjust_array,
    year_fraction,
    year_fractions_from,
)
from workbench.pricing.curves import CurveSet


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
    dates = add_months_array(
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
        self._exposure: Exposure | None = None

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
            self._t = year_fractions_from(as_of, self.dates)
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
        out: FloatArray = swap_pvs(
            t, d, p, fx.swap, fx.pay, fx.accrual, fl.swap, fl.start, fl.pay, fl.accrual,
            self.notional, self.fixed_rate, self.spread,
        )  # fmt: skip
        return out

    def exposure(self) -> Exposure:
        """The swaps' PV as a linear map of discount values (made on first use: the live
        service, which publishes no key rates, never makes it)."""
        if self._exposure is None:
            self._exposure = Exposure.of(self)
        return self._exposure

    def key_rates(
        self,
        curves: CurveSet,
        as_of: np.datetime64,
        market: MarketSnapshot,
        *,
        method: KeyRateMethod = "bump",
    ) -> tuple[IntArray, FloatArray]:
        """Quote indices and PV change per +1bp of each (swaps × quotes), swap currency.

        ``"bump"``: half the PV difference between the curves re-solved with the quote +1bp
        and −1bp, every cash flow revalued; ``"jacobian"``: the exact first derivative × 1bp.
        """
        t = self._times(as_of)
        tq = np.maximum(t, 0.0)
        live = t > 0.0
        ex = self.exposure()
        same = self.proj_id == self.disc_id
        base_d = curves[self.disc_id].log_discount(tq)
        base_p = base_d if same else curves[self.proj_id].log_discount(tq)
        if method == "bump":
            q_d, d_up, d_down = curves.log_df_bumped(self.disc_id, tq)
            q_p, p_up, p_down = (
                (q_d, d_up, d_down) if same else curves.log_df_bumped(self.proj_id, tq)
            )
            qids = tuple(dict.fromkeys(q_p + q_d))
            values = []
            for d_rows, p_rows in ((d_up, p_up), (d_down, p_down)):
                log_d = _by_quote(qids, q_d, d_rows, base_d)
                log_p = log_d if same else _by_quote(qids, q_p, p_rows, base_p)
                values.append(ex.values(log_d, log_p, live))
            change = (values[0] - values[1]) / 2.0
        else:
            q_d, j_d = curves.log_df_sensitivity(self.disc_id, tq)
            q_p, j_p = (q_d, j_d) if same else curves.log_df_sensitivity(self.proj_id, tq)
            qids = tuple(dict.fromkeys(q_p + q_d))
            zero = np.zeros(tq.size)
            log_d = base_d[None, :]
            change = ex.derivative(
                ex.values(log_d, log_d if same else base_p[None, :], live)[0],
                _by_quote(qids, q_d, j_d.T, zero),
                _by_quote(qids, q_p, j_p.T, zero),
            )
        quotes = market.quote_rows(qids)
        matrix: FloatArray = ex.matrix @ np.ascontiguousarray(change.T)
        return quotes, matrix


def _by_quote(
    qids: tuple[str, ...], have: tuple[str, ...], rows: FloatArray, fill: FloatArray
) -> FloatArray:
    """Rows for every quote of ``qids``: ``rows[i]`` for ``have[i]``, ``fill`` for the others
    (a quote that does not move this curve)."""
    out = np.repeat(fill[None, :], len(qids), axis=0)
    at = {q: i for i, q in enumerate(qids)}
    out[[at[q] for q in have]] = rows
    return out


@dataclass(frozen=True)
class Exposure:
    """A group's swap PVs as a linear map of discount values: ``PV = matrix · v`` with
    ``v = [D(p)·live(p) at each of the group's dates p; X_k for each distinct float period]``
    and ``X_k = live(e_k) · D(e_k) · P(s_k)/P(e_k)`` (``live``: paid after the valuation
    date; ``P = D`` for OIS swaps). ``matrix`` (swaps × values, in swap currency per unit of
    value) depends on the trades only: a key rate is ``matrix`` times the values' change,
    with few distinct dates and periods (about 900 and 1,000 per group on the reference book)
    against about a million cash flows."""

    matrix: sp.csr_matrix
    start: IntArray  # group date index of each distinct float period's start
    pay: IntArray  # and of its end (its payment date)

    @staticmethod
    def of(group: SwapGroup) -> Exposure:
        """The map of ``group``'s swaps (the module formula, term by term)."""
        fx, fl = group.fixed, group.float
        periods, which = np.unique(np.stack([fl.start, fl.pay]), axis=1, return_inverse=True)
        m = group.dates.size
        nl = group.notional[fl.swap]
        rows = np.concatenate([fx.swap, fl.swap, fl.swap])
        cols = np.concatenate([fx.pay, fl.pay, m + np.ravel(which)])
        vals = np.concatenate(
            [
                group.notional[fx.swap] * group.fixed_rate[fx.swap] * fx.accrual,
                nl * (1.0 - group.spread[fl.swap] * fl.accrual),
                -nl,
            ]
        )
        shape = (group.notional.size, m + periods.shape[1])
        matrix = sp.csr_matrix((vals, (rows, cols)), shape=shape)
        return Exposure(matrix, periods[0].astype(np.int64), periods[1].astype(np.int64))

    def values(self, log_d: FloatArray, log_p: FloatArray, live: BoolArray) -> FloatArray:
        """``v`` for each row of log D and log P at the group's dates (sets × values)."""
        d_all = np.exp(log_d)
        p = d_all if log_p is log_d else np.exp(log_p)
        d = d_all * live
        x = d[:, self.pay] * p[:, self.start] / p[:, self.pay]
        out: FloatArray = np.hstack([d, x])
        return out

    def derivative(self, v: FloatArray, d_log_d: FloatArray, d_log_p: FloatArray) -> FloatArray:
        """The change of ``v`` (one set) for changes of log D and log P at the dates, first
        order (rows: one per change)."""
        m = d_log_d.shape[1]
        d = v[:m] * d_log_d
        x = v[m:] * (d_log_d[:, self.pay] + d_log_p[:, self.start] - d_log_p[:, self.pay])
        out: FloatArray = np.hstack([d, x])
        return out


@numba.njit(cache=True, nogil=True)
def swap_pvs(
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
