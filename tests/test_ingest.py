"""The ingestion and feed processes: real processes, real sockets on loopback, real shared memory.

The test process plays the supervisor (it owns the quote table and binds the heartbeat PULL)
and the feed (an XPUB bound at the feed endpoint, so it can wait for the ingestion's
subscription before sending). Every process started here is stopped by pid in a ``finally``,
and every segment created here is closed and unlinked.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from workbench.engine.processes import feed, ingest
from workbench.engine.processes.conflation import Conflator
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import (
    ConflationConfig,
    FeedConfig,
    ServiceConfig,
    encode_config,
)
from workbench.engine.telemetry.histograms import quantile_ms
from workbench.engine.transport.endpoints import free_port, loopback_endpoints
from workbench.engine.transport.shm import SHM_DIR, QuoteTable
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market

SPAWN = multiprocessing.get_context("spawn")
# the resource tracker is one long-lived helper per interpreter, started by the first spawn or
# segment; start it now so that it is not counted as a process left behind by a test
resource_tracker.ensure_running()
ENCODE = msgspec.msgpack.Encoder().encode


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def market_file(market: MarketSnapshot, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("market") / "market.json"
    save_market(market, path)
    return path


def _stop(proc: BaseProcess, timeout: float = 3.0) -> None:
    """Stop a process by pid: SIGTERM, then SIGKILL if it does not go."""
    if proc.pid is None:
        return
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(timeout)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout)


def _tick(quote_id: str, value: float, seq: int) -> bytes:
    return messages.encode(messages.Tick(quote_id, value, seq, time.monotonic_ns()))


@dataclass
class Rig:
    """An ingestion process with the test as its feed and supervisor."""

    config: ServiceConfig
    table: QuoteTable
    proc: BaseProcess
    feed: zmq.Socket[bytes]
    beats: zmq.Socket[bytes]
    notices: zmq.Socket[bytes]
    market: MarketSnapshot

    def send(self, payloads: list[bytes]) -> None:
        """Send every payload; wait (never drop) when the send queue is full."""
        for payload in payloads:
            while True:
                try:
                    self.feed.send(payload, zmq.NOBLOCK)
                    break
                except zmq.Again:
                    time.sleep(0.001)

    def heartbeat(
        self, until: Callable[[dict[str, float]], bool], timeout: float = 10.0
    ) -> dict[str, float]:
        """Read ingestion heartbeats until ``until(stats)``; return those stats."""
        deadline = time.monotonic() + timeout
        last: dict[str, float] = {}
        while time.monotonic() < deadline:
            if self.beats.poll(100):
                beat = messages.notice_decoder.decode(self.beats.recv())
                assert isinstance(beat, messages.Heartbeat)
                assert beat.role == "ingest"
                assert beat.pid == self.proc.pid
                last = beat.stats
                if until(last):
                    return last
        raise AssertionError(f"no heartbeat satisfied the condition in {timeout} s: {last}")

    def index(self, quote_id: str) -> int:
        return self.market.quote_index[quote_id]


@contextmanager
def ingest_rig(
    market: MarketSnapshot,
    market_file: Path,
    *,
    conflation: ConflationConfig | None = None,
    bind_heartbeats: bool = True,
    feed: FeedConfig | None = None,
) -> Iterator[Rig]:
    endpoints = loopback_endpoints([])
    table = QuoteTable.create("ingtest", market.quotes)
    ctx = zmq.Context()
    proc: BaseProcess | None = None
    try:
        config = ServiceConfig(
            name="ingtest",
            run_dir=str(market_file.parent),
            book="unused.csv",
            market=str(market_file),
            feed=feed or FeedConfig(),
            conflation=conflation or ConflationConfig(),
            heartbeat_s=0.05,
            endpoints=endpoints,
            segments={"quotes": table.name},
        )
        feed_sock: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        feed_sock.setsockopt(zmq.XPUB_NODROP, 1)
        feed_sock.setsockopt(zmq.SNDHWM, 100_000)
        feed_sock.bind(endpoints.feed)
        beats: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
        if bind_heartbeats:
            beats.bind(endpoints.heartbeats)
        notices: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        notices.setsockopt(zmq.SUBSCRIBE, b"")
        # notices are published, not queued: watch for our subscriber's connection
        monitor = notices.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        notices.connect(endpoints.notices)
        for sock in (feed_sock, beats, notices):
            sock.setsockopt(zmq.LINGER, 0)
        proc = SPAWN.Process(target=ingest.run, args=(encode_config(config),), daemon=True)
        proc.start()
        assert feed_sock.poll(15_000), "the ingestion never subscribed to the feed"
        assert feed_sock.recv() == b"\x01"
        assert monitor.poll(15_000), "the notices subscriber never connected"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        notices.disable_monitor()
        monitor.close(linger=0)
        time.sleep(0.05)  # the subscription itself travels after the handshake
        yield Rig(config, table, proc, feed_sock, beats, notices, market)
    finally:
        if proc is not None:
            _stop(proc)
        ctx.destroy(linger=0)
        table.close()


# --- validation, counters, the table and the notices ----------------------------------------


def test_bad_ticks_are_counted_and_only_valid_latest_values_reach_the_table(
    market: MarketSnapshot, market_file: Path
) -> None:
    windows = ConflationConfig(
        fx_spot_ms=20.0, fx_vol_ms=20.0, rates_ms=20.0, equity_ms=20.0, credit_ms=20.0
    )
    with ingest_rig(market, market_file, conflation=windows) as rig:
        rate = "USD.SOFR.OIS.5Y"
        payloads = [
            _tick("FX.EURUSD", 1.0850, 1),
            _tick("FX.EURUSD", 1.0851, 2),
            _tick("FX.EURUSD", 1.0853, 3),
            _tick(rate, -0.001, 1),  # a negative rate is fine
            b"\xc1 not msgpack",
            b"",
            ENCODE(["FX.EURUSD", "1.09", 4, 0]),  # value as a string
            ENCODE({"quote_id": "FX.EURUSD"}),
            ENCODE(["FX.EURUSD", 1.09, 4]),  # a field missing
            ENCODE(["FX.EURUSD", 1.09, 4, 0, "x"]),  # a fifth element
            _tick(rate, math.nan, 2),
            _tick("EQ.AAPL", -260.0, 1),
            _tick("FX.NOSUCH", 1.0, 1),
            _tick("FX.EURUSD", 1.0899, 3),  # duplicate seq
            _tick("FX.EURUSD", 1.0777, 2),  # older seq
            _tick("FX.EURUSD", 5.0, 4),  # a 360% jump
            _tick("CDX.IG.5Y.CORR", 1.2, 1),
        ]
        rig.send(payloads)
        stats = rig.heartbeat(lambda s: s.get("offered", 0) >= len(payloads))
        assert stats["offered"] == len(payloads)
        assert stats["accepted"] == 4
        expected = {
            "bad_payload": 6,
            "unknown_id": 1,
            "nan": 1,
            "non_positive": 1,
            "out_of_range": 2,
            "duplicate": 1,
            "out_of_order": 1,
        }
        for reason, count in expected.items():
            assert stats[f"rejected.{reason}"] == count, reason
        assert stats["rejected"] == sum(expected.values())
        assert stats["accepted"] + stats["rejected"] == len(payloads)

        # the flush: one notice naming both quotes, values in the table
        fx, r = rig.index("FX.EURUSD"), rig.index(rate)
        seen: set[int] = set()
        deadline = time.monotonic() + 5.0
        gen = 0
        while seen != {fx, r} and time.monotonic() < deadline:
            if rig.notices.poll(100):
                notice = messages.notice_decoder.decode(rig.notices.recv())
                assert isinstance(notice, messages.QuotesDirty)
                seen |= set(notice.quotes)
                gen = notice.gen
        assert seen == {fx, r}
        values, updated, table_gen = rig.table.snapshot()
        assert table_gen >= gen > 0
        assert gen % 2 == 0
        assert values[fx] == 1.0853
        assert values[r] == -0.001
        assert rig.table.columns["seq"][fx] == 3
        unchanged = np.ones(values.size, dtype=bool)
        unchanged[[fx, r]] = False
        np.testing.assert_array_equal(values[unchanged], market.quotes[unchanged])
        assert updated[fx] > updated[rig.index("EQ.AAPL")]
        stats = rig.heartbeat(lambda s: s.get("flushed", 0) >= 2)
        assert stats["flushed"] == 2
        assert stats["conflation_ratio"] == 2.0
        assert stats["latency_ignored"] == 0
        assert 0.0 < stats["latency_run_p99_us"] < 10e6
        assert stats["notices_sent"] >= 1


def test_an_oversized_message_is_a_bad_payload_and_the_feed_stays_connected(
    market: MarketSnapshot, market_file: Path
) -> None:
    with ingest_rig(market, market_file) as rig:
        big = ENCODE(["FX.EURUSD", 1.0851, 1, 0, "x" * ingest.MAX_TICK_BYTES])
        rig.send([big, _tick("FX.EURUSD", 1.0850, 1), _tick("FX.EURUSD", math.inf, 2)])
        stats = rig.heartbeat(lambda s: s.get("offered", 0) >= 3)
        assert stats["offered"] == 3
        assert stats["accepted"] == 1
        assert stats["rejected.bad_payload"] == 1
        assert stats["rejected.out_of_range"] == 1
        assert not rig.feed.poll(0), "the ingestion's subscription changed"


def test_zero_loss_at_a_high_rate_and_latency_is_reported(
    market: MarketSnapshot, market_file: Path
) -> None:
    ids = market.quote_ids
    n = 30_000
    bad_every = 97
    seqs = dict.fromkeys(ids, 0)
    payloads: list[bytes] = []
    expected_bad = 0
    for k in range(n):
        q = ids[k % len(ids)]
        if k % bad_every == 0:
            payloads.append(_tick(q, math.nan, seqs[q] + 1))
            expected_bad += 1
            continue
        seqs[q] += 1
        payloads.append(_tick(q, float(market.quotes[k % len(ids)]), seqs[q]))
    with ingest_rig(market, market_file) as rig:
        start = time.monotonic()
        rig.send(payloads)
        send_s = time.monotonic() - start
        stats = rig.heartbeat(lambda s: s.get("offered", 0) >= n, timeout=20.0)
        assert send_s < 5.0, f"sending {n} ticks took {send_s:.1f} s"
        assert stats["offered"] == n
        assert stats["accepted"] + stats["rejected"] == n
        assert stats["rejected.nan"] == expected_bad
        assert stats["accepted"] == n - expected_bad
        run_p99 = rig.heartbeat(lambda s: "latency_run_p99_us" in s)["latency_run_p99_us"]
        assert 0.0 < run_p99 < 60e6


def test_a_blocked_consumer_does_not_stall_ingestion(
    market: MarketSnapshot, market_file: Path
) -> None:
    # nobody reads notices (a one-message receive queue, never read) and, at first, nobody
    # is even bound at the heartbeat endpoint: both sends fill up while ticks keep coming
    zero = ConflationConfig(
        fx_spot_ms=0.0, fx_vol_ms=0.0, rates_ms=0.0, equity_ms=0.0, credit_ms=0.0
    )
    with ingest_rig(market, market_file, conflation=zero, bind_heartbeats=False) as rig:
        rig.notices.setsockopt(zmq.RCVHWM, 1)
        ids = market.quote_ids
        rounds = 10
        payloads = [
            _tick(q, float(v) if not q.endswith("OIS.5Y") else 0.05 + r * 1e-4, r + 1)
            for r in range(rounds)
            for q, v in zip(ids, market.quotes, strict=True)
        ]
        rig.send(payloads[: len(payloads) // 2])
        time.sleep(1.0)  # heartbeats pile up (high-water mark 16) with nobody to take them
        rig.send(payloads[len(payloads) // 2 :])
        last = rig.index("USD.SOFR.OIS.5Y")
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and rig.table.columns["seq"][last] != rounds:
            time.sleep(0.01)
        assert rig.table.columns["seq"][last] == rounds
        assert rig.table.snapshot()[0][last] == pytest.approx(0.05 + (rounds - 1) * 1e-4)
        rig.beats.bind(rig.config.endpoints.heartbeats)  # type: ignore[union-attr]
        stats = rig.heartbeat(lambda s: s.get("offered", 0) >= len(payloads))
        assert stats["accepted"] == len(payloads)
        # whether heartbeats were dropped meanwhile depends on timing (their high-water mark
        # is 16 at one every heartbeat_s); what must hold is that ingestion never stalled
        assert stats["heartbeats_dropped"] >= 0
        assert stats["notices_sent"] > 1


def test_sigterm_stops_within_two_seconds_and_leaves_the_segment(
    market: MarketSnapshot, market_file: Path
) -> None:
    with ingest_rig(market, market_file) as rig:
        rig.heartbeat(lambda s: True)
        assert rig.proc.pid is not None
        start = time.monotonic()
        os.kill(rig.proc.pid, signal.SIGTERM)
        rig.proc.join(2.0)
        assert not rig.proc.is_alive(), "ingestion still running 2 s after SIGTERM"
        assert time.monotonic() - start < 2.0
        assert rig.proc.exitcode == 0
        assert (SHM_DIR / rig.table.name).exists()  # only the owner unlinks
        # its last heartbeat says it is going (ready False) with the final counters
        last = None
        while rig.beats.poll(500):
            last = messages.notice_decoder.decode(rig.beats.recv())
        assert isinstance(last, messages.Heartbeat)
        assert last.ready is False
        assert last.stats["offered"] == 0


def _orphan_parent(config_json: str, pid_path: str) -> None:
    """Start the ingestion, write its pid, and exit without stopping it."""
    child = SPAWN.Process(target=ingest.run, args=(config_json,))
    child.start()
    Path(pid_path).write_text(str(child.pid))
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_an_orphaned_ingestion_exits(
    market: MarketSnapshot, market_file: Path, tmp_path: Path
) -> None:
    with ingest_rig(market, market_file) as rig:
        pid_path = tmp_path / "pid"
        parent = SPAWN.Process(
            target=_orphan_parent, args=(encode_config(rig.config), str(pid_path))
        )
        parent.start()
        parent.join(15.0)
        orphan = int(pid_path.read_text())
        try:
            deadline = time.monotonic() + 10.0
            while _alive(orphan) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(orphan), "the orphaned ingestion is still running"
        finally:
            if _alive(orphan):
                os.kill(orphan, signal.SIGKILL)


def test_the_documented_publisher_feeds_an_external_mode_ingestion(
    market: MarketSnapshot, market_file: Path
) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ticks.md").read_text()
    match = re.search(r"## Publishing from any language.*?```python\n(.*?)```", doc, re.S)
    assert match is not None, "docs/ticks.md has no Python publisher example"
    address = f"tcp://127.0.0.1:{free_port()}"
    code = match.group(1).replace("tcp://127.0.0.1:5555", address)
    endpoints = loopback_endpoints([])
    table = QuoteTable.create("ingtest", market.quotes)
    ctx = zmq.Context()
    procs: list[BaseProcess] = []
    publisher: subprocess.Popen[bytes] | None = None
    try:
        config = ServiceConfig(
            name="ingtest",
            run_dir=str(market_file.parent),
            book="unused.csv",
            market=str(market_file),
            feed=FeedConfig(mode="external", address=address),
            heartbeat_s=0.05,
            endpoints=endpoints,
            segments={"quotes": table.name},
        )
        beats: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
        beats.setsockopt(zmq.LINGER, 0)
        beats.bind(endpoints.heartbeats)
        publisher = subprocess.Popen([sys.executable, "-c", code])
        procs.append(SPAWN.Process(target=ingest.run, args=(encode_config(config),)))
        procs[0].start()
        assert publisher.wait(30.0) == 0
        deadline = time.monotonic() + 10.0
        stats: dict[str, float] = {}
        fx = market.quote_index["FX.EURUSD"]
        while time.monotonic() < deadline and (
            stats.get("offered", 0) < 1000 or table.columns["seq"][fx] != 1000
        ):
            if beats.poll(100):
                beat = messages.notice_decoder.decode(beats.recv())
                assert isinstance(beat, messages.Heartbeat)
                stats = beat.stats
        assert stats["offered"] == 1000
        assert stats["accepted"] == 1000
        assert table.columns["seq"][fx] == 1000
        assert table.snapshot()[0][fx] == pytest.approx(1.0842 + 1000 * 1e-5)
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
            publisher.wait()
        for proc in procs:
            _stop(proc)
        ctx.destroy(linger=0)
        table.close()


def test_latency_statistics_per_interval_and_for_the_whole_run() -> None:
    stats = ingest.LatencyStats()
    rng = np.random.default_rng(1)
    first = rng.lognormal(np.log(300e3), 0.5, 5_000).astype(np.int64)  # ns
    second = rng.lognormal(np.log(900e3), 0.3, 15_000).astype(np.int64)
    for x in [*first.tolist(), -5, ingest.MAX_LATENCY_NS]:
        stats.add(x)
    one = stats.take()
    assert one["latency_samples"] == first.size
    assert one["latency_ignored"] == 2
    assert one["latency_p99_us"] == pytest.approx(np.percentile(first, 99) / 1e3)
    assert one["latency_max_us"] == pytest.approx(first.max() / 1e3)
    for x in second.tolist():
        stats.add(x)
    two = stats.take()
    assert two["latency_p50_us"] == pytest.approx(np.percentile(second, 50) / 1e3)
    both = np.concatenate([first, second]) / 1e3
    for name, q in (("latency_run_p50_us", 50), ("latency_run_p99_us", 99)):
        exact = np.percentile(both, q)
        assert exact <= two[name] <= exact * 1.04, name  # the bucket's upper edge, 3.5% wide
    assert "latency_p50_us" not in stats.take()  # nothing new in this interval


# --- the feed process -----------------------------------------------------------------------


@contextmanager
def feed_rig(config: ServiceConfig) -> Iterator[tuple[BaseProcess, zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    proc: BaseProcess | None = None
    try:
        sub: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        proc = SPAWN.Process(target=feed.run, args=(encode_config(config),), daemon=True)
        proc.start()
        assert config.endpoints is not None
        sub.connect(config.endpoints.feed)
        yield proc, sub
    finally:
        if proc is not None:
            _stop(proc)
        ctx.destroy(linger=0)


def _feed_config(market_file: Path, feed_config: FeedConfig) -> ServiceConfig:
    return ServiceConfig(
        name="feedtest",
        run_dir=str(market_file.parent),
        book="unused.csv",
        market=str(market_file),
        feed=feed_config,
        heartbeat_s=0.05,
        endpoints=loopback_endpoints([]),
    )


def test_the_synthetic_feed_publishes_ticks_of_the_market(
    market: MarketSnapshot, market_file: Path
) -> None:
    config = _feed_config(market_file, FeedConfig(mode="synthetic", rate=4_000.0, seed=11))
    with feed_rig(config) as (proc, sub):
        ticks: list[messages.Tick] = []
        deadline = time.monotonic() + 15.0
        while len(ticks) < 2_000 and time.monotonic() < deadline:
            if sub.poll(100):
                ticks.append(messages.tick_decoder.decode(sub.recv()))
        assert len(ticks) >= 2_000
        span_s = (ticks[-1].sent_ns - ticks[0].sent_ns) / 1e9
        assert 0.25 < span_s < 1.5, f"2,000 ticks at 4,000/s took {span_s:.2f} s"
        assert {t.quote_id for t in ticks} <= set(market.quote_ids)
        assert sum(t.quote_id.startswith("FX.") for t in ticks) > len(ticks) / 5
        conflator = Conflator(market.quote_ids, market.quotes, ConflationConfig())
        reasons = {
            conflator.offer(market.quote_index[t.quote_id], t.value, t.seq, 0) for t in ticks
        }
        assert reasons <= {None, "duplicate", "out_of_order"}
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(2.0)
        assert proc.exitcode == 0


def test_synthetic_ticks_are_realistic_and_reproducible(market: MarketSnapshot) -> None:
    rows = list(
        itertools.islice(feed.synthetic_ticks(market, 5_000.0, 3, anomaly_rate=0.02), 40_000)
    )
    again = list(
        itertools.islice(feed.synthetic_ticks(market, 5_000.0, 3, anomaly_rate=0.02), 40_000)
    )
    assert rows == again
    offsets = np.array([r[3] for r in rows])
    assert np.all(np.diff(offsets) >= 0)
    assert len(rows) / (offsets[-1] / 1e9) == pytest.approx(5_000.0 * 1.02, rel=0.1)
    per_quote: dict[str, int] = {}
    for q, *_ in rows:
        per_quote[q] = per_quote.get(q, 0) + 1

    def mean_per_quote(prefix: str) -> float:
        counts = [per_quote.get(q, 0) for q in market.quote_ids if q.startswith(prefix)]
        return sum(counts) / len(counts)

    fx, eq, rate = mean_per_quote("FX."), mean_per_quote("EQ."), mean_per_quote("USD.")
    fxvol, credit = mean_per_quote("FXVOL."), mean_per_quote("CDX.")
    assert fx > eq > rate > fxvol
    assert rate > credit
    conflator = Conflator(market.quote_ids, market.quotes, ConflationConfig())
    for q, v, s, t in rows:
        conflator.offer(market.quote_index[q], v, s, t)
    anomalies = conflator.rejected["duplicate"] + conflator.rejected["out_of_order"]
    assert conflator.rejected_total == anomalies
    assert anomalies / len(rows) == pytest.approx(0.02, rel=0.25)
    assert conflator.rejected["duplicate"] > 0
    assert conflator.rejected["out_of_order"] > 0


def test_replay_file_round_trip(market: MarketSnapshot, market_file: Path, tmp_path: Path) -> None:
    rows = list(itertools.islice(feed.synthetic_ticks(market, 5_000.0, 5), 3_000))
    path = tmp_path / "ticks.parquet"
    assert feed.record(rows, path) == len(rows)
    assert list(feed.read_replay(path)) == rows
    # the same ticks recorded 30x slower (a ~20 s span), to tell "as fast as possible" from
    # "paced" by a wide margin even on a loaded machine
    slow = [(q, v, s, t * 30) for q, v, s, t in rows]
    slow_path = tmp_path / "slow.parquet"
    feed.record(slow, slow_path)
    for speed, recorded, file in ((0.0, slow, slow_path), (2.0, rows, path)):
        span_s = (recorded[-1][3] - recorded[0][3]) / 1e9
        config = _feed_config(market_file, FeedConfig(mode="replay", path=str(file), speed=speed))
        with feed_rig(config) as (_, sub):
            got: list[messages.Tick] = []
            deadline = time.monotonic() + 15.0
            while len(got) < len(recorded) and time.monotonic() < deadline:
                if sub.poll(100):
                    got.append(messages.tick_decoder.decode(sub.recv()))
        assert [(t.quote_id, t.value, t.seq) for t in got] == [r[:3] for r in recorded]
        took_s = (got[-1].sent_ns - got[0].sent_ns) / 1e9
        if speed:
            # paced: never ahead of the recorded times (late only by scheduling delays)
            assert took_s >= span_s / speed - 0.01
            assert took_s <= span_s / speed + 5.0
        else:
            assert took_s < span_s / 4


def test_a_bad_replay_file_is_refused(tmp_path: Path) -> None:
    import polars as pl

    path = tmp_path / "bad.parquet"
    pl.DataFrame(
        {"quote_id": ["FX.EURUSD"], "value": ["1.0"], "seq": [1], "t_ns": [0]}
    ).write_parquet(path)
    with pytest.raises(ValueError, match="'value' is String"):
        list(feed.read_replay(path))
    pl.DataFrame({"quote_id": ["FX.EURUSD"], "value": [1.0], "seq": [1]}).write_parquet(path)
    with pytest.raises(ValueError, match="no column 't_ns'"):
        list(feed.read_replay(path))


def test_the_feed_heartbeat_counts_how_late_its_ticks_leave(
    market: MarketSnapshot, market_file: Path
) -> None:
    config = _feed_config(market_file, FeedConfig(mode="synthetic", rate=4_000.0, seed=5))
    assert config.endpoints is not None
    ctx = zmq.Context()
    beats: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
    beats.setsockopt(zmq.LINGER, 0)
    beats.bind(config.endpoints.heartbeats)
    try:
        with feed_rig(config) as (_, sub):
            received = 0
            deadline = time.monotonic() + 15.0
            while received < 1_000 and time.monotonic() < deadline:
                if sub.poll(100):
                    sub.recv()
                    received += 1
            assert received >= 1_000
            wire: list[float] = []
            while time.monotonic() < deadline and sum(wire[:-1]) < 20:
                if beats.poll(100):
                    beat = messages.notice_decoder.decode(beats.recv())
                    assert isinstance(beat, messages.Heartbeat)
                    assert beat.role == "feed"
                    wire = beat.histograms["feed_lateness"]
            # one lateness per paced group (~200 a second below 20,000 ticks/s), not per tick
            groups = sum(wire[:-1])
            assert 20 <= groups < beat.stats["sent"]
            assert quantile_ms(wire, 0.5) <= 100.0  # on schedule, give or take a slow machine
    finally:
        ctx.destroy(linger=0)
