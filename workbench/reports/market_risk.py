"""The end-of-day report's "Market risk" section: VaR/ES, stresses and PnL explain.

Computed on the report's pinned inputs (``snapshot_book.*`` and ``snapshot_market.json``,
:mod:`workbench.reports.snapshot`) through the batch API (:mod:`workbench.scenario_risk`);
PnL explain starts from the previous report's pinned book and market. Amounts in USD, losses
positive in the VaR/ES table (docs/var.md). The section's tables are saved next to the report:

==================================  ==========================================================
file                                content
==================================  ==========================================================
``market_risk_measures.parquet``    VaR/ES by desk, then ``Firm`` (:func:`workbench.risk.loss.
                                    measures` columns); without a history file: not written
``market_risk_stress.parquet``      stress PnL, long: ``scenario``, ``desk``, ``pnl``
``market_risk_explain.parquet``     PnL explain by desk, then ``Firm``: ``actual``, the
                                    components, ``unexplained``; without a previous report:
                                    not written
==================================  ==========================================================
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

import workbench.scenario_risk as scenario_risk
from workbench.reports.snapshot import BOOK_STEM, MARKET_FILE, Snapshot, pinned_book
from workbench.risk.explain import COMPONENTS
from workbench.risk.scenarios import DEFAULT_WINDOW, STRESS_LIBRARY

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MEASURES_FILE: Final = "market_risk_measures.parquet"
STRESS_FILE: Final = "market_risk_stress.parquet"
EXPLAIN_FILE: Final = "market_risk_explain.parquet"


@dataclass(frozen=True)
class MarketRisk:
    """What the section shows.

    ``measures``: VaR/ES by desk and firm (None without a history file); ``worst``: the
    firm's worst history days; ``stress``: stress PnL, long (``scenario``, ``desk``,
    ``pnl``); ``explain``: PnL explain by desk and firm (None without a previous report);
    ``explain_from``: the previous report's snapshot id and as-of, or why there is no
    explain; ``scenarios``: history days used; ``seconds``: wall time per part.
    """

    measures: pl.DataFrame | None
    worst: pl.DataFrame | None
    stress: pl.DataFrame
    explain: pl.DataFrame | None
    explain_from: str
    scenarios: int
    seconds: dict[str, float] = field(default_factory=dict)


def where(scheduler: str) -> scenario_risk.Where:
    """Where the history is revalued: ``""`` in this process, ``"local"`` an embedded Dask
    LocalCluster (one worker per core), else the address of a Dask scheduler."""
    if not scheduler:
        return scenario_risk.Where(in_process=True)
    if scheduler == "local":
        return scenario_risk.Where()
    return scenario_risk.Where(scheduler=scheduler)


def pinned(snap: Snapshot) -> bool:
    """Whether the snapshot kept the book and market it priced (every report since they
    were pinned does): the section needs them."""
    return MARKET_FILE in snap.inputs and any(n.startswith(BOOK_STEM + ".") for n in snap.inputs)


def _pinned_inputs(folder: Path, inputs: dict[str, bytes], book_filter: str) -> tuple[Path, Path]:
    """Write a snapshot's pinned book (only the desks and books ``book_filter`` matches) and
    market into ``folder``; return their paths."""
    from workbench.reports.sections import matches

    market = folder / MARKET_FILE
    market.write_bytes(inputs[MARKET_FILE])
    name = next(n for n in inputs if n.startswith(BOOK_STEM + "."))
    book = folder / name
    book.write_bytes(inputs[name])
    if book_filter:
        if book.suffix == ".csv":
            frame = pl.read_csv(book, infer_schema=False)
            frame.filter(matches(frame, book_filter)).write_csv(book)
        else:
            frame = pl.read_parquet(book)
            frame.filter(matches(frame, book_filter)).write_parquet(book)
    return book, market


def _previous_inputs(previous_snapshot: str) -> dict[str, bytes] | str:
    """The previous report's pinned book and market, or why they cannot be had."""
    if not previous_snapshot:
        return "No previous report: nothing to explain from."
    folder = Path(previous_snapshot).parent
    book = pinned_book(folder)
    market = folder / MARKET_FILE
    if book is None or not market.is_file():
        return f"The previous report ({folder}) kept no pinned book and market: no explain."
    return {MARKET_FILE: market.read_bytes(), book.name: book.read_bytes()}


def compute(
    snap: Snapshot,
    *,
    history_path: str,
    window: int = DEFAULT_WINDOW,
    stresses_path: str = "",
    previous_snapshot: str = "",
    scheduler: str = "",
    book_filter: str = "",
) -> MarketRisk:
    """VaR/ES over the latest ``window`` days of ``history_path`` (none if empty), the stresses
    of ``stresses_path`` (the library if empty) and PnL explain from the report of
    ``previous_snapshot`` (its ``snapshot.parquet``; none if empty) for the positions
    ``book_filter`` keeps; VaR on ``scheduler`` (:func:`where`), the rest in this process."""
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="workbench-market-risk-") as tmp:
        today = Path(tmp) / "today"
        today.mkdir()
        book, market = _pinned_inputs(today, snap.inputs, book_filter)
        measures = worst = None
        scenarios = 0
        if history_path:
            t0 = time.perf_counter()
            run = scenario_risk.historical(book, market, history_path, window=int(window),
                                           where=where(scheduler))  # fmt: skip
            measures, worst, scenarios = run.measures, run.worst, run.scenarios
            seconds["var"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stress = scenario_risk.stress(book, market, stresses_path or STRESS_LIBRARY).pnl
        seconds["stress"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        explain, explain_from = _explain(Path(tmp), previous_snapshot, market, book_filter)
        seconds["explain"] = time.perf_counter() - t0
    return MarketRisk(measures, worst, stress, explain, explain_from, scenarios, seconds)


def _explain(
    tmp: Path, previous_snapshot: str, market: Path, book_filter: str
) -> tuple[pl.DataFrame | None, str]:
    got = _previous_inputs(previous_snapshot)
    if isinstance(got, str):
        return None, got
    folder = tmp / "previous"
    folder.mkdir()
    book, before = _pinned_inputs(folder, got, book_filter)
    try:
        _, by_desk = scenario_risk.explain(book, before, market)
    except ValueError as exc:
        if "different quotes" not in str(exc):
            raise
        return None, f"The previous report's market has other quotes than today's: {exc}"
    return by_desk, f"from {Path(previous_snapshot).parent}"


def stress_table(stress: pl.DataFrame) -> pl.DataFrame:
    """Stress PnL (USD) with one row per desk, then ``Firm``, and one column per stress."""
    order = stress["scenario"].unique(maintain_order=True).to_list()
    desks = stress["desk"].unique(maintain_order=True).to_list()
    wide = stress.pivot(on="scenario", index="desk", values="pnl")
    return wide.select("desk", *order).sort(
        pl.col("desk").replace_strict({d: i for i, d in enumerate(desks)}, default=len(desks))
    )


def measures_table(measures: pl.DataFrame) -> pl.DataFrame:
    """VaR/ES with the group column named ``desk``."""
    return measures.rename({"group": "desk"})


def plot_explain(explain: pl.DataFrame) -> Figure:
    """The firm's PnL by component and the unexplained rest, with the actual PnL (USD)."""
    from matplotlib.figure import Figure

    firm = explain.filter(pl.col("desk") == "Firm").row(0, named=True)
    names = ["actual", *COMPONENTS, "unexplained"]
    values = [float(firm[n]) for n in names]
    fig = Figure(figsize=(9.0, 3.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    colours = ["#357"] + ["#3a7" if v >= 0 else "#c44" for v in values[1:-1]] + ["#999"]
    ax.bar(names, values, color=colours)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title("Firm PnL explain (USD)")
    ax.tick_params(labelsize=8)
    return fig


def save(risk: MarketRisk, folder: Path) -> None:
    """Write the section's tables (the files of the module docstring) into ``folder``."""
    if risk.measures is not None:
        risk.measures.write_parquet(folder / MEASURES_FILE)
    risk.stress.write_parquet(folder / STRESS_FILE)
    if risk.explain is not None:
        risk.explain.write_parquet(folder / EXPLAIN_FILE)


def results(risk: MarketRisk) -> dict[str, Any]:
    """The section's part of ``summary.json``: the firm's VaR/ES, worst stress, explain."""

    def firm(frame: pl.DataFrame | None, key: str) -> dict[str, Any] | None:
        if frame is None:
            return None
        row = frame.filter(pl.col(key) == "Firm").row(0, named=True)
        return {k: v for k, v in row.items() if k != key}

    firm_stress = risk.stress.filter(pl.col("desk") == "Firm").sort("pnl")
    worst = firm_stress.row(0, named=True) if firm_stress.height else None
    worst_stress = None if worst is None else {"scenario": worst["scenario"], "pnl": worst["pnl"]}
    return {
        "var": firm(risk.measures, "group"),
        "history_days": risk.scenarios,
        "worst_stress": worst_stress,
        "explain": firm(risk.explain, "desk"),
        "explain_from": risk.explain_from,
        "seconds": {k: round(v, 3) for k, v in risk.seconds.items() if math.isfinite(v)},
    }
