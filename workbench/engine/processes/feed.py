"""The market-data feed process: synthetic ticks or a replayed tick file on a ZeroMQ PUB.

Modes (``config.feed.mode``):

* ``synthetic``: ticks for every quote id of the market at ``feed.rate`` ticks/s in total
  (:func:`~.tickstreams.synthetic_ticks`: a realistic mix, bursts, jitter, and now and then a
  duplicate or an out-of-order tick).
* ``replay``: the rows of a Parquet tick file (:func:`~.tickstreams.record` writes one) at their
  recorded offsets divided by ``feed.speed`` (0 = as fast as the consumer takes them).

Wire format: one msgpack array ``[quote_id, value, seq, sent_ns]`` per message, no topic
(``docs/ticks.md``); ``sent_ns`` is ``time.monotonic_ns()`` at the send. The socket is an
XPUB bound at ``endpoints.feed``: publishing starts once a subscriber has connected (so the
first ticks are not lost to a late joiner) and it does not drop silently
(``XPUB_NODROP``): a tick that does not fit in the send queue is counted in ``dropped``,
or, for a replay at speed 0, retried after a pause (back-pressure, no loss).

The process runs on the shell (:mod:`~.shell`): heartbeats (role ``feed``) carry the counters
``sent``, ``dropped``, ``subscribers`` and ``rate`` (ticks/s over the last interval) and the
``feed_lateness`` histogram (how late the first tick of each paced group left against its
schedule, ms); SIGTERM, SIGINT or the parent's exit stop it after a last heartbeat.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Coroutine, Iterator
from typing import Any, Final

import zmq

from workbench.engine.processes import shell
from workbench.engine.processes.inputs import market_path
from workbench.engine.processes.tickstreams import (
    ANOMALY_RATE,
    REPLAY_COLUMNS,
    TickRow,
    activity_weights,
    read_replay,
    record,
    synthetic_ticks,
)
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import ServiceConfig
from workbench.engine.telemetry.histograms import LatencyHistogram

__all__ = [
    "ANOMALY_RATE",
    "REPLAY_COLUMNS",
    "Feed",
    "TickRow",
    "activity_weights",
    "read_replay",
    "record",
    "run",
    "synthetic_ticks",
]

log = logging.getLogger(__name__)

SNDHWM: Final = 1_000_000
"""Ticks the feed may queue for a subscriber before it counts drops (or waits, replay at 0)."""
MAX_BATCH: Final = 2048
"""Ticks sent per turn of the loop before the heartbeat and the stop event get a turn."""
FINE_PACING_S: Final = 0.002
"""At high rates, below this wait the pacing sleeps ≤ 0.2 ms at a time outside the event loop
(which only sleeps in whole milliseconds), so ticks leave in small groups close to their times."""
FINE_RATE: Final = 20_000.0
"""Synthetic rates (ticks/s) from which the pacing is fine; below it ticks due within
:data:`LEAD_NS` leave together."""
LEAD_NS: Final = 5_000_000
"""Below :data:`FINE_RATE` the feed wakes when the next tick is due and sends every tick due
within this much of it (each stamped when it is sent): at 5,000 ticks/s the loop, and the
ingestion reading it, wake ~200 times a second instead of once per tick (with 1 ms, ~1,000
times: feed and ingestion used twice the CPU)."""


class Feed:
    """The feed process's sockets and tasks (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
        if config.endpoints is None:
            raise ValueError("feed: the configuration has no endpoints")
        self.config = config
        self.ctx = zmq.Context()
        self.pub: zmq.Socket[bytes] = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, SNDHWM)
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        self.pub.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, to count peers
        self.pub.bind(config.endpoints.feed)
        self.shell = shell.Shell(config, "feed", stop, self.ctx)
        self.lateness = LatencyHistogram()
        """How late the first tick of each paced group left against its schedule (ms; one
        sent early counts as 0)."""
        self.sent = 0
        self.dropped = 0
        self.waits = 0
        self.subscribers = 0
        self._last_sent = 0
        self._last_ns = time.monotonic_ns()

    def ticks(self) -> tuple[Iterator[TickRow], float]:
        """The tick stream of the configured mode and its time scale (0 = no pacing)."""
        feed = self.config.feed
        if feed.mode == "synthetic":
            from workbench.market.io import load_market

            market = load_market(market_path(self.config))
            # sequence numbers continue across restarts of the feed: start at the clock
            stream = synthetic_ticks(
                market,
                feed.rate,
                feed.seed,
                anomaly_rate=feed.anomaly_rate,
                seq_start=time.monotonic_ns(),
            )
            return stream, 1.0
        if feed.mode == "replay":
            if not feed.path:
                raise ValueError("feed: replay mode needs feed.path")
            if feed.speed < 0.0:
                raise ValueError(f"feed: replay speed must be ≥ 0, got {feed.speed}")
            return read_replay(feed.path), (1.0 / feed.speed if feed.speed > 0.0 else 0.0)
        raise ValueError(f"feed: mode {feed.mode!r} has no feed process")

    def _subscriptions(self) -> None:
        while True:
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers = max(self.subscribers - 1, 0)

    async def publish(self) -> None:
        """Wait for a subscriber, then send the stream at its pace."""
        stream, scale = self.ticks()
        gc.collect()
        gc.freeze()  # later collections scan only what the stream allocates, not the imports
        while not self.subscribers:
            self._subscriptions()
            await asyncio.sleep(0.005)
        backpressure = scale == 0.0
        feed = self.config.feed
        lead = 0 if feed.mode == "synthetic" and feed.rate >= FINE_RATE else LEAD_NS
        encode = messages.encode
        tick_cls = messages.Tick
        clock = time.monotonic_ns
        send = self.pub.send
        noblock = zmq.NOBLOCK
        start = clock()
        pending: TickRow | None = None
        while True:
            self._subscriptions()
            now = clock()
            elapsed = now - start
            sent = 0
            for row in itertools.chain((pending,) if pending else (), stream):
                pending = row
                due = row[3] * scale
                if due > elapsed + lead:
                    break
                sent_ns = clock()
                payload = encode(tick_cls(row[0], row[1], row[2], sent_ns))
                try:
                    send(payload, noblock)
                except zmq.Again:
                    if backpressure:
                        self.waits += 1
                        break  # retry this row after a pause
                    self.dropped += 1
                else:
                    self.sent += 1
                if not sent and scale:  # once per group (under 1 µs), not per tick
                    self.lateness.observe_ms(max(sent_ns - start - due, 0.0) / 1e6)
                pending = None
                sent += 1
                if sent >= MAX_BATCH:
                    break
            else:
                log.info("feed: end of the stream after %d ticks", self.sent)
                await self.shell.stop.wait()
                return
            if pending is None or sent >= MAX_BATCH:
                await asyncio.sleep(0)
            elif backpressure:
                await asyncio.sleep(0.001)
            else:
                # wake when the next tick is due and send what is due within `lead` of it
                wait_s = max(pending[3] * scale - (clock() - start), 0.0) / 1e9
                if lead == 0 and wait_s < FINE_PACING_S:
                    # the event loop sleeps in whole milliseconds: for a shorter wait, block
                    # briefly instead
                    time.sleep(min(wait_s, 0.0002))
                    await asyncio.sleep(0)
                else:  # the next group: the ticks due within `lead` of the next one
                    await asyncio.sleep(wait_s)

    def stats(self) -> dict[str, float]:
        """Counters of this process (what a heartbeat carries)."""
        now = time.monotonic_ns()
        rate = (self.sent - self._last_sent) / max(now - self._last_ns, 1) * 1e9
        self._last_sent, self._last_ns = self.sent, now
        return {
            "sent": float(self.sent),
            "dropped": float(self.dropped),
            "backpressure_waits": float(self.waits),
            "subscribers": float(self.subscribers),
            "rate": rate,
        }

    def histograms(self) -> dict[str, list[float]]:
        """The ``feed_lateness`` histogram, for the heartbeat."""
        return {"feed_lateness": self.lateness.wire()}

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Publish the stream."""
        return {"publish": self.publish()}

    def close(self) -> None:
        """Close the sockets (linger 0; the shell's 200 ms for the last heartbeat) and the
        context."""
        self.shell.close()
        self.pub.close(linger=0)
        self.ctx.term()


def run(config_json: str) -> None:
    """Process entry point: publish ticks until SIGTERM/SIGINT or the parent's exit.

    Parameters
    ----------
    config_json
        The service configuration as JSON (:func:`~.config.encode_config`).
    """
    config, stop = shell.start(config_json, "feed")
    shell.run_tasks(lambda: Feed(config, stop))
