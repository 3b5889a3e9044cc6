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

from workbench._types import FloatArray, IntArray
from workbench.book.io import load_book
from workbench.book.schema import Book
from workbench.market.history import MAX_FILL_DAYS, load_history
from workbench.market.io import load_market
from workbench.market.model import MarketSnapshot
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.portfolio import BookRisk, PortfolioPricer
from workbench.pricing.revaluation import BLOCK, group_pnl_by_block
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.explain import GreekMap, Greeks, explain_by, explain_positions
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
from workbench.scenario_cluster import cluster, distributed_group_pnl


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
class ScenarioRisk:
    """What a run of scenarios gives.

    ``pnl``: PnL per scenario and desk, long (``scenario``, ``desk``, ``pnl`` USD), the firm
    as desk ``"Firm"``; ``measures``: :func:`workbench.risk.loss.measures` by desk and firm
    (historical runs) or None; ``worst``: the firm's worst scenarios; ``seconds``: the
    revaluation's wall time; ``scenarios``: how many; ``greeks``: the Greeks' estimate beside
    full revaluation, when asked for (:func:`greeks_gap`).
    """

    pnl: pl.DataFrame
    measures: pl.DataFrame | None
    worst: pl.DataFrame
    seconds: float
    scenarios: int
    greeks: GreeksGap | None = None


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


def greeks_gap(
    book: Book,
    market: MarketSnapshot,
    values: FloatArray,
    names: Sequence[str],
    *,
    worst: int = 1000,
    block: int = BLOCK,
) -> GreeksGap:
    """The Greeks' estimate of each scenario (rows of ``values``: the market's quotes, named
    ``names``) beside its full revaluation, by desk and for the ``worst`` (position, scenario)
    pairs, in this process. The Greeks are the book's own at ``market`` (delta, gamma, vega,
    key rates by the exact first derivative, theta; docs/greeks.md) applied to each
    scenario's quote and FX moves as PnL explain applies them (docs/var.md); scenarios are at
    today's date, so carry is 0."""
    book_now = ScenarioBook(book, market)
    # exact first-order key rates: the bumped ones miss up to ~20% of a forward-starting
    # swap's first-order PnL (docs/var.md)
    risk = PortfolioPricer(book, market, key_rates="jacobian").risk(market)
    gmap = GreekMap(book, market, _greeks(risk))
    today = np.asarray(market.quotes, np.float64)
    base = book_now.pv(today[None, :])[0]
    ccy = book.currency.codes
    fx0 = book_now.fx_rates(today[None, :])[0][ccy]
    desks, n_desks = book.desk.codes, len(book.desk.labels)
    sums = np.zeros((2, values.shape[0], n_desks))
    kept: list[tuple[FloatArray, IntArray, FloatArray, FloatArray]] = []
    for b in range(0, values.shape[0], block):
        v = values[b : b + block]
        full = book_now.pv(v) - base
        est = gmap.predicted(v - today, book_now.fx_rates(v)[:, ccy] - fx0, 0.0)
        for k, x in enumerate((full, est)):
            sums[k, b : b + v.shape[0]] = [np.bincount(desks, weights=r, minlength=n_desks)
                                           for r in x]  # fmt: skip
        gap = np.abs(full - est).ravel()
        top = np.argsort(-gap, kind="stable")[:worst]
        kept.append((gap[top], top + b * len(book), full.ravel()[top], est.ravel()[top]))
    size, flat, full_at, est_at = (np.concatenate([k[i] for k in kept]) for i in range(4))
    top = np.argsort(-size, kind="stable")[:worst]
    scen, pos = np.divmod(flat[top], len(book))
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
    full_d, est_d = (np.column_stack([x, x.sum(axis=1)]) for x in sums)
    labels = np.array([*book.desk.labels, "Firm"], dtype=object)
    by_desk = pl.DataFrame(
        {
            "scenario": np.repeat(names_all, n_desks + 1),
            "desk": np.tile(labels, len(names_all)),
            "full": full_d.ravel(),
            "greeks": est_d.ravel(),
            "gap": (full_d - est_d).ravel(),
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


def _greeks(risk: BookRisk) -> Greeks:
    kr = risk.key_rates
    return Greeks(risk.pv, risk.pv_ccy, risk.delta, risk.gamma, risk.vega, risk.theta,
                  kr.rows, kr.quotes, kr.values)  # fmt: skip


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
) -> ScenarioRisk:
    """Revalue the book under ``scenarios(market)`` and measure the PnL by desk; with
    ``greeks``, also the Greeks' estimate of every scenario and where it misses
    (:func:`greeks_gap`, in this process)."""
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
    gap = greeks_gap(book, market, values, names) if greeks else None
    return ScenarioRisk(frame, table, worst_scenarios(firm, names), seconds, len(names), gap)


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
) -> ScenarioRisk:
    """Historical VaR/ES of a book: the latest ``window`` 1-day changes of the history; with
    ``greeks``, the Greeks' estimate of every day beside it (:func:`greeks_gap`)."""

    def make(market: object) -> Scenarios:
        from workbench.market.model import MarketSnapshot

        assert isinstance(market, MarketSnapshot)
        hist = load_history(history_path, market, max_fill_days=max_fill_days)
        return historical_scenarios(hist, market, window=window)

    return run(book_path, market_path, make, historical=True, where=where, progress=progress,
               greeks=greeks)  # fmt: skip


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
    greeks = _greeks(PortfolioPricer(book, m0, key_rates="jacobian").risk(m0))
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
    if result.measures is not None:
        result.measures.write_parquet(out / "measures.parquet")
        with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=10, thousands_separator=","):
            stream.write(f"{result.measures}\n")
    else:
        wide = result.pnl.pivot(on="desk", index="scenario", values="pnl")
        with pl.Config(tbl_rows=50, float_precision=0, tbl_cols=12, thousands_separator=","):
            stream.write(f"{wide}\n")


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
    "GreeksGap",
    "ScenarioRisk",
    "Where",
    "explain",
    "greeks_gap",
    "historical",
    "run",
    "stress",
    "write",
]
