"""What the live loss process computes on one copy of the quote table: historical VaR/ES,
the stress library and the Greeks' gap (the batch engine's functions, in this process), and the
intraday PnL explain from a base copy of the quotes (docs/var.md, "Live").

Every result is a set of Arrow IPC tables and plain facts, as a :class:`~.messages.Reply`
carries them; no sockets here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench._types import FloatArray
from workbench.book.schema import Book
from workbench.engine.protocol.messages import frame_to_bytes
from workbench.market.history import load_history
from workbench.market.model import MarketSnapshot
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import group_pnl_by_block
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.explain import GreekMap, Greeks, explain_by, explain_positions
from workbench.risk.loss import ES_LEVEL, LEVELS, measures, worst_scenarios
from workbench.risk.scenarios import (
    STRESS_LIBRARY,
    Scenarios,
    historical_scenarios,
    stress_scenarios,
)
from workbench.scenario_greeks import GreeksState, block_gap, merge_gaps

Progress = Callable[[int, int], None]
"""Called with (scenarios done, scenarios in all) after each block."""
Sizes = Callable[[int, int], int]
"""Called with (scenarios done, scenarios in all) before each block: how many scenarios the
next block revalues (it may wait first: :mod:`~.flush_gaps`)."""
Stages = Callable[[str], None]
"""Called before each stage of the book's Greeks (``"curves"``, each asset class; ``""`` after
the last): it may wait first."""

LIVE_BLOCK = 16
"""Scenarios per block at most: between two blocks the process answers requests and beats."""

GAP_WORST = 200
"""The (position, scenario) pairs the Greeks explain worst, kept."""


@dataclass
class Computed:
    """One published result: ``tables`` (Arrow IPC) and ``data`` (facts: ``generation``,
    ``made_ns`` UTC ns, ``seconds`` wall time, …)."""

    tables: dict[str, bytes] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def pnl_frame(by_desk: FloatArray, desks: list[str], names: list[str]) -> pl.DataFrame:
    """PnL per scenario and desk, long, the firm as desk ``"Firm"`` (as the batch API)."""
    firm = by_desk.sum(axis=1)
    return pl.DataFrame(
        {
            "scenario": np.repeat(np.array(names, dtype=object), len(desks) + 1),
            "desk": np.tile(np.array([*desks, "Firm"], dtype=object), len(names)),
            "pnl": np.column_stack([by_desk, firm]).ravel(),
        },
        schema={"scenario": pl.String, "desk": pl.String, "pnl": pl.Float64},
    )


def quote_frame(market: MarketSnapshot) -> pl.DataFrame:
    """The quotes a result was computed on: ``quote_id``, ``value``."""
    return pl.DataFrame({"quote_id": list(market.quote_ids), "value": market.quotes})


class LiveLoss:
    """The book's scenarios, ready to be revalued on any copy of the service's quotes.

    ``history``: a history file for ``market`` (docs/history.md); ``window``: its latest
    1-day changes used; ``stresses``: a stress file (None: the library); ``greeks``: also the
    Greeks' estimate of every historical scenario (:func:`~workbench.scenario_risk.greeks_gap`,
    in blocks).
    """

    def __init__(
        self,
        book: Book,
        market: MarketSnapshot,
        *,
        history: str | Path,
        window: int,
        stresses: str | Path | None,
        greeks: bool,
    ) -> None:
        self.book = book
        self.base_market = market
        self.historical: Scenarios = historical_scenarios(
            load_history(history, market), market, window=window
        )
        self.stresses = Path(stresses or STRESS_LIBRARY)
        stress_scenarios(market, self.stresses)  # a bad file fails here, at start
        self.greeks = greeks
        self.desks = list(book.desk.labels)
        self._scenario_book: ScenarioBook | None = None
        self._greeks_pricer: PortfolioPricer | None = None
        self._greeks_map: GreekMap | None = None

    def warm(self) -> None:
        """Run every kernel a run and an explain use once, on two scenarios of each kind
        (Numba holds the GIL while it compiles: done before the process says it is ready)."""
        market = self.base_market
        book = self.scenario_book(market)  # set up here, kept for the runs
        for scen in (self.historical, stress_scenarios(market, self.stresses)):
            values = scen.values(market)[:2]
            group_pnl_by_block(book, values, self.book.desk.codes, len(self.desks),
                               block=LIVE_BLOCK)  # fmt: skip
        if self.greeks:
            values = self.historical.values(market)[:2]
            self._gap(book, market, values, list(self.historical.names[:2]), None, None)
        ExplainBase(self.book, market, generation=-1).explain(market)

    def market(self, values: FloatArray) -> MarketSnapshot:
        """The service's market with the quote ``values`` (one copy of the quote table)."""
        return self.base_market.with_quote_values(values)

    def scenario_book(self, market: MarketSnapshot) -> ScenarioBook:
        """The book's scenario pricer at ``market`` (the service's market with other quote
        values), shared by a run's VaR, Greeks' gap and stresses: set up once, rebased on
        each run's quotes (:meth:`ScenarioBook.rebase`: the same numbers as a new one, without
        its ~0.5 s of set-up on the reference book)."""
        if self._scenario_book is None:
            self._scenario_book = ScenarioBook(self.book, market)
        else:
            self._scenario_book.rebase(market)
        return self._scenario_book

    def _revalue(self, book: ScenarioBook, market: MarketSnapshot, scen: Scenarios,
                 progress: Progress | None, sizes: Sizes | None
                 ) -> tuple[FloatArray, FloatArray, list[str]]:  # fmt: skip
        values = scen.values(market)
        by_desk = group_pnl_by_block(book, values, self.book.desk.codes, len(self.desks),
                                     block=LIVE_BLOCK, progress=progress,
                                     sizes=sizes)  # fmt: skip
        return by_desk, values, list(scen.names)

    def var(
        self,
        market: MarketSnapshot,
        progress: Progress | None = None,
        sizes: Sizes | None = None,
        *,
        book: ScenarioBook | None = None,
        stages: Stages | None = None,
    ) -> Computed:
        """Historical VaR/ES of the book at ``market``: tables ``pnl``, ``measures``
        (:func:`~workbench.risk.loss.measures`), ``worst`` (the firm's worst days),
        ``quotes`` and, with Greeks, ``greeks_by_desk`` and ``greeks_worst``. ``book``: the
        run's :meth:`scenario_book` (made when not given); ``stages``: called between the
        stages of the book's Greeks (for the Greeks' gap)."""
        book = book or self.scenario_book(market)
        by_desk, values, names = self._revalue(book, market, self.historical, progress, sizes)
        table = measures(by_desk, self.desks, levels=LEVELS, es_level=ES_LEVEL)
        tables = {
            "pnl": pnl_frame(by_desk, self.desks, names),
            "measures": table,
            "worst": worst_scenarios(by_desk.sum(axis=1), names),
            "quotes": quote_frame(market),
        }
        if self.greeks:
            by, worst = self._gap(book, market, values, names, progress, sizes, stages)
            tables["greeks_by_desk"] = by
            tables["greeks_worst"] = worst
        return Computed({k: frame_to_bytes(v) for k, v in tables.items()},
                        {"scenarios": len(names), "levels": list(LEVELS),
                         "es_level": ES_LEVEL})  # fmt: skip

    def _gap(self, book: ScenarioBook, market: MarketSnapshot, values: FloatArray,
             names: list[str], progress: Progress | None, sizes: Sizes | None,
             stages: Stages | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
        """:func:`~workbench.scenario_risk.greeks_gap` in blocks (``sizes`` and ``progress``
        as for the revaluation), the book's Greeks computed once."""
        if self._greeks_pricer is None:  # its set-up (schedules, cash flows) kept for the day
            self._greeks_pricer = PortfolioPricer(self.book, market, key_rates="jacobian")
        else:
            self._greeks_pricer.restart(market)
        state = GreeksState(self.book, market, scenario_book=book, pricer=self._greeks_pricer,
                            layout=self._greeks_map, between=stages)  # fmt: skip
        self._greeks_map = state.gmap
        parts, done, total = [], 0, len(names)
        while done < total:
            k = LIVE_BLOCK if sizes is None else sizes(done, total)
            k = max(1, min(k, total - done))
            parts.append(block_gap(state, values[done : done + k], done, GAP_WORST))
            done += k
            if progress is not None:
                progress(done, total)
        gap = merge_gaps(parts, self.book, names, GAP_WORST)
        return gap.by_desk, gap.worst

    def stress(
        self,
        market: MarketSnapshot,
        progress: Progress | None = None,
        sizes: Sizes | None = None,
        *,
        book: ScenarioBook | None = None,
    ) -> Computed:
        """The book's PnL under each stress at ``market``: tables ``pnl``, ``worst``,
        ``quotes`` (``book`` as for :meth:`var`)."""
        # a stress is the change its shocks make to the market it is applied to: made again
        book = book or self.scenario_book(market)
        by_desk, _, names = self._revalue(book, market, stress_scenarios(market, self.stresses),
                                          progress, sizes)  # fmt: skip
        tables = {
            "pnl": pnl_frame(by_desk, self.desks, names),
            "worst": worst_scenarios(by_desk.sum(axis=1), names),
            "quotes": quote_frame(market),
        }
        return Computed({k: frame_to_bytes(v) for k, v in tables.items()},
                        {"scenarios": len(names)})  # fmt: skip


class ExplainBase:
    """The Greeks of the book at one base market (the start of an explain, a copy of the
    quote table of ``generation``), kept while the base stays the same, and the pricer that
    prices each later market (moved to it as a new one set up there would price, to the bit).
    ``between(stage)``: called before each stage of the pricing (:meth:`PortfolioPricer.risk`),
    e.g. to wait for a gap of the hot path."""

    def __init__(
        self,
        book: Book,
        market: MarketSnapshot,
        *,
        generation: int,
        between: Stages | None = None,
    ) -> None:
        self.book = book
        self.market = market
        self.generation = generation
        self._pricer = PortfolioPricer(book, market)
        risk = self._pricer.risk(market, between=between)
        kr = risk.key_rates
        self.greeks = Greeks(risk.pv, risk.pv_ccy, risk.delta, risk.gamma, risk.vega,
                             risk.theta, kr.rows, kr.quotes, kr.values)  # fmt: skip
        codes, labels = book.currency.codes, book.currency.labels
        self.fx0 = base_rate_column(market, codes, labels)

    def explain(
        self, market: MarketSnapshot, *, between: Stages | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """PnL explain from the base to ``market``: per position and by desk then the firm
        (``actual`` by full revaluation, one column per risk-factor class, ``unexplained``;
        USD)."""
        book = self.book
        self._pricer.restart(market)
        pv1 = self._pricer.pv(market, between=between)
        fx1 = base_rate_column(market, book.currency.codes, book.currency.labels)
        positions = explain_positions(book, self.market, market, self.greeks, pv1, self.fx0, fx1)
        return positions, explain_by(positions)


__all__ = [
    "GAP_WORST",
    "LIVE_BLOCK",
    "Computed",
    "ExplainBase",
    "LiveLoss",
    "Progress",
    "Sizes",
    "Stages",
    "pnl_frame",
    "quote_frame",
]
