"""The whole service with real processes, real ZeroMQ sockets on loopback and real shared memory.

A small book (1,000 positions) keeps each start to seconds; every test leaves no process and no
``/dev/shm`` segment behind (checked by the autouse fixture in conftest.py).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zmq
from service_helpers import POSITIONS, make_files, start, wait

from workbench.client import Client, ServiceError
from workbench.engine.protocol import messages as msg
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.profiling import MAX_NODES, TREE_COLUMNS
from workbench.market.io import load_market
from workbench.pricing.curves import CurveSet
from workbench.risk.limits import LimitConfig
from workbench.risk.shocks import ParallelShock, SpotShock


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    """One live service shared by the tests that do not restart processes."""
    svc = start(
        files,
        "e2e",
        rate=2_000.0,
        limits=(LimitConfig(measure="dv01", limit=1.0),),  # tiny: always breached
    )
    try:
        yield svc
    finally:
        svc.stop()


def test_ticks_flow_to_aggregates_and_requests_answer(service: Client) -> None:
    status = service.status()
    assert status["ready"]
    assert status["positions"] == POSITIONS
    names = {p["name"] for p in status["processes"]}
    assert {"feed", "ingest", "aggregator", "rates-0", "fx-0", "credit-0", "equity-0"} <= names

    by_class = service.aggregate(("asset_class",))
    assert set(by_class["asset_class"].cast(pl.String)) == {"rates", "fx", "credit", "equity"}
    assert by_class["positions"].sum() == POSITIONS
    assert by_class["stale"].sum() == 0

    # the synthetic feed ticks: the published PV moves and repricing counters grow
    first = service.latest(timeout_s=10)
    pv0 = first.tables["firm"]["pv"][0]
    wait(lambda: service.latest(timeout_s=10).tables["firm"]["pv"][0] != pv0, 20, "a new firm PV")
    later = service.latest(timeout_s=10)
    assert later.seq > first.seq
    assert later.stats["positions"] == POSITIONS
    assert any(b.measure == "dv01" for b in later.breaches)  # the configured tiny limit
    ingest = next(p for p in service.status()["processes"] if p["name"] == "ingest")
    assert ingest["stats"]["accepted"] > 0

    positions = service.positions()
    assert positions.height == POSITIONS
    assert positions["pv"].is_finite().all()


def test_every_process_logs_json_lines_with_service_and_role(service: Client) -> None:
    records = logs.read(Path(service.descriptor.config.run_dir) / "service.log")
    assert records, "no structured log records"
    assert all(r["service"] == "e2e" and r["pid"] > 0 and r["ts"].endswith("Z") for r in records)
    assert all(isinstance(r["mono_ns"], int) and r["mono_ns"] > 0 for r in records)
    events = {(r["role"], r["event"]) for r in records}
    assert ("supervisor", "service_started") in events
    assert ("supervisor", "ready") in events
    for worker in ("rates-0", "fx-0", "credit-0", "equity-0"):
        assert (f"worker:{worker}", "ready") in events
    ready = next(r for r in records if r["role"] == "worker:rates-0" and r["event"] == "ready")
    assert ready["positions"] > 0
    assert ready["ms"] > 0


def test_prometheus_exports_latency_histograms_per_boundary(service: Client) -> None:
    boundaries = {"feed_to_ingest", "ingest_to_worker", "reprice", "worker_to_aggregator",
                  "flush_to_publish"}  # fmt: skip

    def counted() -> set[str]:
        lat = service.latencies()
        return set(lat.filter(pl.col("count") > 0)["boundary"])

    wait(lambda: boundaries <= counted(), 20, "every boundary counted")
    url = service.status()["metrics"]
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    for boundary in boundaries:
        assert f'workbench_latency_seconds_bucket{{boundary="{boundary}"' in text, boundary
    for boundary in ("ingest_to_worker", "reprice"):
        assert f'boundary="{boundary}",le="+Inf",process="rates-0"' in text
    end_to_end = 'workbench_latency_seconds_count{boundary="flush_to_publish",process="aggregator"}'
    assert end_to_end in text
    assert 'workbench_process_stat{process="ingest",stat="accepted"}' in text
    assert "# TYPE workbench_stale_positions gauge" in text
    assert "# TYPE workbench_restarts_total counter" in text
    # the client counts its own boundary from the snapshots it reads
    service.latest(timeout_s=10)
    lat = service.latencies()
    mine = lat.filter(pl.col("boundary") == "aggregator_to_client")
    assert mine["count"][0] >= 1
    assert (lat["p99_ms"] >= lat["p50_ms"]).all()


def test_whatif_matches_dv01_and_leaves_live_state_alone(service: Client) -> None:
    before = service.positions("rates")
    pnl = service.whatif([ParallelShock(bp=1.0)], by=("asset_class",))
    rates = pnl.filter(pl.col("asset_class").cast(pl.String) == "rates")
    dv01 = before["dv01"].sum()
    # first order: +1bp on every curve ≈ DV01 (the market keeps ticking in between)
    assert rates["pnl"][0] == pytest.approx(dv01, rel=0.05)
    fx = service.whatif([SpotShock(pct=1.0, pattern="EURUSD")], by=("underlying",))
    assert "EURUSD" in set(fx["underlying"].cast(pl.String))
    # every position is counted; the ones the shock does not reach have a PnL of exactly 0
    usd = service.whatif([ParallelShock(bp=1.0, currency="USD")], by=("asset_class", "currency"))
    assert usd["positions"].sum() == POSITIONS
    cls, ccy = pl.col("asset_class").cast(pl.String), pl.col("currency").cast(pl.String)
    assert (usd.filter((cls == "equity") & (ccy != "USD"))["pnl"] == 0.0).all()
    assert usd.filter((cls == "rates") & (ccy == "USD"))["pnl"][0] != 0.0
    after = service.positions("rates")
    assert after.height == before.height  # live state untouched: same rows, still priced
    assert after["pv"].is_finite().all()
    with pytest.raises(ServiceError, match="unknown currency"):
        service.whatif([ParallelShock(bp=1.0, currency="XXX")])
    with pytest.raises(ServiceError, match="cannot group by"):
        service.whatif([ParallelShock(bp=1.0)], by=("colour",))


def test_reprice_all_re_risks_every_position_on_every_worker(service: Client) -> None:
    before = service.positions()["updated_ns"].min()
    done = service.reprice_all()
    assert set(done["worker"]) == {"rates-0", "fx-0", "credit-0", "equity-0"}
    assert done["positions"].sum() == POSITIONS
    assert (done["ms"] > 0).all()
    assert service.positions()["updated_ns"].min() > before  # every row written again


def test_profile_and_options_of_a_worker(service: Client) -> None:
    report = service.profile("fx-0", seconds=1.0)
    assert report["profiled_s"] >= 1.0
    assert report["functions"].height > 0
    assert {"function", "calls", "tottime_s"} <= set(report["functions"].columns)
    tree = report["tree"]  # the call tree: the worker's loop at depth 0, its callees below
    assert tree.columns == list(TREE_COLUMNS)
    assert tree.filter(pl.col("depth") == 0).height >= 1
    assert tree["depth"].max() >= 2
    assert tree.height <= MAX_NODES
    assert set(tree.filter(pl.col("parent") >= 0)["parent"]) <= set(tree["id"])
    total = tree.filter(pl.col("depth") == 0)["cum_s"].sum()
    assert 0.0 < total <= report["profiled_s"] * 1.05  # one thread: no more time than wall
    print("\nfx-0 call tree, heaviest rows:")
    for r in tree.head(8).iter_rows(named=True):
        print(
            f"{'  ' * r['depth']}{r['function']} {r['file']}:{r['line']} "
            f"cum {r['cum_s']:.3f} s own {r['own_s']:.3f} s (start {r['start_s']:.3f})"
        )
    wire = msg.encode(msg.Reply(ok=True, data={"tree": tree.to_dicts()}))
    assert len(wire) < msg.MAX_CONTROL_BYTES // 8
    assert "hits" in report["spline_cache"]
    # stage totals: curve builds, the pricing per class, the USD conversion, the shared-memory
    # write (ms since the worker started)
    assert {"curves", "fx", "convert", "shm_write"} <= set(report["stage_ms"])
    assert all(ms >= 0.0 for ms in report["stage_ms"].values())
    off = service.set_option("fx-0", "spline_cache", False)
    assert off["spline_cache_enabled"] is False
    on = service.set_option("fx-0", "spline_cache", True)
    assert on["spline_cache_enabled"] is True
    with pytest.raises(ServiceError, match="unknown worker"):
        service.profile("nobody-0", seconds=0.1)
    with pytest.raises(ServiceError, match="unknown option"):
        service.set_option("fx-0", "colour", "blue")


def test_bad_control_messages_get_errors_not_crashes(service: Client) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(service.endpoints.control)
    try:
        for junk in (b"", b"\x00\x01garbage", b'{"op": "status"}', msgpack_of({"op": "launch"})):
            sock.send(junk)
            assert sock.poll(5000), f"no reply to {junk!r}"
            reply = msg.reply_decoder.decode(sock.recv())
            assert not reply.ok
            assert "bad request" in (reply.error or "")
    finally:
        sock.close(linger=0)
        ctx.term()
    assert service.status()["ready"]


def msgpack_of(obj: object) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(obj)


def test_a_blocked_snapshot_reader_does_not_stall_the_service(service: Client) -> None:
    ctx = zmq.Context()
    lazy = ctx.socket(zmq.SUB)
    lazy.setsockopt(zmq.SUBSCRIBE, b"")
    lazy.setsockopt(zmq.RCVHWM, 1)
    lazy.setsockopt(zmq.LINGER, 0)
    lazy.connect(service.endpoints.snapshots)
    try:
        time.sleep(2.0)  # it never reads
        a = service.latest(timeout_s=5).seq
        time.sleep(1.0)
        b = service.latest(timeout_s=5).seq
        assert b > a
    finally:
        lazy.close(linger=0)
        ctx.term()


def test_the_market_is_one_quote_generation_and_its_curves_are_built_from_it(
    service: Client, files: tuple[Path, Path]
) -> None:
    view = service.market(("USD.SOFR", "EUR.ESTR"), (ParallelShock(bp=10.0, currency="USD"),))
    assert view.generation >= 0
    assert view.quotes.height == service.descriptor.n_quotes
    assert set(view.pillars["curve"]) >= {"USD.SOFR", "EUR.ESTR"}
    assert view.pillars.filter(pl.col("curve") == "USD.SOFR")["years"].is_sorted()
    # the curves drawn are those of exactly the quotes returned with them (the live feed ticks)
    market = load_market(files[1]).with_quote_values(view.quotes["value"].to_numpy())
    curves = CurveSet(market)
    for cid, part in view.curves.group_by("curve"):
        t = part["years"].to_numpy()
        zero = curves[str(cid[0])].zero_rate(t) * 100.0
        assert np.allclose(part["zero_pct"].to_numpy(), zero, rtol=0, atol=1e-12)
    usd = view.curves.filter(pl.col("curve") == "USD.SOFR")
    eur = view.curves.filter(pl.col("curve") == "EUR.ESTR")
    assert np.allclose((usd["zero_shocked_pct"] - usd["zero_pct"]).to_numpy() * 100, 10, atol=1.5)
    assert (eur["zero_shocked_pct"] == eur["zero_pct"]).all()  # a USD shock leaves EUR alone
    with pytest.raises(ServiceError, match=r"unknown curve 'USD\.NOPE'"):
        service.market(("USD.NOPE",))
    with pytest.raises(ServiceError, match="within"):
        service.market(("USD.SOFR",), years=(float("nan"),))
