"""Scenario risk in batch: historical VaR/ES, stresses and PnL explain of a book.

The door the ``workbench var`` and ``workbench stress`` commands go through: load the book,
the market and the history or stress file, build the scenarios
(:mod:`workbench.risk.scenarios`), revalue every position under each
(:mod:`workbench.pricing.revaluation`), sum the PnL by desk and compute the measures
(:mod:`workbench.risk.loss`). Results are Polars frames, written as Parquet by the commands.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl

from workbench._types import FloatArray
from workbench.book.io import load_book
from workbench.market.history import MAX_FILL_DAYS, load_history
from workbench.market.io import load_market
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import group_pnl_by_block
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.explain import Greeks, explain_by, explain_positions
from workbench.risk.loss import ES_LEVEL, LEVELS, measures, worst_scenarios
from workbench.risk.scenarios import (
    DEFAULT_WINDOW,
    STRESS_LIBRARY,
    Scenarios,
    historical_scenarios,
    stress_scenarios,
)
from workbench.scenario_cluster import cluster, distributed_group_pnl


@dataclass(frozen=True)
class ScenarioRisk:
    """What a run of scenarios gives.

    ``pnl``: PnL per scenario and desk, long (``scenario``, ``desk``, ``pnl`` USD), the firm
    as desk ``"Firm"``; ``measures``: :func:`workbench.risk.loss.measures` by desk and firm
    (historical runs) or None; ``worst``: the firm's worst scenarios; ``seconds``: the
    revaluation's wall time; ``scenarios``: how many.
    """

    pnl: pl.DataFrame
    measures: pl.DataFrame | None
    worst: pl.DataFrame
    seconds: float
    scenarios: int


def _progress(out: TextIO) -> Callable[[int, int], None]:
    start = time.perf_counter()
    shown = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - shown[0] < 1.0 and done < total:
            return
        shown[0] = now
        width = 30
        bar = "#" * (width * done // total)
        rate = done / max(now - start, 1e-9)
        out.write(f"\r[{bar:<{width}}] {done}/{total} scenarios, {rate:.1f}/s")
        if done == total:
            out.write("\n")
        out.flush()

    return show


@dataclass(frozen=True)
class Where:
    """Where scenarios are revalued: ``in_process`` (this process, no Dask), else on Dask —
    ``scheduler`` (an address, or ``$DASK_SCHEDULER_ADDRESS``) or an embedded LocalCluster of
    ``workers`` processes (one per core by default)."""

    in_process: bool = False
    scheduler: str | None = None
    workers: int | None = None


def run(
    book_path: str | Path,
    market_path: str | Path,
    scenarios: Callable[..., Scenarios],
    *,
    historical: bool,
    where: Where = Where(),
    levels: Sequence[float] = LEVELS,
    es_level: float = ES_LEVEL,
    progress: TextIO | None = None,
) -> ScenarioRisk:
    """Revalue the book under ``scenarios(market)`` and measure the PnL by desk."""
    market = load_market(market_path)
    book = load_book(book_path, market=market)
    scen = scenarios(market)
    values = scen.values(market)
    show = _progress(progress) if progress is not None else None
    desks = list(book.desk.labels)
    t0 = time.perf_counter()
    if where.in_process:
        by_desk: FloatArray = group_pnl_by_block(
            ScenarioBook(book, market), values, book.desk.codes, len(desks), progress=show
        )
    else:
        with cluster(where.scheduler, workers=where.workers) as client:
            by_desk = distributed_group_pnl(client, book, market, values, book.desk.codes,
                                            len(desks), progress=show)  # fmt: skip
    seconds = time.perf_counter() - t0
    firm = by_desk.sum(axis=1)
    names = list(scen.names)
    frame = pl.DataFrame(
        {
            "scenario": np.repeat(np.array(names, dtype=object), len(desks) + 1),
            "desk": np.tile(np.array([*desks, "Firm"], dtype=object), len(names)),
            "pnl": np.column_stack([by_desk, firm]).ravel(),
        },
        schema={"scenario": pl.String, "desk": pl.String, "pnl": pl.Float64},
    )
    table = measures(by_desk, desks, levels=levels, es_level=es_level) if historical else None
    return ScenarioRisk(frame, table, worst_scenarios(firm, names), seconds, len(names))


def historical(
    book_path: str | Path,
    market_path: str | Path,
    history_path: str | Path,
    *,
    window: int = DEFAULT_WINDOW,
    max_fill_days: int = MAX_FILL_DAYS,
    where: Where = Where(),
    progress: TextIO | None = None,
) -> ScenarioRisk:
    """Historical VaR/ES of a book: the latest ``window`` 1-day changes of the history."""

    def make(market: object) -> Scenarios:
        from workbench.market.model import MarketSnapshot

        assert isinstance(market, MarketSnapshot)
        hist = load_history(history_path, market, max_fill_days=max_fill_days)
        return historical_scenarios(hist, market, window=window)

    return run(book_path, market_path, make, historical=True, where=where, progress=progress)


def stress(
    book_path: str | Path,
    market_path: str | Path,
    stresses_path: str | Path = STRESS_LIBRARY,
    *,
    where: Where = Where(in_process=True),
    progress: TextIO | None = None,
) -> ScenarioRisk:
    """The PnL of a book under each named stress of a stress file (the library by default;
    a handful of scenarios: in this process unless ``where`` says otherwise)."""
    return run(book_path, market_path, lambda m: stress_scenarios(m, stresses_path),
               historical=False, where=where, progress=progress)  # fmt: skip


def explain(
    book_path: str | Path, from_market: str | Path, to_market: str | Path
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """PnL explain of a book from one market file to another (docs/var.md): per position and
    by desk (then the firm), actual PnL by full revaluation against the Greeks' prediction by
    risk-factor class, with the unexplained rest (USD)."""
    m0, m1 = load_market(from_market), load_market(to_market)
    book = load_book(book_path, market=m0)
    risk = PortfolioPricer(book, m0).risk(m0)
    pv1 = PortfolioPricer(book, m1).pv(m1)
    kr = risk.key_rates
    greeks = Greeks(risk.pv, risk.pv_ccy, risk.delta, risk.gamma, risk.vega, risk.theta,
                    kr.rows, kr.quotes, kr.values)  # fmt: skip
    codes, labels = book.currency.codes, book.currency.labels
    fx0, fx1 = base_rate_column(m0, codes, labels), base_rate_column(m1, codes, labels)
    positions = explain_positions(book, m0, m1, greeks, pv1, fx0, fx1)
    return positions, explain_by(positions)


def write(result: ScenarioRisk, out: Path, stream: TextIO = sys.stdout) -> None:
    """Write ``pnl.parquet`` (and ``measures.parquet``, ``worst.parquet``) in ``out`` and print
    a summary."""
    out.mkdir(parents=True, exist_ok=True)
    result.pnl.write_parquet(out / "pnl.parquet")
    result.worst.write_parquet(out / "worst.parquet")
    per = result.seconds / max(result.scenarios, 1)
    stream.write(f"{result.scenarios} scenarios revalued in {result.seconds:.1f} s "
                 f"({per * 1e3:.0f} ms each); wrote {out}/pnl.parquet\n")  # fmt: skip
    if result.measures is not None:
        result.measures.write_parquet(out / "measures.parquet")
        with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=10, thousands_separator=","):
            stream.write(f"{result.measures}\n")
    else:
        wide = result.pnl.pivot(on="desk", index="scenario", values="pnl")
        with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=12, thousands_separator=","):
            stream.write(f"{wide}\n")


__all__ = ["ScenarioRisk", "Where", "explain", "historical", "run", "stress", "write"]
