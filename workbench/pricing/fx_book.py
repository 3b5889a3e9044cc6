"""FX forwards and FX vanilla options of a book, priced per currency pair.

Forwards come from the two OIS discount curves (no cross-currency basis): for a pair quoted as
``quote`` per ``base`` with spot date ``ts``,

    F(T) = S · (P_base(T) / P_base(ts)) / (P_quote(T) / P_quote(ts)).

A forward buying ``N`` base at ``K`` on ``T`` is worth ``N · (F(T) − K) · P_quote(T)`` in the quote
currency. Options use Garman–Kohlhagen with the rates implied by the same curves,
``r_d = −log P_quote(T)/T`` and ``r_f = r_d − log(F/S)/T``, so the option's forward equals the
forward contract's, and the vol from the pair's delta×expiry smile (cached spline).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import date
from typing import TypeVar

import numpy as np

from workbench._types import SPOT_BUMP, VOL_POINT, FloatArray, IntArray, KeyRateMethod
from workbench.book.schema import Book
from workbench.market.model import FX_DELTA_PILLARS, FxPair, MarketSnapshot
from workbench.market.schedules import spot_date, tenor_times, year_fractions_from
from workbench.pricing.black import black_greeks, black_price
from workbench.pricing.curves import Curve, CurveSet
from workbench.pricing.risk import (
    ClassRisk,
    KeptByDate,
    KeyRates,
    PositionRows,
    QuoteGrids,
    SurfacePricer,
    selected,
)
from workbench.pricing.splines import PackedSplines, SplineCache
from workbench.pricing.surfaces import (
    FxVolSurfaceModel,
    SmileRows,
    fx_smile_slopes,
    fx_smile_vols,
    smile_basis,
    smile_rows,
    surface_version,
)

_V = TypeVar("_V")

_CALL_DELTA = {"10P": 0.90, "25P": 0.75, "ATM": 0.50, "25C": 0.25, "10C": 0.10}


class _PairRows(PositionRows):
    """The book rows of one pair with their static columns, and which of them are options."""

    def __init__(self, book: Book, rows: IntArray, pair: FxPair, market: MarketSnapshot) -> None:
        super().__init__(book, rows)
        self.pair = pair
        self.is_option = book.product.codes[rows] == book.product.labels.index("FX_OPTION")
        self.base_curve = market.discount_curve_id(pair.base_ccy)
        self.quote_curve = market.discount_curve_id(pair.quote_ccy)


class FxPricer(SurfacePricer):
    """FX forwards and options of a book (asset class ``fx``), grouped by pair.

    ``risk``: PV, 1% spot delta and gamma (smile re-solved at each bumped spot: sticky delta),
    vol-point vega and key-rate DV01s, in the pair's quote currency. An option's key rates move
    its forward with the curves and its vol with the forward (the smile is sticky in delta: its
    slope in log-moneyness from the two moved-spot solves), spot held.
    """

    asset_class = "fx"

    def __init__(
        self, book: Book, rows: IntArray, market: MarketSnapshot, *, cache: SplineCache
    ) -> None:
        super().__init__(rows, cache)
        pairs = {p.pair: p for p in market.fx_pairs}
        surfaces = {s.pair: s for s in market.fx_vol_surfaces}
        underlying = book.underlying.codes[rows]
        self._groups: list[_PairRows] = []
        for code in np.unique(underlying):
            name = book.underlying.labels[int(code)]
            self._groups.append(_PairRows(book, rows[underlying == code], pairs[name], market))
        self._names = [g.pair.pair for g in self._groups]
        self._group_rows = [g.rows for g in self._groups]
        self._grids = QuoteGrids()
        self._surfaces = surfaces
        self._times: KeptByDate[tuple[FloatArray, FloatArray]] = KeptByDate()
        self._expiries: KeptByDate[FloatArray] = KeptByDate()
        # (pair, date) -> (smile version, (its options' smile rows, their tops))
        self._rows: dict[_Key, tuple[object, tuple[np.ndarray, ...]]] = {}
        # (pair, date) -> (base curve, quote curve, their log DFs at spot date and expiries)
        self._log_dfs: dict[tuple[str, date], tuple[Curve, Curve, FloatArray, FloatArray]] = {}
        # (pair, date) -> (the smile's expiry knots, its options' knot spans and B-splines)
        self._basis: dict[_Key, tuple[object, tuple[np.ndarray, ...]]] = {}

    def forget(self) -> None:
        """Drop the kept smile rows, B-splines and log DFs (the next price sets them up)."""
        self._rows.clear()
        self._log_dfs.clear()
        self._basis.clear()

    # -- market objects ------------------------------------------------------------------
    def _smile(self, market: MarketSnapshot, pair: str) -> FxVolSurfaceModel:
        spec = self._surfaces[pair]
        vols = self._grids.values(market, pair, spec.quotes)
        times = self._expiries.get(
            pair, market.as_of, lambda: tenor_times(market.as_of, spec.expiries)
        )
        deltas = np.array([_CALL_DELTA[d] for d in spec.deltas], dtype=np.float64)
        version = surface_version(pair, market.as_of, vols)
        return FxVolSurfaceModel(
            surface_id=pair,
            version=version,
            expiries=times,
            call_deltas=deltas,
            vols=vols,
            cache=self.cache,
        )

    def _forward_inputs(
        self, market: MarketSnapshot, curves: CurveSet, picked: list[_PairRows]
    ) -> list[tuple[float, FloatArray, float, float, FloatArray, FloatArray]]:
        """Per pair: spot, expiry times, spot-date log DFs and log DFs at expiry of the base and
        quote curves. The log DFs are kept per pair and date while both curves are the same
        objects (an FX spot or vol tick rebuilds no curve); the others are evaluated once per
        curve, at every time the pairs need from it."""
        times = [self._spot_and_expiry_times(market, g) for g in picked]
        _bound(self._log_dfs, len(self._groups))
        pair_curves = [(curves[g.base_curve], curves[g.quote_curve]) for g in picked]
        stale = [
            k
            for k, (g, (cb, cq)) in enumerate(zip(picked, pair_curves, strict=True))
            if (kept := self._log_dfs.get((g.pair.pair, market.as_of))) is None
            or kept[0] is not cb
            or kept[1] is not cq
        ]
        wanted: dict[str, list[FloatArray]] = {}
        for k in stale:
            g, (ts, t) = picked[k], times[k]
            for cid in (g.base_curve, g.quote_curve):
                wanted.setdefault(cid, []).append(np.concatenate([ts, t]))
        values = {}
        for cid, parts in wanted.items():
            flat = curves[cid].log_discount(np.concatenate(parts))
            values[cid] = iter(np.split(flat, np.cumsum([p.size for p in parts])[:-1]))
        for k in stale:
            g = picked[k]
            lb, lq = next(values[g.base_curve]), next(values[g.quote_curve])
            self._log_dfs[(g.pair.pair, market.as_of)] = (*pair_curves[k], lb, lq)
        out = []
        for g, (_, t) in zip(picked, times, strict=True):
            _, _, lb, lq = self._log_dfs[(g.pair.pair, market.as_of)]
            spot = market.quote(g.pair.spot_quote)
            out.append((spot, t, float(lb[0]), float(lq[0]), lb[1:], lq[1:]))
        return out

    def _spot_and_expiry_times(
        self, market: MarketSnapshot, g: _PairRows
    ) -> tuple[FloatArray, FloatArray]:
        """Spot-date time (shape (1,)) and the positions' expiry times, years from as-of."""

        def make() -> tuple[FloatArray, FloatArray]:
            cal = market.calendars[g.pair.calendar]
            spot_day = spot_date(market.as_of, g.pair.spot_lag, cal)
            ts = year_fractions_from(market.as_of, np.array([spot_day], dtype="datetime64[D]"))
            return ts, year_fractions_from(market.as_of, g.maturity)

        return self._times.get(g.pair.pair, market.as_of, make)

    # -- pricing -------------------------------------------------------------------------
    def _price(
        self,
        market: MarketSnapshot,
        curves: CurveSet,
        *,
        greeks: bool,
        only: Collection[str] | None,
    ) -> ClassRisk:
        """Every selected pair in one vectorised pass: the per-pair inputs (spot, discount
        factors, smile) are spread over the pair's rows, and the options of every pair share
        one compiled smile solve per spot."""
        picked = [self._groups[k] for k in selected(self._names, only)]
        if not picked:
            return ClassRisk.empty()
        sizes = [g.rows.size for g in picked]
        inputs = self._forward_inputs(market, curves, picked)

        def per_pair(k: int) -> FloatArray:
            return np.repeat(np.array([x[k] for x in inputs], dtype=np.float64), sizes)

        rows = np.concatenate([g.rows for g in picked])
        notional = np.concatenate([g.notional for g in picked])
        strike = np.concatenate([g.strike for g in picked])
        sign = np.concatenate([g.sign for g in picked])
        op = np.concatenate([g.is_option for g in picked])
        spot, lb_s, lq_s = per_pair(0), per_pair(2), per_pair(3)
        t = np.concatenate([x[1] for x in inputs])
        lb_t = np.concatenate([x[4] for x in inputs])
        lq_t = np.concatenate([x[5] for x in inputs])
        fwd = spot * np.exp(lb_t - lb_s - lq_t + lq_s)
        df_q = np.exp(lq_t)
        fw = ~op
        fwd_leg = notional * fwd * df_q  # ∂PV/∂log P_b(T); value of the base leg
        pv = np.where(fw, notional * (fwd - strike) * df_q, 0.0)
        delta = np.where(fw, fwd_leg * SPOT_BUMP, 0.0) if greeks else np.zeros(rows.size)
        gamma = np.zeros(rows.size)
        vega = np.zeros(rows.size)
        rho_d = rho_f = t_op = np.empty(0)  # the options' rhos, for the key rates
        smile_fwd = np.empty(0)  # ∂PV/∂log F through the smile's vol (sticky delta)
        if op.any():
            t_op = t[op]
            r_d = -lq_t[op] / t_op
            r_f = r_d - np.log(fwd[op] / spot[op]) / t_op
            with_options = [k for k, g in enumerate(picked) if g.is_option.any()]
            names = [picked[k].pair.pair for k in with_options]
            smiles = [self._smile(market, name) for name in names]
            slot = np.full(len(picked), -1, dtype=np.int64)
            slot[with_options] = np.arange(len(with_options))
            which = np.repeat(slot, sizes)[op]
            n_op, sg_op, s_op, k_op = notional[op], sign[op], spot[op], strike[op]
            legs = (k_op, t_op, r_d, r_f)
            # options come pair by pair: pair k's are ``which`` between bounds[k] and
            # bounds[k + 1]
            bounds = np.searchsorted(which, np.arange(len(names) + 1))
            moves = (SPOT_BUMP, -SPOT_BUMP) if greeks else ()
            packed = PackedSplines.of([m.spline() for m in smiles], [m.box() for m in smiles])
            rows_kept = self._smile_rows(market.as_of, smiles, packed, which, t_op, bounds)
            # every solve starts cold (at the 0.5-delta vol), never from the last tick's
            # answer: where a steep smile gives a far strike several solutions, a warm start
            # stays on the branch it was on and the price would depend on the quotes' history
            # (tests/test_fx_history.py)
            vols = fx_smile_vols(
                smiles, which, s_op, *legs, spot_moves=moves, rows=rows_kept, packed=packed
            )
            vol = vols[:, 0] if greeks else vols
            if greeks:
                res = black_greeks(sg_op, s_op, *legs, vol)
                base = n_op * res.pv
                # the smile re-solved at each bumped spot (sticky delta)
                up, down = (
                    n_op * black_price(sg_op, s_op * (1.0 + move), *legs, vols[:, 1 + k])
                    for k, move in enumerate(moves)
                )
                pv[op] = base
                delta[op] = (up - down) / 2.0
                gamma[op] = up - 2.0 * base + down
                vega[op] = n_op * res.vega * VOL_POINT
                rho_d, rho_f = n_op * res.rho_d, n_op * res.rho_f
                if self.with_key_rates:  # the vol moves with log F (sticky delta)
                    slope = fx_smile_slopes(packed, which, rows_kept, s_op, *legs, vol)
                    smile_fwd = n_op * res.vega * slope
            else:
                pv[op] = n_op * black_price(sg_op, s_op, *legs, vol)
        key_parts: list[KeyRates] = []
        if greeks and self.with_key_rates:
            # ∂PV/∂log P of the base and quote curves at expiry (t) and at the spot date (s)
            d_lb_t = np.where(fw, fwd_leg, 0.0)
            d_lq_t = np.where(fw, -notional * strike * df_q, 0.0)
            d_lb_s = np.where(fw, -fwd_leg, 0.0)
            d_lq_s = np.where(fw, fwd_leg, 0.0)
            # options: r_d = -lq_t/t, r_f = (-lb_t + lb_s - lq_s)/t, spot held fixed; the vol
            # through log F = log S + lb_t - lb_s - lq_t + lq_s
            d_lq_t[op] = -rho_d / t_op - smile_fwd
            d_lb_t[op] = -rho_f / t_op + smile_fwd
            d_lb_s[op] = rho_f / t_op - smile_fwd
            d_lq_s[op] = -rho_f / t_op + smile_fwd
            at = 0
            for g, m in zip(picked, sizes, strict=True):
                sl = slice(at, at + m)
                at += m
                ts, t_g = self._spot_and_expiry_times(market, g)
                d_t, d_s = (d_lb_t[sl], d_lq_t[sl]), (d_lb_s[sl], d_lq_s[sl])
                key_parts.append(
                    _key_rates(curves, g, (ts, t_g), d_t, d_s, market, self.key_rate_method)
                )
        key_rates = KeyRates.concat(key_parts) if greeks else KeyRates.empty()
        return ClassRisk(rows, pv, delta, gamma, vega, key_rates)

    def _smile_rows(
        self,
        as_of: date,
        smiles: list[FxVolSurfaceModel],
        packed: PackedSplines,
        which: IntArray,
        t: FloatArray,
        bounds: IntArray,
    ) -> SmileRows:
        """Every option's smile row at its expiry (:func:`smile_rows`), kept per pair and date
        while the pair's smile version is unchanged (an FX spot or rates tick moves no vol, so
        most solves set up no row), and built from each option's B-splines in expiry
        (:func:`smile_basis`), kept while the smile's expiry knots are unchanged (when vols
        move, a row is then a weighted sum of four coefficient rows' pieces, with no knot search
        or recursion). Kept only while the spline cache is on (switching it off shows the cost of
        caching nothing)."""
        if not self.cache.enabled:
            self._rows.clear()
            self._basis.clear()
            return smile_rows(packed, which, t)
        keys = [(m.surface_id, as_of) for m in smiles]
        ranges = [(int(bounds[k]), int(bounds[k + 1])) for k in range(len(smiles))]
        n_pairs = len(self._groups)

        def basis_of(at: IntArray, _: list[int]) -> tuple[np.ndarray, ...]:
            return smile_basis(packed, which[at], t[at])

        def rows_of(at: IntArray, missing: list[int]) -> tuple[np.ndarray, ...]:
            knots = [packed.x_knots(k).tobytes() for k in missing]
            span, bx = _kept_blocks(
                self._basis, [keys[k] for k in missing], knots, [ranges[k] for k in missing],
                basis_of, n_pairs,
            )  # fmt: skip
            return smile_rows(packed, which[at], t[at], basis=(span, bx))

        versions = [m.version for m in smiles]
        coef, top = _kept_blocks(self._rows, keys, versions, ranges, rows_of, n_pairs)
        return coef, top


_Key = tuple[str, date]


def _kept_blocks(
    store: dict[_Key, tuple[object, tuple[np.ndarray, ...]]],
    keys: list[_Key],
    tags: Sequence[object],
    ranges: list[tuple[int, int]],
    make: Callable[[IntArray, list[int]], tuple[np.ndarray, ...]],
    n_pairs: int,
) -> tuple[np.ndarray, ...]:
    """Per-option arrays of several pairs, each pair's block kept in ``store``: pair ``k``'s
    options are ``ranges[k]`` (start, stop) of the caller's option order, its block is kept
    under ``keys[k]`` while ``tags[k]`` equals the tag it was made with. ``make(at, missing)``
    computes the arrays of the options at positions ``at``: those of the pairs ``missing``
    (indices into ``keys``), in that order. Returns each array for every pair in ``keys``
    order (a 2-d array's blocks padded with zeros to the widest)."""
    _bound(store, n_pairs)
    missing = [k for k, key in enumerate(keys) if store.get(key, (None,))[0] != tags[k]]
    if missing:
        at = np.concatenate([np.arange(*ranges[k]) for k in missing])
        made = make(at, missing)
        done = 0
        for k in missing:
            n = ranges[k][1] - ranges[k][0]
            store[keys[k]] = (tags[k], tuple(a[done : done + n] for a in made))
            done += n
    blocks = [store[key][1] for key in keys]
    return tuple(_joined([b[i] for b in blocks]) for i in range(len(blocks[0])))


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` one after the other (arrays of 2 or more dimensions padded with zeros along
    the second to the widest)."""
    if parts[0].ndim >= 2 and len({p.shape[1] for p in parts}) > 1:
        width = max(p.shape[1] for p in parts)
        rest = ((0, 0),) * (parts[0].ndim - 2)
        parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), *rest)) for p in parts]
    return np.concatenate(parts)


def _bound(kept: dict[_Key, _V], n_pairs: int) -> None:
    """Keep a per (pair, date) store to the two dates a live pricer sees (today, tomorrow for
    theta): past that it is emptied and refilled, so a long-running service does not grow it
    day after day."""
    if len(kept) >= 2 * n_pairs + 1:
        kept.clear()


def _key_rates(
    curves: CurveSet,
    g: _PairRows,
    times: tuple[FloatArray, FloatArray],
    d_t: tuple[FloatArray, FloatArray],
    d_s: tuple[FloatArray, FloatArray],
    market: MarketSnapshot,
    method: KeyRateMethod,
) -> KeyRates:
    """Chain ∂PV/∂log P (base, quote curve) at expiry ``d_t`` and at the spot date ``d_s`` with
    the move of log P per quote (+1bp; bumped and re-solved, or the Jacobian's) of both curves;
    ``times`` = (spot-date time, expiry times)."""
    ts, t = times
    blocks: list[KeyRates] = []
    for curve_id, at_t, at_s in zip((g.base_curve, g.quote_curve), d_t, d_s, strict=True):
        qids, sens = curves.log_df_change(curve_id, np.append(t, ts), method)
        sens_t, sens_s = sens[:-1], sens[-1]
        matrix = at_t[:, None] * sens_t + at_s[:, None] * sens_s[None, :]
        blocks.append(KeyRates.from_dense(g.rows, market.quote_rows(qids), matrix))
    return KeyRates.concat(blocks)


__all__ = ["FX_DELTA_PILLARS", "FxPricer", "tenor_times"]
