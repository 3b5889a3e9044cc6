"""The service's parent process: owns the shared memory, starts and watches every child.

Start-up: reap orphaned segments of dead services, load the market and book, create the quote
and risk tables, pick loopback endpoints, write ``<run_dir>/service.json``, start the feed (if
any), ingestion, the workers and the aggregator with the ``spawn`` method. Then loop: collect
heartbeats, apply the :class:`RestartPolicy` (a dead worker's rows are marked stale at once and
it is restarted with backoff; a silent one is killed; rolling restarts one at a time), answer
the aggregator's requests (status, restart, stop), export Prometheus metrics. Signal handlers
only record the signal; shutdown stops the children (SIGTERM, then SIGKILL after a grace
period), unlinks the segments and removes the descriptor.

Run it with ``python -m workbench.engine.processes.supervisor CONFIG.json``.
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from workbench.book.io import load_book
from workbench.book.schema import ASSET_CLASS, ASSET_CLASSES, Book
from workbench.engine.processes.inputs import freeze
from workbench.engine.processes.lifetime import adopt_orphans
from workbench.engine.processes.partition import worker_rows
from workbench.engine.processes.restarts import Kill, RestartPolicy, Roll
from workbench.engine.processes.standby_keeper import GRACE_S, Child, StandbyKeeper
from workbench.engine.processes.worker import worker_name
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.admission import admit
from workbench.engine.protocol.config import (
    Descriptor,
    ServiceConfig,
    decode_config,
    encode_config,
)
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.metrics import Metrics
from workbench.engine.transport import sockets
from workbench.engine.transport.endpoints import local_endpoints, socket_folder
from workbench.engine.transport.gateway import Gateway, RemoteConfigError
from workbench.engine.transport.shm import MAX_SLOTS, QuoteTable, RiskTable, reap
from workbench.market.io import load_market
from workbench.market.model import MarketError, MarketSnapshot

log = logging.getLogger(__name__)

PROCESSES_FILE = "processes.json"
"""``<run_dir>/processes.json``: every process's pid by name, rewritten at each start, so a
status can be answered (and a stop carried out) without any process of the service."""


_REPLY_GRACE_NS = 300_000_000
"""After a stop or reload request, how long the supervisor keeps serving before it stops the
children (the aggregator relays the answer meanwhile)."""


class ConfigRefusedError(ValueError):
    """A configuration, book or market the service cannot run: refused before anything starts
    (exit 2, one line)."""


def book_classes(book: Book) -> set[str]:
    """The asset classes ``book`` has positions of."""
    codes = np.unique(book.product.codes) if len(book) else np.empty(0, dtype=np.int64)
    return {ASSET_CLASS[book.product.labels[int(c)]] for c in codes}


def resolve_workers(config: ServiceConfig, book: Book) -> dict[str, int]:
    """Workers per asset class: as configured, one for a class left out that the book holds,
    none for a class it does not hold. Raises :class:`ConfigRefusedError` for a configuration that
    cannot run: more workers of a class than the risk table has slots, an unknown class, or
    workers for a class of which the book has no positions."""
    held = book_classes(book)
    for cls, n in sorted(config.workers.items()):
        if cls not in ASSET_CLASSES:
            known = ", ".join(ASSET_CLASSES)
            raise ConfigRefusedError(f"--workers {cls}={n}: unknown asset class (one of {known})")
        if not 0 <= n <= MAX_SLOTS:
            raise ConfigRefusedError(
                f"--workers {cls}={n}: expected 0 to {MAX_SLOTS} workers per asset class"
            )
    empty = sorted(c for c, n in config.workers.items() if n > 0 and c not in held)
    if empty:
        asked = ",".join(f"{c}={config.workers[c]}" for c in empty)
        raise ConfigRefusedError(
            f"--workers {asked}: book {book.source} has no {', '.join(empty)} positions"
        )
    return {c: config.workers.get(c, 1 if c in held else 0) for c in ASSET_CLASSES}


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
    process: Child
    started_ns: int
    planned_exit: bool = False
    last_hb: msg.Heartbeat | None = None
    restart_ns: list[int] = field(default_factory=list)


@dataclass
class _Reload:
    """A new book accepted, to be swapped in at ``due_ns``."""

    book: Book
    frozen: Path
    book_id: str
    generation: int
    source: str
    due_ns: int


class _Signals:
    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:  # only records
        self.received.append(signum)


def _children(config: ServiceConfig) -> list[_ChildSpec]:
    from workbench.engine.processes import aggregator, feed, ingest, worker

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


def _load_frozen(frozen: Path, original: str, market: MarketSnapshot) -> Book:
    """The book in the frozen copy ``frozen`` of ``original``; its errors name the original."""
    try:
        return load_book(frozen, market=market)
    except ValueError as exc:  # BookError and the reader's own: name the file the user gave
        raise ConfigRefusedError(str(exc).replace(str(frozen), original)) from None


class Supervisor:
    """One running service."""

    def __init__(self, config: ServiceConfig) -> None:
        self.started_ns = time.monotonic_ns()
        self.reaped = reap()
        run_dir = Path(config.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # every process prices these copies, never the files the booking system rewrites
        frozen_market, _ = freeze(config.market, run_dir, "market", 0)
        frozen_book, book_id = freeze(config.book, run_dir, "book", 0)
        self.market = load_market(frozen_market)
        self.book = _load_frozen(frozen_book, config.book, self.market)
        workers = resolve_workers(config, self.book)
        names = [worker_name(c, s) for c in ASSET_CLASSES for s in range(workers[c])]
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
            workers=workers,
            endpoints=endpoints,
            segments={"quotes": self.quotes.name, "risk": self.risk.name},
            frozen_book=str(frozen_book),
            frozen_market=str(frozen_market),
            book_id=book_id,
            book_generation=0,
        )
        self.run_dir = run_dir
        self.descriptor_path = run_dir / "service.json"
        self.processes_path = run_dir / PROCESSES_FILE
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.bind(endpoints.heartbeats)
        self.rep = self.ctx.socket(zmq.ROUTER)
        self.rep.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        self.rep.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an answer dropped is counted
        self.rep.setsockopt(zmq.SNDHWM, 10_000)
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
        self.rows_of = self._rows_of()
        self.reload: _Reload | None = None
        self.standby = StandbyKeeper(
            self._spawn_standby,
            lambda: self.spawn.Pipe(duplex=False),
            enabled=self.config.standby,
            backoff_s=self.config.restart_backoff_s,
            max_backoff_s=self.policy.max_backoff_s,
        )
        self.requests = {"answered": 0, "bad": 0, "version_refused": 0, "reply_dropped": 0}

    def _rows_of(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for s in self.specs.values():
            if s.asset_class is not None:
                n = self.config.workers[s.asset_class]
                out[s.name] = worker_rows(self.book, self.market, s.asset_class, s.slot, n)
        return out

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
        self._write_processes()

    def _write_processes(self) -> None:
        """``processes.json``: the supervisor's and every child's pid, by name."""
        pids: dict[str, int] = {"supervisor": os.getpid()}
        for name, live in self.live.items():
            if live.process.pid is not None:
                pids[name] = live.process.pid
        sb = self.standby.process
        if sb is not None and sb.pid is not None:
            pids["standby"] = sb.pid
        tmp = self.processes_path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(pids))
        tmp.replace(self.processes_path)

    def start(self) -> None:
        """Start every child and write the descriptor."""
        os.environ["NUMBA_NUM_THREADS"] = str(self.config.numba_threads)
        # the standby forks its successor: Numba's workqueue threads survive a fork, OpenMP's
        # (the default where present) may not
        os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
        if self.config.standby:
            adopt_orphans()  # the standby's forked successor becomes our child
        now = time.monotonic_ns()
        for spec in self.specs.values():
            self._start(spec)
            self.policy.add(spec.name, group=spec.group, rolls=spec.rolls, now_ns=now)
        self._write_descriptor()
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

    def _write_descriptor(self) -> None:
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

    def reload_book(self, path: str) -> dict[str, Any]:
        """Take the booking file at ``path`` (empty: the configured one) as the new book.

        The file's bytes are frozen and validated now: a book that does not load, or does not
        fit the configured workers, is refused (:class:`ConfigRefusedError`) and the running book
        stays. The swap follows a moment later (:meth:`swap_book`), once this answer has been
        relayed. Returns the new book's generation, id and size.
        """
        if self.reload is not None:
            raise ConfigRefusedError("a reload of the book is already under way")
        source = path or self.config.book
        gen = self.config.book_generation + 1
        try:
            frozen, book_id = freeze(source, self.run_dir, "book", gen)
        except (OSError, ValueError) as exc:  # ValueError: a path no file can have
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigRefusedError(f"cannot read booking file {source!r}: {why}") from None
        try:
            book = _load_frozen(frozen, source, self.market)
            workers = resolve_workers(msgspec.structs.replace(self.config, workers={}), book)
            if workers != self.config.workers:
                wanted = ", ".join(f"{c}={n}" for c, n in workers.items())
                have = ", ".join(f"{c}={n}" for c, n in self.config.workers.items())
                raise ConfigRefusedError(
                    f"book {source} needs workers {wanted}; this service runs {have}: "
                    "restart the service to change its workers"
                )
        except ConfigRefusedError:
            frozen.unlink(missing_ok=True)
            raise
        due = time.monotonic_ns() + _REPLY_GRACE_NS
        self.reload = _Reload(book, frozen, book_id, gen, source, due)
        return {"book_generation": gen, "book_id": book_id, "positions": len(book), "book": source}

    def swap_book(self) -> None:
        """Carry out the reload accepted by :meth:`reload_book`: the workers and the aggregator
        stop, a new risk table is made for the new book, and they start on it. No snapshot
        ever holds two books: none is published between the stop and the restart."""
        r = self.reload
        if r is None:
            return
        self.reload = None
        t0 = time.monotonic_ns()
        self.standby.stop(restart=True)  # it holds the old book
        swapped = [n for n, lv in self.live.items() if lv.spec.asset_class or n == "aggregator"]
        for name in swapped:
            live = self.live[name]
            live.planned_exit = True
            if live.process.exitcode is None:
                live.process.terminate()
        deadline = time.monotonic() + GRACE_S
        for name in swapped:
            proc = self.live[name].process
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join(1.0)
            if self.policy.children[name].up:
                self.policy.died(name, now_ns=time.monotonic_ns(), planned=True)
        old = self.risk
        self.risk = RiskTable.create(self.config.name, len(r.book), r.generation)
        old.close()
        self.book = r.book
        self.config = msgspec.structs.replace(
            self.config,
            segments={**self.config.segments, "risk": self.risk.name},
            frozen_book=str(r.frozen),
            book_id=r.book_id,
            book_generation=r.generation,
        )
        self.specs = {s.name: s for s in _children(self.config)}
        for name in swapped:
            self.live[name].spec = self.specs[name]
        self.rows_of = self._rows_of()
        self._write_descriptor()
        self.was_ready = False
        logs.event(
            log,
            "book_reloaded",
            f"book {r.source} taken as generation {r.generation}: {len(r.book):,} positions",
            book=r.source,
            generation=r.generation,
            positions=len(r.book),
            ms=(time.monotonic_ns() - t0) / 1e6,
        )

    def _child_died(self, name: str, live: _Live, now: int) -> None:
        spec = live.spec
        planned = live.planned_exit
        was_ready = self.policy.children[name].ready
        if spec.asset_class is not None:
            self.risk.mark_stale(spec.asset_class, spec.slot, self.rows_of[name])
        if name == "ingest" and self.quotes.repair(time.monotonic_ns()):
            logs.event(
                log,
                "quotes_repaired",
                "ingest died mid-write: the quote table's write ended, every quote re-stamped",
                level=logging.WARNING,
            )
        # a worker that had been serving hands its slot to the warm standby at once; one that
        # dies during its start-up is restarted with backoff (a crash loop must not spin)
        took_over = (
            not planned
            and spec.asset_class is not None
            and was_ready
            and self._take_over(name, live, now)
        )
        if not took_over:
            self.policy.died(name, now_ns=now, planned=planned)
        if not planned:
            self.metrics.restart(name)
        logs.event(
            log,
            "child_exited",
            f"{name} (pid {live.process.pid}) exited with {live.process.exitcode}"
            + ("" if planned else "; the standby took over" if took_over else "; restarting"),
            level=logging.INFO if planned else logging.WARNING,
            child=name,
            child_pid=live.process.pid,
            exit_code=live.process.exitcode,
            planned=planned,
            standby=took_over,
        )

    def _take_over(self, name: str, live: _Live, now: int) -> bool:
        """Hand the dead worker ``name``'s slot to a ready standby; False if there is none."""
        spec = live.spec
        assert spec.asset_class is not None
        process = self.standby.take(spec.asset_class, spec.slot, now)
        if process is None:
            return False
        self.policy.died(name, now_ns=now)
        self.policy.started(name, now_ns=now)
        taken = _Live(spec, process, now)
        taken.restart_ns = [*live.restart_ns, now]
        self.live[name] = taken
        self._write_processes()
        return True

    def _spawn_standby(self, orders: Connection) -> Child:
        from workbench.engine.processes import standby

        proc = self.spawn.Process(
            target=standby.run, args=(encode_config(self.config), orders), name="wb-standby"
        )
        proc.start()
        return proc

    def _check_standby(self) -> None:
        """Start, adopt or forget the standby as due (see :class:`StandbyKeeper`)."""
        known = {lv.process.pid for lv in self.live.values() if lv.process.pid is not None}
        now = time.monotonic_ns()
        if self.standby.check(now, service_ready=self.was_ready, known=known):
            self._write_processes()

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
        agg = self.live.get("aggregator")
        return {
            "name": self.config.name,
            "pid": os.getpid(),
            "answered_by": "supervisor",
            "uptime_s": (now - self.started_ns) / 1e9,
            "positions": len(self.book),
            "book": self.config.book,
            "book_id": self.config.book_id,
            "book_generation": self.config.book_generation,
            "aggregator": dict(agg.last_hb.stats) if agg and agg.last_hb else {},
            "requests": dict(self.requests),
            "standby": self.standby.status(),
            "quotes": len(self.market.quote_ids),
            "reaped_at_start": self.reaped,
            "ready": all(self.policy.children[n].ready for n in self.live),
            "processes": procs,
            "remote": {
                "control": self.config.endpoints.remote_control,
                "snapshots": self.config.endpoints.remote_snapshots,
                "server_public_key": self.config.endpoints.server_public_key,
                "relay": dict(self.gateway.relay.counts) if self.gateway else {},
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
            req = msg.decode_request(payload)
        except msgspec.DecodeError as exc:
            self.requests["bad"] += 1
            reply = msg.error_reply(f"bad request: {exc}")
        except msg.VersionError as exc:
            self.requests["version_refused"] += 1
            reply = msg.error_reply(str(exc))
        else:
            reply = self._serve_safely(req)
        self.requests["answered"] += 1
        if not sockets.send_reply(self.rep, envelope, reply):
            self.requests["reply_dropped"] += 1

    def _serve_safely(self, req: msg.ControlRequest) -> msg.Reply:
        """:meth:`_serve`, refusing what :func:`admit` refuses; a request that fails is an
        error reply, never the end of the supervisor (and with it, of the service)."""
        error = admit(req, self.config.endpoints.workers if self.config.endpoints else {})
        if error:
            self.requests["bad"] += 1
            return msg.error_reply(error)
        try:
            return self._serve(req)
        except Exception as exc:
            logs.event(
                log,
                "request_failed",
                f"{type(req).__name__} failed: {type(exc).__name__}: {exc}",
                level=logging.WARNING,
            )
            return msg.error_reply(f"{type(exc).__name__}: {exc}")

    def _serve(self, req: msg.ControlRequest) -> msg.Reply:
        if isinstance(req, msg.StatusRequest):
            return msg.Reply(ok=True, data=self.status())
        if isinstance(req, msg.RestartRequest):
            if req.worker not in self.live:
                known = ", ".join(sorted(self.live))
                return msg.error_reply(f"unknown process {req.worker!r} (known: {known})")
            self.restart(req.worker)
            return msg.Reply(ok=True, data={"restarting": req.worker})
        if isinstance(req, msg.StopRequest):
            # keep serving a moment so the aggregator can relay this reply to the client
            self.stop_at_ns = time.monotonic_ns() + _REPLY_GRACE_NS
            return msg.Reply(ok=True, data={"stopping": self.config.name})
        if isinstance(req, msg.ReloadBookRequest):
            try:
                return msg.Reply(ok=True, data=self.reload_book(req.path))
            except ConfigRefusedError as exc:
                logs.event(log, "reload_refused", str(exc), level=logging.WARNING)
                return msg.error_reply(f"book not reloaded: {exc}")
        return msg.error_reply(f"the supervisor does not answer {type(req).__name__}")

    def _heartbeats(self) -> None:
        now = time.monotonic_ns()
        for hb in sockets.drain(self.pull):
            if not isinstance(hb, msg.Heartbeat):
                continue
            name = hb.role.split(":", 1)[1] if hb.role.startswith("worker:") else hb.role
            if name == "standby":
                if self.standby.heartbeat(hb, now):
                    self._write_processes()
                continue
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
        watched: set[int] = set()
        self._watch_exits(poller, watched)
        while not signals.received and time.monotonic_ns() < self.stop_at_ns:
            events = dict(poller.poll(100))
            if self.pull in events:
                self._heartbeats()
            if self.rep in events:
                self._answer()
            if self.reload is not None and time.monotonic_ns() >= self.reload.due_ns:
                self.swap_book()
            self._check_children()
            self._check_standby()
            self._watch_exits(poller, watched)
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

    def _watch_exits(self, poller: zmq.Poller, watched: set[int]) -> None:
        """Wake the loop the moment a child exits: poll every live child's sentinel (a pipe
        the kernel closes at its exit) beside the sockets."""
        procs = [lv.process for lv in self.live.values()]
        if self.standby.process is not None:
            procs.append(self.standby.process)
        want = {p.sentinel for p in procs if p.exitcode is None}
        for fd in watched - want:
            poller.unregister(fd)
        for fd in want - watched:
            poller.register(fd, zmq.POLLIN)
        watched.clear()
        watched.update(want)

    def shutdown(self) -> None:
        """Stop every child, then release sockets, segments and the descriptor."""
        self.standby.terminate()
        for live in self.live.values():
            if live.process.exitcode is None:
                live.process.terminate()
        self.standby.stop()
        deadline = time.monotonic() + GRACE_S
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    if len(lines) <= 1:
        return text
    return f"{lines[0]} (+{len(lines) - 1} more lines in the service log)"


def main(argv: list[str] | None = None) -> int:
    """Run a service from a configuration file (JSON of :class:`ServiceConfig`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workbench.engine.processes.supervisor CONFIG.json", file=sys.stderr)
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
    except (RemoteConfigError, ConfigRefusedError, MarketError, OSError) as exc:
        logs.event(log, "refused", str(exc), level=logging.ERROR)
        print(f"workbench: refused: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        sup.start()
        sup.serve(signals)
    finally:
        sup.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
