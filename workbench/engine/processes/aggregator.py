"""The aggregator process: roll-ups, limits and staleness over the shared risk columns.

It reads the risk table (a consistent copy under the workers' generation counters), publishes
aggregated :class:`messages.Snapshot` s on a PUB socket once the workers' results of a flush
have settled, at most ``snapshot_hz`` in any second (:mod:`engine.processes.pacing`; once a second
regardless, so ages keep moving), and answers the
control plane (ROUTER). Requests that need a worker (what-if, profile, options) or the
supervisor (status, restart, stop) are forwarded on DEALER sockets with a request id and
answered when the replies arrive, so a 5-second profile never blocks the snapshots.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import polars as pl
import zmq

from workbench.book.io import load_book
from workbench.engine.processes.inputs import book_path, file_digest, market_path
from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.processes.pacing import FlushTracker, PublishPacer
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.admission import admit
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import RISK_COLUMNS, RiskTable
from workbench.market.io import load_market
from workbench.risk.aggregation import (
    risk_frame,
    rollup,
    static_frame,
)
from workbench.risk.breaches import Breach
from workbench.risk.cells import CellSums
from workbench.risk.limits import LimitMonitor, LimitReport
from workbench.risk.recon import recon, recon_breach, terms_frame

log = logging.getLogger(__name__)

_FORWARD_TIMEOUT_S = 120.0
_STATUS_TIMEOUT_S = 0.8
_CLIENT_QUEUE = 10_000
"""Answers queued per client before the next one is dropped (and counted)."""
_OPTION_TIMEOUT_S = 5.0  # a set_option (and a profile, beyond its seconds) a worker answers at once
_WHATIF_TIMEOUT_S = 60.0
_FRAME_COLUMNS = (*RISK_COLUMNS, "stale", "stale_reason", "updated_ns")
_SUPERVISED = (msg.StatusRequest, msg.RestartRequest, msg.StopRequest, msg.ReloadBookRequest)


@dataclass
class _Pending:
    """A client request waiting for replies from workers or the supervisor."""

    envelope: list[bytes]
    kind: str
    waiting: set[str]
    replies: dict[str, msg.Reply] = field(default_factory=dict)
    by: tuple[str, ...] = ()
    deadline_ns: int = 0


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:  # only records
        self.requested = True


_FLUSH_GIVE_UP_NS = 10_000_000_000
"""A flush a worker has not priced in this long (it is down or restarting) stops being waited
for; that worker's positions show as stale."""


class Aggregator:
    """The process shell: sockets, timers and the state of pending requests."""

    def __init__(self, config: ServiceConfig) -> None:
        assert config.endpoints is not None
        self.config = config
        ep = config.endpoints
        # the book priced is the frozen copy (its digest is the book's id); the booking file
        # the user named is what the recon compares with it, and only when its bytes change
        self.recon_digest = config.book_id
        self.market = load_market(market_path(config))
        self.book = load_book(book_path(config), market=self.market)
        self.static = static_frame(self.book)
        self.terms = terms_frame(self.book)
        self.cells = CellSums(self.static)  # the published roll-ups, from per-cell sums
        self.risk = RiskTable.attach(config.segments["risk"], len(self.book))
        self.limits = LimitMonitor(config.limits, desks=list(self.book.desk.labels))
        self.last_report: LimitReport | None = None
        self.recon_breach: Breach | None = None
        self.last_recon_ns = time.monotonic_ns()
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.bind(ep.risk)
        # ingestion's flushes, to know when every worker has priced one
        self.flush_sub = self.ctx.socket(zmq.SUB)
        self.flush_sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.flush_sub.setsockopt(zmq.RCVHWM, 1000)
        self.flush_sub.connect(ep.notices)
        self.tracker = FlushTracker(ep.workers)
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        # an answer that does not fit a client's queue raises (counted) instead of vanishing
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.control.setsockopt(zmq.SNDHWM, _CLIENT_QUEUE)
        self.control.bind(ep.control)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 10)  # a slow client drops snapshots, never blocks us
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(ep.snapshots)
        self.hb = self.ctx.socket(zmq.PUSH)
        self.hb.setsockopt(zmq.SNDHWM, 100)
        self.hb.setsockopt(zmq.LINGER, 0)
        self.hb.connect(ep.heartbeats)
        self.peers: dict[str, zmq.Socket[bytes]] = {}
        for name, address in {**ep.workers, "supervisor": ep.supervisor}.items():
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100)
            sock.connect(address)
            self.peers[name] = sock
        self.ids = itertools.count(1)
        self.pending: dict[bytes, _Pending] = {}
        self.deadlines: list[tuple[int, bytes]] = []  # heap of (deadline, request id)
        self.seq = 0
        self.latency_ms: deque[float] = deque(maxlen=2048)
        self.to_aggregator = LatencyHistogram()  # a worker's write done to its notice read here
        self.end_to_end = LatencyHistogram()  # a flush to the snapshot that includes it
        self.last_publish_ns = 0
        self.last_hb_ns = 0
        self.published = 0
        self.failed: dict[str, dict[str, str]] = {}  # worker → its groups whose reprice failed
        self.counts = {
            "forward_dropped": 0,
            "reply_dropped": 0,
            "bad_requests": 0,
            "version_refused": 0,
            "request_errors": 0,
        }

    # --- snapshots ---------------------------------------------------------------------

    def frame(self) -> pl.DataFrame:
        """The live positions with every measure (a consistent copy)."""
        return risk_frame(self.static, self.risk.snapshot(), time.monotonic_ns())

    def frame_with_id(self) -> tuple[pl.DataFrame, dict[str, Any]]:
        """:meth:`frame` and the identity of that copy: the writers' generation counters."""
        cols, counters = self.risk.read(
            _FRAME_COLUMNS,
            tuple(range(self.risk.spec.n_counters)),
        )
        frame = risk_frame(self.static, cols, time.monotonic_ns())
        meta = {
            "generation": int(counters.sum()),
            "counters": [int(c) for c in counters],
            "snapshot_seq": self.seq,
            "service": self.config.name,
            "book_id": self.config.book_id,
            "book_generation": self.config.book_generation,
            "failed": {w: dict(f) for w, f in sorted(self.failed.items()) if f},
        }
        return frame, meta

    def publish(self) -> None:
        """Aggregate and publish one snapshot."""
        now = time.monotonic_ns()
        # per-cell sums straight off the shared columns, retried if a worker wrote meanwhile
        cells, _ = self.risk.consistent(
            lambda cols: self.cells.cells(cols, now), tuple(range(self.risk.spec.n_counters))
        )
        firm, desk, asset_class = self.cells.grouped(cells, [(), ("desk",), ("asset_class",)])
        report = self.limits.evaluate_rollups(firm, desk, now)
        self.last_report = report
        breaches = report.breaches + ((self.recon_breach,) if self.recon_breach else ())
        tables = {
            "firm": msg.frame_to_bytes(firm),
            "desk": msg.frame_to_bytes(desk),
            "asset_class": msg.frame_to_bytes(asset_class),
            "limits": msg.frame_to_bytes(report.usage),
        }
        self.seq += 1
        done = time.monotonic_ns()
        priced = [(done - f) / 1e6 for f in self.tracker.take_complete()]
        self.latency_ms.extend(priced)
        self.end_to_end.observe_ms(priced)
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(1)
        stats = {
            "positions": float(firm["positions"][0]),
            "stale": float(firm["stale"][0]),
            "max_age_s": float(firm["max_age_s"][0]),
            "flush_to_publish_p50_ms": float(np.percentile(lat, 50)),
            "flush_to_publish_p99_ms": float(np.percentile(lat, 99)),
            "aggregate_ms": (done - now) / 1e6,
            "flushes_unpriced": float(self.tracker.dropped),
            "book_generation": float(self.config.book_generation),
            "failed_groups": float(sum(len(f) for f in self.failed.values())),
        }
        snap = msg.Snapshot(
            seq=self.seq, made_ns=done, tables=tables, breaches=breaches, stats=stats
        )
        with contextlib.suppress(zmq.Again):
            self.pub.send(msg.encode(snap), zmq.NOBLOCK)
        self.published += 1
        self.last_publish_ns = done
        self.stats = stats

    def maybe_recon(self) -> None:
        """Compare the book priced with the booking file on its timer: a changed file (added,
        removed or changed positions) is a ``recon`` breach, never a new book."""
        now = time.monotonic_ns()
        if self.config.recon_s <= 0 or now - self.last_recon_ns < self.config.recon_s * 1e9:
            return
        self.last_recon_ns = now
        try:
            # the same bytes give the same answer: re-reading 40,000 rows each minute stalled
            # the loop (and a snapshot) for ~150 ms
            digest = file_digest(self.config.book)
            if digest == self.recon_digest:
                return
            on_file = terms_frame(load_book(self.config.book, market=self.market))
        except Exception as exc:  # the file is outside our control: report, don't die
            self.recon_breach = Breach(
                scope="firm",
                measure="recon",
                value=1.0,
                limit=0.0,
                since_ns=now,
                detail=f"the booking file cannot be read: {exc}",
            )
            logs.event(
                log,
                "recon_failed",
                f"recon could not read the booking file: {exc}",
                level=logging.WARNING,
            )
            return
        self.recon_breach = recon_breach(recon(on_file, self.terms), now)
        self.recon_digest = digest
        if self.recon_breach is not None:
            logs.event(
                log,
                "recon_breach",
                f"recon: the booking file differs from the book priced: {self.recon_breach.detail}",
                level=logging.WARNING,
                value=self.recon_breach.value,
            )

    # --- control plane -----------------------------------------------------------------

    def _reply(self, envelope: list[bytes], reply: msg.Reply) -> None:
        """Answer a client; never waits (a client gone or not reading loses it, counted)."""
        if not sockets.send_reply(self.control, envelope, reply):
            self.counts["reply_dropped"] += 1

    def _forward(
        self,
        envelope: list[bytes],
        kind: str,
        targets: dict[str, bytes],
        by: tuple[str, ...],
        timeout_s: float = _FORWARD_TIMEOUT_S,
    ) -> None:
        rid = str(next(self.ids)).encode()
        deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        self.pending[rid] = _Pending(envelope, kind, set(targets), by=by, deadline_ns=deadline)
        heapq.heappush(self.deadlines, (deadline, rid))
        refused = []
        for name, payload in targets.items():
            try:  # a stalled peer's queue is bounded (SNDHWM): drop, never wait for it
                self.peers[name].send_multipart([rid, b"", payload], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counts["forward_dropped"] += 1
                refused.append(name)
        if refused:
            del self.pending[rid]
            busy = ", ".join(sorted(refused))
            self._reply(envelope, msg.error_reply(f"{busy} not taking requests (queue full)"))

    def handle_control(self) -> None:
        """One client request: answered (or forwarded to be answered) whatever it holds."""
        parts = self.control.recv_multipart(zmq.NOBLOCK)
        envelope, payload = parts[:-1], parts[-1]
        try:
            req = msg.decode_request(payload)
        except msgspec.DecodeError as exc:
            self.counts["bad_requests"] += 1
            self._reply(envelope, msg.error_reply(f"bad request: {exc}"))
            return
        except msg.VersionError as exc:
            self.counts["version_refused"] += 1
            self._reply(envelope, msg.error_reply(str(exc)))
            return
        workers = self.config.endpoints.workers if self.config.endpoints else {}
        error = admit(req, workers)
        if error:
            self.counts["bad_requests"] += 1
            self._reply(envelope, msg.error_reply(error))
            return
        try:
            self._serve(envelope, payload, req, workers)
        except Exception as exc:  # a request this process cannot serve never ends its loop
            self.counts["request_errors"] += 1
            logs.event(
                log,
                "request_failed",
                f"{type(req).__name__} failed: {type(exc).__name__}: {exc}",
                level=logging.WARNING,
            )
            self._reply(envelope, msg.error_reply(f"{type(exc).__name__}: {exc}"))

    def _serve(
        self,
        envelope: list[bytes],
        payload: bytes,
        req: msg.ControlRequest,
        workers: dict[str, str],
    ) -> None:
        if isinstance(req, _SUPERVISED):
            # a status must answer within a second even when the supervisor is hung
            timeout = _STATUS_TIMEOUT_S if isinstance(req, msg.StatusRequest) else 30.0
            self._forward(envelope, "supervisor", {"supervisor": payload}, (), timeout)
        elif isinstance(req, msg.PositionsRequest):
            frame, meta = self.frame_with_id()
            if req.asset_class is not None:
                frame = frame.filter(pl.col("asset_class") == req.asset_class)
            self._reply(
                envelope,
                msg.Reply(ok=True, data=meta, tables={"positions": msg.frame_to_bytes(frame)}),
            )
        elif isinstance(req, msg.AggregateRequest):
            table = rollup(self.frame(), req.by)
            self._reply(
                envelope, msg.Reply(ok=True, tables={"aggregate": msg.frame_to_bytes(table)})
            )
        elif isinstance(req, msg.LimitsRequest):
            report = self.last_report or self.limits.evaluate(self.frame(), time.monotonic_ns())
            data = {"breaches": [msgspec.to_builtins(b) for b in report.breaches]}
            self._reply(
                envelope,
                msg.Reply(ok=True, data=data, tables={"limits": msg.frame_to_bytes(report.usage)}),
            )
        elif isinstance(req, msg.WhatIfRequest):
            body = msg.encode(msg.WorkerWhatIf(shocks=req.shocks))
            self._forward(envelope, "whatif", {w: body for w in workers}, req.by, _WHATIF_TIMEOUT_S)
        elif isinstance(req, msg.RepriceRequest):
            body = msg.encode(msg.WorkerReprice())
            self._forward(envelope, "reprice", {w: body for w in workers}, ())
        elif isinstance(req, msg.MarketRequest):
            if not workers:
                self._reply(envelope, msg.error_reply("no worker holds a market"))
                return
            one = min(workers, key=lambda w: (not w.startswith("rates-"), w))
            body = msg.encode(
                msg.WorkerMarket(curves=req.curves, shocks=req.shocks, years=req.years)
            )
            self._forward(envelope, "worker", {one: body}, (), _WHATIF_TIMEOUT_S)
        elif isinstance(req, msg.ProfileRequest | msg.SetOptionRequest):
            inner: msg.WorkerRequest
            if isinstance(req, msg.ProfileRequest):
                inner = msg.WorkerProfile(seconds=req.seconds)
                timeout = req.seconds + _OPTION_TIMEOUT_S
            else:
                inner = msg.WorkerSetOption(option=req.option, value=req.value)
                timeout = _OPTION_TIMEOUT_S
            self._forward(envelope, "worker", {req.worker: msg.encode(inner)}, (), timeout)
        else:
            self._reply(envelope, msg.error_reply(f"the aggregator does not answer {req!r}"))

    def handle_peer(self, name: str) -> None:
        """A reply from a worker or the supervisor to a forwarded request."""
        parts = self.peers[name].recv_multipart(zmq.NOBLOCK)
        rid, payload = parts[0], parts[-1]
        pending = self.pending.get(rid)
        if pending is None:
            return
        try:
            reply = msg.reply_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            reply = msg.error_reply(f"{name} answered garbage: {exc}")
        pending.replies[name] = reply
        pending.waiting.discard(name)
        if not pending.waiting:
            del self.pending[rid]
            self._complete(pending)

    def _complete(self, pending: _Pending) -> None:
        if pending.kind == "reprice":
            failed = {k: r.error for k, r in pending.replies.items() if not r.ok}
            if failed:
                text = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
                self._reply(pending.envelope, msg.error_reply(f"re-risk failed: {text}"))
                return
            data = {k: dict(r.data) for k, r in sorted(pending.replies.items())}
            self._reply(pending.envelope, msg.Reply(ok=True, data={"workers": data}))
            return
        if pending.kind != "whatif":
            reply = next(iter(pending.replies.values()))
            self._reply(pending.envelope, reply)
            return
        failed = {k: r.error for k, r in pending.replies.items() if not r.ok}
        if failed:
            text = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
            self._reply(pending.envelope, msg.error_reply(f"what-if failed: {text}"))
            return
        # workers send the positions the shock moved; every other one keeps its live PV
        parts = [msg.bytes_to_frame(r.tables["pnl"]) for r in pending.replies.values()]
        moved = pl.concat(parts) if parts else None
        cols, _ = self.risk.read(("pv",), tuple(range(self.risk.spec.n_counters)))
        live = self.static.with_columns(pl.Series("pv", cols["pv"]))
        if moved is not None and moved.height:
            shocked = moved.select(
                pl.col("row").cast(live.schema["row"]),
                (pl.col("pv_shocked") - pl.col("pv")).alias("pnl"),
            )
            frame = live.join(shocked, on="row", how="left")
        else:
            frame = live.with_columns(pl.lit(None, dtype=pl.Float64).alias("pnl"))
        frame = frame.with_columns(pl.col("pnl").fill_null(0.0)).with_columns(
            (pl.col("pv") + pl.col("pnl")).alias("pv_shocked")
        )
        grouped = (
            frame.group_by(list(pending.by))
            .agg(
                pl.len().alias("positions"),
                pl.col("pv").sum(),
                pl.col("pv_shocked").sum(),
                pl.col("pnl").sum(),
            )
            .sort(list(pending.by))
        )
        tables = {"pnl": msg.frame_to_bytes(grouped)}
        self._reply(pending.envelope, msg.Reply(ok=True, tables=tables))

    def expire(self) -> None:
        """Answer requests whose peers did not reply in time (earliest deadline first)."""
        now = time.monotonic_ns()
        while self.deadlines and self.deadlines[0][0] < now:
            _, rid = heapq.heappop(self.deadlines)
            p = self.pending.pop(rid, None)
            if p is not None:
                missing = ", ".join(sorted(p.waiting))
                self._reply(p.envelope, msg.error_reply(f"no reply from {missing} in time"))

    # --- loop --------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Tell the supervisor we are alive, with our counters."""
        now = time.monotonic_ns()
        if now - self.last_hb_ns < self.config.heartbeat_s * 1e9:
            return
        self.last_hb_ns = now
        stats = dict(getattr(self, "stats", {}))
        stats["published"] = float(self.published)
        stats["pending_requests"] = float(len(self.pending))
        stats.update({k: float(v) for k, v in self.counts.items()})
        stats["version_refused"] += float(sockets.DRAINED.version)
        stats["bad_notices"] = float(sockets.DRAINED.bad)
        hb = msg.Heartbeat(
            role="aggregator",
            pid=os.getpid(),
            sent_ns=now,
            ready=True,
            stats=stats,
            histograms={
                "worker_to_aggregator": self.to_aggregator.wire(),
                "flush_to_publish": self.end_to_end.wire(),
            },
        )
        with contextlib.suppress(zmq.Again):
            self.hb.send(msg.encode(hb), zmq.NOBLOCK)

    def run(self, stop: _Stop) -> None:
        """Serve until stopped or orphaned."""
        parent = os.getppid()
        poller = zmq.Poller()
        poller.register(self.flush_sub, zmq.POLLIN)
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        for sock in self.peers.values():
            poller.register(sock, zmq.POLLIN)
        by_socket = {sock: name for name, sock in self.peers.items()}
        pacer = PublishPacer(self.config.snapshot_hz)
        self.publish()
        pacer.published(self.last_publish_ns)
        while not stop.requested and os.getppid() == parent:
            now = time.monotonic_ns()
            wait_ms = max(0, -(-(pacer.next_due_ns(now) - now) // 1_000_000))  # ceil
            events = dict(poller.poll(min(wait_ms, 100)))
            if self.flush_sub in events:  # before the results: a flush is known when they come
                for notice in sockets.drain(self.flush_sub):
                    if isinstance(notice, msg.QuotesDirty):
                        self.tracker.flushed(notice.gen, notice.flushed_ns)
                        pacer.result(time.monotonic_ns(), expecting=self.tracker.waiting())
            if self.pull in events:
                for notice in sockets.drain(self.pull):
                    if isinstance(notice, msg.RiskUpdated):
                        self.failed[notice.worker] = notice.failed
                        self.tracker.priced(notice.worker, notice.quote_gen)
                        now = time.monotonic_ns()
                        if notice.repriced:
                            self.to_aggregator.observe_ms((now - notice.done_ns) / 1e6)
                        pacer.result(now, expecting=self.tracker.waiting())
            self.tracker.expire(time.monotonic_ns(), _FLUSH_GIVE_UP_NS)
            if self.control in events:
                _batch(self.handle_control)
            for sock, name in by_socket.items():
                if sock in events:
                    _batch(functools.partial(self.handle_peer, name))
            if pacer.due(time.monotonic_ns()):
                self.publish()
                pacer.published(self.last_publish_ns)
            self.expire()
            self.maybe_recon()
            self.heartbeat()

    def close(self) -> None:
        """Close sockets and detach from the risk table."""
        socks = (self.flush_sub, self.pull, self.control, self.pub, self.hb)
        for sock in (*socks, *self.peers.values()):
            sock.close(linger=0)
        self.ctx.term()
        self.risk.close()


_BATCH = 64
"""Requests (or peer replies) taken per socket per turn of the loop: a flood of them is served
at the rate they come, and a snapshot is never more than one batch away."""


def _batch(handle: Callable[[], None]) -> None:
    """Call ``handle`` (one non-blocking receive and its work) until its socket is empty or
    :data:`_BATCH` times."""
    for _ in range(_BATCH):
        try:
            handle()
        except zmq.Again:
            return


def run(config_json: str) -> None:
    """Process entry point (``spawn``)."""
    config = decode_config(config_json)
    logs.setup(config.name, "aggregator")
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    die_with_parent()
    agg = Aggregator(config)
    try:
        agg.run(stop)
    finally:
        agg.close()
