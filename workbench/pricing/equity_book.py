"""European equity options of a book: Black–Scholes with a continuous dividend yield.

The discount rate is the zero rate of the equity currency's OIS curve to expiry,
``r = −log P(T)/T``; the vol comes from the underlying's strike × expiry surface (cached spline).
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial

import numpy as np

from workbench._types import SPOT_BUMP, VOL_POINT, FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import EquitySpec, MarketSnapshot
from workbench.market.schedules import tenor_times, year_fractions_from
from workbench.pricing.black import black_greeks, black_price
from workbench.pricing.curves import CurveSet
from workbench.pricing.risk import (
    ClassRisk,
    KeptByDate,
    KeyRates,
    PositionRows,
    QuoteGrids,
    SurfacePricer,
    selected,
)
from workbench.pricing.splines import SplineCache
from workbench.pricing.surfaces import EquityVolSurfaceModel, equity_vols, surface_version


class _Underlying(PositionRows):
    """The book rows of one underlying with their static columns and its discount curve."""

    def __init__(
        self, book: Book, rows: IntArray, spec: EquitySpec, market: MarketSnapshot
    ) -> None:
        super().__init__(book, rows)
        self.spec = spec
        self.curve = market.discount_curve_id(spec.currency)


class EquityPricer(SurfacePricer):
    """Equity options of a book (asset class ``equity``), grouped by underlying.

    ``risk``: PV, +1% spot delta and gamma (sticky moneyness), vol-point vega and key-rate
    DV01s, in the option's currency.
    """

    asset_class = "equity"

    def __init__(
        self, book: Book, rows: IntArray, market: MarketSnapshot, *, cache: SplineCache
    ) -> None:
        super().__init__(rows, cache)
        specs = {e.id: e for e in market.equities}
        underlying = book.underlying.codes[rows]
        self._groups = [
            _Underlying(
                book, rows[underlying == code], specs[book.underlying.labels[int(code)]], market
            )
            for code in np.unique(underlying)
        ]
        self._names = [g.spec.id for g in self._groups]
        self._group_rows = [g.rows for g in self._groups]
        self._grids = QuoteGrids()
        self._times: KeptByDate[FloatArray] = KeptByDate()
        self._expiries: KeptByDate[FloatArray] = KeptByDate()

    def _surface(self, market: MarketSnapshot, spec: EquitySpec) -> EquityVolSurfaceModel:
        vols = self._grids.values(market, spec.id, spec.vol_quotes)
        expiries = self._expiries.get(
            spec.id, market.as_of, lambda: tenor_times(market.as_of, spec.vol_expiries)
        )
        return EquityVolSurfaceModel(
            surface_id=spec.id,
            version=surface_version(spec.id, market.as_of, vols),
            expiries=expiries,
            moneyness=np.asarray(spec.vol_moneyness, dtype=np.float64),
            vols=vols,
            cache=self.cache,
        )

    def _price(
        self,
        market: MarketSnapshot,
        curves: CurveSet,
        *,
        greeks: bool,
        only: Collection[str] | None,
    ) -> ClassRisk:
        """Every selected underlying in one vectorised pass (one compiled surface lookup per
        spot for all of them)."""
        picked = [self._groups[k] for k in selected(self._names, only)]
        if not picked:
            return ClassRisk.empty()
        sizes = [g.rows.size for g in picked]
        rows = np.concatenate([g.rows for g in picked])
        notional = np.concatenate([g.notional for g in picked])
        strike = np.concatenate([g.strike for g in picked])
        sign = np.concatenate([g.sign for g in picked])
        spot = np.repeat([market.quote(g.spec.spot_quote) for g in picked], sizes)
        q = np.repeat([g.spec.dividend_yield for g in picked], sizes)
        t = np.concatenate(
            [
                self._times.get(
                    g.spec.id, market.as_of, partial(year_fractions_from, market.as_of, g.maturity)
                )
                for g in picked
            ]
        )
        # one curve lookup per currency curve for all its underlyings' expiries
        curve_of = np.repeat([g.curve for g in picked], sizes)
        log_df = np.empty(rows.size)
        for curve_id in dict.fromkeys(g.curve for g in picked):
            at = curve_of == curve_id
            log_df[at] = curves[curve_id].log_discount(t[at])
        r = -log_df / t
        surfaces = [self._surface(market, g.spec) for g in picked]
        which = np.repeat(np.arange(len(picked), dtype=np.int64), sizes)
        if not greeks:
            vol = equity_vols(surfaces, which, spot, strike, t)
            pv = notional * black_price(sign, spot, strike, t, r, q, vol)
            zero = np.zeros(rows.size)
            return ClassRisk(rows, pv, zero, zero, zero, KeyRates.empty())
        # sticky moneyness: a bumped spot moves each option along its surface
        moves = (SPOT_BUMP, -SPOT_BUMP)
        vols = equity_vols(surfaces, which, spot, strike, t, spot_moves=moves)
        res = black_greeks(sign, spot, strike, t, r, q, vols[:, 0])
        base = notional * res.pv
        up, down = (
            notional * black_price(sign, spot * (1.0 + move), strike, t, r, q, vols[:, 1 + k])
            for k, move in enumerate(moves)
        )
        key_parts: list[KeyRates] = []
        if self.with_key_rates:
            # r = -log P(T)/T  =>  dPV/dlog P(T) = -rho / T (vol held: sticky strike), times
            # the move of log P(T) per quote (bumped and re-solved, or the Jacobian's)
            d_log_df = -notional * res.rho_d / t
            for curve_id in dict.fromkeys(g.curve for g in picked):
                at = np.flatnonzero(curve_of == curve_id)
                qids, sens = curves.log_df_change(curve_id, t[at], self.key_rate_method)
                quotes = market.quote_rows(qids)
                key_parts.append(KeyRates.from_dense(rows[at], quotes, d_log_df[at, None] * sens))
        return ClassRisk(
            rows,
            base,
            (up - down) / 2.0,
            up - 2.0 * base + down,
            notional * res.vega * VOL_POINT,
            KeyRates.concat(key_parts),
        )
