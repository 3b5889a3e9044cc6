"""Scenario risk in batch: historical VaR/ES, stresses and PnL explain of a book.

The door the ``workbench var`` and ``workbench stress`` commands go through: load the book,
the market and the history or stress file, build the scenarios
(:mod:`workbench.risk.scenarios`), revalue every position under each
(:mod:`workbench.pricing.revaluation`), sum the PnL by desk and compute the measures
(:mod:`workbench.risk.loss`). Results are Polars frames, written as Parquet by the commands.
"""

from __future__ import annotations

import os
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
from workbench.market.model import MarketSnapshot
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import group_pnl_by_block
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.explain import explain_by, explain_positions
from workbench.risk.groupings import GROUP_COLUMNS, Grouping, cells, grouping, parse_by, sum_cells
from workbench.risk.loss import (
    ES_LEVEL,
    LEVELS,
    expected_shortfall,
    measures,
    var,
    worst_scenarios,
)
from workbench.risk.scenarios import (
    DEFAULT_WINDOW,
    STRESS_LIBRARY,
    Scenarios,
    historical_scenarios,
    stress_scenarios,
)
from workbench.scenario_cluster import cluster, distributed_group_pnl, distributed_pnl_and_gap
from workbench.scenario_greeks import GreeksGap, greeks_gap, greeks_of


@dataclass(frozen=True)
class ScenarioRisk:
    """What a run of scenarios gives.

    ``pnl``: PnL per scenario and desk, long (``scenario``, ``desk``, ``pnl`` USD), the firm
    as desk ``"Firm"``; ``measures``: :func:`workbench.risk.loss.measures` by desk and firm
    (historical runs) or None; ``worst``: the firm's worst scenarios; ``seconds``: the
    revaluation's wall time; ``scenarios``: how many; ``greeks``: the Greeks' estimate beside
    full revaluation, when asked for (:func:`greeks_gap`); ``by``: the PnL and measures of
    each grouping asked for beyond the desks (:class:`GroupRisk`, the desks first).
    """

    pnl: pl.DataFrame
    measures: pl.DataFrame | None
    worst: pl.DataFrame
    seconds: float
    scenarios: int
    greeks: GreeksGap | None = None
    by: tuple[GroupRisk, ...] = ()


@dataclass(frozen=True)
class GroupRisk:
    """One grouping's results: ``column`` (a book column, or ``asset_class``); ``pnl``, long:
    ``scenario``, ``group``, ``pnl`` (USD; the groups only, the firm is in
    :attr:`ScenarioRisk.pnl`); ``measures``: :func:`workbench.risk.loss.measures` of its
    groups and the firm, whose component ES sum to the firm's ES (historical runs), or None."""

    column: str
    pnl: pl.DataFrame
    measures: pl.DataFrame | None


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
    greeks: bool = False,
    by: str | Sequence[str] = ("desk",),
) -> ScenarioRisk:
    """Revalue the book under ``scenarios(market)`` and measure the PnL by desk, and by each
    grouping of ``by`` (book columns or ``asset_class``, :data:`GROUP_COLUMNS`; a list or
    ``"desk,currency"``) when it asks for more than the desks; with ``greeks``, also the
    Greeks' estimate of every scenario and where it misses (:func:`greeks_gap`, where the
    scenarios are revalued: in this process or by the same Dask tasks).

    Raises
    ------
    ValueError
        If ``by`` names something other than :data:`GROUP_COLUMNS`.
    """
    market = load_market(market_path)
    book = load_book(book_path, market=market)
    scen = scenarios(market)
    values = scen.values(market)
    show = _progress(progress) if progress is not None else None
    desks = list(book.desk.labels)
    names = list(scen.names)
    # the desks first (``pnl`` and ``measures``), then each other grouping: all summed from
    # one revaluation by cell (workbench.risk.groupings)
    asked = parse_by(by)
    groupings = [Grouping("desk", book.desk.labels, book.desk.codes)]
    groupings += [grouping(book, c) for c in asked if c != "desk"]
    cut = cells(groupings)
    t0 = time.perf_counter()
    gap: GreeksGap | None = None
    if where.in_process:
        threads = len(os.sched_getaffinity(0))  # the pricers of a block side by side
        by_cell: FloatArray = group_pnl_by_block(
            ScenarioBook(book, market, threads=threads), values, cut.codes, cut.n, progress=show
        )
        if greeks:
            gap = greeks_gap(book, market, values, names)
    else:
        with cluster(where.scheduler, workers=where.workers) as client:
            if greeks:
                by_cell, gap = distributed_pnl_and_gap(client, book, market, values, cut.codes,
                                                       cut.n, names, progress=show)  # fmt: skip
            else:
                by_cell = distributed_group_pnl(client, book, market, values, cut.codes, cut.n,
                                                progress=show)  # fmt: skip
    seconds = time.perf_counter() - t0
    sums = [sum_cells(by_cell, of, len(g.labels)) if len(groupings) > 1 else by_cell
            for g, of in zip(groupings, cut.groups, strict=True)]  # fmt: skip
    by_desk = sums[0]
    firm = by_desk.sum(axis=1)
    frame = pl.DataFrame(
        {
            "scenario": np.repeat(np.array(names, dtype=object), len(desks) + 1),
            "desk": np.tile(np.array([*desks, "Firm"], dtype=object), len(names)),
            "pnl": np.column_stack([by_desk, firm]).ravel(),
        },
        schema={"scenario": pl.String, "desk": pl.String, "pnl": pl.Float64},
    )
    table = measures(by_desk, desks, levels=levels, es_level=es_level) if historical else None
    grouped = tuple(
        GroupRisk(
            g.column,
            _long(names, g.labels, x),
            measures(x, g.labels, levels=levels, es_level=es_level) if historical else None,
        )
        for g, x in zip(groupings, sums, strict=True)
        if asked != ("desk",)
    )
    return ScenarioRisk(frame, table, worst_scenarios(firm, names), seconds, len(names), gap,
                        grouped)  # fmt: skip


def _long(names: Sequence[str], labels: Sequence[str], pnl: FloatArray) -> pl.DataFrame:
    """(scenarios × groups) PnL as rows ``scenario``, ``group``, ``pnl``."""
    return pl.DataFrame(
        {
            "scenario": np.repeat(np.array(names, dtype=object), len(labels)),
            "group": np.tile(np.array(list(labels), dtype=object), len(names)),
            "pnl": pnl.ravel(),
        },
        schema={"scenario": pl.String, "group": pl.String, "pnl": pl.Float64},
    )


def historical(
    book_path: str | Path,
    market_path: str | Path,
    history_path: str | Path,
    *,
    window: int = DEFAULT_WINDOW,
    max_fill_days: int = MAX_FILL_DAYS,
    where: Where = Where(),
    progress: TextIO | None = None,
    greeks: bool = False,
    by: str | Sequence[str] = ("desk",),
) -> ScenarioRisk:
    """Historical VaR/ES of a book: the latest ``window`` 1-day changes of the history, by
    desk and by each grouping of ``by`` (:func:`run`); with ``greeks``, the Greeks' estimate
    of every day beside it (:func:`greeks_gap`)."""

    def make(market: object) -> Scenarios:

        assert isinstance(market, MarketSnapshot)
        hist = load_history(history_path, market, max_fill_days=max_fill_days)
        return historical_scenarios(hist, market, window=window)

    return run(book_path, market_path, make, historical=True, where=where, progress=progress,
               greeks=greeks, by=by)  # fmt: skip


def stress(
    book_path: str | Path,
    market_path: str | Path,
    stresses_path: str | Path = STRESS_LIBRARY,
    *,
    where: Where = Where(in_process=True),
    progress: TextIO | None = None,
    by: str | Sequence[str] = ("desk",),
) -> ScenarioRisk:
    """The PnL of a book under each named stress of a stress file (the library by default;
    a handful of scenarios: in this process unless ``where`` says otherwise), by desk and by
    each grouping of ``by`` (:func:`run`)."""
    return run(book_path, market_path, lambda m: stress_scenarios(m, stresses_path),
               historical=False, where=where, progress=progress, by=by)  # fmt: skip


def explain(
    book_path: str | Path, from_market: str | Path, to_market: str | Path
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """PnL explain of a book from one market file to another (docs/var.md): per position and
    by desk (then the firm), actual PnL by full revaluation against the Greeks' prediction by
    risk-factor class, with the unexplained rest (USD)."""
    m0, m1 = load_market(from_market), load_market(to_market)
    book = load_book(book_path, market=m0)
    greeks = greeks_of(PortfolioPricer(book, m0, key_rates="jacobian").risk(m0))
    pv1 = PortfolioPricer(book, m1).pv(m1)
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
    if result.greeks is not None:
        _write_greeks(result.greeks, out, stream)
    if result.by:
        _write_by(result.by, out, stream)
    if result.measures is not None:
        result.measures.write_parquet(out / "measures.parquet")
        with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=10, thousands_separator=","):
            stream.write(f"{result.measures}\n")
    else:
        wide = result.pnl.pivot(on="desk", index="scenario", values="pnl")
        with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=12, thousands_separator=","):
            stream.write(f"{wide}\n")


def _write_by(by: Sequence[GroupRisk], out: Path, stream: TextIO) -> None:
    """``pnl_by.parquet`` and (historical runs) ``measures_by.parquet``: every grouping's rows
    with its name in a first column ``grouping``; each grouping's measures printed."""
    pnl = [g.pnl.select(pl.lit(g.column).alias("grouping"), pl.all()) for g in by]
    pl.concat(pnl).write_parquet(out / "pnl_by.parquet")
    tables = [g.measures.select(pl.lit(g.column).alias("grouping"), pl.all())
              for g in by if g.measures is not None]  # fmt: skip
    if tables:
        pl.concat(tables).write_parquet(out / "measures_by.parquet")
        for g, table in zip(by, tables, strict=True):
            with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=10,
                           thousands_separator=","):  # fmt: skip
                stream.write(f"by {g.column}:\n{table.drop('grouping')}\n")
    stream.write(f"wrote {out}/pnl_by.parquet" + (" and measures_by.parquet" if tables else "")
                 + f" ({', '.join(g.column for g in by)})\n")  # fmt: skip


def _write_greeks(gap: GreeksGap, out: Path, stream: TextIO) -> None:
    """``greeks_pnl.parquet`` and ``greeks_gap.parquet``, and the firm's VaR/ES both ways."""
    gap.by_desk.write_parquet(out / "greeks_pnl.parquet")
    gap.worst.write_parquet(out / "greeks_gap.parquet")
    firm = gap.by_desk.filter(pl.col("desk") == "Firm")
    full, est = firm["full"].to_numpy(), firm["greeks"].to_numpy()
    largest = float(np.abs(gap.worst["gap"].to_numpy()).max()) if gap.worst.height else 0.0
    stream.write(
        f"Firm VaR 99%: {var(full, 0.99):,.0f} by full revaluation, {var(est, 0.99):,.0f} by "
        f"the Greeks; ES 97.5%: {expected_shortfall(full, 0.975):,.0f} and "
        f"{expected_shortfall(est, 0.975):,.0f}; the largest gap of a position: {largest:,.0f} "
        f"(greeks_gap.parquet)\n"
    )


__all__ = [
    "GROUP_COLUMNS",
    "GreeksGap",
    "GroupRisk",
    "ScenarioRisk",
    "Where",
    "explain",
    "greeks_gap",
    "historical",
    "run",
    "stress",
    "write",
]
