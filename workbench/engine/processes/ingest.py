"""The ingestion process: ticks from ZeroMQ → validation and conflation → the quote table.

One asyncio loop (``zmq.asyncio``) runs three tasks:

* **receive**: a SUB socket connected to the feed (``endpoints.feed``, or ``feed.address`` for
  an external publisher). After each awaited receive, the messages already queued are drained
  with ``NOBLOCK`` on the same socket, without an ``await`` per message, and each one goes
  through :class:`TickHandler` (decode → quote index → :class:`~.conflation.Conflator`).
* **flush**: at each instant a conflation window can close (windows close on their class's
  clock grid: a few times a second; every :data:`FLUSH_S` with a 0 window), the quotes whose
  window expired are written to the shared-memory :class:`~.shm.QuoteTable` and announced with
  a :class:`~.messages.QuotesDirty` notice on a PUB socket bound at ``endpoints.notices``.
* **heartbeat**: every ``heartbeat_s`` a :class:`~.messages.Heartbeat` with the counters goes
  to the supervisor's PULL socket (``endpoints.heartbeats``).

No send can block: every socket has a send high-water mark and every send is ``NOBLOCK``; a
heartbeat that does not fit is counted in ``heartbeats_dropped``. The notices PUB drops for a
subscriber that does not read (ZeroMQ PUB semantics) and never for the others; a subscriber
sees the gap in ``QuotesDirty.gen`` and can re-read the whole table.

SIGTERM and SIGINT only set an event; the loop then sends a last heartbeat (``ready`` False,
the final counters), closes the sockets (linger 0; 200 ms for that heartbeat) and its handle
on the table (the supervisor owns and unlinks the segment) and :func:`run` returns.
The process also stops when its parent is gone (its parent pid changed).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import numpy as np
import zmq
import zmq.asyncio

from workbench._types import FloatArray
from workbench.engine.processes.conflation import Conflator
from workbench.engine.processes.inputs import market_path
from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport.shm import QuoteTable
from workbench.market.io import load_market

log = logging.getLogger(__name__)

FLUSH_S: Final = 0.002
"""Interval of the flush task when a class has a 0 window (flush at once), seconds."""
MAX_BATCH: Final = 4096
"""Messages handled per wake-up before the other tasks get a turn."""
RCVHWM: Final = 1_000_000
"""Ticks the SUB socket may queue (about 10 s at 100,000 ticks/s) before the feed drops."""
MAX_TICK_BYTES: Final = 4_096
"""A larger message is not a tick (one is about 40 bytes): ``bad_payload``, not decoded."""
NOTICE_HWM: Final = 10_000
HEARTBEAT_HWM: Final = 16
FINAL_BEAT_LINGER_MS: Final = 200
"""How long the last heartbeat (``ready`` False, final counters) may take to leave at exit."""
MAX_LATENCY_NS: Final = 60_000_000_000
"""A feed-to-acceptance latency above this (or negative) is not a latency: the publisher's
``sent_ns`` is not this machine's monotonic clock. Such ticks count in ``latency_ignored``."""

_HIST_EDGES_US: Final = np.geomspace(0.1, 1.0e8, 601)
"""Log-spaced bucket edges (µs) of the whole-run latency histogram: 3.5% apart."""


def _settle() -> None:
    """Take the one-off costs before the first tick, not in the middle of the stream.

    The first percentile call of a process costs ~15 ms (lazy imports), and a full collection
    of everything imported at start-up ~20 ms; after ``gc.freeze()`` the collector scans only
    what was allocated since, so no collection stalls the loop for long.
    """
    np.percentile(np.arange(8.0), [50.0, 99.0])
    gc.collect()
    gc.freeze()


def _configure(sock: zmq.Socket[Any], options: Mapping[int, int | bytes]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in options.items():
        sock.setsockopt(option, value)


class LatencyStats:
    """Feed-to-acceptance latencies: exact per interval, bucketed since the start."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.ignored = 0
        self._hist = np.zeros(_HIST_EDGES_US.size + 1, dtype=np.int64)
        self.histogram = LatencyHistogram()
        """The same latencies in the exported buckets (``feed_to_ingest``)."""

    def add(self, latency_ns: int) -> None:
        """Record one latency in nanoseconds."""
        if 0 <= latency_ns < MAX_LATENCY_NS:
            self.samples.append(latency_ns)
        else:
            self.ignored += 1

    def take(self) -> dict[str, float]:
        """Statistics in µs of the samples since the last call, and of the whole run."""
        out: dict[str, float] = {"latency_samples": float(len(self.samples))}
        out["latency_ignored"] = float(self.ignored)
        if self.samples:
            us = np.asarray(self.samples, dtype=np.float64) / 1e3
            self.samples = []
            p50, p99 = np.percentile(us, [50.0, 99.0])
            out["latency_p50_us"] = float(p50)
            out["latency_p99_us"] = float(p99)
            out["latency_max_us"] = float(us.max())
            self.histogram.observe_ms(us / 1e3)
            self._hist += np.bincount(
                np.searchsorted(_HIST_EDGES_US, us), minlength=self._hist.size
            )
        total = int(self._hist.sum())
        if total:
            cum = np.cumsum(self._hist)
            for name, q in (("latency_run_p50_us", 0.5), ("latency_run_p99_us", 0.99)):
                k = min(int(np.searchsorted(cum, q * total)), _HIST_EDGES_US.size - 1)
                out[name] = float(_HIST_EDGES_US[k])  # the bucket's upper edge
        return out


class TickHandler:
    """Decodes raw tick payloads and offers them to a conflator; no sockets, no clock.

    Parameters
    ----------
    quote_index
        Quote id → row of the quote table.
    conflator
        The state machine the decoded ticks go to.
    """

    def __init__(self, quote_index: Mapping[str, int], conflator: Conflator) -> None:
        self.quote_index = dict(quote_index)
        self.conflator = conflator
        self.latency = LatencyStats()

    def handle(self, payload: bytes, now_ns: int) -> str | None:
        """Handle one message read at ``now_ns``; None if accepted, else the reject reason."""
        if len(payload) > MAX_TICK_BYTES:
            self.conflator.reject("bad_payload")
            return "bad_payload"
        try:
            tick = messages.tick_decoder.decode(payload)
        except msgspec.DecodeError:
            self.conflator.reject("bad_payload")
            return "bad_payload"
        index = self.quote_index.get(tick.quote_id)
        if index is None:
            self.conflator.reject("unknown_id")
            return "unknown_id"
        reason = self.conflator.offer(index, tick.value, tick.seq, now_ns)
        if reason is None:
            self.latency.add(now_ns - tick.sent_ns)
        return reason


class Ingest:
    """The ingestion process's sockets, table and tasks (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig) -> None:
        if config.endpoints is None:
            raise ValueError("ingest: the configuration has no endpoints")
        if "quotes" not in config.segments:
            raise ValueError("ingest: the configuration names no 'quotes' segment")
        market = load_market(market_path(config))
        self.config = config
        self.endpoints = config.endpoints
        self.parent = os.getppid()
        self.table = QuoteTable.attach(config.segments["quotes"], len(market.quote_ids))
        values: FloatArray = self.table.snapshot()[0]
        self.handler = TickHandler(
            market.quote_index, Conflator(market.quote_ids, values, config.conflation)
        )
        self.stop = asyncio.Event()
        self.ctx = zmq.asyncio.Context()
        # sends are NOBLOCK and never awaited: plain sockets (an asyncio socket would put a
        # full queue's zmq.Again into a future instead of raising it)
        self.plain_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self.ctx.underlying)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sockets: list[zmq.Socket[Any]] = [self.sub]
        # no ZMQ_MAXMSGSIZE: libzmq treats an oversized message as a protocol error and closes
        # the connection for good (no reconnect); the handler refuses it as a bad payload instead
        _configure(self.sub, {zmq.RCVHWM: RCVHWM, zmq.SUBSCRIBE: b""})
        # drained with plain NOBLOCK reads on the same socket: no future per message
        self.raw: zmq.Socket[bytes] = zmq.Socket.shadow(self.sub.underlying)
        feed = config.feed.address if config.feed.mode == "external" else self.endpoints.feed
        if not feed:
            raise ValueError("ingest: feed mode 'external' needs feed.address")
        self.sub.connect(feed)
        self.notices = self.plain_ctx.socket(zmq.PUB)
        self.beats = self.plain_ctx.socket(zmq.PUSH)
        self.sockets += [self.notices, self.beats]
        _configure(self.notices, {zmq.SNDHWM: NOTICE_HWM})
        _configure(self.beats, {zmq.SNDHWM: HEARTBEAT_HWM})
        self.notices.bind(self.endpoints.notices)
        self.beats.connect(self.endpoints.heartbeats)
        self.received = 0
        self.depth = 0
        self.depth_max = 0
        self.flushes = 0
        self.notices_sent = 0
        self.notices_dropped = 0
        self.heartbeats_sent = 0
        self.heartbeats_dropped = 0
        self.generation = self.table.generation

    # --- tasks ----------------------------------------------------------------------------

    async def receive(self) -> None:
        """Await a tick, then drain what is already queued without awaiting each one."""
        handle = self.handler.handle
        recv = self.raw.recv
        clock = time.monotonic_ns
        noblock = zmq.NOBLOCK
        again = zmq.Again
        while True:
            handle(await self.sub.recv(), clock())
            n = 1
            while n < MAX_BATCH:
                try:
                    payload = recv(noblock)
                except again:
                    break
                handle(payload, clock())
                n += 1
            self.received += n
            self.depth = n - 1
            self.depth_max = max(self.depth_max, n - 1)
            if n >= MAX_BATCH:
                await asyncio.sleep(0)  # let the flush and heartbeat tasks run

    def flush(self, now_ns: int) -> int:
        """Write the due quotes to the table and announce them; returns how many."""
        idx, values, seqs = self.handler.conflator.due(now_ns)
        if idx.size == 0:
            return 0
        self.generation = self.table.write(idx, values, seqs, now_ns)
        self.flushes += 1
        notice = messages.QuotesDirty(
            gen=self.generation, flushed_ns=now_ns, quotes=tuple(idx.tolist())
        )
        try:
            self.notices.send(messages.encode(notice), zmq.NOBLOCK)
            self.notices_sent += 1
        except zmq.Again:  # a PUB drops for a slow subscriber silently: only a refusal counts
            self.notices_dropped += 1
        return int(idx.size)

    async def flush_loop(self) -> None:
        """Flush whenever a window can have closed (sleeping in between, not polling)."""
        conflator = self.handler.conflator
        while True:
            now = time.monotonic_ns()
            wait_ns = conflator.next_flush_ns(now) - now
            await asyncio.sleep(wait_ns / 1e9 if wait_ns > 0 else FLUSH_S)
            self.flush(time.monotonic_ns())

    def stats(self) -> dict[str, float]:
        """Every counter of this process (what a heartbeat carries); interval values restart."""
        out = self.handler.conflator.stats()
        out |= self.handler.latency.take()
        out |= {
            "received": float(self.received),
            "queue_depth": float(self.depth),
            "queue_depth_max": float(self.depth_max),
            "flushes": float(self.flushes),
            "generation": float(self.generation),
            "notices_sent": float(self.notices_sent),
            "notices_dropped": float(self.notices_dropped),
            "heartbeats_sent": float(self.heartbeats_sent),
            "heartbeats_dropped": float(self.heartbeats_dropped),
        }
        self.depth_max = 0
        return out

    def beat(self, *, ready: bool = True) -> None:
        """Send one heartbeat now (``ready`` False: the last one, on the way out)."""
        beat = messages.Heartbeat(
            role="ingest",
            pid=os.getpid(),
            sent_ns=time.monotonic_ns(),
            ready=ready,
            stats=self.stats(),
            histograms={"feed_to_ingest": self.handler.latency.histogram.wire()},
        )
        try:
            self.beats.send(messages.encode(beat), zmq.NOBLOCK)
            self.heartbeats_sent += 1
        except zmq.Again:
            self.heartbeats_dropped += 1

    async def heartbeat_loop(self) -> None:
        """Send a heartbeat every ``heartbeat_s``; stop if the parent process is gone."""
        while True:
            self.beat()
            if os.getppid() != self.parent:
                log.warning("ingest: parent process %d is gone, stopping", self.parent)
                self.stop.set()
            await asyncio.sleep(self.config.heartbeat_s)

    async def serve(self) -> None:
        """Run the tasks until a signal, the parent's exit, or a task's failure."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        _settle()
        tasks = [
            asyncio.create_task(self.receive(), name="receive"),
            asyncio.create_task(self.flush_loop(), name="flush"),
            asyncio.create_task(self.heartbeat_loop(), name="heartbeat"),
        ]
        stopper = asyncio.create_task(self.stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopper, *tasks):
                task.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            self.beat(ready=False)  # final counters
        for task in tasks:
            if task in done and task.exception() is not None:
                raise RuntimeError(f"ingest: task {task.get_name()} failed") from task.exception()

    def close(self) -> None:
        """Close the sockets (linger 0), the table handle (never unlinked here), the context."""
        for sock in self.sockets:
            sock.close(linger=FINAL_BEAT_LINGER_MS if sock is self.beats else 0)
        self.table.close()
        self.ctx.term()


async def _main(config: ServiceConfig) -> None:
    ingest = Ingest(config)
    try:
        await ingest.serve()
    finally:
        ingest.close()


def run(config_json: str) -> None:
    """Process entry point: run the ingestion until SIGTERM/SIGINT or the parent's exit.

    Parameters
    ----------
    config_json
        The service configuration as JSON (:func:`~.config.encode_config`).
    """
    config = decode_config(config_json)
    logs.setup(config.name, "ingest")
    die_with_parent()
    asyncio.run(_main(config))
