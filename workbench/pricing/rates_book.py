"""Interest-rate swaps of a book (asset class ``rates``).

``delta`` is the DV01: the PV change for +1bp on every quote of every curve a swap uses, by
central difference on curves re-bootstrapped from bumped quotes; ``gamma`` the change of that
DV01 for another +1bp (``PV(+1bp) − 2 PV + PV(−1bp)``); key rates are first order, from the
curves' quote Jacobians.
"""

from __future__ import annotations

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.pricing.curves import CurveSet, shifted
from workbench.pricing.risk import ClassRisk, KeyRates
from workbench.pricing.swaps import SwapGroup


class RatesPricer:
    """Swaps grouped by curve; shifted curve sets kept warm for DV01 and gamma."""

    asset_class = "rates"

    def __init__(self, book: Book, rows: IntArray, market: MarketSnapshot) -> None:
        self.rows = rows
        self._groups: list[tuple[IntArray, SwapGroup]] = []
        curve_codes = book.underlying.codes[rows]
        for code in np.unique(curve_codes):
            spec = market.curve(book.underlying.labels[int(code)])
            g_rows = rows[curve_codes == code]
            group = SwapGroup(
                spec,
                market.discount_curve_id(spec.currency),
                market,
                notional=book.notional[g_rows],
                start=book.start[g_rows],
                maturity=book.maturity[g_rows],
                fixed_rate=book.fixed_rate[g_rows],
                spread=book.float_spread[g_rows],
            )
            self._groups.append((g_rows, group))
        specs = [market.curve(book.underlying.labels[int(c)]) for c in np.unique(curve_codes)]
        self._currencies = sorted({spec.currency for spec in specs})
        self._curve_ids = {spec.id for spec in specs} | {
            market.discount_curve_id(ccy) for ccy in self._currencies
        }
        self.with_key_rates = True  # off in the live worker, which does not publish them
        self._interpolation: str | None = None
        self._up: CurveSet | None = None
        self._down: CurveSet | None = None

    def _pv(self, curves: CurveSet, as_of: np.datetime64) -> tuple[IntArray, FloatArray]:
        rows = np.concatenate([r for r, _ in self._groups])
        pv = np.concatenate([g.pv(curves, as_of) for _, g in self._groups])
        return rows, pv

    def pv(self, market: MarketSnapshot, curves: CurveSet) -> FloatArray:
        """PV per swap (in ``self.rows`` order), swap currency."""
        rows, pv = self._pv(curves, np.datetime64(market.as_of, "D"))
        out = np.empty(self.rows.size)
        out[np.searchsorted(self.rows, rows)] = pv
        return out

    def risk(self, market: MarketSnapshot, curves: CurveSet) -> ClassRisk:
        """PV, DV01, gamma and key rates per swap, swap currency."""
        as_of = np.datetime64(market.as_of, "D")
        # a swap's curves are all of its currency: shifting that currency's quotes is "every
        # quote of every curve it uses", and only those curves need re-solving
        up_m = shifted(market, 1.0, self._currencies)
        down_m = shifted(market, -1.0, self._currencies)
        if self._up is None or self._down is None or self._interpolation != curves.interpolation:
            self._up = CurveSet(up_m, interpolation=curves.interpolation)
            self._down = CurveSet(down_m, interpolation=curves.interpolation)
            self._interpolation = curves.interpolation
        else:
            self._up.rebuild(up_m, self._curve_ids)
            self._down.rebuild(down_m, self._curve_ids)
        base = self.pv(market, curves)
        up = self.pv(up_m, self._up)
        down = self.pv(down_m, self._down)
        kr_parts = []
        for g_rows, group in self._groups if self.with_key_rates else []:
            quotes, matrix = group.key_rates(curves, as_of, market)
            kr_parts.append(KeyRates.from_dense(g_rows, quotes, matrix))
        return ClassRisk(
            rows=self.rows,
            pv=base,
            delta=(up - down) / 2.0,
            gamma=up - 2.0 * base + down,
            vega=np.zeros(self.rows.size),
            key_rates=KeyRates.concat(kr_parts),
        )
