"""The store writer process: keeps every published snapshot in the risk store (docs/store.md).

It subscribes to the aggregator's snapshots like a client (SUB, every snapshot; when it falls
behind, the aggregator's PUB drops for it and never waits), reads the per-position risk every
``store.position_interval_s`` straight from the risk segment (a consistent copy under the
workers' counters, as the aggregator reads it: no request, so the aggregator never spends its
loop on the store), and hands both to a :class:`~workbench.store.writer.StoreWriter`, which
writes one immutable Parquet file per dataset every ``store.interval_s``. It runs niced like
the workers, on the polling process shell (:mod:`~.shell`, role ``store_writer``): heartbeats
carry the writer's counters (``snapshots_missed``: seqs it never received, dropped for it by the
aggregator's PUB while it lagged); SIGTERM, SIGINT or the parent's exit stop it after a last
flush.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final

import msgspec
import polars as pl
import zmq

from workbench.book.io import load_book
from workbench.engine.processes import shell
from workbench.engine.processes.inputs import book_path, market_path
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import Descriptor, ServiceConfig
from workbench.engine.transport.shm import RiskTable, TornReadError
from workbench.market.io import load_market
from workbench.risk.aggregation import risk_frame, static_frame
from workbench.store.layout import store_root, utc_date
from workbench.store.writer import StoreWriter

log = logging.getLogger(__name__)

_POLL_MS: Final = 100
_RCVHWM: Final = 1_000
"""Snapshots queued for this process before the aggregator's PUB drops for it (100 s at 10 Hz)."""


_CLOCK_STEP_NS: Final = 1_000_000_000
"""The UTC clock moved against the monotonic one by more than this: the offset is read again."""


class WallClock:
    """UTC ns minus monotonic ns, read once and kept while the clocks agree within
    :data:`_CLOCK_STEP_NS` (so one monotonic stamp, a breach's start, is one UTC stamp in
    every snapshot that carries it)."""

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def offset(self) -> int:
        """The offset, read again after a step of the UTC clock."""
        now = time.time_ns() - time.monotonic_ns()
        if abs(now - self.offset_ns) > _CLOCK_STEP_NS:
            self.offset_ns = now
        return self.offset_ns


class PositionSource:
    """The per-position risk of the book the service prices, read from its risk segment.

    The book and the segment are those of the service's descriptor (``service.json``), read
    again before each copy: after a reload of the book the next copy is of the new one.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.descriptor = Path(config.run_dir) / "service.json"
        self.market = load_market(market_path(config))
        self.config = config
        self.segment = ""
        self.static = pl.DataFrame()
        self.table: RiskTable | None = None

    def _current(self) -> ServiceConfig:
        try:
            return msgspec.json.decode(self.descriptor.read_bytes(), type=Descriptor).config
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return self.config

    def frame(self) -> pl.DataFrame:
        """A consistent copy of every position's risk (:func:`~.aggregation.risk_frame`)."""
        config = self._current()
        segment = config.segments.get("risk", "")
        if self.table is None or segment != self.segment:
            self.close()
            book = load_book(book_path(config), market=self.market)
            self.static = static_frame(book)
            self.table = RiskTable.attach(segment, len(book))
            self.segment = segment
        return risk_frame(self.static, self.table.snapshot(), time.monotonic_ns())

    def close(self) -> None:
        """Detach from the segment (its owner, the supervisor, unlinks it)."""
        if self.table is not None:
            self.table.close()
            self.table = None


class StoreWriterProcess:
    """The writer's sockets and timers (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
        assert config.endpoints is not None
        ep = config.endpoints
        store = config.store
        self.position_period_ns = int(store.position_interval_s * 1e9)
        self.writer = StoreWriter(
            store_root(config),
            interval_s=store.interval_s,
            retention_days=store.retention_days,
            merge_files=store.merge_files,
        )
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, _RCVHWM)
        self.sub.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(ep.snapshots)
        self.positions = PositionSource(config)
        self.shell = shell.Shell(config, "store_writer", stop, self.ctx)
        self.last_seq = 0
        self.clock = WallClock()
        self.next_positions_ns = 0
        self.counts = {
            "bad_snapshots": 0,
            "snapshots_missed": 0,  # seqs skipped: the aggregator's PUB dropped them for us
            "positions_errors": 0,
        }

    def begin(self) -> None:
        """Clean what a killed writer left and delete old dates."""
        self.writer.open(now_ns=time.monotonic_ns(), today=utc_date(time.time_ns()))

    def turn(self) -> None:
        """Read what arrived, copy the positions when due, write a file when due."""
        if self.sub.poll(_POLL_MS):
            self._snapshots()
        now = time.monotonic_ns()
        if now >= self.next_positions_ns and self.last_seq:  # a snapshot: the book is priced
            self.next_positions_ns = now + self.position_period_ns
            self._positions()
        if self.writer.due(now):
            self.writer.flush(now)
            self.writer.expire(utc_date(time.time_ns()))

    def _snapshots(self) -> None:
        while True:
            try:
                raw = self.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                snap = msg.snapshot_decoder.decode(raw)
                msg.check_version(snap)
            except (msgspec.DecodeError, msg.VersionError):
                self.counts["bad_snapshots"] += 1
                continue
            if self.last_seq and snap.seq > self.last_seq + 1:
                self.counts["snapshots_missed"] += snap.seq - self.last_seq - 1
            self.writer.add_snapshot(snap, wall_offset_ns=self.clock.offset())
            self.last_seq = snap.seq

    def _positions(self) -> None:
        made_ns = time.time_ns()
        try:
            frame = self.positions.frame()
        except (OSError, ValueError, TornReadError) as exc:
            self.counts["positions_errors"] += 1
            log.warning("store: positions not stored: %s", exc)
            return
        self.writer.add_positions(frame, made_ns=made_ns, seq=self.last_seq)

    def stats(self) -> dict[str, float]:
        """The writer's counters and this process's."""
        return {**self.writer.stats(), **{k: float(v) for k, v in self.counts.items()}}

    def histograms(self) -> dict[str, list[float]]:
        """None of its own."""
        return {}

    def close(self) -> None:
        """Write what is buffered, then close the sockets."""
        try:
            self.writer.flush(time.monotonic_ns())
        finally:
            self.positions.close()
            self.shell.close()
            self.sub.close()
            self.ctx.term()


def run(config_json: str) -> None:
    """Process entry point (``spawn``): serve until SIGTERM/SIGINT or the parent's exit."""
    config, stop = shell.start(config_json, "store_writer", niced=True)
    shell.run_polling(lambda: StoreWriterProcess(config, stop))


__all__ = ["PositionSource", "StoreWriterProcess", "run"]
