"""European equity options of a book: Black–Scholes with a continuous dividend yield.

The discount rate is the zero rate of the equity currency's OIS curve to expiry,
``r = −log P(T)/T``; the vol comes from the underlying's strike × expiry surface (cached spline).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from workbench._types import SPOT_BUMP, VOL_POINT, FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import EquitySpec, MarketSnapshot
from workbench.pricing.black import black_greeks, black_price
from workbench.pricing.curves import CurveSet
from workbench.pricing.fx_book import tenor_times, year_fractions
from workbench.pricing.risk import ClassRisk, KeptByDate, KeyRates
from workbench.pricing.surfaces import EquityVolSurfaceModel, SplineCache, surface_version


class _Underlying:
    def __init__(self, book: Book, rows: IntArray, spec: EquitySpec, market: MarketSnapshot):
        self.spec = spec
        self.rows = rows
        self.notional = book.notional[rows]
        self.strike = book.strike[rows]
        self.sign = book.option_sign[rows]
        self.maturity = book.maturity[rows]
        self.curve = market.discount_curve_id(spec.currency)


class EquityPricer:
    """Equity options of a book (asset class ``equity``), grouped by underlying."""

    asset_class = "equity"

    def __init__(
        self, book: Book, rows: IntArray, market: MarketSnapshot, *, cache: SplineCache
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.with_key_rates = True  # off in the live worker, which does not publish them
        specs = {e.id: e for e in market.equities}
        underlying = book.underlying.codes[rows]
        self._groups = [
            _Underlying(
                book, rows[underlying == code], specs[book.underlying.labels[int(code)]], market
            )
            for code in np.unique(underlying)
        ]
        self._times: KeptByDate[FloatArray] = KeptByDate()
        self._expiries: KeptByDate[FloatArray] = KeptByDate()

    def _surface(self, market: MarketSnapshot, spec: EquitySpec) -> EquityVolSurfaceModel:
        vols = np.array([market.quote_values(list(r)) for r in spec.vol_quotes], dtype=np.float64)
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

    def pv(self, market: MarketSnapshot, curves: CurveSet) -> FloatArray:
        """PV in each option's currency."""
        return self._price(market, curves, greeks=False).pv

    def risk(self, market: MarketSnapshot, curves: CurveSet) -> ClassRisk:
        """PV, +1% spot delta and gamma, vol-point vega and key-rate DV01s (option currency)."""
        return self._price(market, curves, greeks=True)

    def _price(self, market: MarketSnapshot, curves: CurveSet, *, greeks: bool) -> ClassRisk:
        n = self.rows.size
        out_rows = np.empty(n, dtype=np.int64)
        pv = np.zeros(n)
        delta = np.zeros(n)
        gamma = np.zeros(n)
        vega = np.zeros(n)
        key_parts: list[KeyRates] = []
        at = 0
        for g in self._groups:
            sl = slice(at, at + g.rows.size)
            at += g.rows.size
            out_rows[sl] = g.rows
            spot = market.quote(g.spec.spot_quote)
            t = self._times.get(
                g.spec.id, market.as_of, partial(year_fractions, g.maturity, market.as_of)
            )
            log_df = curves[g.curve].log_discount(t)
            r = -log_df / t
            q = np.full(t.size, g.spec.dividend_yield)
            s = np.full(t.size, spot)
            surface = self._surface(market, g.spec)

            if not greeks:
                pv[sl] = _option_value(surface, g, spot, t, r, q)
                continue
            vol = surface.vol_for_strike(s, g.strike, t)
            res = black_greeks(g.sign, s, g.strike, t, r, q, vol)
            base = g.notional * res.pv
            up = _option_value(surface, g, spot * (1.0 + SPOT_BUMP), t, r, q)
            down = _option_value(surface, g, spot * (1.0 - SPOT_BUMP), t, r, q)
            pv[sl] = base
            delta[sl] = (up - down) / 2.0
            gamma[sl] = up - 2.0 * base + down
            vega[sl] = g.notional * res.vega * VOL_POINT
            if not self.with_key_rates:
                continue
            # r = -log P(T)/T  =>  dPV/dlog P(T) = -rho / T
            d_log_df = -g.notional * res.rho_d / t
            qids, sens = curves.log_df_sensitivity(g.curve, t)
            quotes = np.array([market.quote_index[x] for x in qids], dtype=np.int64)
            key_parts.append(KeyRates.from_dense(g.rows, quotes, d_log_df[:, None] * sens))
        key_rates = KeyRates.concat(key_parts) if greeks else KeyRates.empty()
        return ClassRisk(out_rows, pv, delta, gamma, vega, key_rates)


def _option_value(
    surface: EquityVolSurfaceModel,
    g: _Underlying,
    spot: float,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
) -> FloatArray:
    """PV (underlying currency) of one underlying's options at ``spot``, sticky-moneyness vol."""
    s_b = np.full(t.size, spot)
    vol = surface.vol_for_strike(s_b, g.strike, t)
    return g.notional * black_price(g.sign, s_b, g.strike, t, r, q, vol)
