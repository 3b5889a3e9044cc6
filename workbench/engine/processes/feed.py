"""The market-data feed process: synthetic ticks or a replayed tick file on a ZeroMQ PUB.

Modes (``config.feed.mode``):

* ``synthetic``: ticks for every quote id of the market at ``feed.rate`` ticks/s in total
  (:func:`synthetic_ticks`): G10 FX spots tick most, equities next, rates, vols and credit
  less; random walks with per-class scales that revert slowly to the snapshot; bursts
  (stretches of 1,024 ticks at 4× the rate, normalised so the long-run rate is ``feed.rate``),
  exponential gaps (jitter), and now and then a duplicate or a quote's previous tick again
  after its newer one (out of order).
* ``replay``: the rows of a Parquet tick file (:func:`record` writes one) at their recorded
  offsets divided by ``feed.speed`` (0 = as fast as the consumer takes them).

Wire format: one msgpack array ``[quote_id, value, seq, sent_ns]`` per message, no topic
(``docs/ticks.md``); ``sent_ns`` is ``time.monotonic_ns()`` at the send. The socket is an
XPUB bound at ``endpoints.feed``: publishing starts once a subscriber has connected (so the
first ticks are not lost to a late joiner) and it does not drop silently
(``XPUB_NODROP``): a tick that does not fit in the send queue is counted in ``dropped``,
or, for a replay at speed 0, retried after a pause (back-pressure, no loss).

Heartbeats (role ``feed``) go to ``endpoints.heartbeats`` with the counters ``sent``,
``dropped``, ``subscribers`` and ``rate`` (ticks/s over the last interval). SIGTERM and SIGINT
only set an event; the loop sends a last heartbeat (``ready`` False, final counters), closes
its sockets (linger 0, 200 ms for that heartbeat) and :func:`run` returns. The process
also stops when its parent is gone.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
import zmq

from workbench._types import FloatArray
from workbench.engine.processes.conflation import (
    CORR,
    CREDIT,
    EQ_SPOT,
    EQ_VOL,
    FX_SPOT,
    FX_VOL,
    RATE,
    classify,
)
from workbench.engine.processes.inputs import market_path
from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs
from workbench.market.model import MarketSnapshot

log = logging.getLogger(__name__)

TickRow = tuple[str, float, int, int]
"""(quote_id, value, seq, offset_ns): one tick and its time from the start of the stream."""

ANOMALY_RATE: Final = 0.001
"""Default share of ticks that come as a duplicate or as a swapped (out-of-order) pair."""
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
REPLAY_COLUMNS: Final = {"quote_id": pl.String, "value": pl.Float64, "seq": pl.Int64}
"""Replay file columns (and ``t_ns``, an integer offset in ns from the start)."""

# ticks per quote relative to a rate quote; step scale; reversion per tick; bounds
_ACTIVITY: Final = {
    FX_SPOT: 60.0,
    EQ_SPOT: 6.0,
    RATE: 1.0,
    FX_VOL: 0.4,
    EQ_VOL: 0.1,
    CREDIT: 0.5,
    CORR: 0.05,
}
_STEP: Final = {  # (multiplicative?, scale): relative for spots and spreads, absolute else
    FX_SPOT: (True, 0.5e-4),  # half a basis point of the price
    EQ_SPOT: (True, 2.0e-4),
    RATE: (False, 0.5e-4),  # half a basis point of rate
    FX_VOL: (False, 1.0e-3),  # 0.1 vol point
    EQ_VOL: (False, 1.0e-3),
    CREDIT: (True, 2.0e-3),  # 0.1 bp on a 55 bp index
    CORR: (False, 2.0e-3),
}
_BOUNDS: Final = {
    FX_SPOT: (0.0, math.inf),
    EQ_SPOT: (0.0, math.inf),
    RATE: (-0.15, 0.5),
    FX_VOL: (0.01, 2.0),
    EQ_VOL: (0.01, 2.0),
    CREDIT: (1.0e-5, 0.5),
    CORR: (0.02, 0.98),
}
_REVERSION: Final = 1.0e-3
_BURST_TICKS: Final = 1_024
_BURST_PROB: Final = 0.1
_BURST_FACTOR: Final = 4.0


def activity_weights(quote_ids: Iterable[str]) -> FloatArray:
    """The share of ticks of each quote (sums to 1)."""
    w: FloatArray = np.array([_ACTIVITY[classify(q)] for q in quote_ids], dtype=np.float64)
    out: FloatArray = w / w.sum()
    return out


def synthetic_ticks(
    market: MarketSnapshot,
    rate: float,
    seed: int,
    *,
    anomaly_rate: float = ANOMALY_RATE,
    seq_start: int = 1,
    chunk: int = 4 * _BURST_TICKS,
) -> Iterator[TickRow]:
    """An endless, reproducible stream of realistic ticks for every quote of ``market``.

    Parameters
    ----------
    market
        The snapshot whose quotes tick (values start at its quotes).
    rate
        Mean ticks per second over all quotes (anomalies come on top).
    seed
        Random seed: the same seed gives the same stream.
    anomaly_rate
        Share of ticks followed by an anomaly, half each: the same tick again (a duplicate),
        or the quote's previous tick again (an older seq after a newer one: out of order).
    seq_start
        The first sequence number of every quote.
    chunk
        Ticks drawn per vectorised step (a multiple of 1,024).

    Yields
    ------
    TickRow
        ``(quote_id, value, seq, offset_ns)`` with non-decreasing ``offset_ns``.

    Notes
    -----
    Each quote follows a random walk (relative steps for spots and spreads, absolute steps for
    rates, vols and correlations; scales in ``_STEP``) with a slow reversion to its snapshot
    value, kept inside the bounds of ``_BOUNDS``. Gaps between ticks are exponential; a
    stretch of 1,024 ticks comes at 4× the rate with probability 0.1 (a burst), and the gaps
    are scaled so that the long-run rate is ``rate``.
    """
    if not rate > 0.0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    if chunk <= 0 or chunk % _BURST_TICKS:
        raise ValueError(f"chunk must be a positive multiple of {_BURST_TICKS}, got {chunk}")
    ids = np.array(market.quote_ids, dtype=object)
    n = ids.size
    rng = np.random.default_rng(seed)
    codes = [classify(q) for q in market.quote_ids]
    p = activity_weights(market.quote_ids)
    mult = np.array([_STEP[c][0] for c in codes])
    scale = np.array([_STEP[c][1] for c in codes])
    lo = np.array([_BOUNDS[c][0] for c in codes])
    hi = np.array([_BOUNDS[c][1] for c in codes])
    start = np.asarray(market.quotes, dtype=np.float64)
    # walk in log space for relative steps: level = log(x) there, x elsewhere
    target = np.where(mult, np.log(np.where(mult, start, 1.0)), start)
    level = target.copy()
    seq = np.full(n, seq_start - 1, dtype=np.int64)
    time_factor = (1.0 - _BURST_PROB) + _BURST_PROB / _BURST_FACTOR
    gap_ns = 1e9 / rate / time_factor
    t0 = 0.0
    half = anomaly_rate / 2.0
    blocks = chunk // _BURST_TICKS
    while True:
        idx = rng.choice(n, size=chunk, p=p)
        z = rng.standard_normal(chunk)
        factor = np.where(rng.random(blocks) < _BURST_PROB, _BURST_FACTOR, 1.0)
        gaps = rng.exponential(gap_ns, chunk) / np.repeat(factor, _BURST_TICKS)
        u = rng.random(chunk)
        times = t0 + np.cumsum(gaps)
        t0 = float(times[-1])
        # per-quote cumulative steps inside the chunk (stable sort keeps time order)
        order = np.argsort(idx, kind="stable")
        q = idx[order]
        inc = scale[q] * z + _REVERSION * (target[q] - level[q])
        csum = np.cumsum(inc)
        first = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
        size = np.diff(np.r_[first, chunk])
        before = np.repeat(np.r_[0.0, csum[first[1:] - 1]], size)
        rank = np.arange(chunk) - np.repeat(first, size)
        new_level = level[q] + csum - before
        prev_level = np.where(rank == 0, level[q], np.r_[level[q[0]], new_level[:-1]])
        last = np.r_[first[1:] - 1, chunk - 1]
        level[q[last]] = new_level[last]

        def value_of(lv: FloatArray, qq: np.ndarray = q) -> FloatArray:
            x: FloatArray = np.where(mult[qq], np.exp(lv), np.clip(lv, lo[qq], hi[qq]))
            return x

        values = np.empty(chunk)
        prev = np.empty(chunk)
        values[order] = value_of(new_level)
        prev[order] = value_of(prev_level)
        seqs = np.empty(chunk, dtype=np.int64)
        seqs[order] = seq[q] + rank + 1
        seq[q[last]] += size
        # rates, vols and correlations stay inside their bounds
        level[q[last]] = np.where(mult[q[last]], level[q[last]], values[order][last])
        for quote, x, s, t, a, x0 in zip(
            ids[idx].tolist(),
            values.tolist(),
            seqs.tolist(),
            times.astype(np.int64).tolist(),
            u.tolist(),
            prev.tolist(),
            strict=True,
        ):
            yield (quote, x, s, t)
            if a < half:
                yield (quote, x, s, t)  # a duplicate
            elif a < anomaly_rate:
                yield (quote, x0, s - 1, t)  # the previous tick again, after this one


def record(ticks: Iterable[TickRow], path: str | Path) -> int:
    """Write ticks to a Parquet replay file; returns the number of rows.

    Columns: ``quote_id`` (string), ``value`` (float64), ``seq`` (int64), ``t_ns`` (int64,
    nanoseconds from the start of the recording).
    """
    rows = list(ticks)
    frame = pl.DataFrame(
        {
            "quote_id": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "seq": [r[2] for r in rows],
            "t_ns": [r[3] for r in rows],
        },
        schema={**REPLAY_COLUMNS, "t_ns": pl.Int64},
    )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(p)
    return frame.height


def read_replay(path: str | Path) -> Iterator[TickRow]:
    """The rows of a replay file, in file order.

    Raises
    ------
    ValueError
        If the file lacks a column, a column has the wrong type, or a value is null.
    """
    frame = pl.read_parquet(path)
    for name, dtype in {**REPLAY_COLUMNS, "t_ns": pl.Int64}.items():
        if name not in frame.columns:
            raise ValueError(f"{path}: replay file has no column {name!r}")
        got = frame.schema[name]
        if name == "t_ns" and got.is_integer():
            continue
        if got != dtype:
            raise ValueError(f"{path}: column {name!r} is {got}, expected {dtype}")
        if frame[name].null_count():
            raise ValueError(f"{path}: column {name!r} has null values")
    return zip(
        frame["quote_id"].to_list(),
        frame["value"].to_list(),
        frame["seq"].to_list(),
        frame["t_ns"].cast(pl.Int64).to_list(),
        strict=True,
    )


class Feed:
    """The feed process's sockets and tasks (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig) -> None:
        if config.endpoints is None:
            raise ValueError("feed: the configuration has no endpoints")
        self.config = config
        self.parent = os.getppid()
        self.stop = asyncio.Event()
        self.ctx = zmq.Context()
        self.pub: zmq.Socket[bytes] = self.ctx.socket(zmq.XPUB)
        self.beats: zmq.Socket[bytes] = self.ctx.socket(zmq.PUSH)
        for sock in (self.pub, self.beats):
            sock.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, SNDHWM)
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        self.pub.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, to count peers
        self.beats.setsockopt(zmq.SNDHWM, 16)
        self.pub.bind(config.endpoints.feed)
        self.beats.connect(config.endpoints.heartbeats)
        self.sent = 0
        self.dropped = 0
        self.waits = 0
        self.heartbeats_dropped = 0
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
                payload = encode(tick_cls(row[0], row[1], row[2], clock()))
                try:
                    send(payload, noblock)
                except zmq.Again:
                    if backpressure:
                        self.waits += 1
                        break  # retry this row after a pause
                    self.dropped += 1
                else:
                    self.sent += 1
                pending = None
                sent += 1
                if sent >= MAX_BATCH:
                    break
            else:
                log.info("feed: end of the stream after %d ticks", self.sent)
                await self.stop.wait()
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
            "heartbeats_dropped": float(self.heartbeats_dropped),
            "rate": rate,
        }

    def beat(self, *, ready: bool = True) -> None:
        """Send one heartbeat now (``ready`` False: the last one, on the way out)."""
        beat = messages.Heartbeat(
            role="feed",
            pid=os.getpid(),
            sent_ns=time.monotonic_ns(),
            ready=ready,
            stats=self.stats(),
        )
        try:
            self.beats.send(messages.encode(beat), zmq.NOBLOCK)
        except zmq.Again:
            self.heartbeats_dropped += 1

    async def heartbeat_loop(self) -> None:
        """Send a heartbeat every ``heartbeat_s``; stop if the parent process is gone."""
        while True:
            self.beat()
            if os.getppid() != self.parent:
                log.warning("feed: parent process %d is gone, stopping", self.parent)
                self.stop.set()
            await asyncio.sleep(self.config.heartbeat_s)

    async def serve(self) -> None:
        """Run until a signal, the parent's exit, or a task's failure."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        tasks = [
            asyncio.create_task(self.publish(), name="publish"),
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
                raise RuntimeError(f"feed: task {task.get_name()} failed") from task.exception()

    def close(self) -> None:
        """Close the sockets (linger 0) and the context."""
        self.pub.close(linger=0)
        self.beats.close(linger=200)  # the last heartbeat's way out
        self.ctx.term()


async def _main(config: ServiceConfig) -> None:
    feed = Feed(config)
    try:
        await feed.serve()
    finally:
        feed.close()


def run(config_json: str) -> None:
    """Process entry point: publish ticks until SIGTERM/SIGINT or the parent's exit.

    Parameters
    ----------
    config_json
        The service configuration as JSON (:func:`~.config.encode_config`).
    """
    config = decode_config(config_json)
    logs.setup(config.name, "feed")
    die_with_parent()
    asyncio.run(_main(config))
