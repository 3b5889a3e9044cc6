"""The end-of-day report's "Market risk" section: papermill runs the report on two days, the
second explains its PnL from the first's close; the section's numbers are the batch API's."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from workbench import scenario_risk
from workbench.book.reference import generate_reference_book
from workbench.market.history import save_history
from workbench.market.io import save_market
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.reports import market_risk
from workbench.reports.runner import EXIT_OK, run_eod
from workbench.reports.snapshot import load_snapshot

TODAY = date(2026, 11, 24)
YESTERDAY = date(2026, 11, 23)
WINDOW = 80
EXACT = 1e-12


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Today's market, yesterday's (the history's day before), 61 days of history and a
    300-position book."""
    folder = tmp_path_factory.mktemp("eod-market-risk-files")
    today = generate_reference_market(as_of=TODAY)
    hist = generate_history(today, days=WINDOW + 21, seed=3)
    save_history(hist, folder / "history.parquet")
    before = hist.filter(pl.col("date") == YESTERDAY)
    values = dict(zip(before["quote_id"].to_list(), before["value"].to_list(), strict=True))
    quotes = np.array([values[q] for q in today.quote_ids])
    save_market(today, folder / "today.json")
    save_market(today.with_quote_values(quotes).with_as_of(YESTERDAY), folder / "yesterday.json")
    generate_reference_book(today, positions=300, seed=4).write_parquet(folder / "book.parquet")
    return {
        "book": folder / "book.parquet",
        "today": folder / "today.json",
        "yesterday": folder / "yesterday.json",
        "history": folder / "history.parquet",
    }


def _run(files: dict[str, Path], out: Path, day: date, **params: object) -> None:
    stream = io.StringIO()
    code = run_eod(
        as_of=day,
        out_dir=out,
        service=None,
        batch=True,
        book=files["book"],
        market=files["today" if day == TODAY else "yesterday"],
        parameters={"n_paths": 2_000, **params},
        cell_timeout_s=300.0,
        run_timeout_s=600.0,
        progress=False,
        stream=stream,
    )
    assert code == EXIT_OK, stream.getvalue()


@pytest.fixture(scope="module")
def reports(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Yesterday's report (no history: no VaR; no earlier report: no explain), then today's
    with VaR over the history's latest 40 days and PnL explain from yesterday's."""
    out = tmp_path_factory.mktemp("eod-market-risk")
    _run(files, out, YESTERDAY)
    _run(files, out, TODAY, history_path=str(files["history"]), window=WINDOW)
    return out


def test_the_first_report_says_it_has_nothing_to_explain_from(reports: Path) -> None:
    day = reports / YESTERDAY.isoformat()
    summary = json.loads((day / "summary.json").read_text())["market_risk"]
    assert summary["explain"] is None
    assert summary["var"] is None
    assert summary["explain_from"] == "No previous report: nothing to explain from."
    html = (day / "report.html").read_text()
    assert ">Market risk<" in html
    assert "No previous report: nothing to explain from." in html
    assert "No history file (history_path): no VaR or ES." in html
    assert not (day / market_risk.EXPLAIN_FILE).exists()
    assert (day / market_risk.STRESS_FILE).exists()


def test_the_section_s_numbers_are_the_batch_api_s(reports: Path, files: dict[str, Path]) -> None:
    """VaR/ES, stresses and explain read back from the report equal the batch API's on the
    report's pinned inputs (explain: yesterday's pinned book and market to today's market),
    to the last bits that differ between two processes (1e-12 relative)."""
    day, before = reports / TODAY.isoformat(), reports / YESTERDAY.isoformat()
    book, market = day / "snapshot_book.parquet", day / "snapshot_market.json"
    var = scenario_risk.historical(book, market, files["history"], window=WINDOW,
                                   where=scenario_risk.Where(in_process=True))  # fmt: skip
    assert var.measures is not None
    assert_frame_equal(
        pl.read_parquet(day / market_risk.MEASURES_FILE), var.measures, rel_tol=EXACT, abs_tol=1e-6
    )
    stress = scenario_risk.stress(book, market)
    assert_frame_equal(
        pl.read_parquet(day / market_risk.STRESS_FILE), stress.pnl, rel_tol=EXACT, abs_tol=1e-6
    )
    _, explained = scenario_risk.explain(
        before / "snapshot_book.parquet", before / "snapshot_market.json", market
    )
    assert_frame_equal(
        pl.read_parquet(day / market_risk.EXPLAIN_FILE), explained, rel_tol=EXACT, abs_tol=1e-6
    )

    summary = json.loads((day / "summary.json").read_text())["market_risk"]
    firm = var.measures.filter(pl.col("group") == "Firm").row(0, named=True)
    assert summary["var"] == {
        k: pytest.approx(v, rel=EXACT) for k, v in firm.items() if k != "group"
    }
    assert summary["history_days"] == WINDOW
    assert summary["explain"]["actual"] == pytest.approx(explained["actual"][-1], rel=EXACT)
    assert summary["explain_from"] == f"from {before}"
    worst = stress.pnl.filter(pl.col("desk") == "Firm").sort("pnl").row(0, named=True)
    assert summary["worst_stress"]["scenario"] == worst["scenario"]
    assert summary["worst_stress"]["pnl"] == pytest.approx(worst["pnl"], rel=EXACT)
    html = (day / "report.html").read_text()
    for caption in (f"VaR and ES over {WINDOW} days", "Stress PnL by desk", "PnL explain by desk"):
        assert caption in html
    desks = pl.read_parquet(book)["desk"].unique().to_list()
    assert set(explained["desk"].to_list()) == {*desks, "Firm"}


def test_explain_s_actual_is_the_two_reports_pv_change(reports: Path) -> None:
    """The same book in both reports: the firm's explained PnL is today's PV less yesterday's
    (each report's own re-risk), and the Greeks leave little of a day's move unexplained."""
    day, before = reports / TODAY.isoformat(), reports / YESTERDAY.isoformat()
    explained = pl.read_parquet(day / market_risk.EXPLAIN_FILE)
    firm = explained.filter(pl.col("desk") == "Firm").row(0, named=True)
    pv = [float(pl.read_parquet(d / "snapshot.parquet")["pv"].sum()) for d in (day, before)]
    change = pv[0] - pv[1]
    assert firm["actual"] == pytest.approx(change, rel=1e-9)
    assert firm["carry"] != 0.0  # one calendar day of theta
    assert abs(firm["unexplained"]) < 0.05 * abs(firm["actual"])


def test_var_on_a_dask_cluster_equals_in_process(reports: Path, files: dict[str, Path]) -> None:
    """``scheduler="local"``: the section's VaR on an embedded Dask cluster (two workers)."""
    snap = load_snapshot(reports / TODAY.isoformat())
    kw = {"history_path": str(files["history"]), "window": WINDOW}
    here = market_risk.compute(snap, **kw)  # type: ignore[arg-type]
    there = market_risk.compute(snap, scheduler="local", **kw)  # type: ignore[arg-type]
    assert here.measures is not None
    assert there.measures is not None
    assert_frame_equal(here.measures, there.measures, rel_tol=1e-10, abs_tol=1e-6)
    assert_frame_equal(here.stress, there.stress)


def test_the_book_filter_keeps_the_section_to_its_desks(reports: Path, tmp_path: Path) -> None:
    """With a book filter, stresses and explain cover only the matching desks' positions: the
    batch API's numbers on the book cut to them."""
    day, before = reports / TODAY.isoformat(), reports / YESTERDAY.isoformat()
    snap = load_snapshot(day)
    book = pl.read_parquet(day / "snapshot_book.parquet")
    desk = book["desk"].value_counts(sort=True)["desk"][0]
    got = market_risk.compute(
        snap, history_path="", previous_snapshot=str(before / "snapshot.parquet"), book_filter=desk
    )
    assert got.measures is None
    book.filter(pl.col("desk") == desk).write_parquet(tmp_path / "cut.parquet")
    assert set(got.stress["desk"].to_list()) == {desk, "Firm"}
    stress = scenario_risk.stress(tmp_path / "cut.parquet", day / "snapshot_market.json")
    assert_frame_equal(got.stress, stress.pnl, rel_tol=EXACT, abs_tol=1e-6)
    previous = pl.read_parquet(before / "snapshot_book.parquet").filter(pl.col("desk") == desk)
    previous.write_parquet(tmp_path / "cut_before.parquet")
    _, explained = scenario_risk.explain(
        tmp_path / "cut_before.parquet",
        before / "snapshot_market.json",
        day / "snapshot_market.json",
    )
    assert got.explain is not None
    assert_frame_equal(got.explain, explained, rel_tol=EXACT, abs_tol=1e-6)
