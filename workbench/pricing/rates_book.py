"""Interest-rate swaps of a book (asset class ``rates``).

``delta`` is the DV01: the PV change for +1bp on every quote of every curve a swap uses, by
central difference on curves re-bootstrapped from bumped quotes; ``gamma`` the change of that
DV01 for another +1bp (``PV(+1bp) − 2 PV + PV(−1bp)``); key rates per quote by central ±1bp
bumps of that quote alone, curves re-bootstrapped (``key_rate_method = "bump"``, the default),
or first order from the curves' quote Jacobians (``"jacobian"``).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from workbench._types import FloatArray, IntArray, KeyRateMethod
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.pricing.curves import CurveSet, shifted
from workbench.pricing.risk import ClassRisk, Kept, KeyRates, selected
from workbench.pricing.swaps import SwapGroup

_Layout = tuple[IntArray, list[tuple[int, IntArray]]]
"""Rows of a selection of groups, ascending, and each group's (index, positions in them)."""


def swap_groups(
    book: Book, rows: IntArray, market: MarketSnapshot
) -> list[tuple[IntArray, SwapGroup]]:
    """The swaps of ``rows`` by projection curve: each group's book rows and its
    :class:`SwapGroup` (ascending curve code)."""
    out: list[tuple[IntArray, SwapGroup]] = []
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
        out.append((g_rows, group))
    return out


class RatesPricer:
    """Swaps grouped by curve; shifted curve sets kept warm for DV01 and gamma."""

    asset_class = "rates"

    def __init__(self, book: Book, rows: IntArray, market: MarketSnapshot) -> None:
        self.rows = rows
        self._groups: list[tuple[IntArray, SwapGroup]] = swap_groups(book, rows, market)
        self._names = [group.proj_id for _, group in self._groups]
        self.with_key_rates = True  # off in the live worker, which does not publish them
        self.key_rate_method: KeyRateMethod = "bump"
        self._interpolation: str | None = None
        self._up: CurveSet | None = None
        self._down: CurveSet | None = None
        self._layouts: Kept[frozenset[str] | None, _Layout] = Kept(64)

    def restart(self) -> None:
        """Solve the ±1bp curve sets afresh next time (not from the last ones): the DV01 and
        gamma then equal a new pricer's to the last bit."""
        self._up = self._down = None

    def _layout(self, only: Collection[str] | None) -> _Layout:
        """Rows of the groups in ``only``, ascending, and where each group's swaps go in them
        (kept per selection: a live worker sees the same few selections again and again)."""

        def make() -> _Layout:
            picked = selected(self._names, only)
            if only is None:
                rows = self.rows
            elif picked:
                rows = np.sort(np.concatenate([self._groups[k][0] for k in picked]))
            else:
                rows = np.empty(0, np.int64)
            return rows, [(k, np.searchsorted(rows, self._groups[k][0])) for k in picked]

        return self._layouts.get(None if only is None else frozenset(only), make)

    def rows_for(self, only: Collection[str] | None = None) -> IntArray:
        """Rows of the swaps on the curves in ``only`` (all with None), ascending."""
        return self._layout(only)[0]

    def pv(
        self, market: MarketSnapshot, curves: CurveSet, only: Collection[str] | None = None
    ) -> FloatArray:
        """PV per swap (in ``rows_for(only)`` order), swap currency."""
        out: FloatArray = self._pv_sets(market, [curves], only)[0]
        return out

    def _pv_sets(
        self, market: MarketSnapshot, curve_sets: list[CurveSet], only: Collection[str] | None
    ) -> FloatArray:
        """PV per swap on each curve set (sets, ``rows_for(only)``), one pass over the flows."""
        as_of = np.datetime64(market.as_of, "D")
        rows, where = self._layout(only)
        out = np.empty((len(curve_sets), rows.size))
        for k, at in where:
            out[:, at] = self._groups[k][1].pv_many(curve_sets, as_of)
        return out

    def risk(
        self, market: MarketSnapshot, curves: CurveSet, only: Collection[str] | None = None
    ) -> ClassRisk:
        """PV, DV01, gamma and key rates per swap, swap currency."""
        as_of = np.datetime64(market.as_of, "D")
        picked = [self._groups[k][1] for k in selected(self._names, only)]
        # a swap's curves are all of its currency: shifting that currency's quotes is "every
        # quote of every curve it uses", and only those curves need re-solving
        currencies = sorted({g.spec.currency for g in picked})
        curve_ids = {c for g in picked for c in (g.proj_id, g.disc_id)}
        up_m = shifted(market, 1.0, currencies)
        down_m = shifted(market, -1.0, currencies)
        if self._up is None or self._down is None or self._interpolation != curves.interpolation:
            self._up = CurveSet(up_m, interpolation=curves.interpolation)
            self._down = CurveSet(down_m, interpolation=curves.interpolation)
            self._interpolation = curves.interpolation
        else:
            self._up.rebuild(up_m, curve_ids)
            self._down.rebuild(down_m, curve_ids)
        rows = self.rows_for(only)
        base, up, down = self._pv_sets(market, [curves, self._up, self._down], only)
        kr_parts = []
        for k in selected(self._names, only) if self.with_key_rates else []:
            g_rows, group = self._groups[k]
            quotes, matrix = group.key_rates(curves, as_of, market, method=self.key_rate_method)
            kr_parts.append(KeyRates.from_dense(g_rows, quotes, matrix))
        return ClassRisk(
            rows=rows,
            pv=base,
            delta=(up - down) / 2.0,
            gamma=up - 2.0 * base + down,
            vega=np.zeros(rows.size),
            key_rates=KeyRates.concat(kr_parts),
        )
