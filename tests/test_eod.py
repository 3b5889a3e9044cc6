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
import numpy as np
import polars as pl
import pytest
from service_helpers import wait

import workbench
from workbench.batch import BatchInputError, key_rate_frame, pin_market, rerisk
from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.client import FeedConfig, LossConfig
from workbench.market.io import load_market, save_market
from workbench.market.reference import generate_reference_market
from workbench.pricing.portfolio import PortfolioPricer
from workbench.reports import sections
from workbench.reports.close import SAME_QUOTES_RELATIVE, pv_disagreement
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
    # the inputs priced are pinned: the report can be rebuilt from the folder alone
    assert (day / "snapshot_market.json").read_bytes() == files["market"].read_bytes()
    assert (day / "snapshot_book.parquet").read_bytes() == files["book"].read_bytes()
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
        loss=LossConfig(enabled=False),  # no live VaR runs: not what is tested here
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


# --- a live service with a feed: one snapshot, rebuilt from its folder ------------------------

NUMERIC = ("pv", "pv_ccy", "delta", "gamma", "vega", "theta", "dv01", "cs01", "fx_delta",
           "eq_delta", "rates_gamma", "credit_gamma", "fx_gamma", "eq_gamma", "corr01")  # fmt: skip


def _close(a: np.ndarray, b: np.ndarray, floor: np.ndarray | float) -> float:
    """The largest |a - b| as a fraction of max(|a|, |b|, floor)."""
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(np.max(np.abs(a - b) / scale)) if a.size else 0.0


def _key_rates_on(book_file: Path, market_file: Path) -> pl.DataFrame:
    """Key-rate DV01s of the book repriced here on ``market_file`` (USD per 1bp)."""
    market = load_market(market_file)
    book = load_book(book_file, market=market)
    risk = PortfolioPricer(book, market, n_paths=PATHS).risk(market)
    return key_rate_frame(book, market, risk)


def _kr_gap(snapshot: pl.DataFrame, other: pl.DataFrame) -> float:
    joined = snapshot.join(other, on=["position_id", "quote_id"], how="full", suffix="_o")
    a = joined["kr_dv01"].fill_null(0.0).to_numpy()
    b = joined["kr_dv01_o"].fill_null(0.0).to_numpy()
    return _close(a, b, 1e-6)


@pytest.fixture
def live(files: dict[str, Path]) -> Iterator[workbench.Client]:
    """A service whose synthetic feed moves its quotes away from the start-of-day file."""
    svc = workbench.start(
        files["book"],
        files["market"],
        name="eodlive",
        n_paths=PATHS,
        feed=FeedConfig(mode="synthetic", rate=1_000.0),
        timeout_s=240,
        loss=LossConfig(enabled=False),  # no live VaR runs: not what is tested here
    )
    try:
        yield svc
    finally:
        svc.stop()


def test_live_report_is_one_snapshot_rebuilt_from_its_folder(
    live: workbench.Client, files: dict[str, Path], tmp_path: Path
) -> None:
    start_quotes = load_market(files["market"]).quotes

    def moved() -> bool:
        q = live.market().quotes["value"].to_numpy()
        return int(np.count_nonzero(q != start_quotes)) > 50

    wait(moved, 60.0, "the feed moving the service's quotes")
    stream = io.StringIO()
    code = run_eod(
        as_of=TODAY,
        out_dir=tmp_path / "live",
        service="eodlive",
        batch=False,
        book=None,
        market=None,
        parameters={},
        stale_after_s=120.0,
        stream=stream,
    )
    assert code == EXIT_OK, stream.getvalue()
    folder = tmp_path / "live" / TODAY.isoformat()
    ident = json.loads((folder / "snapshot.json").read_text())["identity"]

    # the folder pins the close: the service's quotes (not the start-of-day file) and its book
    pinned = folder / "snapshot_market.json"
    book = folder / "snapshot_book.parquet"
    assert book.read_bytes() == files["book"].read_bytes()
    close = load_market(pinned)
    assert close.as_of == TODAY
    assert np.count_nonzero(close.quotes != start_quotes) > 50
    assert ident["quotes_moved"] == np.count_nonzero(close.quotes != start_quotes)
    assert ident["quote_generation"] >= 1
    assert ident["attempts"] >= 1
    basis = f"quotes of generation {ident['quote_generation']} (snapshot_market.json)"
    assert basis in ident["key_rates_basis"]
    assert basis in (folder / "report.html").read_text()  # the ladder's caption says so

    # key rates: a reprice on the pinned quotes, not on the start-of-day file
    snap_kr = pl.read_parquet(folder / "snapshot_key_rates.parquet")
    assert snap_kr.height > 0
    assert _kr_gap(snap_kr, _key_rates_on(book, pinned)) < 1e-9
    assert _kr_gap(snap_kr, _key_rates_on(book, files["market"])) > 1e-6

    # the service's Greeks are of those quotes: its PVs agree with the reprice
    positions = pl.read_parquet(folder / "snapshot.parquet")
    notional = positions["notional"].abs().to_numpy()
    assert 0.0 <= ident["service_pv_max_diff_usd"] < 1e-9 * float(notional.max())
    assert ident["service_pv_max_diff_relative"] <= 1e-9

    # rebuilt from the folder alone (the batch path on the pinned files): the same numbers
    code = run_eod(
        as_of=TODAY,
        out_dir=tmp_path / "rebuilt",
        service=None,
        batch=True,
        book=book,
        market=pinned,
        parameters={"n_paths": PATHS},
        stale_after_s=120.0,
        stream=stream,
    )
    assert code == EXIT_OK, stream.getvalue()
    again = tmp_path / "rebuilt" / TODAY.isoformat()
    rebuilt = pl.read_parquet(again / "snapshot.parquet")
    assert rebuilt["position_id"].to_list() == positions["position_id"].to_list()
    for col in NUMERIC:
        # the service re-solves its curves from the last solution, the rebuild from the file:
        # they agree to solver rounding, far below 1e-9 of a position's notional
        gap = _close(positions[col].to_numpy(), rebuilt[col].to_numpy(), np.maximum(notional, 1.0))
        assert gap < 1e-9, col
    rebuilt_kr = pl.read_parquet(again / "snapshot_key_rates.parquet")
    assert _kr_gap(snap_kr, rebuilt_kr) < 1e-12
    curves = pl.read_parquet(folder / "snapshot_curves.parquet")
    rebuilt_curves = pl.read_parquet(again / "snapshot_curves.parquet")
    assert curves.select("curve", "years").equals(rebuilt_curves.select("curve", "years"))
    assert (
        _close(curves["zero_rate"].to_numpy(), rebuilt_curves["zero_rate"].to_numpy(), 1e-6) < 1e-12
    )
    live_totals = json.loads((folder / "summary.json").read_text())["totals"]
    rebuilt_totals = json.loads((again / "summary.json").read_text())["totals"]
    for measure in ("pv", "dv01", "cs01", "vega", "theta"):
        assert rebuilt_totals[measure] == pytest.approx(live_totals[measure], rel=1e-9, abs=1e-3)


def test_pinned_quotes_must_be_the_markets_and_a_moved_pv_is_caught(
    files: dict[str, Path], tmp_path: Path
) -> None:
    market = load_market(files["market"])
    quotes = pl.DataFrame({"quote_id": list(market.quote_ids), "value": market.quotes * 1.001})
    pinned = pin_market(files["market"], quotes, tmp_path / "close.json")
    assert (pinned.as_of, pinned.quotes, pinned.moved) == (
        TODAY,
        len(market.quote_ids),
        len(market.quote_ids),
    )
    assert np.array_equal(load_market(tmp_path / "close.json").quotes, market.quotes * 1.001)
    with pytest.raises(BatchInputError, match="do not fit"):
        pin_market(files["market"], quotes.head(10), tmp_path / "short.json")
    with pytest.raises(BatchInputError, match="do not fit"):
        pin_market(
            files["market"], pl.concat([quotes.head(1), quotes.tail(-2)]), tmp_path / "x.json"
        )

    # the check that refuses a read whose risk is not of the pinned quotes
    done = rerisk(files["book"], files["market"], as_of=TODAY, n_paths=PATHS)
    same = done.positions.with_columns(pl.col("position_id").cast(pl.String))
    assert pv_disagreement(same, same) == (0.0, 0.0)
    one_tick = same.with_columns(
        pl.when(pl.col("position_id") == same["position_id"][7])
        .then(pl.col("pv_ccy") * (1 + 1e-6))
        .otherwise(pl.col("pv_ccy"))
        .alias("pv_ccy")
    )
    assert pv_disagreement(one_tick, same)[1] > SAME_QUOTES_RELATIVE
    assert pv_disagreement(same.head(10), same) == (float("inf"), float("inf"))
