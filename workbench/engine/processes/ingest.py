"""The ingestion process: ticks from ZeroMQ → validation and conflation → the quote table.

One asyncio loop (``zmq.asyncio``) runs three tasks (four with polling sources):

* **receive**: a SUB socket connected to the feed (``endpoints.feed``, or ``feed.address`` for
  an external publisher). After each awaited receive, the messages already queued are drained
  with ``NOBLOCK`` on the same socket, without an ``await`` per message, and each one goes
  through :class:`TickHandler` (decode → quote index → :class:`~.conflation.Conflator`).
* **flush**: at each instant a conflation window can close (windows close on their class's
  clock grid: a few times a second; every :data:`FLUSH_S` with a 0 window), the quotes whose
  window expired are written to the shared-memory :class:`~.shm.QuoteTable` and announced with
  a :class:`~.messages.QuotesDirty` notice on a PUB socket bound at ``endpoints.notices``.
* **polls** (with polling sources, ``feed.sources``): the outcomes of the HTTP polls, made by
  a polling process of its own (:mod:`~.pollers`), read from a PULL socket; their values go to
  the same conflator through the per-quote failover (:mod:`~.failover`). The feed's ticks of
  quotes with a fallback take a second dictionary look-up after a miss in the first; the
  others take no extra work.
* **heartbeat**: the process shell's (:mod:`~.shell`): every ``heartbeat_s`` a
  :class:`~.messages.Heartbeat` with the counters and the ``feed_to_ingest`` histogram.

No send can block: every socket has a send high-water mark and every send is ``NOBLOCK``. The
notices PUB drops for a subscriber that does not read (ZeroMQ PUB semantics) and never for the
others; a subscriber sees the gap in ``QuotesDirty.gen`` and can re-read the whole table.

The shell stops the tasks on SIGTERM, SIGINT or the parent's exit and sends a last heartbeat;
:meth:`Ingest.close` then closes the sockets (linger 0) and its handle on the table (the
supervisor owns and unlinks the segment).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Final

import msgspec
import numpy as np
import zmq
import zmq.asyncio

from workbench._types import FloatArray
from workbench.engine.processes import shell
from workbench.engine.processes.conflation import Conflator
from workbench.engine.processes.failover import Failover
from workbench.engine.processes.inputs import market_path
from workbench.engine.processes.pollers import PollingChild
from workbench.engine.processes.polling import PollIntake
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import ServiceConfig
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport.shm import QuoteTable
from workbench.market.io import load_market

FLUSH_S: Final = 0.002
"""Interval of the flush task when a class has a 0 window (flush at once), seconds."""
MAX_BATCH: Final = 4096
"""Messages handled per wake-up before the other tasks get a turn."""
RCVHWM: Final = 1_000_000
"""Ticks the SUB socket may queue (about 10 s at 100,000 ticks/s) before the feed drops."""
MAX_TICK_BYTES: Final = 4_096
"""A larger message is not a tick (one is about 40 bytes): ``bad_payload``, not decoded."""
NOTICE_HWM: Final = 10_000
MAX_LATENCY_NS: Final = 60_000_000_000
"""A feed-to-acceptance latency above this (or negative) is not a latency: the publisher's
``sent_ns`` is not this machine's monotonic clock. Such ticks count in ``latency_ignored``."""


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
    """Feed-to-acceptance latencies: exact per interval, in a :class:`LatencyHistogram` (the
    exported ``feed_to_ingest`` buckets, quantiles within 3.5%) since the start."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.ignored = 0
        self.histogram = LatencyHistogram()

    def add(self, latency_ns: int) -> None:
        """Record one latency in nanoseconds (a list append: the per-tick cost)."""
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
        if self.histogram.count:
            for name, q in (("latency_run_p50_us", 0.5), ("latency_run_p99_us", 0.99)):
                out[name] = self.histogram.quantile_ms(q) * 1e3  # the bucket's upper edge
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

    def __init__(
        self, quote_index: Mapping[str, int], conflator: Conflator, failover: Failover | None = None
    ) -> None:
        self.conflator = conflator
        self.latency = LatencyStats()
        self.failover = failover
        guarded = failover.guarded if failover is not None else {}
        # a quote with a fallback is looked up only after a miss: no work for the others
        self.quote_index = {q: i for q, i in quote_index.items() if i not in guarded}
        self.guarded_index = {q: i for q, i in quote_index.items() if i in guarded}

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
            return self._handle_guarded(tick, now_ns)
        reason = self.conflator.offer(index, tick.value, tick.seq, now_ns)
        if reason is None:
            self.latency.add(now_ns - tick.sent_ns)
        return reason

    def _handle_guarded(self, tick: messages.Tick, now_ns: int) -> str | None:
        """A tick of a quote with a polling fallback (the feed takes it back), or unknown."""
        index = self.guarded_index.get(tick.quote_id)
        if index is None or self.failover is None:
            self.conflator.reject("unknown_id")
            return "unknown_id"
        reason = self.conflator.offer(index, tick.value, tick.seq, now_ns)
        if reason is None:
            self.failover.primary(index, now_ns)
            self.latency.add(now_ns - tick.sent_ns)
        return reason


class Ingest:
    """The ingestion process's sockets, table and tasks (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
        if config.endpoints is None:
            raise ValueError("ingest: the configuration has no endpoints")
        if "quotes" not in config.segments:
            raise ValueError("ingest: the configuration names no 'quotes' segment")
        market = load_market(market_path(config))
        self.config = config
        self.endpoints = config.endpoints
        self.table = QuoteTable.attach(config.segments["quotes"], len(market.quote_ids))
        values: FloatArray = self.table.snapshot()[0]
        conflator = Conflator(market.quote_ids, values, config.conflation)
        self.failover: Failover | None = None
        self.intake: PollIntake | None = None
        if config.feed.sources:
            self.failover = Failover(market.quote_ids, config.feed.sources, time.monotonic_ns())
            self.failover.resume(self.table.columns["source"])  # after a restart: as it was
            self.intake = PollIntake(market.quote_index, conflator, self.failover)
        self.handler = TickHandler(market.quote_index, conflator, self.failover)
        self.ctx = zmq.asyncio.Context()
        self.polling: PollingChild | None = None
        if self.intake is not None:
            self.polling = PollingChild(config, self.ctx, self.intake)
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
        self.sockets.append(self.notices)
        _configure(self.notices, {zmq.SNDHWM: NOTICE_HWM})
        self.notices.bind(self.endpoints.notices)
        self.shell = shell.Shell(config, "ingest", stop, self.plain_ctx)
        self.received = 0
        self.depth = 0
        self.depth_max = 0
        self.flushes = 0
        self.notices_sent = 0
        self.notices_dropped = 0
        self.generation = self.table.generation
        _settle()

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
        sources = None if self.failover is None else self.failover.source_of[idx]
        self.generation = self.table.write(idx, values, seqs, now_ns, sources)
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
        }
        self.depth_max = 0
        if self.intake is not None and self.polling is not None:
            out |= self.intake.stats() | self.polling.stats()
            self.intake.log_flips()  # the feed's take-backs, logged within a heartbeat
        return out

    def histograms(self) -> dict[str, list[float]]:
        """The ``feed_to_ingest`` histogram, for the heartbeat."""
        return {"feed_to_ingest": self.handler.latency.histogram.wire()}

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Receive, flush and, with polling sources, the polls' outcomes."""
        out = {"receive": self.receive(), "flush": self.flush_loop()}
        if self.polling is not None:
            out["polls"] = self.polling.receive()
        return out

    def close(self) -> None:
        """Close the sockets (linger 0), the table handle (never unlinked here), the context."""
        self.shell.close()
        if self.polling is not None:
            self.polling.close()
        for sock in self.sockets:
            sock.close(linger=0)
        self.table.close()
        self.ctx.term()


def run(config_json: str) -> None:
    """Process entry point: run the ingestion until SIGTERM/SIGINT or the parent's exit.

    Parameters
    ----------
    config_json
        The service configuration as JSON (:func:`~.config.encode_config`).
    """
    config, stop = shell.start(config_json, "ingest")
    shell.run_tasks(lambda: Ingest(config, stop))
