"""A whole book revalued under a block of scenarios at once, PV only, in the base currency.

The quote-independent work is done once when a :class:`ScenarioBook` is built: today's curves
solved, the swaps' cash-flow matrices, the options' and credit positions' static columns. Then
:meth:`ScenarioBook.pv` takes a (scenarios × quotes) table and gives (scenarios × positions)
PVs in USD: every curve re-bootstrapped per scenario (:mod:`workbench.pricing.scenario_curves`),
swaps as cash-flow matrix × discount values, FX and equity options in one compiled smile solve
over scenarios × options (:mod:`workbench.pricing.scenario_options`), tranches from each
scenario's default-count distributions (:mod:`workbench.pricing.scenario_credit`), each
position converted at its scenario's FX spots. Each scenario's PVs are those
:meth:`workbench.pricing.portfolio.PortfolioPricer.scenario_pv` gives one scenario at a time,
to rounding (tests/test_scenario_revaluation.py holds them to 1e-10 relative).

With ``threads`` > 1 the pricers of a block (swaps, FX, equity, and the credit positions index
by index) run side by side on that many threads, the most expensive first (their last block's
times), each compiled kernel on one Numba thread: the tranches alone keep both cores of a
2-core machine busy only part of the time, and the options and swaps fill the rest. The result
does not depend on the threads: each pricer's share is computed whole and the shares are summed
in one fixed order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from workbench._types import FloatArray, IntArray
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.crosses import base_per_unit
from workbench.market.model import Interpolation, MarketError, MarketSnapshot
from workbench.pricing.curves import CurveSet
from workbench.pricing.scenario_credit import ScenarioCredit
from workbench.pricing.scenario_curves import ScenarioCurves, ScenarioSwaps, SolvedCurves
from workbench.pricing.scenario_options import ScenarioEquity, ScenarioFx

_Pricer = ScenarioSwaps | ScenarioFx | ScenarioEquity | ScenarioCredit
_CLASSES: dict[str, type[_Pricer]] = {
    "rates": ScenarioSwaps,
    "fx": ScenarioFx,
    "credit": ScenarioCredit,
    "equity": ScenarioEquity,
}


class ScenarioBook:
    """A book set up for revaluation under scenarios of ``market``'s quotes.

    Parameters
    ----------
    book
        The positions.
    market
        Today's market: the scenarios are rows of values of its quotes, and each scenario's
        curves are solved starting from today's.
    interpolation
        Override every curve's interpolation (``None`` keeps each curve's own).
    threads
        Threads pricing a block side by side (1: one after the other, in this thread).
    """

    def __init__(
        self,
        book: Book,
        market: MarketSnapshot,
        *,
        interpolation: Interpolation | None = None,
        threads: int = 1,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.book = book
        self.market = market
        self.threads = threads
        self._interpolation = interpolation
        self.curves = ScenarioCurves(market, CurveSet(market, interpolation=interpolation))
        product_class = np.array([ASSET_CLASS[p] for p in book.product.labels])
        position_class = product_class[book.product.codes] if len(book) else np.empty(0, str)
        self._pricers: list[_Pricer] = []
        for name, make in _CLASSES.items():
            rows = np.flatnonzero(position_class == name).astype(np.int64)
            if not rows.size:
                continue
            if make is ScenarioCredit:  # one per index: each a share of the work of its own
                under = book.underlying.codes[rows]
                self._pricers += [make(book, rows[under == u], market) for u in np.unique(under)]
            else:
                self._pricers.append(make(book, rows, market))
        self._seconds = [0.0] * len(self._pricers)  # each pricer's last block, wall seconds
        self._start_smiles()
        ccy = book.currency.labels
        self._ccy_codes = book.currency.codes
        self._ccy = ccy
        self._base: _Today | None = None
        missing = [c for c in ccy if c not in base_per_unit(market)]
        if missing:
            raise MarketError(
                f"no FX pair connects {', '.join(missing)} to the base currency "
                f"{market.base_currency}"
            )

    def _start_smiles(self) -> None:
        fx = [p for p in self._pricers if isinstance(p, ScenarioFx)]
        if fx:  # scenario smiles are solved starting from today's vols
            today = np.asarray(self.market.quotes, np.float64)[None, :]
            fx[0].start_from(today, self.curves.solve(today))

    def rebase(self, market: MarketSnapshot) -> None:
        """Make ``market`` today's: the same market with other quote values (the live quotes
        of a later moment). Every scenario then prices as in a scenario book set up on
        ``market``; the set-up that depends on the positions, dates and quote layout only (the
        larger part) is kept.

        Raises
        ------
        ValueError
            If ``market`` has another date or other quotes than the book's market.
        """
        if market.as_of != self.market.as_of or market.quote_ids != self.market.quote_ids:
            raise ValueError(
                f"rebase: a market of {market.as_of} with {len(market.quote_ids)} quotes is not "
                f"the book's ({self.market.as_of}, {len(self.market.quote_ids)} quotes) moved"
            )
        self.market = market
        self.curves.restart(CurveSet(market, interpolation=self._interpolation))
        self._base = None
        self._start_smiles()

    def pv(self, values: FloatArray) -> FloatArray:
        """PV in USD (S × positions) of every position under each row of ``values`` (S × the
        market's quotes).

        Raises
        ------
        ValueError
            If ``values`` is not a (scenarios × quotes) table of the market's quotes.
        """
        n_quotes = len(self.market.quote_ids)
        if values.ndim != 2 or values.shape[1] != n_quotes:
            raise ValueError(
                f"scenario values are {values.shape}, expected (scenarios, {n_quotes})"
            )
        v = np.ascontiguousarray(values, dtype=np.float64)
        solved = self.curves.solve(v)
        out = np.full((v.shape[0], len(self.book)), np.nan)
        priced = self._each(lambda pricer: self._priced(pricer, v, solved))
        for pricer, pv in zip(self._pricers, priced, strict=True):
            out[:, pricer.rows] = pv
        out *= self._fx(v)
        return out

    def _each(self, work: Callable[[_Pricer], FloatArray]) -> list[FloatArray]:
        """``work(pricer)`` for every pricer, in the pricers' order; on :attr:`threads`
        threads, the pricers that took longest last time started first."""

        def timed(k: int) -> FloatArray:
            t0 = time.perf_counter()
            try:
                return work(self._pricers[k])
            finally:
                self._seconds[k] = time.perf_counter() - t0

        if self.threads == 1 or len(self._pricers) == 1:
            return [timed(k) for k in range(len(self._pricers))]
        order = sorted(range(len(self._pricers)), key=lambda k: -self._seconds[k])
        with _pool(min(self.threads, len(self._pricers))) as pool:
            futures = {k: pool.submit(timed, k) for k in order}
            return [futures[k].result() for k in range(len(self._pricers))]

    @staticmethod
    def _priced(pricer: _Pricer, values: FloatArray, curves: SolvedCurves) -> FloatArray:
        if isinstance(pricer, ScenarioSwaps):
            return pricer.pv(curves)
        return pricer.pv(values, curves)

    def fx_rates(self, values: FloatArray) -> FloatArray:
        """USD per unit of each of the book's currencies under each scenario (S × currencies)."""
        out = np.empty((values.shape[0], len(self._ccy)))
        for s in range(values.shape[0]):
            rates = base_per_unit(self.market.with_quote_values(values[s]))
            out[s] = [rates[c] for c in self._ccy]
        return out

    def _fx(self, values: FloatArray) -> FloatArray:
        """USD per unit of each position's currency under each scenario (S × positions)."""
        out: FloatArray = self.fx_rates(values)[:, self._ccy_codes]
        return out

    def _today(self) -> _Today:
        """Today's curves, FX rates, PV per position (USD) and swaps' discount values."""
        if self._base is None:
            v = np.asarray(self.market.quotes, np.float64)[None, :]
            solved = self.curves.solve(v)
            rates = self.fx_rates(v)[0]
            pv = np.full(len(self.book), np.nan)
            swaps: list[FloatArray] = []
            for pricer in self._pricers:
                pv[pricer.rows] = self._priced(pricer, v, solved)[0]
                if isinstance(pricer, ScenarioSwaps):
                    swaps = [x[0] for x in pricer.discount_values(solved)]
            self._base = _Today(rates, pv * rates[self._ccy_codes], swaps)
        return self._base

    def group_pnl(self, values: FloatArray, codes: IntArray, n_groups: int) -> FloatArray:
        """PnL in USD under each row of ``values`` (S × the market's quotes) against today's
        market, summed by the positions' group ``codes``: (S × ``n_groups``).

        Swaps are summed through their cash-flow matrices
        (:meth:`~workbench.pricing.scenario_curves.ScenarioSwaps.by_code`) applied to the
        change of the discount values, at the scenario's FX, plus the FX move of today's
        value; the other positions are priced one by one, their PnL summed.
        """
        today = self._today()
        v = np.ascontiguousarray(values, dtype=np.float64)
        solved = self.curves.solve(v)
        rates = self.fx_rates(v)

        def share(pricer: _Pricer) -> FloatArray:
            """The pricer's positions' PnL by group (S × ``n_groups``, USD)."""
            out = np.zeros((v.shape[0], n_groups))
            c = codes[pricer.rows]
            if isinstance(pricer, ScenarioSwaps):
                parts = zip(pricer.currencies, pricer.discount_values(solved),
                            pricer.by_code(c, n_groups), today.swaps, strict=True)  # fmt: skip
                for ccy, now, matrix, then in parts:
                    k = self._ccy.index(ccy)
                    moved = (now - then[None, :]) @ matrix.T
                    out += rates[:, k, None] * moved
                    out += (rates[:, k] - today.rates[k])[:, None] * (matrix @ then)[None, :]
                return out
            fx = rates[:, self._ccy_codes[pricer.rows]]
            pnl = self._priced(pricer, v, solved) * fx - today.pv[pricer.rows]
            onehot = sp.csr_matrix((np.ones(c.size), (np.arange(c.size), c)),
                                   shape=(c.size, n_groups))  # fmt: skip
            out += np.asarray(onehot.T @ pnl.T).T
            return out

        total = np.zeros((v.shape[0], n_groups))
        for part in self._each(share):  # summed in the pricers' order, whatever the threads
            total += part
        return total


def _one_numba_thread() -> None:
    numba.set_num_threads(1)


@contextmanager
def _pool(threads: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for one block, each running compiled kernels on one Numba thread (joined at the
    end of the block: nothing is left running)."""
    with ThreadPoolExecutor(threads, thread_name_prefix="scenario-book",
                            initializer=_one_numba_thread) as pool:  # fmt: skip
        yield pool


@dataclass(frozen=True)
class _Today:
    """Today's USD per unit of each currency, PV per position (USD) and each swap group's
    discount values."""

    rates: FloatArray
    pv: FloatArray
    swaps: list[FloatArray]


__all__ = ["ScenarioBook"]
