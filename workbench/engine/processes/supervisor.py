"""The service's parent process: owns the shared memory, starts and watches every child.

Start-up: reap orphaned segments of dead services, load the market and book, create the quote
and risk tables, pick loopback endpoints, write ``<run_dir>/service.json``, start the feed (if
any), ingestion, the workers and the aggregator with the ``spawn`` method. Then loop: collect
heartbeats, apply the :class:`RestartPolicy` (a dead worker's rows are marked stale at once and
it is restarted with backoff; a silent one is killed; rolling restarts one at a time), answer
the aggregator's requests (status, restart, stop), export Prometheus metrics. Signal handlers
only record the signal; shutdown stops the children (SIGTERM, then SIGKILL after a grace
period), unlinks the segments and removes the descriptor.

Run it with ``python -m workbench.engine.processes.supervise CONFIG.json``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from workbench.book.schema import ASSET_CLASSES
from workbench.engine.processes.book_reload import Reload
from workbench.engine.processes.children import (
    ChildSpec,
    Live,
    child_specs,
    load_frozen,
    resolve_workers,
    rows_by_worker,
    stop_all,
)
from workbench.engine.processes.control_plane import ControlPlane
from workbench.engine.processes.inputs import freeze, write_json
from workbench.engine.processes.lifetime import adopt_orphans
from workbench.engine.processes.restarts import Kill, RestartPolicy, Roll
from workbench.engine.processes.standby_keeper import Child, StandbyKeeper
from workbench.engine.processes.worker import worker_name
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import (
    Descriptor,
    ServiceConfig,
    encode_config,
)
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.metrics import Metrics
from workbench.engine.transport import sockets
from workbench.engine.transport.endpoints import local_endpoints, socket_folder
from workbench.engine.transport.gateway import Gateway
from workbench.engine.transport.shm import QuoteTable, RiskTable, reap
from workbench.market.io import load_market

log = logging.getLogger(__name__)

PROCESSES_FILE = "processes.json"
"""``<run_dir>/processes.json``: every process's pid by name, rewritten at each start, so a
status can be answered (and a stop carried out) without any process of the service."""


class Signals:
    """The signals received (a handler that only records them; the loop acts)."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signum)


class Supervisor(ControlPlane):
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
        self.book = load_frozen(frozen_book, config.book, self.market)
        workers = resolve_workers(config, self.book)
        names = [worker_name(c, s) for c in ASSET_CLASSES for s in range(workers[c])]
        self.socket_dir = socket_folder(run_dir)
        endpoints = local_endpoints(names, self.socket_dir)
        if config.feed.mode == "external" and config.feed.address:
            endpoints = msgspec.structs.replace(endpoints, feed=config.feed.address)
        self.gateway: Gateway | None = None
        if config.remote is not None:
            self.gateway = Gateway(config.remote, endpoints, loss=config.loss.enabled)
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
        self.specs = {s.name: s for s in child_specs(self.config)}
        self.live: dict[str, Live] = {}
        self.spawn = mp.get_context("spawn")
        self.stop_at_ns = 2**63 - 1  # set by a stop request
        self.was_ready = False
        self.rows_of = rows_by_worker(
            self.specs.values(), self.config.workers, self.book, self.market
        )
        self.reload: Reload | None = None
        self.standby = StandbyKeeper(
            self._spawn_standby,
            lambda: self.spawn.Pipe(duplex=False),
            enabled=self.config.standby,
            backoff_s=self.config.restart_backoff_s,
            max_backoff_s=self.policy.max_backoff_s,
        )
        self.requests = {"answered": 0, "bad": 0, "version_refused": 0, "reply_dropped": 0}

    def _rows(self) -> dict[str, np.ndarray]:
        return rows_by_worker(self.specs.values(), self.config.workers, self.book, self.market)

    # --- children ----------------------------------------------------------------------

    def _start(self, spec: ChildSpec) -> None:
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
        live = Live(spec, proc, now)
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
        write_json(self.processes_path, pids)

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
        write_json(self.descriptor_path, descriptor)

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
            self.live[name].planned_exit = True
        stop_all(self.live[name].process for name in swapped)
        for name in swapped:
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
        self.specs = {s.name: s for s in child_specs(self.config)}
        for name in swapped:
            self.live[name].spec = self.specs[name]
        self.rows_of = rows_by_worker(
            self.specs.values(), self.config.workers, self.book, self.market
        )
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

    def _child_died(self, name: str, live: Live, now: int) -> None:
        spec = live.spec
        planned = live.planned_exit
        was_ready = self.policy.children[name].ready
        self.standby.expect_strays(now)  # its children, if any, are ours to reap now
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

    def _take_over(self, name: str, live: Live, now: int) -> bool:
        """Hand the dead worker ``name``'s slot to a ready standby; False if there is none."""
        spec = live.spec
        assert spec.asset_class is not None
        process = self.standby.take(spec.asset_class, spec.slot, now)
        if process is None:
            return False
        self.policy.died(name, now_ns=now)
        self.policy.started(name, now_ns=now)
        taken = Live(spec, process, now)
        taken.restart_ns = [*live.restart_ns, now]
        self.live[name] = taken
        self._write_processes()
        return True

    def _spawn_standby(self, orders: Connection) -> Child:
        from workbench.engine.processes import standby

        proc = self.spawn.Process(
            target=standby.run, args=(encode_config(self.config), orders), name="wb-standby"
        )
        # the standby's thread pool is sized for its takeover burst; it uses numba_threads
        threads = max(self.config.numba_threads, self.config.takeover_threads)
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
        try:
            proc.start()
        finally:
            os.environ["NUMBA_NUM_THREADS"] = str(self.config.numba_threads)
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

    # --- requests and heartbeats -------------------------------------------------------

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

    def serve(self, signals: Signals) -> None:
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
        stop_all(lv.process for lv in self.live.values())
        self.standby.stop()
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
