"""The end-of-day report's intraday section, run by papermill against a live service whose
risk store holds the day so far: high, low and close of the firm's and desks' measures and the
breach timeline, equal to what the store holds."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from service_helpers import wait

import workbench
from workbench.book.reference import generate_reference_book
from workbench.client import LossConfig, StoreConfig
from workbench.client.stored import history, store_root
from workbench.market.io import save_market
from workbench.market.reference import generate_reference_market
from workbench.reports import sections
from workbench.reports.intraday import read_day, timeline_text
from workbench.reports.runner import EXIT_OK, run_eod
from workbench.risk.limits import LimitConfig

AS_OF = date(2026, 11, 24)


@pytest.fixture
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[workbench.Client]:
    folder = tmp_path_factory.mktemp("store-report")
    market = generate_reference_market(as_of=AS_OF)
    save_market(market, folder / "market.json")
    generate_reference_book(market, positions=1_000, seed=5).write_parquet(folder / "book.parquet")
    svc = workbench.start(
        folder / "book.parquet",
        folder / "market.json",
        name="storeeod",
        n_paths=4_096,
        feed="none",
        limits=(LimitConfig(measure="dv01", limit=1.0),),
        store=StoreConfig(interval_s=0.3),
        timeout_s=240,
        loss=LossConfig(enabled=False),  # no live VaR runs: not what is tested here
    )
    try:
        yield svc
    finally:
        svc.stop()


def test_the_report_shows_the_days_high_low_close_and_breach_timeline(
    service: workbench.Client, tmp_path: Path
) -> None:
    root = store_root(service.descriptor)
    wait(lambda: history(root).height >= 3, 30, "three stored snapshots")
    stream = io.StringIO()
    code = run_eod(
        as_of=AS_OF,
        out_dir=tmp_path,
        service="storeeod",
        batch=False,
        book=None,
        market=None,
        parameters={},
        progress=False,
        stream=stream,
        stale_after_s=120.0,
    )
    assert code == EXIT_OK, stream.getvalue()
    day_dir = tmp_path / AS_OF.isoformat()
    text = (day_dir / "report.html").read_text()
    assert ">Intraday<" in text
    summary = json.loads((day_dir / "summary.json").read_text())
    ident = summary["snapshot"]
    assert ident["store"] == str(root)
    # the section's tables are those of the store up to the moment the snapshot was taken
    day = read_day(ident)
    assert day is not None
    assert day.snapshots >= 3
    for table, caption in (
        (day.firm, "Firm: high, low and close of the day"),
        (day.desks, "Desks: high, low and close of the day"),
        (timeline_text(day.timeline), "Breach timeline (UTC)"),
    ):
        assert sections.html_table(table, caption=caption) in text, caption
    assert day.timeline["measure"].to_list() == ["dv01"]  # the firm's DV01 over 1 USD all day
    assert day.timeline["scope"].to_list() == ["firm"]
    assert text.count("<img") >= 5  # the timeline's chart besides the report's others
