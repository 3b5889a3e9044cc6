"""The engine's pieces without processes: wire messages, shared memory, restart policy,
partition, what-if shocks, and the repricing state against the batch pricer."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pytest
import zmq

from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.engine.processes.pacing import FlushTracker, PublishPacer
from workbench.engine.processes.partition import pricing_groups, worker_rows
from workbench.engine.processes.repricing import Repricer
from workbench.engine.processes.restarts import Kill, Restart, RestartPolicy, Roll
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig, decode_config, encode_config
from workbench.engine.telemetry.histograms import (
    BUCKETS_MS,
    FINE_EDGES_MS,
    LatencyHistogram,
    cumulative_buckets,
    quantile_ms,
)
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import QuoteTable, RiskTable, reap, segment_name
from workbench.market.model import MarketError, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.portfolio import PortfolioPricer
from workbench.risk.breaches import Breach
from workbench.risk.shocks import (
    AnyShock,
    ParallelShock,
    QuoteShock,
    SpotShock,
    SpreadShock,
    TwistShock,
    VolShock,
)
from workbench.risk.whatif import apply_shocks


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def book(market: MarketSnapshot, tmp_path_factory: pytest.TempPathFactory) -> Book:
    path = tmp_path_factory.mktemp("parts") / "book.parquet"
    save_book(generate_reference_book(market, positions=600, seed=11), path)
    return load_book(path, market=market)


# --- wire messages ----------------------------------------------------------------------

_SHOCKS: list[AnyShock] = [
    ParallelShock(bp=10.0, currency="USD"),
    TwistShock(short_bp=-5.0, long_bp=5.0),
    QuoteShock(quote_id="USD.SOFR.OIS.5Y", bp=1.0),
    SpotShock(pct=-10.0, pattern="EUR*"),
    VolShock(points=2.0),
    SpreadShock(bp=25.0, pattern="CDX.*"),
]

_MESSAGES: list[tuple[Any, Any]] = [
    (msg.Tick("FX.EURUSD", 1.08, 7, 123), msg.tick_decoder),
    (msg.QuotesDirty(gen=2, flushed_ns=5, quotes=(1, 2)), msg.notice_decoder),
    (
        msg.RiskUpdated(
            worker="fx-0",
            asset_class="fx",
            quote_gen=2,
            flushed_ns=1,
            done_ns=2,
            reprice_ns=3,
            repriced=4,
        ),
        msg.notice_decoder,
    ),
    (
        msg.Heartbeat(role="ingest", pid=1, sent_ns=2, ready=True, stats={"a": 1.0}),
        msg.notice_decoder,
    ),
    (msg.StatusRequest(), msg.request_decoder),
    (msg.PositionsRequest(asset_class="fx"), msg.request_decoder),
    (msg.AggregateRequest(by=("desk", "currency")), msg.request_decoder),
    (msg.WhatIfRequest(shocks=tuple(_SHOCKS), by=("desk",)), msg.request_decoder),
    (msg.ProfileRequest(worker="fx-0", seconds=1.5), msg.request_decoder),
    (msg.SetOptionRequest(worker="fx-0", option="spline_cache", value=False), msg.request_decoder),
    (msg.RestartRequest(worker="rates-0"), msg.request_decoder),
    (msg.LimitsRequest(), msg.request_decoder),
    (msg.StopRequest(), msg.request_decoder),
    (msg.Reply(ok=False, error="x", data={"k": [1, 2]}, tables={"t": b"\x00"}), msg.reply_decoder),
    (
        msg.Snapshot(
            seq=1,
            made_ns=2,
            tables={"a": b"1"},
            breaches=(Breach(scope="firm", measure="dv01", value=2.0, limit=1.0, since_ns=3),),
            stats={"x": 1.0},
        ),
        msg.snapshot_decoder,
    ),
    (msg.WorkerWhatIf(shocks=tuple(_SHOCKS)), msg.worker_request_decoder),
    (msg.WorkerProfile(seconds=2.0), msg.worker_request_decoder),
    (msg.WorkerSetOption(option="spline_cache", value=True), msg.worker_request_decoder),
    (msg.WorkerStats(), msg.worker_request_decoder),
]


@pytest.mark.parametrize(("message", "decoder"), _MESSAGES, ids=lambda m: type(m).__name__)
def test_every_wire_message_round_trips(message: Any, decoder: Any) -> None:
    wire = msg.encode(message)
    assert b"pickle" not in wire
    assert decoder.decode(wire) == message


def test_config_round_trips_as_json(tmp_path: Path) -> None:
    config = ServiceConfig(name="x", run_dir=str(tmp_path), book="b", market="m")
    assert decode_config(encode_config(config)) == config


def test_foreign_payloads_are_decode_errors_not_objects() -> None:
    import pickle

    evil = pickle.dumps(object())
    for decoder in (msg.request_decoder, msg.notice_decoder, msg.tick_decoder):
        with pytest.raises(msgspec.DecodeError):
            decoder.decode(evil)
    with pytest.raises(msgspec.ValidationError):
        msg.request_decoder.decode(msgspec.msgpack.encode({"op": "rm -rf"}))


def test_tables_travel_as_arrow_ipc() -> None:
    frame = pl.DataFrame({"desk": ["a", "b"], "pv": [1.5, -2.0]})
    assert msg.bytes_to_frame(msg.frame_to_bytes(frame)).equals(frame)


# --- shared memory -----------------------------------------------------------------------


def _torn_writer(name: str, n: int, rounds: int) -> None:
    table = RiskTable.attach(name, n)
    rows = np.arange(n)
    for k in range(rounds):
        value = np.full(n, float(k))
        table.write("fx", 0, rows, {c: value for c in ("pv", "delta")}, time.monotonic_ns())
    table.close()


@contextlib.contextmanager
def _writing(name: str, n: int = 200_000) -> Iterator[tuple[RiskTable, Callable[[], bool]]]:
    """A risk table that another process writes 200 times over (big enough that a write takes a
    while) while the caller reads it, and whether it is still writing; it must end cleanly."""
    table = RiskTable.create(name, n)
    proc = mp.get_context("spawn").Process(target=_torn_writer, args=(table.name, n, 200))
    proc.start()
    try:
        yield table, proc.is_alive
    finally:
        proc.join(30)
        table.close()
    assert proc.exitcode == 0


def test_readers_never_see_a_torn_row() -> None:
    seen = 0
    with _writing("torn") as (table, writing):
        while writing() or seen == 0:
            cols = table.snapshot()
            pv, delta = cols["pv"], cols["delta"]
            if np.isnan(pv[0]):
                continue
            assert np.all(pv == pv[0])  # one write's values, never a mix of two
            assert np.all(delta == pv)
            seen += 1
    assert seen > 0


def test_a_reduction_over_live_columns_never_mixes_two_writes() -> None:
    """What the aggregator does: sums straight off the shared columns, no copy; a write during
    the pass makes it run again, so each result is one write's."""
    seen = 0
    with _writing("sums") as (table, writing):
        counters = tuple(range(table.spec.n_counters))
        while writing() or seen == 0:
            (first, total, matched), _ = table.consistent(
                lambda c: (float(c["pv"][0]), float(c["pv"].sum()), float(c["delta"].sum())),
                counters,
            )
            if np.isnan(first):
                continue
            assert total == first * 200_000  # one write's values, never a mix of two
            assert matched == total
            seen += 1
    assert seen > 0


def test_attaching_never_unlinks_and_the_owner_does(tmp_path: Path) -> None:
    owner = QuoteTable.create("att", np.arange(3.0))
    other = QuoteTable.attach(owner.name, 3)
    other.close()
    assert Path("/dev/shm", owner.name).exists()
    values, _, _ = owner.snapshot()
    assert values.tolist() == [0.0, 1.0, 2.0]
    owner.close()
    assert not Path("/dev/shm", owner.name).exists()


def test_reap_removes_segments_of_dead_owners_only() -> None:
    dead = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    assert dead.pid is not None
    orphan = Path("/dev/shm", segment_name("orphan", "risk", owner_pid=dead.pid))
    orphan.write_bytes(b"\x00" * 64)
    mine = QuoteTable.create("alive", np.zeros(2))
    try:
        gone = reap()
        assert orphan.name in gone
        assert not orphan.exists()
        assert Path("/dev/shm", mine.name).exists()
    finally:
        mine.close()
        orphan.unlink(missing_ok=True)


def test_a_writer_killed_mid_write_does_not_block_readers_forever() -> None:
    table = RiskTable.create("midwrite", 10)
    try:
        table.begin(0)  # a writer that died after making its counter odd
        table.mark_stale("rates", 0, np.arange(10))  # the supervisor's repair
        cols = table.snapshot()
        assert np.all(cols["stale"] == 1.0)
    finally:
        table.close()


# --- restart policy ----------------------------------------------------------------------


def test_latency_histogram_buckets_follow_prometheus_le() -> None:
    h = LatencyHistogram()
    h.observe_ms([0.05, 0.06, 1.0, 3.0, 20_000.0, -1.0, float("nan")])
    assert h.count == 5  # the negative and the NaN are not latencies
    buckets, total = cumulative_buckets(h.wire())
    le = dict(buckets)
    assert le["5e-05"] == 1  # 0.05 ms sits in its own bucket (≤)
    assert le["0.0001"] == 2
    assert le["0.001"] == 3
    assert le["0.005"] == 4
    assert le["10"] == 4
    assert le["+Inf"] == 5
    assert total == pytest.approx((0.05 + 0.06 + 1.0 + 3.0 + 20_000.0) / 1e3)
    assert quantile_ms(h.wire(), 0.5) == 1.0
    assert quantile_ms(h.wire(), 0.99) == float("inf")
    assert np.isnan(quantile_ms(LatencyHistogram().wire(), 0.5))
    with pytest.raises(ValueError, match="buckets"):
        cumulative_buckets([1.0, 2.0])


def test_publish_pacer_waits_for_a_flush_to_settle_and_caps_the_rate() -> None:
    ms = 1_000_000
    p = PublishPacer(10.0)
    assert p.due(0)  # the first snapshot at once
    p.published(0)
    assert not p.due(500 * ms)
    for t in (100, 102, 104):  # three workers answer one flush
        p.result(t * ms)
    assert not p.due(108 * ms)
    assert p.due(109 * ms)  # 5 ms after the last result: one snapshot for the flush
    p.published(109 * ms)
    for t in range(120, 300, 2):  # results that never settle
        p.result(t * ms)
    assert p.next_due_ns(150 * ms) == 220 * ms  # 100 ms after the first one at most
    p.published(220 * ms)
    assert p.next_due_ns(221 * ms) == 1_220 * ms  # nothing new: the keep-alive
    p.result(230 * ms)
    assert p.next_due_ns(231 * ms) == 240 * ms  # 20 ms after the last publish at least
    fast = PublishPacer(10.0)
    for k in range(10):
        fast.result(k * 30 * ms)
        fast.published(k * 30 * ms)
    fast.result(300 * ms)
    assert fast.next_due_ns(300 * ms) == 1_000 * ms  # never 11 in a second
    with pytest.raises(ValueError, match="positive"):
        PublishPacer(0.0)


def test_a_flush_is_published_once_every_worker_has_priced_it() -> None:
    ms = 1_000_000
    t = FlushTracker(["rates-0", "fx-0", "credit-0"])
    t.flushed(gen=0, flushed_ns=0)  # start-up: not every worker has priced yet
    assert not t.waiting()
    for worker in ("rates-0", "fx-0", "credit-0"):
        t.priced(worker, 0)
    p = PublishPacer(10.0)
    p.published(0)
    t.flushed(gen=2, flushed_ns=1_000 * ms)
    p.result(1_000 * ms, expecting=t.waiting())
    for worker, at in (("rates-0", 1_002), ("fx-0", 1_004)):  # quick answers
        t.priced(worker, 2)
        p.result(at * ms, expecting=t.waiting())
        assert t.waiting()
    assert not p.due(1_030 * ms)  # no settling on a partial flush: credit is still pricing
    assert t.take_complete() == []
    t.priced("credit-0", 2)
    p.result(1_045 * ms, expecting=t.waiting())
    assert not t.waiting()
    assert p.due(1_045 * ms)
    assert t.take_complete() == [1_000 * ms]
    p.published(1_045 * ms)
    # a worker that never answers: published after the wait, the flush stays open until its
    # worker answers or the flush is given up
    t.flushed(gen=4, flushed_ns=2_000 * ms)
    t.priced("rates-0", 4)
    t.priced("fx-0", 6)  # a later generation covers this one
    p.result(2_003 * ms, expecting=t.waiting())
    assert not p.due(2_099 * ms)
    assert p.due(2_103 * ms)
    assert t.take_complete() == []
    assert t.expire(2_500 * ms, older_than_ns=1_000 * ms) == 0
    assert t.expire(3_500 * ms, older_than_ns=1_000 * ms) == 1
    assert t.dropped == 1
    t.priced("unknown-9", 99)  # not a worker of this service: ignored
    assert not t.waiting()


def test_backoff_doubles_and_resets_after_a_stable_run() -> None:
    p = RestartPolicy(backoff_s=1.0, max_backoff_s=4.0, stable_s=10.0)
    s = 1_000_000_000
    p.add("fx-0", group="fx", rolls=True, now_ns=0)
    p.heartbeat("fx-0", ready=True, now_ns=0)
    delays = []
    now = 0
    for _ in range(4):
        p.died("fx-0", now_ns=now)
        at = p.children["fx-0"].restart_at_ns
        assert at is not None
        assert p.tick(at - 1) == []
        assert p.tick(at) == [Restart("fx-0")]
        delays.append((at - now) / s)
        p.started("fx-0", now_ns=at)
        p.heartbeat("fx-0", ready=True, now_ns=at)
        now = at
    assert delays == [0.0, 1.0, 2.0, 4.0]  # a one-off crash restarts at once
    p.died("fx-0", now_ns=now)
    assert p.children["fx-0"].restart_at_ns == now + 4 * s  # capped at max_backoff_s
    p.started("fx-0", now_ns=now + 4 * s)
    now += 4 * s
    p.heartbeat("fx-0", ready=True, now_ns=now)
    p.heartbeat("fx-0", ready=True, now_ns=now + 11 * s)  # stable: failures forgotten
    p.died("fx-0", now_ns=now + 12 * s)
    assert p.children["fx-0"].restart_at_ns == now + 12 * s


def test_silent_children_are_killed_with_a_startup_allowance() -> None:
    p = RestartPolicy(heartbeat_timeout_s=5.0, startup_timeout_s=60.0)
    s = 1_000_000_000
    p.add("rates-0", group="rates", rolls=True, now_ns=0)
    assert p.tick(30 * s) == []  # still setting up
    assert p.tick(61 * s) == [Kill("rates-0")]
    p.heartbeat("rates-0", ready=True, now_ns=61 * s)
    assert p.tick(65 * s) == []
    assert p.tick(67 * s) == [Kill("rates-0")]


def test_rolling_restarts_take_one_worker_of_a_class_at_a_time() -> None:
    p = RestartPolicy(rolling_s=10.0)
    s = 1_000_000_000
    for name in ("fx-0", "fx-1"):
        p.add(name, group="fx", rolls=True, now_ns=0)
        p.heartbeat(name, ready=True, now_ns=0)
    p.add("ingest", group="ingest", rolls=False, now_ns=0)
    for name in ("fx-0", "fx-1", "ingest"):
        p.heartbeat(name, ready=True, now_ns=9 * s)
    first = p.tick(10 * s)
    assert first == [Roll("fx-0")]
    p.died("fx-0", now_ns=10 * s, planned=True)
    assert Restart("fx-0") in p.tick(10 * s)
    p.started("fx-0", now_ns=10 * s)
    for name in ("fx-1", "ingest"):
        p.heartbeat(name, ready=True, now_ns=20 * s)
    assert p.tick(20 * s) == []  # fx-0 not ready yet: fx-1 must wait
    p.heartbeat("fx-0", ready=True, now_ns=21 * s)
    p.next_roll_ns = 21 * s
    assert p.tick(21 * s) == [Roll("fx-1")]


# --- partition, what-if, repricing -------------------------------------------------------


def test_partition_covers_every_position_once(book: Book, market: MarketSnapshot) -> None:
    seen = []
    for cls in ("rates", "fx", "credit", "equity"):
        groups = pricing_groups(book, market, cls)
        assert all(g.quotes.size > 0 for g in groups)
        for n in (1, 2, 3):
            parts = [worker_rows(book, market, cls, s, n) for s in range(n)]
            merged = np.sort(np.concatenate(parts))
            assert np.array_equal(merged, np.sort(np.concatenate([g.rows for g in groups])))
        seen.append(worker_rows(book, market, cls, 0, 1))
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(book)))


def test_shocks_move_the_quotes_they_name(market: MarketSnapshot) -> None:
    q = market.quote_index
    up = apply_shocks(market, [ParallelShock(bp=10, currency="USD")])
    assert up.quote("USD.SOFR.OIS.5Y") == pytest.approx(market.quote("USD.SOFR.OIS.5Y") + 1e-3)
    assert up.quote("EUR.ESTR.OIS.5Y") == market.quote("EUR.ESTR.OIS.5Y")
    spot = apply_shocks(market, [SpotShock(pct=-10, pattern="EUR*")])
    assert spot.quote("FX.EURUSD") == pytest.approx(0.9 * market.quote("FX.EURUSD"))
    assert spot.quote("FX.GBPUSD") == market.quote("FX.GBPUSD")
    twist = apply_shocks(market, [TwistShock(short_bp=-10, long_bp=10, currency="USD")])
    assert twist.quote("USD.SOFR.OIS.1M") == pytest.approx(market.quote("USD.SOFR.OIS.1M") - 1e-3)
    assert twist.quote("USD.SOFR.OIS.30Y") == pytest.approx(market.quote("USD.SOFR.OIS.30Y") + 1e-3)
    assert market.quotes[q["FX.EURUSD"]] == market.quote("FX.EURUSD")  # original untouched
    with pytest.raises(MarketError, match="unknown currency"):
        apply_shocks(market, [ParallelShock(bp=1, currency="XXX")])
    with pytest.raises(MarketError, match="matches no quote"):
        apply_shocks(market, [SpotShock(pct=1, pattern="NOPE")])
    with pytest.raises(MarketError, match="exactly one"):
        apply_shocks(market, [QuoteShock(quote_id="FX.EURUSD")])


@pytest.mark.parametrize("asset_class", ["rates", "fx", "credit", "equity"])
def test_worker_state_matches_the_batch_pricer(
    book: Book, market: MarketSnapshot, asset_class: str
) -> None:
    batch = PortfolioPricer(book, market, n_paths=4096).risk(market)
    rep = Repricer(book, market, asset_class, n_paths=4096)
    update = rep.full(market)
    for col in ("pv", "delta", "gamma", "vega", "theta"):
        ours = update.columns[col]
        ref = getattr(batch, col)[update.rows]
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-6 * np.abs(ref).max() + 1e-9)


def test_a_tick_reprices_only_the_groups_that_read_it(book: Book, market: MarketSnapshot) -> None:
    rep = Repricer(book, market, "fx", n_paths=4096)
    rep.full(market)
    q = market.quote_index["FXVOL.EURUSD.1Y.ATM"]
    values = np.array(market.quotes)
    values[q] += 0.01
    update = rep.update(values, np.array([q]))
    assert update is not None
    assert update.groups == ["fx:EURUSD"]
    eq_only = market.quote_index["EQ.AAPL"]
    assert rep.update(values, np.array([eq_only])) is None
    fx_spot = market.quote_index["FX.EURUSD"]
    values[fx_spot] *= 1.01
    moved = rep.update(values, np.array([fx_spot]))
    assert moved is not None
    assert moved.rows.size == rep.rows.size  # USD conversion of every position re-done


@pytest.mark.parametrize("asset_class", ["rates", "fx", "credit", "equity"])
def test_ticks_then_incremental_update_equal_a_fresh_full_reprice(
    book: Book, market: MarketSnapshot, asset_class: str
) -> None:
    """Only the touched curves are re-solved, tranche losses are reused across rates ticks,
    smiles are solved from a warm start and their rows and the FX discount factors kept while
    their vols and curves are unchanged (a what-if on shocked copies in between must not leave
    its values behind): none of it may change a number."""
    rep = Repricer(book, market, asset_class, n_paths=4096)
    rep.full(market)
    values = np.array(market.quotes)
    ticks = ["USD.SOFR.OIS.2Y", "EUR.EURIBOR6M.IRS.10Y", "FX.EURUSD", "FXVOL.USDJPY.1Y.25C",
             "CDX.IG.5Y", "EQ.AAPL", "JPY.TONA.OIS.5Y", "FX.USDJPY", "FX.EURUSD"]  # fmt: skip
    shocks = [VolShock(points=2.0, pattern="EURUSD.*"), ParallelShock(bp=5.0),
              SpotShock(pct=1.0)]  # fmt: skip
    for k, qid in enumerate(ticks):
        q = market.quote_index[qid]
        values[q] *= 1.0 + 0.002 * (k + 1)
        rep.update(values, np.array([q]))
        if k == 3:
            rep.whatif(apply_shocks(rep.market, shocks))
    # then several groups of several currencies at once: one vectorised call prices them all
    together = [market.quote_index[q] for q in ("FX.GBPUSD", "FXVOL.EURJPY.1Y.ATM", "EQ.MSFT",
                "EQ.SAP", "GBP.SONIA.OIS.10Y", "CDX.HY.5Y", "CAD.CORRA.OIS.1Y")]  # fmt: skip
    values[together] *= 1.003
    rep.update(values, np.array(together))
    moved = market.with_quote_values(values)
    fresh = Repricer(book, moved, asset_class, n_paths=4096).full(moved)
    ours = rep._convert(fresh.rows)
    pv_scale = np.abs(fresh.columns["pv"]).max()
    for col in ("pv", "delta", "gamma", "vega", "theta"):
        ref = fresh.columns[col]
        # gamma is PV(+1bp) − 2 PV + PV(−1bp): curves solved from another starting point
        # (warm vs cold) agree to the solver's tolerance, which this difference sees × PV
        floor = 1e-12 * pv_scale if col == "gamma" else 0.0
        np.testing.assert_allclose(
            ours[col], ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max() + floor + 1e-9, err_msg=col
        )


def test_a_curve_that_does_not_solve_fails_only_the_groups_that_read_it(
    book: Book, market: MarketSnapshot
) -> None:
    """A quote that leaves its curve unsolvable fails the groups that read any quote of that
    curve (its own swaps and those discounted on it), with the reason; the others are priced;
    the quote back, every group is priced again."""
    rep = Repricer(book, market, "rates", n_paths=4096)
    rep.full(market)
    sofr = next(c for c in market.curves if c.id == "USD.SOFR")
    q = market.quote_index[sofr.instruments[-1].quote]
    readers = {g.key for g in rep.groups if set(np.asarray(g.quotes).tolist()) & {
        market.quote_index[i.quote] for i in sofr.instruments}}  # fmt: skip
    assert readers >= {"rates:USD.SOFR"}
    values = np.array(market.quotes)
    values[q] = np.nan
    update = rep.update(values, np.array([q]))
    assert update is not None
    assert set(update.failed) == readers
    assert all("curve USD.SOFR did not solve" in why for why in update.failed.values())
    assert rep.failed_curves == {"USD.SOFR"}
    values[q] = market.quotes[q]
    update = rep.update(values, np.array([q]))
    assert update is not None
    assert update.failed == {}
    assert not rep.failed_curves


@pytest.mark.parametrize(
    ("asset_class", "shock"),
    [
        ("rates", ParallelShock(bp=10.0, currency="USD")),
        ("fx", SpotShock(pct=2.0, pattern="EURUSD")),
        ("credit", ParallelShock(bp=-5.0, currency="EUR")),
    ],
)
def test_whatif_reprices_only_what_the_shock_touches_and_matches_a_full_reprice(
    book: Book, market: MarketSnapshot, asset_class: str, shock: AnyShock
) -> None:
    rep = Repricer(book, market, asset_class, n_paths=4096)
    live = rep.full(market).columns["pv"]
    kept = {c: v.copy() for c, v in rep.local.items()}
    shocked = apply_shocks(market, [shock])
    rows, base, new = rep.whatif(shocked)
    fresh = Repricer(book, shocked, asset_class, n_paths=4096).full(shocked)
    assert np.array_equal(fresh.rows, rows)
    ref = fresh.columns["pv"]
    np.testing.assert_allclose(new, ref, rtol=1e-9, atol=1e-6 * np.abs(ref).max())
    untouched = new == base
    assert untouched.any()  # e.g. other currencies: PnL exactly 0, not repriced
    assert not untouched.all()
    np.testing.assert_array_equal(live, base)
    for c, v in kept.items():  # the live results are untouched
        np.testing.assert_array_equal(rep.local[c], v)


def test_a_rates_tick_reuses_the_tranche_losses(book: Book, market: MarketSnapshot) -> None:
    rep = Repricer(book, market, "credit", n_paths=4096)
    rep.full(market)

    def misses() -> int:
        return int(rep.pricer.loss_misses)  # type: ignore[attr-defined]

    priced = misses()
    values = np.array(market.quotes)
    q = market.quote_index["USD.SOFR.OIS.5Y"]
    values[q] += 1e-4
    assert rep.update(values, np.array([q])) is not None
    assert misses() == priced  # re-discounted, the tranche losses kept
    s = market.quote_index["CDX.IG.5Y"]
    values[s] += 1e-4
    assert rep.update(values, np.array([s])) is not None
    assert misses() > priced


def test_a_worker_re_solves_only_the_curves_its_positions_read(
    book: Book, market: MarketSnapshot
) -> None:
    fx = Repricer(book, market, "fx", n_paths=4096)
    fx.full(market)
    kept = set(fx.curves.ids())
    ois = {c.id for c in market.curves if c.kind == "ois"}
    assert kept
    assert kept <= ois
    term = next(c.id for c in market.curves if c.kind == "term")
    with pytest.raises(MarketError, match="unknown curve"):
        fx.curves[term]
    # a tick on every rate quote reprices as before, and equals a fresh worker's answer
    values = np.array(market.quotes)
    rates = [market.quote_index[i.quote] for c in market.curves for i in c.instruments]
    values[rates] += 1e-4
    moved = fx.update(values, np.array(rates))
    assert moved is not None
    fresh = Repricer(book, market.with_quote_values(values), "fx", n_paths=4096)
    again = fresh.full(market.with_quote_values(values))
    order = np.argsort(moved.rows)
    for col in ("pv", "delta", "gamma", "vega", "theta"):
        np.testing.assert_allclose(
            moved.columns[col][order], again.columns[col][np.argsort(again.rows)], rtol=1e-9,
            atol=1e-6,
        )  # fmt: skip
    # a what-if on a curve the worker dropped changes nothing of it
    rows, base, shocked = fx.whatif(market.with_quote_values(values))
    assert rows.size == base.size == shocked.size
    rates_worker = Repricer(book, market, "rates", n_paths=4096)
    rates_worker.full(market)
    assert term in rates_worker.curves.ids()  # swaps read term curves: kept


def test_a_wall_clock_jump_changes_no_greek(
    book: Book, market: MarketSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep = Repricer(book, market, "rates", n_paths=4096)
    before = rep.full(market).columns
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400 * 400)  # a year and more ahead
    after = rep.full(market).columns
    for col in before:
        np.testing.assert_array_equal(before[col], after[col])


def test_huge_jpy_notionals_do_not_overflow(market: MarketSnapshot, tmp_path: Path) -> None:
    frame = generate_reference_book(market, positions=400, seed=2)
    jpy = (frame["currency"] == "JPY") & (frame["product"] == "IRS")
    assert jpy.any()
    frame = frame.with_columns(
        pl.when(jpy).then(pl.col("notional") * 1e4).otherwise(pl.col("notional")).alias("notional")
    )  # trillions of yen
    path = tmp_path / "jpy.parquet"
    save_book(frame, path)
    # far beyond the default bound of plausible sizes (10tn JPY): lifted for this check of
    # the arithmetic only
    big = load_book(path, market=market, max_notional={"JPY": 1e16})
    rep = Repricer(big, market, "rates", n_paths=4096)
    cols = rep.full(market).columns
    for name, col in cols.items():
        assert np.all(np.isfinite(col)), name


def test_drain_reads_every_queued_notice_and_skips_garbage() -> None:
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        pull.bind("inproc://drain")
        push.connect("inproc://drain")
        sent = [msg.QuotesDirty(gen=g, flushed_ns=g, quotes=(1, 2)) for g in (1, 2)]
        push.send(msg.encode(sent[0]))
        push.send(b"\x00 not a notice")
        push.send(msg.encode(sent[1]))
        time.sleep(0.05)
        assert sockets.drain(pull) == sent
        assert sockets.drain(pull) == []  # nothing queued: returns at once
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def test_a_flush_looks_each_dirty_smile_up_once_per_price(
    book: Book, market: MarketSnapshot
) -> None:
    """The spline cache's counters are what the profiler shows a quant: one lookup per smile
    for today's price and one for tomorrow's (theta), however many kept rows it is built from."""
    rep = Repricer(book, market, "fx", n_paths=4096)
    rep.full(market)
    cache = rep.cache
    values = np.array(market.quotes)
    vol = market.quote_index["FXVOL.EURUSD.1Y.ATM"]
    values[vol] += 0.01
    before = (cache.hits, cache.misses)
    rep.update(values, np.array([vol]))
    assert (cache.hits, cache.misses) == (before[0], before[1] + 2)  # a new version, two dates
    spot = market.quote_index["FX.EURUSD"]
    values[spot] *= 1.001
    before = (cache.hits, cache.misses)
    rep.update(values, np.array([spot]))
    assert (cache.hits, cache.misses) == (before[0] + 2, before[1])


# --- the one latency-histogram type ------------------------------------------------------


def test_latency_histogram_exports_exact_prometheus_buckets_from_its_fine_ones() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.lognormal(np.log(0.5), 2.0, 20_000), np.asarray(BUCKETS_MS)])
    batch, one_by_one = LatencyHistogram(), LatencyHistogram()
    batch.observe_ms(values)
    for v in values.tolist():
        one_by_one.observe_ms(v)
    assert np.array_equal(batch.counts, one_by_one.counts)  # the scalar path counts the same
    assert one_by_one.sum_ms == pytest.approx(batch.sum_ms)
    # the exported buckets are exactly the Prometheus "le" buckets, bounds included
    expected = np.bincount(np.searchsorted(BUCKETS_MS, values), minlength=len(BUCKETS_MS) + 1)
    assert batch.wire()[:-1] == [float(c) for c in expected]
    assert batch.wire()[-1] == pytest.approx(values.sum())
    assert batch.count == values.size
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert exact <= batch.quantile_ms(q) <= exact * 1.036, q  # one fine bucket, 3.5%
    ratios = FINE_EDGES_MS[1:] / FINE_EDGES_MS[:-1]
    assert ratios.max() < 1.036
    assert set(BUCKETS_MS) <= set(FINE_EDGES_MS.tolist())
    assert np.isnan(LatencyHistogram().quantile_ms(0.5))
    past = LatencyHistogram()
    past.observe_ms(200_000.0)  # 200 s: past the last bound
    assert past.quantile_ms(0.5) == float("inf")
    assert past.wire()[len(BUCKETS_MS)] == 1.0


def test_latency_histogram_recent_quantiles_follow_the_latest_latencies() -> None:
    h = LatencyHistogram(recent=100)
    for _ in range(300):
        h.observe_ms(1.0)
    h.observe_ms(np.full(150, 40.0))
    assert h.quantile_ms(0.5) == 1.0  # the whole run: 300 of 1 ms, 150 of 40 ms
    assert h.quantile_ms(0.5, recent=True) == pytest.approx(40.0, rel=0.036)  # the latest 150
    assert h.quantile_ms(0.01, recent=True) == pytest.approx(40.0, rel=0.036)
    assert h.count == 450
    window = LatencyHistogram(recent=100)
    window.observe_ms([2.0] * 50)
    assert window.quantile_ms(0.5, recent=True) == pytest.approx(2.0, rel=0.036)  # all so far
