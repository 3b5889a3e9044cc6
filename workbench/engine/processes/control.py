"""The aggregator's control plane: client requests answered here or forwarded and awaited.

Clients send :class:`~.messages.ControlRequest` s to the ROUTER bound at ``endpoints.control``.
Positions, aggregates and limits are answered at once from the risk columns; what-if, re-risk,
market, profile and option requests go to the workers, status, restart, stop and book reloads
to the supervisor, each on a DEALER with a request id, and are answered when every reply has
come (or with an error at their deadline), so a 5-second profile never blocks the snapshots.
Nothing here waits on a peer: a full queue or a gone client drops the message and counts it.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import polars as pl
import zmq

from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.admission import Refused, take
from workbench.engine.protocol.config import ServiceConfig
from workbench.engine.telemetry import logs
from workbench.engine.transport import sockets
from workbench.risk.aggregation import rollup
from workbench.risk.limits import LimitReport

log = logging.getLogger(__name__)

_FORWARD_TIMEOUT_S = 120.0
_STATUS_TIMEOUT_S = 0.8
_CLIENT_QUEUE = 10_000
"""Answers queued per client before the next one is dropped (and counted)."""
_OPTION_TIMEOUT_S = 5.0  # a set_option (and a profile, beyond its seconds) a worker answers at once
_WHATIF_TIMEOUT_S = 60.0
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


class RiskView(Protocol):
    """What the control plane reads of the live risk (the aggregator provides it)."""

    def frame(self) -> pl.DataFrame:
        """The live positions with every measure (a consistent copy)."""
        ...

    def frame_with_id(self) -> tuple[pl.DataFrame, dict[str, Any]]:
        """:meth:`frame` and the identity of that copy."""
        ...

    def limit_report(self) -> LimitReport:
        """The latest limit evaluation."""
        ...

    def live_pv(self) -> pl.DataFrame:
        """The static columns of every position and its live ``pv`` (USD)."""
        ...


def whatif_table(
    moved: list[pl.DataFrame], live: pl.DataFrame, by: tuple[str, ...]
) -> pl.DataFrame:
    """Shocked PV and PnL (USD) grouped ``by``: ``moved`` holds the workers' shocked rows
    (``row``, ``pv``, ``pv_shocked``); every other position of ``live`` keeps its PV."""
    parts = pl.concat(moved) if moved else None
    if parts is not None and parts.height:
        shocked = parts.select(
            pl.col("row").cast(live.schema["row"]),
            (pl.col("pv_shocked") - pl.col("pv")).alias("pnl"),
        )
        frame = live.join(shocked, on="row", how="left")
    else:
        frame = live.with_columns(pl.lit(None, dtype=pl.Float64).alias("pnl"))
    frame = frame.with_columns(pl.col("pnl").fill_null(0.0)).with_columns(
        (pl.col("pv") + pl.col("pnl")).alias("pv_shocked")
    )
    return (
        frame.group_by(list(by))
        .agg(
            pl.len().alias("positions"),
            pl.col("pv").sum(),
            pl.col("pv_shocked").sum(),
            pl.col("pnl").sum(),
        )
        .sort(list(by))
    )


class ControlPlane:
    """The control ROUTER, a DEALER per worker and the supervisor, and the requests pending.

    Parameters
    ----------
    ctx
        The aggregator's ZeroMQ context.
    config
        The service configuration (``endpoints.control``, the workers' and supervisor's).
    view
        The live risk the immediate answers read.
    """

    def __init__(self, ctx: zmq.Context[Any], config: ServiceConfig, view: RiskView) -> None:
        assert config.endpoints is not None
        ep = config.endpoints
        self.workers = dict(ep.workers)
        self.view = view
        self.control: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        # an answer that does not fit a client's queue raises (counted) instead of vanishing
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.control.setsockopt(zmq.SNDHWM, _CLIENT_QUEUE)
        self.control.bind(ep.control)
        self.peers: dict[str, zmq.Socket[bytes]] = {}
        for name, address in {**ep.workers, "supervisor": ep.supervisor}.items():
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100)
            sock.connect(address)
            self.peers[name] = sock
        self.ids = itertools.count(1)
        self.pending: dict[bytes, _Pending] = {}
        self.deadlines: list[tuple[int, bytes]] = []  # heap of (deadline, request id)
        self.counts = {
            "forward_dropped": 0,
            "reply_dropped": 0,
            "bad_requests": 0,
            "version_refused": 0,
            "request_errors": 0,
            "requests": 0,  # every request taken (answered here or forwarded)
            "aggregate_requests": 0,  # of which roll-ups asked for (a Polars pass each)
        }

    def register(self, poller: zmq.Poller) -> None:
        """Poll the control socket and every peer's for input."""
        for sock in (self.control, *self.peers.values()):
            poller.register(sock, zmq.POLLIN)

    def handle(self, events: dict[Any, int]) -> None:
        """Serve what the poll found (a batch per socket), then answer the requests past their
        deadline."""
        if self.control in events:
            _batch(self.handle_control)
        for name, sock in self.peers.items():
            if sock in events:
                _batch(functools.partial(self.handle_peer, name))
        self.expire()

    def stats(self) -> dict[str, float]:
        """Requests pending, requests taken (``requests``, ``aggregate_requests``) and the
        counters of what was refused or dropped."""
        out = {k: float(v) for k, v in self.counts.items()}
        out["pending_requests"] = float(len(self.pending))
        return out

    def close(self) -> None:
        """Close the sockets (linger 0)."""
        for sock in (self.control, *self.peers.values()):
            sock.close(linger=0)

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
        workers = self.workers
        req = take(payload, workers)
        if isinstance(req, Refused):
            self.counts["version_refused" if req.counter == "version" else "bad_requests"] += 1
            self._reply(envelope, req.reply)
            return
        self.counts["requests"] += 1
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
            frame, meta = self.view.frame_with_id()
            if req.asset_class is not None:
                frame = frame.filter(pl.col("asset_class") == req.asset_class)
            self._reply(
                envelope,
                msg.Reply(ok=True, data=meta, tables={"positions": msg.frame_to_bytes(frame)}),
            )
        elif isinstance(req, msg.AggregateRequest):
            self.counts["aggregate_requests"] += 1
            table = rollup(self.view.frame(), req.by)
            self._reply(
                envelope, msg.Reply(ok=True, tables={"aggregate": msg.frame_to_bytes(table)})
            )
        elif isinstance(req, msg.LimitsRequest):
            report = self.view.limit_report()
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
        moved = [msg.bytes_to_frame(r.tables["pnl"]) for r in pending.replies.values()]
        grouped = whatif_table(moved, self.view.live_pv(), pending.by)
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
