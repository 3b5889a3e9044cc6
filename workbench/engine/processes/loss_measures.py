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
from workbench.risk.explain import Greeks, explain_by, explain_positions
from workbench.risk.loss import ES_LEVEL, LEVELS, measures, worst_scenarios
from workbench.risk.scenarios import (
    STRESS_LIBRARY,
    Scenarios,
    historical_scenarios,
    stress_scenarios,
)
from workbench.scenario_risk import greeks_gap

Progress = Callable[[int, int], None]
"""Called with (scenarios done, scenarios in all) after each block."""

LIVE_BLOCK = 16
"""Scenarios per block: between two blocks the process answers requests and beats."""


GAP_CHUNK = 64
"""Scenarios per call of the Greeks' gap (its Greeks are computed again per call)."""
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
    Greeks' estimate of every historical scenario (:func:`~workbench.scenario_risk.greeks_gap`).
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

    def warm(self) -> None:
        """Run every kernel a run and an explain use once, on two scenarios of each kind
        (Numba holds the GIL while it compiles: done before the process says it is ready)."""
        market = self.base_market
        book = ScenarioBook(self.book, market)
        for scen in (self.historical, stress_scenarios(market, self.stresses)):
            values = scen.values(market)[:2]
            group_pnl_by_block(book, values, self.book.desk.codes, len(self.desks),
                               block=LIVE_BLOCK)  # fmt: skip
        if self.greeks:
            values = self.historical.values(market)[:2]
            greeks_gap(self.book, market, values, list(self.historical.names[:2]), worst=1)
        ExplainBase(self.book, market, generation=-1).explain(market)

    def market(self, values: FloatArray) -> MarketSnapshot:
        """The service's market with the quote ``values`` (one copy of the quote table)."""
        return self.base_market.with_quote_values(values)

    def _revalue(self, market: MarketSnapshot, scen: Scenarios, progress: Progress | None
                 ) -> tuple[FloatArray, FloatArray, list[str]]:  # fmt: skip
        values = scen.values(market)
        by_desk = group_pnl_by_block(ScenarioBook(self.book, market), values,
                                     self.book.desk.codes, len(self.desks),
                                     block=LIVE_BLOCK, progress=progress)  # fmt: skip
        return by_desk, values, list(scen.names)

    def var(self, market: MarketSnapshot, progress: Progress | None = None) -> Computed:
        """Historical VaR/ES of the book at ``market``: tables ``pnl``, ``measures``
        (:func:`~workbench.risk.loss.measures`), ``worst`` (the firm's worst days),
        ``quotes`` and, with Greeks, ``greeks_by_desk`` and ``greeks_worst``."""
        by_desk, values, names = self._revalue(market, self.historical, progress)
        table = measures(by_desk, self.desks, levels=LEVELS, es_level=ES_LEVEL)
        tables = {
            "pnl": pnl_frame(by_desk, self.desks, names),
            "measures": table,
            "worst": worst_scenarios(by_desk.sum(axis=1), names),
            "quotes": quote_frame(market),
        }
        if self.greeks:
            by, worst = self._gap(market, values, names, progress)
            tables["greeks_by_desk"] = by
            tables["greeks_worst"] = worst
        return Computed({k: frame_to_bytes(v) for k, v in tables.items()},
                        {"scenarios": len(names), "levels": list(LEVELS),
                         "es_level": ES_LEVEL})  # fmt: skip

    def _gap(self, market: MarketSnapshot, values: FloatArray, names: list[str],
             progress: Progress | None) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
        """:func:`~workbench.scenario_risk.greeks_gap` by chunks of :data:`GAP_CHUNK`
        scenarios (``progress`` between two); the worst pairs of every chunk merged."""
        parts = []
        for b in range(0, len(names), GAP_CHUNK):
            parts.append(greeks_gap(self.book, market, values[b : b + GAP_CHUNK],
                                    names[b : b + GAP_CHUNK], worst=GAP_WORST))  # fmt: skip
            if progress is not None:
                progress(min(b + GAP_CHUNK, len(names)), len(names))
        worst = pl.concat([p.worst for p in parts])
        order = np.argsort(-np.abs(worst["gap"].to_numpy()), kind="stable")[:GAP_WORST]
        return pl.concat([p.by_desk for p in parts]), worst[order]

    def stress(self, market: MarketSnapshot, progress: Progress | None = None) -> Computed:
        """The book's PnL under each stress at ``market``: tables ``pnl``, ``worst``,
        ``quotes``."""
        # a stress is the change its shocks make to the market it is applied to: made again
        by_desk, _, names = self._revalue(market, stress_scenarios(market, self.stresses),
                                          progress)  # fmt: skip
        tables = {
            "pnl": pnl_frame(by_desk, self.desks, names),
            "worst": worst_scenarios(by_desk.sum(axis=1), names),
            "quotes": quote_frame(market),
        }
        return Computed({k: frame_to_bytes(v) for k, v in tables.items()},
                        {"scenarios": len(names)})  # fmt: skip


class ExplainBase:
    """The Greeks of the book at one base market (the start of an explain, a copy of the
    quote table of ``generation``), kept while the base stays the same."""

    def __init__(self, book: Book, market: MarketSnapshot, *, generation: int) -> None:
        self.book = book
        self.market = market
        self.generation = generation
        risk = PortfolioPricer(book, market).risk(market)
        kr = risk.key_rates
        self.greeks = Greeks(risk.pv, risk.pv_ccy, risk.delta, risk.gamma, risk.vega,
                             risk.theta, kr.rows, kr.quotes, kr.values)  # fmt: skip
        codes, labels = book.currency.codes, book.currency.labels
        self.fx0 = base_rate_column(market, codes, labels)

    def explain(self, market: MarketSnapshot) -> tuple[pl.DataFrame, pl.DataFrame]:
        """PnL explain from the base to ``market``: per position and by desk then the firm
        (``actual`` by full revaluation, one column per risk-factor class, ``unexplained``;
        USD)."""
        book = self.book
        pv1 = PortfolioPricer(book, market).pv(market)
        fx1 = base_rate_column(market, book.currency.codes, book.currency.labels)
        positions = explain_positions(book, self.market, market, self.greeks, pv1, self.fx0, fx1)
        return positions, explain_by(positions)


__all__ = [
    "GAP_CHUNK",
    "GAP_WORST",
    "LIVE_BLOCK",
    "Computed",
    "ExplainBase",
    "LiveLoss",
    "Progress",
    "pnl_frame",
    "quote_frame",
]
