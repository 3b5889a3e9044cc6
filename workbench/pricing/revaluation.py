"""Full revaluation: every position's PV under every scenario's quotes, curves re-solved and
smiles re-solved per scenario, PV only, in the base currency (USD).

A scenario is a vector of quote values on the market's quotes
(:meth:`workbench.risk.scenarios.Scenarios.values`). Two paths give the same numbers:

* :func:`group_pnl_by_block` (what ``workbench var`` and the Dask tasks run): blocks of
  scenarios revalued at once by a :class:`~workbench.pricing.scenario_book.ScenarioBook`,
  reduced to per-scenario group sums as each block is done;
* :func:`scenario_pvs` and :func:`scenario_pnl`: one scenario at a time through the live
  pricers (a :class:`~workbench.pricing.portfolio.PortfolioPricer`), every position's PV kept —
  the reference the vectorised path is tested against.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.market.model import MarketSnapshot
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.scenario_book import ScenarioBook

BLOCK = 16
"""Scenarios revalued together by default (one Dask task, or one in-process step)."""


def scenario_pvs(
    pricer: PortfolioPricer,
    market: MarketSnapshot,
    values: FloatArray,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> FloatArray:
    """(scenarios × positions) PV in USD of every position of ``pricer``'s book under each row
    of ``values`` (scenarios × ``market``'s quotes), each scenario's curves solved from the
    pricer's current ones (today's: call ``pricer.pv(market)`` first, as :func:`scenario_pnl`
    does); ``progress(done, total)`` after each.

    Raises
    ------
    ValueError
        If ``values`` is not a (scenarios × quotes) table of ``market``'s quotes.
    """
    n_quotes = len(market.quote_ids)
    if values.ndim != 2 or values.shape[1] != n_quotes:
        raise ValueError(f"scenario values are {values.shape}, expected (scenarios, {n_quotes})")
    out = np.empty((values.shape[0], len(pricer.book)))
    for s in range(values.shape[0]):
        out[s] = pricer.scenario_pv(market.with_quote_values(values[s]))
        if progress is not None:
            progress(s + 1, values.shape[0])
    return out


def scenario_pnl(
    pricer: PortfolioPricer,
    market: MarketSnapshot,
    values: FloatArray,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[FloatArray, FloatArray, float]:
    """PnL in USD (scenarios × positions) of each scenario against ``market``, today's PV per
    position, and the seconds the scenarios took."""
    base = pricer.pv(market)
    t0 = time.perf_counter()
    pvs = scenario_pvs(pricer, market, values, progress=progress)
    pnl: FloatArray = pvs - base[None, :]
    return pnl, base, time.perf_counter() - t0


def group_pnl_by_block(
    book: ScenarioBook,
    values: FloatArray,
    codes: IntArray,
    n_groups: int,
    *,
    block: int = BLOCK,
    progress: Callable[[int, int], None] | None = None,
    sizes: Callable[[int, int], int] | None = None,
) -> FloatArray:
    """(scenarios × groups) PnL in USD of ``book`` under each row of ``values`` (scenarios ×
    the market's quotes) against today's market, summed by the positions' group ``codes``,
    ``block`` scenarios at a time, or as many as ``sizes(done, total)`` says before each block
    (at least 1; it may wait); ``progress(done, total)`` after each block. A scenario's PnL
    does not depend on the blocks."""
    n_s = values.shape[0]
    out = np.empty((n_s, n_groups))
    b = 0
    while b < n_s:
        k = block if sizes is None else sizes(b, n_s)
        k = max(1, min(k, n_s - b))
        out[b : b + k] = book.group_pnl(values[b : b + k], codes, n_groups)
        b += k
        if progress is not None:
            progress(b, n_s)
    return out


__all__ = ["BLOCK", "group_pnl_by_block", "scenario_pnl", "scenario_pvs"]
