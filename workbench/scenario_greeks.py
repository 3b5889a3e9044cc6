"""The Greeks' estimate of every scenario beside its full revaluation, block by block.

The same block step (:func:`block_gap`) runs in this process (:func:`greeks_gap`) and in the
Dask tasks of :func:`workbench.scenario_cluster.distributed_group_pnl`: each block gives the
per-scenario desk sums of both PnLs and its ``worst`` (position, scenario) pairs by ``|gap|``;
:func:`merge_gaps` adds the sums and keeps the ``worst`` of all the blocks' (the largest of a
union are the largest of each part's largest), so the result does not depend on the blocks,
the chunks or where they ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.pricing.portfolio import BookRisk, PortfolioPricer
from workbench.pricing.revaluation import BLOCK
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.explain import GreekMap, Greeks

WORST = 1000
"""(position, scenario) pairs kept by ``|gap|``, largest first."""


@dataclass(frozen=True)
class GreeksGap:
    """The Greeks' estimate of every scenario beside its full revaluation (USD).

    ``by_desk``: per scenario and desk, the firm as ``"Firm"``: ``scenario``, ``desk``,
    ``full`` (full-revaluation PnL), ``greeks`` (the Greeks' PnL, :class:`GreekMap`), ``gap``
    (full − greeks); ``worst``: the (position, scenario) pairs the Greeks explain worst,
    largest ``|gap|`` first: ``position_id``, ``desk``, ``product``, ``scenario``, ``full``,
    ``greeks``, ``gap``.
    """

    by_desk: pl.DataFrame
    worst: pl.DataFrame


@dataclass(frozen=True)
class BlockGap:
    """One block's part: its first scenario and the first position of its chunk of the book
    (``start``, ``chunk``: the run's indices), desk sums (block × desks) of ``full`` and
    ``greeks`` PnL, and its largest gaps: ``size`` (``|gap|``), ``scenario`` and
    ``position`` (the run's indices), ``full_at`` and ``greeks_at`` (USD)."""

    start: int
    chunk: int
    full: FloatArray
    greeks: FloatArray
    size: FloatArray
    scenario: IntArray
    position: IntArray
    full_at: FloatArray
    greeks_at: FloatArray


class GreeksState:
    """What a block step needs of a book (or a chunk of it): its scenario pricer, its Greeks at
    ``market`` (key rates by the exact first derivative), today's PV and FX rates.

    Parameters
    ----------
    book
        The positions (a chunk: ``rows`` are their indices in the whole book).
    market
        Today's market.
    scenario_book
        ``book``'s scenario pricer, if already built.
    pricer
        ``book``'s pricer with exact key rates (``key_rates="jacobian"``), if already built
        (on another market of the same day: it prices ``market`` all the same).
    layout
        A :class:`GreekMap` of the same book on a market with the same quotes (an earlier
        state's ``gmap``): its quote-independent layout is shared.
    between
        Called between the stages of the Greeks' computation
        (:meth:`PortfolioPricer.risk`'s ``between``).
    """

    def __init__(
        self,
        book: Book,
        market: MarketSnapshot,
        *,
        rows: IntArray | None = None,
        scenario_book: ScenarioBook | None = None,
        pricer: PortfolioPricer | None = None,
        layout: GreekMap | None = None,
        between: Callable[[str], None] | None = None,
    ) -> None:
        self.book_now = scenario_book or ScenarioBook(book, market)
        self.rows = np.arange(len(book), dtype=np.int64) if rows is None else rows
        # exact first-order key rates: the bumped ones miss up to ~20% of a forward-starting
        # swap's first-order PnL (docs/var.md)
        risk = (pricer or PortfolioPricer(book, market, key_rates="jacobian")).risk(
            market, between=between
        )
        greeks = greeks_of(risk)
        self.gmap = GreekMap(book, market, greeks) if layout is None else layout.at(market, greeks)
        self.today = np.asarray(market.quotes, np.float64)
        self.base = self.book_now.pv(self.today[None, :])[0]
        self.ccy = book.currency.codes
        self.fx0 = self.book_now.fx_rates(self.today[None, :])[0][self.ccy]
        self.desks = book.desk.codes
        self.n_desks = len(book.desk.labels)


def greeks_of(risk: BookRisk) -> Greeks:
    """A book's risk as the :class:`Greeks` PnL explain reads."""
    kr = risk.key_rates
    return Greeks(risk.pv, risk.pv_ccy, risk.delta, risk.gamma, risk.vega, risk.theta,
                  kr.rows, kr.quotes, kr.values)  # fmt: skip


def block_gap(state: GreeksState, values: FloatArray, start: int, worst: int) -> BlockGap:
    """Full revaluation and the Greeks' estimate of the scenarios ``values`` (block × quotes;
    the run's scenarios ``start``, ``start + 1`` …): desk sums and the ``worst`` pairs."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    full = state.book_now.pv(v) - state.base
    moves = state.book_now.fx_rates(v)[:, state.ccy] - state.fx0
    est = state.gmap.predicted(v - state.today, moves, 0.0)
    sums = [
        np.array([np.bincount(state.desks, weights=r, minlength=state.n_desks) for r in x])
        for x in (full, est)
    ]
    gap = np.abs(full - est).ravel()
    top = np.argsort(-gap, kind="stable")[:worst]
    scen, pos = np.divmod(top, full.shape[1])
    first = int(state.rows[0]) if state.rows.size else 0
    return BlockGap(start, first, sums[0], sums[1], gap[top], scen + start, state.rows[pos],
                    full.ravel()[top], est.ravel()[top])  # fmt: skip


def merge_gaps(
    parts: Sequence[BlockGap], book: Book, names: Sequence[str], worst: int
) -> GreeksGap:
    """The :class:`GreeksGap` of a run from its blocks' parts (any order; the desk sums of
    parts with the same scenarios, chunks of the book, are added)."""
    n_s, n_desks = len(names), len(book.desk.labels)
    full_d, est_d = np.zeros((n_s, n_desks)), np.zeros((n_s, n_desks))
    for p in sorted(parts, key=lambda p: (p.start, p.chunk)):  # chunks added in book order
        full_d[p.start : p.start + p.full.shape[0]] += p.full
        est_d[p.start : p.start + p.greeks.shape[0]] += p.greeks
    size, scen, pos, full_at, est_at = (
        np.concatenate([getattr(p, f) for p in parts])
        for f in ("size", "scenario", "position", "full_at", "greeks_at")
    )
    # largest first; ties by scenario, then position: the same pairs whatever the blocks
    top = np.lexsort((pos, scen, -size))[:worst]
    scen, pos = scen[top], pos[top]
    names_all = np.array(list(names), dtype=object)
    worst_frame = pl.DataFrame(
        {
            "position_id": [book.position_id[int(i)] for i in pos],
            "desk": np.array(book.desk.values(), dtype=object)[pos],
            "product": np.array(book.product.values(), dtype=object)[pos],
            "scenario": names_all[scen],
            "full": full_at[top],
            "greeks": est_at[top],
            "gap": full_at[top] - est_at[top],
        },
        schema_overrides={
            "position_id": pl.String,
            "desk": pl.String,
            "product": pl.String,
            "scenario": pl.String,
        },
    )
    full_f, est_f = (np.column_stack([x, x.sum(axis=1)]) for x in (full_d, est_d))
    labels = np.array([*book.desk.labels, "Firm"], dtype=object)
    by_desk = pl.DataFrame(
        {
            "scenario": np.repeat(names_all, n_desks + 1),
            "desk": np.tile(labels, n_s),
            "full": full_f.ravel(),
            "greeks": est_f.ravel(),
            "gap": (full_f - est_f).ravel(),
        },
        schema={
            "scenario": pl.String,
            "desk": pl.String,
            "full": pl.Float64,
            "greeks": pl.Float64,
            "gap": pl.Float64,
        },
    )
    return GreeksGap(by_desk, worst_frame)


def greeks_gap(
    book: Book,
    market: MarketSnapshot,
    values: FloatArray,
    names: Sequence[str],
    *,
    worst: int = WORST,
    block: int = BLOCK,
) -> GreeksGap:
    """The Greeks' estimate of each scenario (rows of ``values``: the market's quotes, named
    ``names``) beside its full revaluation, by desk and for the ``worst`` (position, scenario)
    pairs, in this process. The Greeks are the book's own at ``market`` (delta, gamma, vega,
    key rates by the exact first derivative, theta; docs/greeks.md) applied to each
    scenario's quote and FX moves as PnL explain applies them (docs/var.md); scenarios are at
    today's date, so carry is 0."""
    state = GreeksState(book, market)
    parts = [block_gap(state, values[b : b + block], b, worst)
             for b in range(0, values.shape[0], block)]  # fmt: skip
    return merge_gaps(parts, book, names, worst)


__all__ = [
    "WORST",
    "BlockGap",
    "GreeksGap",
    "GreeksState",
    "block_gap",
    "greeks_gap",
    "greeks_of",
    "merge_gaps",
]
