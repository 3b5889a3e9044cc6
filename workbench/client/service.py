"""What notebooks, widgets, the CLI and reports use: start, find and talk to a service.

>>> import workbench                                                    # doctest: +SKIP
>>> svc = workbench.start(book="out/book.parquet", market="out/market.json")  # doctest: +SKIP
>>> svc.aggregate(by=("desk",))                                         # doctest: +SKIP

Every method returns Polars frames or plain dicts; errors from the service raise
:class:`ServiceError` with the service's message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl
import zmq
import zmq.asyncio

from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import (
    ConflationConfig,
    Descriptor,
    Endpoints,
    FeedConfig,
    RemoteConfig,
    ServiceConfig,
    default_run_root,
    encode_config,
)
from workbench.engine.telemetry.histograms import BUCKETS_MS, LatencyHistogram, quantile_ms
from workbench.engine.telemetry.profiling import TREE_COLUMNS
from workbench.engine.transport.gateway import RemoteConfigError, check_remote
from workbench.engine.transport.shm import pid_alive, reap
from workbench.risk.breaches import Breach
from workbench.risk.limits import LimitConfig
from workbench.risk.shocks import AnyShock

STATUS_TIMEOUT_S: Final = 1.0
"""How long :meth:`Client.status` waits for the supervisor before it answers from the run
directory and ``/proc`` instead (seconds)."""
_STOP_TERM_S: Final = 5.0

_BUCKET_SCHEMA: Final = {
    "process": pl.String,
    "boundary": pl.String,
    "le_ms": pl.Float64,
    "count": pl.Int64,
}


class ServiceError(RuntimeError):
    """The service refused a request or could not be reached."""


@dataclass(frozen=True)
class SnapshotView:
    """A decoded aggregated snapshot: tables as Polars frames."""

    seq: int
    made_ns: int
    tables: dict[str, pl.DataFrame]
    breaches: tuple[Breach, ...]
    stats: dict[str, float]
    received_ns: int = 0
    """When this client read it (monotonic clock, shared with the service's processes)."""

    @property
    def transit_ms(self) -> float:
        """Aggregator → client: from the snapshot made to this client reading it (ms)."""
        return (self.received_ns - self.made_ns) / 1e6


@dataclass(frozen=True)
class MarketView:
    """The market the service prices at, as one worker last priced it (one quote generation).

    ``quotes``: ``quote_id``, ``value`` (the market file's units: rates and spreads as
    decimals, vols as decimals, spots in quote currency). ``pillars``: one row per curve
    instrument — ``curve``, ``currency``, ``kind``, ``tenor``, ``years``, ``quote_id``.
    ``curves``: for the curves asked, per point ``years`` — ``zero_pct``, ``fwd3m_pct`` and
    their ``*_shocked_pct`` twins (%, continuously compounded zero, 3M simple forward).
    """

    generation: int
    as_of: str
    quotes: pl.DataFrame
    pillars: pl.DataFrame
    curves: pl.DataFrame


def _market(reply: msg.Reply) -> MarketView:
    t = reply.tables
    curves = msg.bytes_to_frame(t["curves"]) if "curves" in t else pl.DataFrame()
    return MarketView(
        int(reply.data["generation"]),
        str(reply.data["as_of"]),
        msg.bytes_to_frame(t["quotes"]),
        msg.bytes_to_frame(t["pillars"]),
        curves,
    )


def _market_request(
    curves: Sequence[str], shocks: Sequence[AnyShock], years: Sequence[float]
) -> msg.MarketRequest:
    return msg.MarketRequest(
        curves=tuple(curves), shocks=tuple(shocks), years=tuple(float(y) for y in years)
    )


def _view(snap: msg.Snapshot, received_ns: int) -> SnapshotView:
    tables = {k: msg.bytes_to_frame(v) for k, v in snap.tables.items()}
    return SnapshotView(
        snap.seq, snap.made_ns, tables, snap.breaches, dict(snap.stats), received_ns
    )


_POLARS_TYPES: Final = {int: pl.Int64, float: pl.Float64, str: pl.String}
_TREE_SCHEMA: Final = {k: _POLARS_TYPES[t] for k, t in TREE_COLUMNS.items()}


def _profile_frames(data: dict[str, Any]) -> dict[str, Any]:
    """A profile reply's ``functions`` and ``tree`` as Polars frames (the tree keeps its
    columns when empty; a worker that sends no tree gives an empty one)."""
    out = dict(data)
    out["functions"] = pl.DataFrame(data.get("functions", []))
    out["tree"] = pl.DataFrame(data.get("tree") or [], schema=_TREE_SCHEMA, orient="row")
    return out


class Client:
    """A connection to one running service (found through its descriptor)."""

    def __init__(
        self,
        descriptor: Descriptor,
        *,
        timeout_s: float = 60.0,
        process: subprocess.Popen[bytes] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        if descriptor.config.endpoints is None:
            raise ServiceError(f"service {descriptor.name}: descriptor has no endpoints")
        self.descriptor = descriptor
        self.name = descriptor.name
        self.endpoints = descriptor.config.endpoints
        self.timeout_s = timeout_s
        self._process = process
        self._curve = curve
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self.to_client = LatencyHistogram()
        """Aggregator → this client, for every snapshot it has read."""

    def __repr__(self) -> str:
        return f"<workbench service {self.name!r} pid {self.descriptor.pid}>"

    # --- plumbing ----------------------------------------------------------------------

    def _connect(self, sock: zmq.Socket[Any], address: str) -> None:
        """Connect, as a CurveZMQ client when the service is remote."""
        if self._curve is not None:
            sock.curve_publickey = self._curve.public
            sock.curve_secretkey = self._curve.secret
            sock.curve_serverkey = self._curve.server
        sock.connect(address)

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            self._connect(sock, self.endpoints.control)
            self._sock = sock
        return self._sock

    def request(self, req: msg.Request, *, timeout_s: float | None = None) -> msg.Reply:
        """Send one request and wait for its reply (raises :class:`ServiceError`)."""
        sock = self._socket()
        wait = self.timeout_s if timeout_s is None else timeout_s
        try:
            sock.send(msg.encode(req), zmq.NOBLOCK)
        except zmq.Again:  # nobody connected to take it: never block the caller
            self._drop_socket()
            raise ServiceError(f"service {self.name}: not reachable") from None
        if not sock.poll(int(wait * 1000)):
            self._drop_socket()  # a REQ socket cannot send again before it receives
            raise ServiceError(
                f"service {self.name}: no reply to {type(req).__name__} within {wait:g} s"
            )
        return self._reply(sock.recv())

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _reply(self, raw: bytes) -> msg.Reply:
        try:
            reply = msg.reply_decoder.decode(raw)
            msg.check_version(reply)
        except (msgspec.DecodeError, msg.VersionError) as exc:
            raise ServiceError(f"service {self.name}: unreadable reply: {exc}") from None
        if not reply.ok:
            raise ServiceError(f"service {self.name}: {reply.error}")
        return reply

    @property
    def local(self) -> bool:
        """True when the service runs on this machine (its supervisor can be asked directly)."""
        return self._curve is None and bool(self.endpoints.supervisor)

    def supervisor_request(self, req: msg.Request, *, timeout_s: float) -> msg.Reply:
        """Ask the supervisor directly (status, restart, stop, reload), not through the
        aggregator: these must work whatever state the aggregator is in."""
        if not self.local:
            return self.request(req, timeout_s=timeout_s)
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1)
        try:
            sock.connect(self.endpoints.supervisor)
            try:
                sock.send_multipart([b"", msg.encode(req)], zmq.NOBLOCK)
            except zmq.Again:
                raise ServiceError(f"service {self.name}: supervisor not reachable") from None
            if not sock.poll(int(timeout_s * 1000)):
                raise ServiceError(
                    f"service {self.name}: the supervisor did not answer "
                    f"{type(req).__name__} within {timeout_s:g} s"
                )
            return self._reply(sock.recv_multipart()[-1])
        finally:
            sock.close(linger=0)

    async def arequest(self, req: msg.Request, *, timeout_s: float | None = None) -> msg.Reply:
        """:meth:`request` for an asyncio loop (a notebook kernel): never blocks the loop.

        Each call uses its own DEALER socket, so concurrent widget requests do not interfere.
        """
        actx = zmq.asyncio.Context.instance()
        sock = actx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        self._connect(sock, self.endpoints.control)
        wait = self.timeout_s if timeout_s is None else timeout_s
        try:
            try:
                await sock.send_multipart([b"", msg.encode(req)], zmq.NOBLOCK)
            except zmq.Again:
                raise ServiceError(f"service {self.name}: not reachable") from None
            if not await sock.poll(int(wait * 1000)):
                raise ServiceError(
                    f"service {self.name}: no reply to {type(req).__name__} within {wait:.0f} s"
                )
            parts = await sock.recv_multipart()
        finally:
            sock.close(linger=0)
        return self._reply(parts[-1])

    async def aaggregate(self, by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """:meth:`aggregate` without blocking the event loop."""
        reply = await self.arequest(msg.AggregateRequest(by=tuple(by)))
        return msg.bytes_to_frame(reply.tables["aggregate"])

    async def apositions(self, asset_class: str | None = None) -> pl.DataFrame:
        """:meth:`positions` without blocking the event loop."""
        reply = await self.arequest(msg.PositionsRequest(asset_class=asset_class))
        return msg.bytes_to_frame(reply.tables["positions"])

    async def awhatif(
        self, shocks: Sequence[AnyShock], by: Sequence[str] = ("desk",)
    ) -> pl.DataFrame:
        """:meth:`whatif` without blocking the event loop."""
        reply = await self.arequest(msg.WhatIfRequest(shocks=tuple(shocks), by=tuple(by)))
        return msg.bytes_to_frame(reply.tables["pnl"])

    async def amarket(
        self,
        curves: Sequence[str] = (),
        shocks: Sequence[AnyShock] = (),
        years: Sequence[float] = (),
    ) -> MarketView:
        """:meth:`market` without blocking the event loop."""
        return _market(await self.arequest(_market_request(curves, shocks, years)))

    async def aprofile(self, worker: str, seconds: float = 2.0) -> dict[str, Any]:
        """:meth:`profile` without blocking the event loop."""
        reply = await self.arequest(
            msg.ProfileRequest(worker=worker, seconds=seconds), timeout_s=seconds + self.timeout_s
        )
        return _profile_frames(reply.data)

    async def aping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The status as answered through the service's control socket (the aggregator, which
        asks the supervisor): what a widget's requests will meet. Raises :class:`ServiceError`
        when no answer comes within ``timeout_s`` seconds."""
        return dict((await self.arequest(msg.StatusRequest(), timeout_s=timeout_s)).data)

    async def aset_option(
        self, worker: str, option: str, value: bool | int | float | str
    ) -> dict[str, Any]:
        """:meth:`set_option` without blocking the event loop."""
        req = msg.SetOptionRequest(worker=worker, option=option, value=value)
        return dict((await self.arequest(req)).data)

    def alive(self) -> bool:
        """Whether the service's supervisor process runs (True for a remote service: its
        process is not on this machine; a request tells)."""
        return not self.local or pid_alive(self.descriptor.pid)

    async def astatus(self) -> dict[str, Any]:
        """:meth:`status` without blocking the event loop (same answer, same 1 s bound)."""
        if not self.local:
            return dict((await self.arequest(msg.StatusRequest(), timeout_s=STATUS_TIMEOUT_S)).data)
        actx = zmq.asyncio.Context.instance()
        sock = actx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoints.supervisor)
        try:
            try:
                await sock.send_multipart([b"", msg.encode(msg.StatusRequest())], zmq.NOBLOCK)
            except zmq.Again:
                return self.status_from_processes("the supervisor is not reachable")
            if not await sock.poll(int(STATUS_TIMEOUT_S * 1000)):
                return self.status_from_processes(
                    f"the supervisor did not answer within {STATUS_TIMEOUT_S:g} s"
                )
            parts = await sock.recv_multipart()
        finally:
            sock.close(linger=0)
        return dict(self._reply(parts[-1]).data)

    # --- requests ----------------------------------------------------------------------

    def status(self, *, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        """Processes (pid, state, restarts, heartbeat age, counters) and service facts.

        Asked of the supervisor directly; when it does not answer within ``timeout_s``
        (default 1 s) the answer comes from the run directory and ``/proc`` instead
        (:meth:`status_from_processes`: ``answered_by`` is then ``"client"``, ``ready`` False
        and ``error`` says why). Never depends on the aggregator.
        """
        try:
            return dict(self.supervisor_request(msg.StatusRequest(), timeout_s=timeout_s).data)
        except ServiceError as exc:
            if not self.local:
                raise
            return self.status_from_processes(str(exc))

    def status_from_processes(self, why: str) -> dict[str, Any]:
        """What can be known without asking any process of the service: each process's pid
        from ``processes.json`` and whether it runs (``state``: ``running``, ``stopped`` for a
        process stopped by a signal, ``dead``)."""
        pids = self._pids()
        procs = []
        for name, pid in sorted(pids.items()):
            if name == "supervisor":
                continue
            procs.append({"name": name, "pid": pid, "state": _proc_state(pid), "restarts": 0,
                          "stats": {}, "histograms": {}})  # fmt: skip
        return {
            "name": self.name,
            "pid": self.descriptor.pid,
            "answered_by": "client",
            "error": why,
            "supervisor": _proc_state(self.descriptor.pid),
            "ready": False,
            "positions": self.descriptor.n_positions,
            "quotes": self.descriptor.n_quotes,
            "processes": procs,
            "aggregator": {},
        }

    def _pids(self) -> dict[str, int]:
        run_dir = self.descriptor.config.run_dir
        if not run_dir:
            return {}
        try:
            raw = (Path(run_dir) / "processes.json").read_bytes()
            return msgspec.json.decode(raw, type=dict[str, int])
        except (OSError, msgspec.DecodeError):
            return {"supervisor": self.descriptor.pid}

    def processes(self) -> pl.DataFrame:
        """:meth:`status` as a table, one row per process."""
        rows = self.status()["processes"]
        skip = ("stats", "histograms")
        return pl.DataFrame([{k: v for k, v in r.items() if k not in skip} for r in rows]).sort(
            "name"
        )

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Block until every process has finished its set-up and priced its positions."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise ServiceError(
                    f"service {self.name} exited with {self._process.returncode}; "
                    f"see {Path(self.descriptor.config.run_dir) / 'service.log'}"
                )
            try:
                st = self.status()
            except ServiceError as exc:
                last = str(exc)
            else:
                if st["ready"]:
                    return
                last = ", ".join(
                    f"{p['name']} ({p['state']}, {p['restarts']} restarts)"
                    for p in st["processes"]
                    if p["state"] != "ready"
                )
                last = f"waiting for {last}"
            time.sleep(0.2)
        raise ServiceError(
            f"service {self.name} not ready after {timeout_s:.0f} s ({last}); the end of its "
            f"log:\n{log_tail(Path(self.descriptor.config.run_dir))}"
        )

    def positions(self, asset_class: str | None = None) -> pl.DataFrame:
        """Per-position risk (USD measures, ``stale``, ``age_s``)."""
        reply = self.request(msg.PositionsRequest(asset_class=asset_class))
        return msg.bytes_to_frame(reply.tables["positions"])

    def snapshot(self, asset_class: str | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
        """Per-position risk from one consistent copy, and that copy's identity.

        The identity holds ``generation`` (sum of the writers' counters: it changes whenever any
        Greek does), the per-writer ``counters``, ``snapshot_seq`` of the last published
        aggregate and the ``service`` name: what a report records to be audited.
        """
        reply = self.request(msg.PositionsRequest(asset_class=asset_class))
        return msg.bytes_to_frame(reply.tables["positions"]), dict(reply.data)

    def aggregate(self, by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """Roll-ups of the live risk grouped by ``by``."""
        reply = self.request(msg.AggregateRequest(by=tuple(by)))
        return msg.bytes_to_frame(reply.tables["aggregate"])

    def limits(self) -> pl.DataFrame:
        """Limit usage (value, limit, utilisation, breached) per configured limit."""
        return msg.bytes_to_frame(self.request(msg.LimitsRequest()).tables["limits"])

    def whatif(self, shocks: Sequence[AnyShock], by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """PnL (USD) of a shocked copy of the live market, grouped by ``by``."""
        reply = self.request(msg.WhatIfRequest(shocks=tuple(shocks), by=tuple(by)))
        return msg.bytes_to_frame(reply.tables["pnl"])

    def market(
        self,
        curves: Sequence[str] = (),
        shocks: Sequence[AnyShock] = (),
        years: Sequence[float] = (),
    ) -> MarketView:
        """The live quotes and curve pillars at one quote generation, and for ``curves``
        (ids such as ``USD.SOFR``) their zero and 3M forward rates at ``years`` (default 0.25
        to 30 years), base and with ``shocks`` applied. Works over :func:`connect_remote`."""
        return _market(self.request(_market_request(curves, shocks, years)))

    def profile(self, worker: str, seconds: float = 2.0) -> dict[str, Any]:
        """Profile ``worker`` (e.g. ``"fx-0"``) for ``seconds`` of live work.

        Returns its stage timings, cache counters, a ``functions`` table (per-function
        calls and times, the heaviest first) and a ``tree`` table (the call tree, one row per
        node, see :func:`workbench.engine.telemetry.profiling.tree_from_stats`).
        """
        reply = self.request(
            msg.ProfileRequest(worker=worker, seconds=seconds), timeout_s=seconds + self.timeout_s
        )
        return _profile_frames(reply.data)

    def set_option(
        self, worker: str, option: str, value: bool | int | float | str
    ) -> dict[str, Any]:
        """Set a worker option, e.g. ``set_option("fx-0", "spline_cache", False)``."""
        req = msg.SetOptionRequest(worker=worker, option=option, value=value)
        return dict(self.request(req).data)

    def reprice_all(self, *, timeout_s: float = 120.0) -> pl.DataFrame:
        """Re-risk every position now on every worker in parallel (Greeks included): the
        full re-risk through the service. One row per worker: ``positions``, ``ms``."""
        reply = self.request(msg.RepriceRequest(), timeout_s=timeout_s)
        workers = reply.data["workers"]
        return pl.DataFrame(
            [{"worker": k, "positions": v["positions"], "ms": v["ms"]} for k, v in workers.items()]
        )

    def restart(self, worker: str) -> None:
        """Restart one process (a worker's positions are stale until it has repriced them)."""
        self.supervisor_request(msg.RestartRequest(worker=worker), timeout_s=5.0)

    def reload_book(
        self, path: str | Path | None = None, *, timeout_s: float = 300.0
    ) -> dict[str, Any]:
        """Take a new book: the booking file at ``path`` (None: the file the service was
        started with, as it is now). The file is validated first (a bad file raises
        :class:`ServiceError` naming file, row, column and value, and the running book stays);
        then the workers and the aggregator restart on it and this returns once every
        position of the new book is priced. No snapshot mixes the two books. Returns
        ``book_generation`` (+1 per reload), ``book_id`` (digest of the file's bytes) and
        ``positions``."""
        target = "" if path is None else str(Path(path).resolve())
        reply = self.supervisor_request(msg.ReloadBookRequest(path=target), timeout_s=60.0)
        gen = int(reply.data["book_generation"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.status()
            if st.get("book_generation") == gen and st.get("ready"):
                self._reread_descriptor()
                return dict(reply.data)
            time.sleep(0.1)
        raise ServiceError(
            f"service {self.name}: book generation {gen} not priced in {timeout_s:g} s"
        )

    def _reread_descriptor(self) -> None:
        path = Path(self.descriptor.config.run_dir) / "service.json"
        with contextlib.suppress(OSError, msgspec.DecodeError):
            self.descriptor = msgspec.json.decode(path.read_bytes(), type=Descriptor)

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop the service and wait until its supervisor has exited.

        Asked of the supervisor directly (the aggregator may be dead); a supervisor that does
        not answer gets SIGTERM, then SIGKILL (its children die with it, the next start reaps
        its shared memory).
        """
        pid = self.descriptor.pid
        if not self.local:  # remote: the supervisor is not on this machine
            self.request(msg.StopRequest(), timeout_s=10.0)
            self.close()
            return
        try:
            self.supervisor_request(msg.StopRequest(), timeout_s=STATUS_TIMEOUT_S)
        except ServiceError:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        term_deadline = time.monotonic() + min(_STOP_TERM_S, timeout_s / 2)
        killed = False
        while time.monotonic() < deadline:
            if self._gone(pid):
                break
            if not killed and time.monotonic() > term_deadline:
                self._kill_all(pid)
                killed = True
            time.sleep(0.05)
        else:
            raise ServiceError(f"service {self.name} (pid {pid}) did not stop in {timeout_s} s")
        if killed:
            reap()  # the segments of a supervisor killed outright
        self.close()

    def _gone(self, pid: int) -> bool:
        if self._process is not None:
            return self._process.poll() is not None
        return not pid_alive(pid)

    def _kill_all(self, pid: int) -> None:
        """SIGKILL the supervisor and every child it recorded."""
        for child in {*self._pids().values(), pid}:
            if pid_alive(child):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)

    def latest(self, timeout_s: float = 5.0) -> SnapshotView:
        """The next aggregated snapshot published (blocking)."""
        sock = self._ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.setsockopt(zmq.LINGER, 0)
            self._connect(sock, self.endpoints.snapshots)
            if not sock.poll(int(timeout_s * 1000)):
                raise ServiceError(f"service {self.name}: no snapshot within {timeout_s} s")
            return self._received(sock.recv())
        finally:
            sock.close(linger=0)

    async def snapshots(self) -> AsyncIterator[SnapshotView]:
        """Aggregated snapshots as they are published (latest wins: a slow reader skips)."""
        actx = zmq.asyncio.Context.instance()
        sock = actx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 2)
        sock.setsockopt(zmq.CONFLATE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        self._connect(sock, self.endpoints.snapshots)
        try:
            while True:
                yield self._received(await sock.recv())
        finally:
            sock.close(linger=0)

    def _received(self, raw: bytes) -> SnapshotView:
        now = time.monotonic_ns()
        snap = msg.snapshot_decoder.decode(raw)
        msg.check_version(snap)
        view = _view(snap, now)
        self.to_client.observe_ms(view.transit_ms)
        return view

    def latency_buckets(self) -> pl.DataFrame:
        """Latency histograms of every process boundary, long form: ``process``, ``boundary``,
        ``le_ms`` (bucket upper bound, ms; inf for the last), ``count`` (in that bucket).

        The service's processes count their boundaries since they started (see
        :mod:`workbench.engine.telemetry.histograms`); ``aggregator_to_client`` is this client's
        own count.
        """
        rows: list[dict[str, Any]] = []
        bounds = [*BUCKETS_MS, float("inf")]
        found = [
            (p["name"], boundary, wire)
            for p in self.status()["processes"]
            for boundary, wire in (p.get("histograms") or {}).items()
        ]
        found.append(("client", "aggregator_to_client", self.to_client.wire()))
        for process, boundary, wire in found:
            rows.extend(
                {"process": process, "boundary": boundary, "le_ms": le, "count": int(c)}
                for le, c in zip(bounds, wire[:-1], strict=True)
            )
        return pl.DataFrame(rows, schema=_BUCKET_SCHEMA)

    def latencies(self) -> pl.DataFrame:
        """Per process boundary: ``count``, ``p50_ms``, ``p99_ms`` (bucket upper bounds, an
        overestimate by at most one bucket) — from :meth:`latency_buckets`."""
        b = self.latency_buckets()
        rows = []
        for (process, boundary), part in b.group_by(["process", "boundary"], maintain_order=True):
            wire = [*map(float, part["count"]), 0.0]
            rows.append(
                {
                    "process": process,
                    "boundary": boundary,
                    "count": int(part["count"].sum()),
                    "p50_ms": quantile_ms(wire, 0.5),
                    "p99_ms": quantile_ms(wire, 0.99),
                }
            )
        return pl.DataFrame(
            rows,
            schema={"process": pl.String, "boundary": pl.String, "count": pl.Int64,
                    "p50_ms": pl.Float64, "p99_ms": pl.Float64},
        )  # fmt: skip

    def close(self) -> None:
        """Release the sockets (the service keeps running)."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._ctx.term()


def _proc_state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP: it runs no code) or ``dead``, from ``/proc``."""
    if not pid_alive(pid):
        return "dead"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "running"
    return "stopped" if state in ("T", "t") else "running"


def _descriptors(root: Path) -> list[Descriptor]:
    out: list[Descriptor] = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/service.json")):
        try:
            d = msgspec.json.decode(path.read_bytes(), type=Descriptor)
        except (msgspec.DecodeError, OSError):
            continue
        if pid_alive(d.pid):
            out.append(d)
    return out


def running(run_root: str | Path | None = None) -> list[Descriptor]:
    """Descriptors of the services running on this machine (under ``run_root``)."""
    return _descriptors(Path(run_root) if run_root else default_run_root())


def connect(name: str | None = None, *, run_root: str | Path | None = None) -> Client:
    """Attach to a running service (the only one, or the one called ``name``)."""
    found = running(run_root)
    if name is not None:
        found = [d for d in found if d.name == name]
    if not found:
        where = run_root or default_run_root()
        raise ServiceError(f"no running workbench service{f' {name!r}' if name else ''} in {where}")
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise ServiceError(f"several services are running ({names}): pass name=")
    return Client(found[0])


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ keys of a remote client (Z85): its own pair and the server's public key."""

    public: bytes
    secret: bytes
    server: bytes


def connect_remote(
    control: str,
    snapshots: str,
    *,
    server_key: str | Path,
    client_key: str | Path,
    name: str = "remote",
    timeout_s: float = 60.0,
) -> Client:
    """Attach to a service on another machine through its CurveZMQ listeners.

    Parameters
    ----------
    control, snapshots
        The service's ``remote_control`` and ``remote_snapshots`` addresses (its descriptor
        and ``workbench status --json`` show them), e.g. ``tcp://risk-host:7001``.
    server_key
        The service's public key: the Z85 text, or the server's ``*.key`` file.
    client_key
        This client's ``*.key_secret`` file; its public half must be in the service's
        authorized keys folder.
    """
    import zmq.auth

    path = Path(client_key)
    if not path.is_file():
        raise ServiceError(f"client key file {path} does not exist")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ServiceError(f"{path} holds no secret key (pass the *.key_secret file)")
    server = Path(server_key) if not str(server_key).startswith("tcp") else None
    if server is not None and server.is_file():
        server_public, _ = zmq.auth.load_certificate(server)
    else:
        server_public = str(server_key).encode()
    if len(server_public) != 40:
        raise ServiceError(f"server key {server_key!s}: not a Z85 public key or a *.key file")
    endpoints = Endpoints(
        feed="", notices="", risk="", heartbeats="", supervisor="", workers={}, metrics="",
        control=control, snapshots=snapshots,
    )  # fmt: skip
    config = ServiceConfig(name=name, run_dir="", book="", market="", endpoints=endpoints)
    descriptor = Descriptor(
        name=name, pid=0, started_ns=0, config=config, n_positions=0, n_quotes=0
    )
    return Client(descriptor, timeout_s=timeout_s, curve=CurveKeys(public, secret, server_public))


def _refused_line(run_dir: Path) -> str:
    """The supervisor's one line on a configuration it refused (exit 2)."""
    for line in reversed(log_tail(run_dir, 200).splitlines()):
        if line.startswith("workbench: refused: "):
            return line.removeprefix("workbench: ")
    return ""


def log_tail(run_dir: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a service's log (empty if it has none)."""
    try:
        text = (run_dir / "service.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start(
    book: str | Path,
    market: str | Path,
    *,
    name: str | None = None,
    feed: str | FeedConfig = "synthetic",
    rate: float = 5_000.0,
    workers: dict[str, int] | None = None,
    limits: Sequence[LimitConfig] = (),
    conflation: ConflationConfig | None = None,
    n_paths: int = 50_000,
    run_root: str | Path | None = None,
    wait: bool = True,
    timeout_s: float = 300.0,
    **options: Any,
) -> Client:
    """Launch a service in the background and return a client.

    ``feed``: ``"synthetic"`` (``rate`` ticks/s), ``"none"``, a replay file path (``.parquet``),
    an external publisher address (``tcp://…``), or a :class:`FeedConfig`. The service outlives
    the calling process (a notebook can close); stop it with :meth:`Client.stop`.
    Other keyword options are fields of :class:`ServiceConfig` (e.g. ``rolling_restart_s``, or
    ``remote=RemoteConfig(...)`` for CurveZMQ listeners for other machines, docs/service.md).
    """
    remote = options.get("remote")
    if remote is not None:
        if not isinstance(remote, RemoteConfig):
            raise ServiceError(f"remote must be a RemoteConfig, not {type(remote).__name__}")
        try:
            check_remote(remote)  # refuse before anything starts
        except RemoteConfigError as exc:
            raise ServiceError(str(exc)) from None
    if isinstance(feed, FeedConfig):
        feed_config = feed
    elif feed in ("synthetic", "none"):
        feed_config = FeedConfig(mode=feed, rate=rate)
    elif feed.startswith(("tcp://", "ipc://")):
        feed_config = FeedConfig(mode="external", address=feed)
    else:
        feed_config = FeedConfig(mode="replay", path=str(Path(feed).resolve()))
    name = name or f"wb{os.getpid()}"
    if not name.isascii() or not name.isalnum():
        raise ServiceError(f"service name {name!r}: use letters and digits only")
    root = Path(run_root) if run_root else default_run_root()
    run_dir = root / name
    if any(d.name == name for d in running(root)):
        raise ServiceError(f"a service called {name!r} is already running")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = ServiceConfig(
        name=name,
        run_dir=str(run_dir),
        book=str(Path(book).resolve()),
        market=str(Path(market).resolve()),
        feed=feed_config,
        conflation=conflation or ConflationConfig(),
        workers=dict(workers or {}),
        limits=tuple(limits),
        n_paths=n_paths,
        **options,
    )
    cfg_path = run_dir / "config.json"
    cfg_path.write_text(encode_config(config))
    (run_dir / "service.json").unlink(missing_ok=True)
    log = (run_dir / "service.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.engine.processes.supervise", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # closing the notebook does not stop the service
    )
    log.close()
    descriptor_path = run_dir / "service.json"
    deadline = time.monotonic() + timeout_s
    while not descriptor_path.exists():
        if proc.poll() is not None:
            if proc.returncode == 2:  # refused before anything started: say why, in one line
                raise ServiceError(_refused_line(run_dir) or f"service {name} refused to start")
            raise ServiceError(f"service {name} failed to start:\n{log_tail(run_dir)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise ServiceError(f"service {name} wrote no descriptor in {timeout_s:.0f} s")
        time.sleep(0.05)
    descriptor = msgspec.json.decode(descriptor_path.read_bytes(), type=Descriptor)
    client = Client(descriptor, process=proc)
    if wait:
        try:
            client.wait_ready(max(deadline - time.monotonic(), 1.0))
        except ServiceError:
            client.stop(timeout_s=10.0)
            raise
    return client
