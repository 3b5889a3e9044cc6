"""The service's parent process: owns the shared memory, starts and watches every child.

Start-up: reap orphaned segments of dead services, load the market and book, create the quote
and risk tables, pick loopback endpoints, write ``<run_dir>/service.json``, start the feed (if
any), ingestion, the workers and the aggregator with the ``spawn`` method. Then loop: collect
heartbeats, apply the :class:`RestartPolicy` (a dead worker's rows are marked stale at once and
it is restarted with backoff; a silent one is killed; rolling restarts one at a time), answer
the aggregator's requests (status, restart, stop), export Prometheus metrics. Signal handlers
only record the signal; shutdown stops the children (SIGTERM, then SIGKILL after a grace
period), unlinks the segments and removes the descriptor.

Run it with ``python -m workbench.engine.supervisor CONFIG.json``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from workbench.book.io import load_book
from workbench.engine import logs
from workbench.engine import messages as msg
from workbench.engine.config import (
    ASSET_CLASSES,
    Descriptor,
    ServiceConfig,
    decode_config,
    encode_config,
    local_endpoints,
    socket_folder,
)
from workbench.engine.gateway import Gateway, RemoteConfigError
from workbench.engine.metrics import Metrics
from workbench.engine.partition import worker_rows
from workbench.engine.restarts import Kill, RestartPolicy, Roll
from workbench.engine.shm import QuoteTable, RiskTable, reap
from workbench.engine.worker import worker_name
from workbench.market.io import load_market

log = logging.getLogger(__name__)

_GRACE_S = 3.0
_REPLY_GRACE_NS = 300_000_000
"""After a stop request, how long the supervisor keeps serving before it stops the children."""


@dataclass
class _ChildSpec:
    name: str
    role: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    group: str
    rolls: bool
    asset_class: str | None = None
    slot: int = 0


@dataclass
class _Live:
    spec: _ChildSpec
    process: BaseProcess
    started_ns: int
    planned_exit: bool = False
    last_hb: msg.Heartbeat | None = None
    restart_ns: list[int] = field(default_factory=list)


class _Signals:
    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:  # only records
        self.received.append(signum)


def _children(config: ServiceConfig) -> list[_ChildSpec]:
    from workbench.engine import aggregator, feed, ingest, worker

    text = encode_config(config)
    out: list[_ChildSpec] = []
    if config.feed.mode in ("synthetic", "replay"):
        out.append(_ChildSpec("feed", "feed", feed.run, (text,), "feed", False))
    out.append(_ChildSpec("ingest", "ingest", ingest.run, (text,), "ingest", False))
    for cls in ASSET_CLASSES:
        for slot in range(config.workers.get(cls, 0)):
            name = worker_name(cls, slot)
            out.append(
                _ChildSpec(
                    name, f"worker:{name}", worker.run, (text, cls, slot), cls, True, cls, slot
                )
            )
    out.append(_ChildSpec("aggregator", "aggregator", aggregator.run, (text,), "agg", False))
    return out


class Supervisor:
    """One running service."""

    def __init__(self, config: ServiceConfig) -> None:
        self.started_ns = time.monotonic_ns()
        self.reaped = reap()
        run_dir = Path(config.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.market = load_market(config.market)
        self.book = load_book(config.book, market=self.market)
        names = [worker_name(c, s) for c in ASSET_CLASSES for s in range(config.workers.get(c, 0))]
        self.socket_dir = socket_folder(run_dir)
        endpoints = local_endpoints(names, self.socket_dir)
        if config.feed.mode == "external" and config.feed.address:
            endpoints = msgspec.structs.replace(endpoints, feed=config.feed.address)
        self.gateway: Gateway | None = None
        if config.remote is not None:
            self.gateway = Gateway(config.remote, endpoints)
            endpoints = msgspec.structs.replace(
                endpoints,
                remote_control=self.gateway.control,
                remote_snapshots=self.gateway.snapshots,
                server_public_key=self.gateway.public_key,
            )
        self.quotes = QuoteTable.create(config.name, np.asarray(self.market.quotes))
        self.risk = RiskTable.create(config.name, len(self.book))
        self.config = msgspec.structs.replace(
            config,
            endpoints=endpoints,
            segments={"quotes": self.quotes.name, "risk": self.risk.name},
        )
        self.descriptor_path = run_dir / "service.json"
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.bind(endpoints.heartbeats)
        self.rep = self.ctx.socket(zmq.ROUTER)
        self.rep.setsockopt(zmq.MAXMSGSIZE, msg.MAX_CONTROL_BYTES)
        self.rep.bind(endpoints.supervisor)
        self.metrics = Metrics(endpoints.metrics)
        self.policy = RestartPolicy(
            backoff_s=config.restart_backoff_s,
            heartbeat_timeout_s=config.heartbeat_timeout_s,
            startup_timeout_s=config.startup_timeout_s,
            rolling_s=config.rolling_restart_s,
        )
        self.specs = {s.name: s for s in _children(self.config)}
        self.live: dict[str, _Live] = {}
        self.spawn = mp.get_context("spawn")
        self.stop_at_ns = 2**63 - 1  # set by a stop request
        self.was_ready = False
        self.rows_of: dict[str, np.ndarray] = {}
        for s in self.specs.values():
            if s.asset_class is not None:
                n = self.config.workers[s.asset_class]
                self.rows_of[s.name] = worker_rows(self.book, self.market, s.asset_class, s.slot, n)

    # --- children ----------------------------------------------------------------------

    def _start(self, spec: _ChildSpec) -> None:
        proc = self.spawn.Process(target=spec.target, args=spec.args, name=f"wb-{spec.name}")
        proc.start()
        logs.event(
            log,
            "child_started",
            f"{spec.name} started (pid {proc.pid})",
            child=spec.name,
            child_pid=proc.pid,
        )
        now = time.monotonic_ns()
        prev = self.live.get(spec.name)
        live = _Live(spec, proc, now)
        if prev is not None:
            live.restart_ns = prev.restart_ns
        self.live[spec.name] = live

    def start(self) -> None:
        """Start every child and write the descriptor."""
        os.environ["NUMBA_NUM_THREADS"] = str(self.config.numba_threads)
        now = time.monotonic_ns()
        for spec in self.specs.values():
            self._start(spec)
            self.policy.add(spec.name, group=spec.group, rolls=spec.rolls, now_ns=now)
        descriptor = Descriptor(
            name=self.config.name,
            pid=os.getpid(),
            started_ns=self.started_ns,
            config=self.config,
            n_positions=len(self.book),
            n_quotes=len(self.market.quote_ids),
        )
        tmp = self.descriptor_path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(descriptor))
        tmp.replace(self.descriptor_path)
        logs.event(
            log,
            "service_started",
            f"service {self.config.name}: {len(self.book):,} positions, "
            f"{len(self.market.quote_ids):,} quotes, {len(self.specs)} processes",
            positions=len(self.book),
            quotes=len(self.market.quote_ids),
            metrics=self.config.endpoints.metrics if self.config.endpoints else "",
            reaped=self.reaped,
        )

    def _child_died(self, name: str, live: _Live, now: int) -> None:
        spec = live.spec
        planned = live.planned_exit
        if spec.asset_class is not None:
            self.risk.mark_stale(spec.asset_class, spec.slot, self.rows_of[name])
        self.policy.died(name, now_ns=now, planned=planned)
        if not planned:
            self.metrics.restart(name)
        logs.event(
            log,
            "child_exited",
            f"{name} (pid {live.process.pid}) exited with {live.process.exitcode}"
            + ("" if planned else "; restarting"),
            level=logging.INFO if planned else logging.WARNING,
            child=name,
            child_pid=live.process.pid,
            exit_code=live.process.exitcode,
            planned=planned,
        )

    def _check_children(self) -> None:
        now = time.monotonic_ns()
        for name, live in list(self.live.items()):
            if live.process.exitcode is not None and self.policy.children[name].up:
                live.process.join(0)
                self._child_died(name, live, now)
        for action in self.policy.tick(now):
            live = self.live[action.child]
            if isinstance(action, Kill):
                if live.process.pid is not None and live.process.exitcode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(live.process.pid, signal.SIGKILL)
            elif isinstance(action, Roll):
                live.planned_exit = True
                live.process.terminate()
            else:
                live.restart_ns.append(now)
                self._start(live.spec)
                self.policy.started(action.child, now_ns=time.monotonic_ns())

    def restart(self, name: str) -> None:
        """Stop ``name`` now; the policy starts it again at once (a planned restart)."""
        live = self.live[name]
        live.planned_exit = True
        live.process.terminate()

    # --- requests and heartbeats -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Every child: pid, state, restarts, last heartbeat age and its counters."""
        now = time.monotonic_ns()
        procs = []
        for name, live in self.live.items():
            c = self.policy.children[name]
            hb = live.last_hb
            procs.append(
                {
                    "name": name,
                    "role": live.spec.role,
                    "pid": live.process.pid,
                    "state": "ready" if c.ready else ("starting" if c.up else "down"),
                    "restarts": c.restarts,
                    "heartbeat_age_s": (now - c.last_beat_ns) / 1e9,
                    "uptime_s": (now - live.started_ns) / 1e9,
                    "stats": dict(hb.stats) if hb else {},
                    "histograms": dict(hb.histograms) if hb else {},
                }
            )
        return {
            "name": self.config.name,
            "pid": os.getpid(),
            "uptime_s": (now - self.started_ns) / 1e9,
            "positions": len(self.book),
            "quotes": len(self.market.quote_ids),
            "reaped_at_start": self.reaped,
            "ready": all(self.policy.children[n].ready for n in self.live),
            "processes": procs,
            "remote": {
                "control": self.config.endpoints.remote_control,
                "snapshots": self.config.endpoints.remote_snapshots,
                "server_public_key": self.config.endpoints.server_public_key,
            }
            if self.config.endpoints and self.config.endpoints.remote_control
            else None,
            "metrics": f"http://{self.config.endpoints.metrics}/metrics"
            if self.config.endpoints
            else "",
        }

    def _answer(self) -> None:
        parts = self.rep.recv_multipart()
        envelope, payload = parts[:-1], parts[-1]
        try:
            req = msg.request_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            reply = msg.error_reply(f"bad request: {exc}")
        else:
            if isinstance(req, msg.StatusRequest):
                reply = msg.Reply(ok=True, data=self.status())
            elif isinstance(req, msg.RestartRequest):
                if req.worker not in self.live:
                    known = ", ".join(sorted(self.live))
                    reply = msg.error_reply(f"unknown process {req.worker!r} (known: {known})")
                else:
                    self.restart(req.worker)
                    reply = msg.Reply(ok=True, data={"restarting": req.worker})
            elif isinstance(req, msg.StopRequest):
                # keep serving a moment so the aggregator can relay this reply to the client
                self.stop_at_ns = time.monotonic_ns() + _REPLY_GRACE_NS
                reply = msg.Reply(ok=True, data={"stopping": self.config.name})
            else:
                reply = msg.error_reply(f"the supervisor does not answer {type(req).__name__}")
        self.rep.send_multipart([*envelope, msg.encode(reply)])

    def _heartbeats(self) -> None:
        now = time.monotonic_ns()
        for hb in msg.drain(self.pull):
            if not isinstance(hb, msg.Heartbeat):
                continue
            name = hb.role.split(":", 1)[1] if hb.role.startswith("worker:") else hb.role
            live = self.live.get(name)
            if live is None or live.process.pid != hb.pid:
                continue  # a late beat of a replaced process
            live.last_hb = hb
            self.policy.heartbeat(name, ready=hb.ready, now_ns=now)
            self.metrics.heartbeat(name, hb.stats, hb.histograms)

    def serve(self, signals: _Signals) -> None:
        """The supervision loop, until a signal or a stop request."""
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.rep, zmq.POLLIN)
        while not signals.received and time.monotonic_ns() < self.stop_at_ns:
            events = dict(poller.poll(100))
            if self.pull in events:
                self._heartbeats()
            if self.rep in events:
                self._answer()
            self._check_children()
            self.metrics.gauge_staleness(self.risk)
            if not self.was_ready and all(c.ready for c in self.policy.children.values()):
                self.was_ready = True
                seconds = (time.monotonic_ns() - self.started_ns) / 1e9
                logs.event(
                    log, "ready", f"every process ready after {seconds:.1f} s", seconds=seconds
                )
        if signals.received:
            logs.event(log, "stopping", f"signal {signals.received[0]}: stopping")
        else:
            logs.event(log, "stopping", "stop requested: stopping")

    def shutdown(self) -> None:
        """Stop every child, then release sockets, segments and the descriptor."""
        for live in self.live.values():
            if live.process.exitcode is None:
                live.process.terminate()
        deadline = time.monotonic() + _GRACE_S
        for live in self.live.values():
            live.process.join(max(0.0, deadline - time.monotonic()))
            if live.process.exitcode is None:
                live.process.kill()
                live.process.join(1.0)
        self.metrics.close()
        if self.gateway is not None:
            self.gateway.close()
        for sock in (self.pull, self.rep):
            sock.close(linger=0)
        self.ctx.term()
        self.quotes.close()
        self.risk.close()
        with contextlib.suppress(FileNotFoundError):
            self.descriptor_path.unlink()
        for leftover in self.socket_dir.glob("*.ipc"):  # of children that were killed
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.socket_dir.rmdir()
        logs.event(log, "stopped", f"service {self.config.name} stopped")


def yield_to_interactive(nice: int) -> bool:
    """Lower the CPU share of this process's session — the whole service — against other
    sessions (a notebook kernel, JupyterLab) when the cores are busy.

    The service runs in a session of its own; Linux schedules sessions as groups (autogroup),
    between which per-process nice values do nothing, so the group's own nice is set
    (``/proc/self/autogroup``). Returns whether it could (no autogroup: nothing to do).
    """
    if nice <= 0:
        return False
    try:
        Path("/proc/self/autogroup").write_text(str(min(nice, 19)))
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run a service from a configuration file (JSON of :class:`ServiceConfig`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workbench.engine.supervisor CONFIG.json", file=sys.stderr)
        return 2
    config = decode_config(Path(args[0]).read_text())
    logs.setup(config.name, "supervisor")
    if yield_to_interactive(config.service_nice):
        nice = config.service_nice
        logs.event(log, "priority", f"service CPU share lowered (autogroup nice {nice})", nice=nice)
    signals = _Signals()
    signal.signal(signal.SIGTERM, signals)
    signal.signal(signal.SIGINT, signals)
    try:
        sup = Supervisor(config)
    except RemoteConfigError as exc:
        logs.event(log, "refused", str(exc), level=logging.ERROR)
        return 2
    try:
        sup.start()
        sup.serve(signals)
    finally:
        sup.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
