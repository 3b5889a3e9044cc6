"""Ingestion alone: sustained tick rate with zero loss, and feed-to-acceptance latency.

Targets (issue 3, ``docs/benchmarks.md``), on the 2-core machine:

(a) ≥ 100,000 ticks/s sustained with zero loss: a sender process publishes pre-generated
    synthetic ticks (the realistic mix of :func:`workbench.engine.processes.feed.synthetic_ticks`,
    with its duplicates and swapped pairs) at a fixed rate, stamping ``sent_ns`` at each send; the
    ingestion process must account for every one (sent = accepted + rejected) and keep up
    (its backlog drained within a moment of the sender's end). The same run as fast as the
    sender can go gives the ingestion's capacity.
(b) at 50,000 ticks/s from the real feed process (``feed.run``, synthetic mode), p99 of the
    time from the feed's send to the tick's acceptance by ingestion ≤ 2 ms (the conflation
    window comes after acceptance and is not included).

Latencies come from the ingestion's heartbeats: exact percentiles per heartbeat interval and a
whole-run histogram (buckets 3.5% wide). Every process is started with ``spawn``, stopped by
pid, and the quote table is unlinked at the end.

Run: ``python benchmarks/bench_ingest.py [--seconds 10] [--rate 100000] [--latency-rate 50000]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import msgspec
import zmq
from _machine import machine

from workbench.engine.processes import feed, ingest
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import FeedConfig, ServiceConfig, encode_config
from workbench.engine.transport.endpoints import loopback_endpoints
from workbench.engine.transport.shm import QuoteTable
from workbench.market.io import load_market, save_market
from workbench.market.reference import generate_reference_market

SPAWN = multiprocessing.get_context("spawn")


def _sender(endpoint: str, market_path: str, n: int, rate: float, seed: int, out: str) -> None:
    """Publish ``n`` synthetic ticks at ``rate`` ticks/s (0 = as fast as possible).

    Ticks are generated before the clock starts; each is encoded with ``sent_ns`` at its send.
    The socket never drops (XPUB_NODROP): a full queue is waited on, so exactly ``n`` are sent.
    The first and last send times (monotonic ns) are written to ``out`` as JSON.
    """
    market = load_market(market_path)
    rows = list(itertools.islice(feed.synthetic_ticks(market, 5_000.0, seed), n))
    ctx = zmq.Context()
    pub: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.setsockopt(zmq.SNDHWM, 1_000_000)
    pub.bind(endpoint)
    pub.recv()  # the ingestion's subscription
    encode = msgspec.msgpack.Encoder().encode
    clock = time.monotonic_ns
    start = clock()
    k = 0
    gap = 1e9 / rate if rate > 0 else 0.0
    while k < n:
        allowed = n if gap == 0.0 else min(n, int((clock() - start) / gap) + 1)
        while k < allowed:
            q, v, s, _ = rows[k]
            try:
                pub.send(encode((q, v, s, clock())), zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.0005)
                continue
            k += 1
        if k < n and gap:
            time.sleep(0.0002)
    end = clock()
    Path(out).write_text(json.dumps({"start_ns": start, "end_ns": end, "sent": k}))
    time.sleep(2.0)  # let the queue drain before linger 0 closes the socket
    pub.close(linger=0)
    ctx.term()


@dataclass
class Beat:
    at_ns: int
    stats: dict[str, float]
    role: str = "ingest"


@dataclass
class Stack:
    config: ServiceConfig
    beats: zmq.Socket[bytes]
    ingest: BaseProcess

    def read(self, timeout_s: float, role: str = "ingest") -> Iterator[Beat]:
        """Heartbeats of ``role`` for ``timeout_s`` seconds (the others are skipped)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.beats.poll(50):
                beat = messages.notice_decoder.decode(self.beats.recv())
                if isinstance(beat, messages.Heartbeat) and beat.role == role:
                    yield Beat(beat.sent_ns, beat.stats, beat.role)


def _stop(proc: BaseProcess) -> None:
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(5.0)
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5.0)


@contextmanager
def stack(
    market_path: Path, feed_config: FeedConfig, *, heartbeat_s: float = 0.25
) -> Iterator[Stack]:
    """A quote table, an ingestion process and a heartbeat socket (torn down at exit)."""
    market = load_market(market_path)
    table = QuoteTable.create("bench", market.quotes)
    ctx = zmq.Context()
    proc: BaseProcess | None = None
    try:
        config = ServiceConfig(
            name="bench",
            run_dir=str(market_path.parent),
            book="unused.csv",
            market=str(market_path),
            feed=feed_config,
            heartbeat_s=heartbeat_s,
            endpoints=loopback_endpoints([]),
            segments={"quotes": table.name},
        )
        assert config.endpoints is not None
        beats: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
        beats.setsockopt(zmq.LINGER, 0)
        beats.bind(config.endpoints.heartbeats)
        proc = SPAWN.Process(target=ingest.run, args=(encode_config(config),))
        proc.start()
        yield Stack(config, beats, proc)
    finally:
        if proc is not None:
            _stop(proc)
        ctx.destroy(linger=0)
        table.close()


def throughput(market_path: Path, n: int, rate: float) -> dict[str, float]:
    """(a): ``n`` ticks at ``rate`` from a sender process; returns the ingestion's account.

    ``backlog_ms`` is the worst lag of the ingestion behind the sender's schedule seen at a
    heartbeat (ticks not yet handled / rate); ``lag_s`` is the time from the sender's last send
    to the first heartbeat that counts every tick (≤ one heartbeat interval more than the truth).
    """
    out = market_path.parent / "sender.json"
    with stack(market_path, FeedConfig(mode="none"), heartbeat_s=0.1) as s:
        assert s.config.endpoints is not None
        sender = SPAWN.Process(
            target=_sender,
            args=(s.config.endpoints.feed, str(market_path), n, rate, 5, str(out)),
        )
        sender.start()
        try:
            beats: list[Beat] = []
            for beat in s.read(timeout_s=n / max(rate, 50_000.0) + 60.0):
                beats.append(beat)
                if beat.stats["offered"] >= n:
                    break
            sender.join(30.0)
        finally:
            _stop(sender)
    if not beats:
        raise RuntimeError("no heartbeat from the ingestion")
    timing = json.loads(out.read_text())
    start, end = timing["start_ns"], timing["end_ns"]
    st = beats[-1].stats
    backlog = 0.0
    if rate > 0:
        for beat in beats:
            if start < beat.at_ns < end:
                behind = rate * (beat.at_ns - start) / 1e9 - beat.stats["offered"]
                backlog = max(backlog, behind / rate * 1e3)
    done = beats[-1].at_ns
    return {
        "sent": float(timing["sent"]),
        "offered": st["offered"],
        "accepted": st["accepted"],
        "rejected": st["rejected"],
        "duplicate": st["rejected.duplicate"],
        "out_of_order": st["rejected.out_of_order"],
        "sender_rate": n / ((end - start) / 1e9),
        "ingest_rate": n / ((done - start) / 1e9),
        "lag_s": (done - end) / 1e9,
        "backlog_ms": backlog,
        "depth_max": max(b.stats["queue_depth_max"] for b in beats),
        "p99_run_us": st.get("latency_run_p99_us", float("nan")),
        "p50_run_us": st.get("latency_run_p50_us", float("nan")),
    }


def latency(market_path: Path, rate: float, seconds: float) -> dict[str, float]:
    """(b): the feed process at ``rate`` for ``seconds``; latencies from the heartbeats."""
    feed_config = FeedConfig(mode="synthetic", rate=rate, seed=9)
    with stack(market_path, feed_config) as s:
        feed_proc = SPAWN.Process(target=feed.run, args=(encode_config(s.config),))
        feed_proc.start()
        try:
            p50s: list[float] = []
            p99s: list[float] = []
            maxes: list[float] = []
            warm = 2  # skip the start-up intervals
            last: Beat | None = None
            for beat in s.read(timeout_s=seconds + 30.0):
                last = beat
                if beat.stats.get("latency_samples", 0) < rate * 0.1:
                    continue
                if warm:
                    warm -= 1
                    continue
                p50s.append(beat.stats["latency_p50_us"])
                p99s.append(beat.stats["latency_p99_us"])
                maxes.append(beat.stats["latency_max_us"])
                if len(p99s) * s.config.heartbeat_s >= seconds:
                    break
            _stop(feed_proc)
            # after the feed's exit: its last heartbeat (final count) and the ingestion's
            sent = offered = 0.0
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                if s.beats.poll(50):
                    hb = messages.notice_decoder.decode(s.beats.recv())
                    if isinstance(hb, messages.Heartbeat) and hb.role == "feed":
                        sent = hb.stats["sent"]
                    elif isinstance(hb, messages.Heartbeat):
                        offered = hb.stats["offered"]
                        last = Beat(hb.sent_ns, hb.stats)
        finally:
            _stop(feed_proc)
    return {
        "intervals": float(len(p99s)),
        "p50_median_us": statistics.median(p50s),
        "p99_median_us": statistics.median(p99s),
        "p99_worst_us": max(p99s),
        "max_worst_us": max(maxes),
        "p99_run_us": last.stats.get("latency_run_p99_us", float("nan")) if last else 0.0,
        "offered": offered,
        "sent": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100_000.0)
    parser.add_argument("--latency-rate", type=float, default=50_000.0)
    parser.add_argument("--parts", default="ab", help="which parts to run: a, b or ab")
    args = parser.parse_args()
    print(
        "machine: "
        + machine(
            f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})",
            f"msgspec {msgspec.__version__}",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        market_path = Path(tmp, "market.json")
        save_market(generate_reference_market(), market_path)

        n = int(args.rate * args.seconds)
        runs = ((f"{args.rate:,.0f}/s", args.rate), ("max", 0.0)) if "a" in args.parts else ()
        for label, rate in runs:
            r = throughput(market_path, n, rate)
            lost = r["sent"] - r["accepted"] - r["rejected"]
            if rate:
                ok = lost == 0 and r["sender_rate"] >= 0.99 * rate and r["lag_s"] < 0.25
            else:
                ok = lost == 0 and r["ingest_rate"] >= args.rate
            print(
                f"(a) {label:>10}: sent {r['sent']:,.0f} at {r['sender_rate']:,.0f}/s  "
                f"accepted {r['accepted']:,.0f}  rejected {r['rejected']:,.0f} "
                f"(dup {r['duplicate']:.0f}, order {r['out_of_order']:.0f})  lost {lost:.0f}  "
                f"ingested at {r['ingest_rate']:,.0f}/s  done {r['lag_s']:.2f} s after the "
                f"last send  worst backlog {r['backlog_ms']:.0f} ms  max drained batch "
                f"{r['depth_max']:.0f}  latency p50/p99 {r['p50_run_us']:,.0f}/"
                f"{r['p99_run_us']:,.0f} µs  {'PASS' if ok else 'FAIL'}"
            )

        if "b" not in args.parts:
            return
        r = latency(market_path, args.latency_rate, args.seconds)
        ok = r["p99_run_us"] <= 2_000.0 and r["sent"] == r["offered"]
        print(
            f"(b) feed at {args.latency_rate:,.0f}/s, {r['intervals']:.0f} intervals of 0.25 s: "
            f"p50 median {r['p50_median_us']:.0f} µs, p99 median {r['p99_median_us']:.0f} µs, "
            f"worst interval p99 {r['p99_worst_us']:.0f} µs, max {r['max_worst_us']:.0f} µs, "
            f"whole-run p99 {r['p99_run_us']:.0f} µs (target ≤ 2,000); feed sent "
            f"{r['sent']:,.0f}, ingestion counted {r['offered']:,.0f}  "
            f"{'PASS' if ok else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
