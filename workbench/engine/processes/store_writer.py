"""The store writer process: keeps every published snapshot in the risk store (docs/store.md).

It subscribes to the aggregator's snapshots like a client (SUB, every snapshot; when it falls
behind, the aggregator's PUB drops for it and never waits), asks the control plane for the
per-position risk every ``store.position_interval_s`` (a DEALER, one request at a time, never
blocking), and hands both to a :class:`~workbench.store.writer.StoreWriter`, which writes one
immutable Parquet file per dataset every ``store.interval_s``. It runs niced like the workers,
on the polling process shell (:mod:`~.shell`, role ``store_writer``): heartbeats carry the
writer's counters (``snapshots_missed``: seqs it never received, dropped for it by the
aggregator's PUB while it lagged); SIGTERM, SIGINT or the parent's exit stop it after a last
flush.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Final

import msgspec
import zmq

from workbench.engine.processes import shell
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig
from workbench.store.layout import store_root, utc_date
from workbench.store.writer import StoreWriter

log = logging.getLogger(__name__)

_POLL_MS: Final = 100
_RCVHWM: Final = 1_000
"""Snapshots queued for this process before the aggregator's PUB drops for it (100 s at 10 Hz)."""
_POSITIONS_TIMEOUT_S: Final = 30.0
"""A positions request unanswered this long is given up (the aggregator restarted); the next
one goes out at once."""


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
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.SNDHWM, 1)
        self.control.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        self.control.connect(ep.control)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.shell = shell.Shell(config, "store_writer", stop, self.ctx)
        self.last_seq = 0
        self.clock = WallClock()
        self.asked_ns = 0  # when the pending positions request went out (0: none pending)
        self.next_positions_ns = 0
        self.counts = {
            "bad_snapshots": 0,
            "snapshots_missed": 0,  # seqs skipped: the aggregator's PUB dropped them for us
            "positions_errors": 0,
            "positions_timeouts": 0,
        }

    def begin(self) -> None:
        """Clean what a killed writer left and delete old dates."""
        self.writer.open(now_ns=time.monotonic_ns(), today=utc_date(time.time_ns()))

    def turn(self) -> None:
        """Read what arrived, ask for positions when due, write a file when due."""
        ready = dict(self.poller.poll(_POLL_MS))
        if self.sub in ready:
            self._snapshots()
        if self.control in ready:
            self._positions()
        now = time.monotonic_ns()
        self._ask_positions(now)
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

    def _ask_positions(self, now: int) -> None:
        if self.asked_ns and now - self.asked_ns > _POSITIONS_TIMEOUT_S * 1e9:
            self.counts["positions_timeouts"] += 1
            self.asked_ns = 0
        if self.asked_ns or now < self.next_positions_ns or not self.last_seq:
            return  # nothing to ask yet: no snapshot seen means no priced book
        with contextlib.suppress(zmq.Again):
            self.control.send_multipart([b"", msg.encode(msg.PositionsRequest())], zmq.NOBLOCK)
            self.asked_ns = now
            self.next_positions_ns = now + self.position_period_ns

    def _positions(self) -> None:
        while True:
            try:
                parts = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.asked_ns = 0
            made_ns = time.time_ns()
            try:
                reply = msg.reply_decoder.decode(parts[-1])
                if not reply.ok:
                    raise ValueError(reply.error)
                frame = msg.bytes_to_frame(reply.tables["positions"])
                self.writer.add_positions(frame, made_ns=made_ns, seq=self.last_seq)
            except (msgspec.DecodeError, ValueError, KeyError) as exc:
                self.counts["positions_errors"] += 1
                log.warning("store: positions not stored: %s", exc)

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
            self.shell.close()
            self.sub.close()
            self.control.close()
            self.ctx.term()


def run(config_json: str) -> None:
    """Process entry point (``spawn``): serve until SIGTERM/SIGINT or the parent's exit."""
    config, stop = shell.start(config_json, "store_writer", niced=True)
    shell.run_polling(lambda: StoreWriterProcess(config, stop))


__all__ = ["StoreWriterProcess", "run"]
