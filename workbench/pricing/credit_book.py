"""CDX index and tranche positions of a book (asset class ``credit``).

``delta`` is the CS01 (central difference for ±1bp on the index spread quote), ``gamma`` the
second difference, ``vega`` for tranches the PV change for +1% (0.01) correlation. Key rates
are the PV change per +1bp on each quote of the index currency's discount curve (both legs are
linear in the discount factors, so they are exact for the curve move of the chosen method). With the
Monte Carlo method every bump reuses the index's random numbers (common random numbers), and
one simulation serves every tranche on the index.

The tranches' expected losses depend on the index spread and correlation quotes and the date,
not on the discount curve: they are kept for the last few quote sets, so a rates tick only
re-discounts (:attr:`CreditPricer.loss_hits` / ``loss_misses`` count how often).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, timedelta
from functools import partial
from typing import Literal

import numpy as np

from workbench._types import BP, CORR_POINT, FloatArray, IntArray, KeyRateMethod
from workbench.book.schema import Book
from workbench.market.model import CreditIndex, MarketSnapshot
from workbench.pricing.credit import (
    IndexSimulation,
    PremiumSchedule,
    cds_schedule,
    index_pv,
    states_needed,
    tranche_expected_loss,
    tranche_pv,
)
from workbench.pricing.curves import CurveSet
from workbench.pricing.default_counts import thresholds, truncated_distributions
from workbench.pricing.risk import (
    ClassRisk,
    Kept,
    KeptByDate,
    KeyRates,
    SelectionPricer,
    selected,
)

_LOSS_SETS = 4
"""Quote sets (× indices) whose tranche losses are kept: today's and tomorrow's (theta), with
and without bumps."""


class CreditPricer(SelectionPricer):
    """Index and tranche positions grouped by index; one simulation per index.

    ``pv``: dirty, protection buyer positive. ``risk``: PV, CS01, gamma and correlation vega
    (tranches), in the index currency, and with ``with_key_rates`` (off in the live worker)
    the key rates on the discount curve by ``key_rate_method`` (docs/greeks.md).
    """

    asset_class = "credit"

    def __init__(
        self,
        book: Book,
        rows: IntArray,
        market: MarketSnapshot,
        *,
        n_paths: int = 50_000,
        method: Literal["mc", "recursion"] = "recursion",
    ) -> None:
        self.rows = rows
        self.method = method
        self.with_key_rates = True
        self.key_rate_method: KeyRateMethod = "bump"
        specs = {c.id: c for c in market.credit_indices}
        is_tranche = book.product.codes[rows] == book.product.labels.index("CDX_TRANCHE")
        und = book.underlying.codes[rows]
        self._groups: list[tuple[CreditIndex, IntArray, IntArray]] = []
        self.simulations: dict[str, IndexSimulation] = {}
        for code in np.unique(und):
            spec = specs[book.underlying.labels[int(code)]]
            sel = und == code
            self._groups.append((spec, rows[sel & ~is_tranche], rows[sel & is_tranche]))
            if method == "mc" and (sel & is_tranche).any():
                seed = sum(spec.id.encode()) + 17
                self.simulations[spec.id] = IndexSimulation(
                    n_names=len(spec.names), n_paths=n_paths, seed=seed
                )
        self.book = book
        self.std_err = np.zeros(rows.size)
        self._losses: dict[tuple[str, date, float, float, bool], list[FloatArray]] = {}
        self.loss_hits = 0
        self.loss_misses = 0
        self._schedules: KeptByDate[PremiumSchedule] = KeptByDate()
        self._masks: Kept[frozenset[str], np.ndarray] = Kept(64)
        # where each index's index and tranche positions sit in ``rows``
        order = np.argsort(rows, kind="stable")

        def where(sub: IntArray) -> IntArray:
            found: IntArray = order[np.searchsorted(rows[order], sub)]
            return found

        self._where = {spec.id: (where(a), where(t)) for spec, a, t in self._groups}

    def rows_for(self, only: Collection[str] | None = None) -> IntArray:
        """Rows of the positions on the indices in ``only`` (all with None), ascending."""
        if only is None:
            return self.rows
        picked: IntArray = self.rows[self._mask(only)]
        return picked

    def _mask(self, only: Collection[str]) -> np.ndarray:
        """Which of ``rows`` are on the indices in ``only`` (kept per selection)."""

        def make() -> np.ndarray:
            names = [spec.id for spec, _, _ in self._groups]
            picked = [self._groups[k] for k in selected(names, only)]
            parts = [np.concatenate([a, b]) for _, a, b in picked] or [self.rows[:0]]
            return np.isin(self.rows, np.concatenate(parts))

        return self._masks.get(frozenset(only), make)

    def _distributions(
        self,
        spec: CreditIndex,
        times: FloatArray,
        sets: list[tuple[float, float, float]],
        keep: int,
    ) -> list[tuple[FloatArray, FloatArray | None]]:
        """Default-count distributions (batches, dates, counts), one per (spread, correlation,
        time shift in years) set, the first set the base the others are bumps of; with the
        expected counts (batches, dates) when kept only up to ``keep`` defaults (recursion)."""
        weights = np.asarray(spec.hazard_weights) / (1.0 - spec.recovery)
        c = np.stack([thresholds(weights * s, np.maximum(times - dt, 0.0)) for s, _, dt in sets])
        rho = np.array([r for _, r, _ in sets])
        if self.method == "recursion":
            kept = truncated_distributions(c, rho, keep)
            return [(d[None], m[None]) for d, m in zip(kept.probabilities, kept.mean, strict=True)]
        sim = self.simulations[spec.id]
        out: dict[int, FloatArray] = {}
        for r in dict.fromkeys(rho.tolist()):  # one pass over the paths per correlation
            at = np.flatnonzero(rho == r)
            out.update(zip(at.tolist(), sim.default_counts_many(c[at], r), strict=True))
        return [(out[i], None) for i in range(len(sets))]

    def forget(self) -> None:
        """Drop the kept tranche losses."""
        self._losses.clear()

    def _tranche_losses(
        self,
        market: MarketSnapshot,
        spec: CreditIndex,
        tr_rows: IntArray,
        pay_t: FloatArray,
        *,
        greeks: bool,
    ) -> list[FloatArray]:
        """Expected tranche losses (batches, dates, tranches): base, then ±1bp spread and +1%
        correlation with ``greeks``. Reused while the index's spread, correlation and date stay.
        """
        s = market.quote(spec.spread_quote)
        rho = market.quote(spec.correlation_quote)
        key = (spec.id, market.as_of, s, rho, greeks)
        hit = self._losses.get(key)
        if hit is not None:
            self.loss_hits += 1
            return hit
        self.loss_misses += 1
        sets = [(s, rho, 0.0)]
        if greeks:  # ±1bp spread, +1% correlation, and the next day's base (for theta)
            sets += [(s + BP, rho, 0.0), (s - BP, rho, 0.0), (s, rho + CORR_POINT, 0.0)]
            sets += [(s, rho, 1.0 / 365.0)]
        b = self.book
        attach, detach = b.attach[tr_rows], b.detach[tr_rows]
        n_names = len(spec.names)
        keep = states_needed(attach, detach, spec.recovery, n_names)
        losses = [
            tranche_expected_loss(
                dist, attach, detach, spec.recovery, mean_count=mean, n_names=n_names
            )
            for dist, mean in self._distributions(spec, pay_t, sets, keep)
        ]
        if greeks:
            self._keep_next_day(market, spec, s, rho, pay_t, losses.pop())
        self._keep(key, losses)
        return losses

    def _keep(self, key: tuple[str, date, float, float, bool], losses: list[FloatArray]) -> None:
        if len(self._losses) >= _LOSS_SETS * len(self._groups):
            self._losses.pop(next(iter(self._losses)))  # the oldest
        self._losses[key] = losses

    def _keep_next_day(
        self,
        market: MarketSnapshot,
        spec: CreditIndex,
        s: float,
        rho: float,
        pay_t: FloatArray,
        losses: FloatArray,
    ) -> None:
        """Keep tomorrow's base losses, priced with today's on today's dates one day nearer,
        for the theta that follows (its premium dates are today's, less any paid tomorrow)."""
        tomorrow = market.as_of + timedelta(days=1)
        days = np.rint(pay_t * 365.0).astype(np.int64)
        next_days = np.rint(cds_schedule(tomorrow, spec.maturity).pay_t * 365.0).astype(np.int64)
        at = np.searchsorted(days, next_days + 1)
        if at.size and at[-1] < days.size and np.array_equal(days[at], next_days + 1):
            self._keep((spec.id, tomorrow, s, rho, False), [losses[..., at]])

    def _price(
        self,
        market: MarketSnapshot,
        curves: CurveSet,
        *,
        greeks: bool,
        only: Collection[str] | None = None,
    ) -> ClassRisk:
        b = self.book
        pv = np.zeros(self.rows.size)
        delta = np.zeros(self.rows.size)
        gamma = np.zeros(self.rows.size)
        vega = np.zeros(self.rows.size)
        kr_parts: list[KeyRates] = []
        for spec, idx_rows, tr_rows in self._groups:
            if only is not None and spec.id not in only:
                continue
            sched = self._schedules.get(
                spec.id, market.as_of, partial(cds_schedule, market.as_of, spec.maturity)
            )
            curve = curves[market.discount_curve_id(spec.currency)]
            df = curve.discount(sched.pay_t)
            df_mid = curve.discount(0.5 * (sched.start_t + sched.pay_t))
            s = market.quote(spec.spread_quote)
            bumps = (0.0, BP, -BP) if greeks else (0.0,)
            moves = None
            if greeks and self.with_key_rates:
                moves = _discount_moves(
                    curves, market.discount_curve_id(spec.currency), sched, self.key_rate_method
                )
                quotes = market.quote_rows(moves[0])
            if idx_rows.size:
                at = self._where[spec.id][0]
                n = b.notional[idx_rows]
                vals = [
                    n
                    * index_pv(
                        sched,
                        df,
                        df_mid,
                        spread=s + h,
                        recovery=spec.recovery,
                        coupon=b.coupon[idx_rows],
                    )
                    for h in bumps
                ]
                pv[at] = vals[0]
                if greeks:
                    delta[at] = (vals[1] - vals[2]) / 2.0
                    gamma[at] = vals[1] - 2.0 * vals[0] + vals[2]
                if moves is not None:
                    matrix = np.column_stack(
                        [
                            n
                            * index_pv(
                                sched,
                                df * g,
                                df_mid * g_mid,
                                spread=s,
                                recovery=spec.recovery,
                                coupon=b.coupon[idx_rows],
                            )
                            for g, g_mid in zip(moves[1], moves[2], strict=True)
                        ]
                    )
                    kr_parts.append(KeyRates.from_dense(idx_rows, quotes, matrix))
            if tr_rows.size:
                at = self._where[spec.id][1]
                n = b.notional[tr_rows]
                losses = self._tranche_losses(market, spec, tr_rows, sched.pay_t, greeks=greeks)
                out = [tranche_pv(el, sched, df, b.coupon[tr_rows]) for el in losses]
                pv[at] = n * out[0].mean(axis=0)
                if out[0].shape[0] > 1:
                    self.std_err[at] = (
                        np.abs(n) * out[0].std(axis=0, ddof=1) / np.sqrt(out[0].shape[0])
                    )
                if greeks:
                    up, down, corr = (o.mean(axis=0) for o in out[1:])
                    base = out[0].mean(axis=0)
                    delta[at] = n * (up - down) / 2.0
                    gamma[at] = n * (up - 2.0 * base + down)
                    vega[at] = n * (corr - base)
                if moves is not None:
                    # both legs are affine in the expected losses: the mean over paths first
                    el = losses[0].mean(axis=0, keepdims=True)
                    c = b.coupon[tr_rows]
                    matrix = np.column_stack(
                        [n * tranche_pv(el, sched, df * g, c)[0] for g in moves[1]]
                    )
                    kr_parts.append(KeyRates.from_dense(tr_rows, quotes, matrix))
        key_rates = KeyRates.concat(kr_parts)
        if only is None:
            return ClassRisk(self.rows, pv, delta, gamma, vega, key_rates)
        m = self._mask(only)
        return ClassRisk(self.rows[m], pv[m], delta[m], gamma[m], vega[m], key_rates)


def _discount_moves(
    curves: CurveSet, curve_id: str, sched: PremiumSchedule, method: KeyRateMethod
) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
    """Quote ids and, per +1bp on each, the discount factors at the premium dates and at the
    period mid-points as multiples of today's, less one (quotes × dates each): the central
    difference of the re-solved curves (``"bump"``) or the exact derivative (``"jacobian"``).
    A leg linear in the discount factors changes by itself priced on ``df ×`` these."""
    mid = 0.5 * (sched.start_t + sched.pay_t)
    times = np.concatenate([sched.pay_t, mid])
    if method == "jacobian":
        qids, sens = curves.log_df_sensitivity(curve_id, times)
        rel: FloatArray = sens.T
    else:
        qids, up, down = curves.log_df_bumped(curve_id, times)
        base = curves[curve_id].log_discount(times)
        rel = (np.exp(up - base) - np.exp(down - base)) / 2.0
    k = sched.pay_t.size
    return qids, np.ascontiguousarray(rel[:, :k]), np.ascontiguousarray(rel[:, k:])
