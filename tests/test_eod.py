"""The end-of-day report: papermill really runs notebooks/eod_report.ipynb on a 1,000-position
book, in batch mode and against a live service; failures are loud and leave the last good
report untouched."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import nbformat
import polars as pl
import pytest

import workbench
from workbench.book.reference import generate_reference_book
from workbench.market.io import save_market
from workbench.market.reference import generate_reference_market
from workbench.reports import sections
from workbench.reports.runner import (
    EXIT_BAD_INPUT,
    EXIT_CELL_FAILED,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_TIMEOUT,
    run_eod,
)
from workbench.risk.limits import LimitConfig

TODAY = date(2026, 11, 24)
YESTERDAY = date(2026, 11, 23)
PATHS = 4_096
SECTIONS = (
    "PV and Greeks by desk",
    "By book",
    "By currency",
    "Key-rate DV01 ladder",
    "CS01 by index",
    "Vega by surface",
    "Limits",
    "Top movers",
    "Curves",
    "Engine latency and staleness",
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Markets for two days, a 1,000-position book and a limits file with one tiny limit."""
    folder = tmp_path_factory.mktemp("eod-files")
    market = generate_reference_market(as_of=TODAY)
    save_market(market, folder / "market.json")
    save_market(generate_reference_market(as_of=YESTERDAY), folder / "market_prev.json")
    generate_reference_book(market, positions=1_000, seed=5).write_parquet(folder / "book.parquet")
    limits = [{"measure": "dv01", "limit": 1.0}, {"measure": "vega", "limit": 1e15}]
    (folder / "limits.json").write_text(json.dumps(limits))
    return {
        "book": folder / "book.parquet",
        "market": folder / "market.json",
        "market_prev": folder / "market_prev.json",
        "limits": folder / "limits.json",
    }


def _batch(files: dict[str, Path], out: Path, day: date, **params: object) -> tuple[int, str]:
    stream = io.StringIO()
    code = run_eod(
        as_of=day,
        out_dir=out,
        service=None,
        batch=True,
        book=files["book"],
        market=files["market"] if day == TODAY else files["market_prev"],
        parameters={"n_paths": PATHS, **params},
        cell_timeout_s=120.0,
        run_timeout_s=300.0,
        stale_after_s=60.0,
        progress=True,
        stream=stream,
    )
    return code, stream.getvalue()


@pytest.fixture(scope="module")
def reports(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Yesterday's and today's batch reports (today's with the limits file)."""
    out = tmp_path_factory.mktemp("eod-reports")
    code, log = _batch(files, out, YESTERDAY)
    assert code == EXIT_OK, log
    code, log = _batch(files, out, TODAY, limits_path=str(files["limits"]))
    assert code == EXIT_OK, log
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def test_batch_report_has_every_section_and_no_code(reports: Path, files: dict[str, Path]) -> None:
    day = reports / TODAY.isoformat()
    names = {p.name for p in day.iterdir()}
    for f in ("report.ipynb", "report.html", "summary.json", "snapshot.parquet"):
        assert f in names
    assert "snapshot_key_rates.parquet" in names
    text = (day / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}<" in text, title
    book = pl.read_parquet(files["book"])
    for desk in book["desk"].unique().to_list():
        assert desk in text  # the by-desk table lists every desk
    assert "CDX.IG" in text
    assert ">10Y<" in text
    assert "Change by desk" in text
    assert text.count("<img") >= 4  # desk PV, key-rate ladder, vega, curves
    assert "sections.obtain" not in text  # no code cells in the HTML
    assert "Traceback" not in text
    assert not any(p.name.startswith(".staging") for p in reports.iterdir())


def test_summary_matches_the_snapshot(reports: Path) -> None:
    day = reports / TODAY.isoformat()
    summary = json.loads((day / "summary.json").read_text())
    snap = pl.read_parquet(day / "snapshot.parquet")
    meta = json.loads((day / "snapshot.json").read_text())
    assert summary["status"] == "ok"
    assert summary["exit_code"] == 0
    assert summary["snapshot_id"] == meta["identity"]["snapshot_id"]
    assert summary["totals"]["positions"] == snap.height == 1_000
    assert summary["totals"]["pv"] == pytest.approx(snap["pv"].sum(), rel=1e-12)
    assert summary["totals"]["dv01"] == pytest.approx(snap["dv01"].sum(), rel=1e-12)
    breached = {b["measure"] for b in summary["breaches"]}
    assert breached == {"dv01"}  # 1 USD per bp is breached, 1e15 of vega is not
    assert summary["previous_snapshot"].endswith(f"{YESTERDAY.isoformat()}/snapshot.parquet")
    for stage in ("snapshot", "notebook", "html", "total"):
        assert summary["timings_s"][stage] > 0.0
    kr = pl.read_parquet(day / "snapshot_key_rates.parquet")
    assert kr["currency"].null_count() == 0
    assert kr.height > 0


def test_top_movers_are_today_minus_yesterday(reports: Path) -> None:
    today = pl.read_parquet(reports / TODAY.isoformat() / "snapshot.parquet")
    before = pl.read_parquet(reports / YESTERDAY.isoformat() / "snapshot.parquet")
    by_desk, top = sections.top_movers(today, before, 5)
    expect = (
        today.group_by("desk")
        .agg(pl.col("pv").sum())
        .join(before.group_by("desk").agg(pl.col("pv").sum().alias("prev")), on="desk")
        .with_columns((pl.col("pv") - pl.col("prev")).alias("want"))
    )
    got = by_desk.join(expect, on="desk")
    assert got.height == expect.height
    assert (got["d_pv"] - got["want"]).abs().max() < 1e-6 * today["pv"].abs().sum()  # type: ignore[operator]
    assert top.height == 5
    assert top["d_pv"].abs().to_list() == sorted(top["d_pv"].abs().to_list(), reverse=True)
    assert top["d_pv"].abs().max() > 0.0  # one day of theta and curve roll moved something


def test_rerun_same_day_is_idempotent(reports: Path, files: dict[str, Path]) -> None:
    day = reports / TODAY.isoformat()
    before = json.loads((day / "summary.json").read_text())
    code, log = _batch(files, reports, TODAY, limits_path=str(files["limits"]))
    assert code == EXIT_OK, log
    after = json.loads((day / "summary.json").read_text())
    assert after["snapshot_id"] == before["snapshot_id"]
    assert after["totals"] == before["totals"]
    assert after["previous_snapshot"] == before["previous_snapshot"]  # not itself
    assert sorted(p.name for p in reports.iterdir()) == [YESTERDAY.isoformat(), TODAY.isoformat()]


def test_broken_parameter_keeps_partial_notebook_and_last_good_report(
    reports: Path, files: dict[str, Path]
) -> None:
    day = reports / TODAY.isoformat()
    good = _digests(day)
    code, log = _batch(files, reports, TODAY, limits_path=str(files["limits"]) + ".missing")
    assert code == EXIT_CELL_FAILED, log
    assert _digests(day) == good  # the published report is untouched
    failed = day / "failed" / "report.ipynb"
    nb = nbformat.read(failed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors
    assert errors[0]["ename"] == "FileNotFoundError"
    assert "limits.json.missing" in errors[0]["evalue"]
    assert json.loads((day / "failed" / "summary.json").read_text())["exit_code"] == 3
    assert not any(p.name.startswith(".staging") for p in reports.iterdir())


def test_bad_input_exits_2_without_running(files: dict[str, Path], tmp_path: Path) -> None:
    code, log = _batch(files, tmp_path, TODAY, no_such_parameter=1)
    assert code == EXIT_BAD_INPUT
    assert "no_such_parameter" in log
    code, log = _batch(files, tmp_path, YESTERDAY.replace(day=20))  # market of another day
    assert code == EXIT_BAD_INPUT
    assert "is as of" in log
    assert not (tmp_path / "2026-11-20").exists()


def test_run_timeout_exits_5(files: dict[str, Path], tmp_path: Path) -> None:
    stream = io.StringIO()
    code = run_eod(
        as_of=TODAY,
        out_dir=tmp_path,
        service=None,
        batch=True,
        book=files["book"],
        market=files["market"],
        parameters={"n_paths": PATHS},
        run_timeout_s=1e-3,
        progress=False,
        stream=stream,
    )
    assert code == EXIT_TIMEOUT, stream.getvalue()
    assert not (tmp_path / TODAY.isoformat() / "report.html").exists()


def test_missing_service_without_batch_exits_4(tmp_path: Path) -> None:
    stream = io.StringIO()
    code = run_eod(
        as_of=TODAY,
        out_dir=tmp_path,
        service="no-such-service",
        batch=False,
        book=None,
        market=None,
        parameters={},
        progress=False,
        stream=stream,
    )
    assert code == EXIT_SERVICE
    assert "no-such-service" in stream.getvalue()
    assert not (tmp_path / TODAY.isoformat() / "report.html").exists()


@pytest.fixture
def service(files: dict[str, Path]) -> Iterator[workbench.Client]:
    svc = workbench.start(
        files["book"],
        files["market"],
        name="eodtest",
        n_paths=PATHS,
        feed="none",
        limits=(LimitConfig(measure="dv01", limit=1.0),),
        timeout_s=240,
    )
    try:
        yield svc
    finally:
        svc.stop()


def test_service_report_records_generation_and_engine_figures(
    service: workbench.Client, tmp_path: Path
) -> None:
    stream = io.StringIO()
    common = {
        "as_of": TODAY,
        "out_dir": tmp_path,
        "service": "eodtest",
        "batch": False,
        "book": None,
        "market": None,
        "parameters": {},
        "progress": True,
        "stream": stream,
    }
    code = run_eod(**common, stale_after_s=120.0)  # type: ignore[arg-type]
    assert code == EXIT_OK, stream.getvalue()
    day = tmp_path / TODAY.isoformat()
    summary = json.loads((day / "summary.json").read_text())
    ident = summary["snapshot"]
    assert ident["source"] == "service"
    assert ident["service"] == "eodtest"
    _, live = service.snapshot()
    assert ident["generation"] == live["generation"]  # no feed: nothing moved since
    assert {b["measure"] for b in summary["breaches"]} == {"dv01"}  # the service's limit
    text = (day / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}<" in text, title
    assert f"generation {ident['generation']}" in text
    assert "flush_to_publish_p99_ms" in text
    assert "aggregator" in text
    assert "rates-0" in text
    assert text.count("<img") >= 4

    stale = run_eod(**common, stale_after_s=1e-6)  # type: ignore[arg-type]
    assert stale == EXIT_SERVICE
    assert "stale" in stream.getvalue()
