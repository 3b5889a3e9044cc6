"""The warm standby: one process that holds every worker's state ready, to take a dead
worker's slot at once.

Restarting a worker costs seconds (start Python, load the book, set up schedules and cash-flow
matrices, compile, price everything): its positions are stale all that time. The standby has
done all of that in advance: it loaded the frozen book and market, built the repricer of every
(asset class, slot) and priced each once, then waits. When a worker dies the supervisor tells
it which slot to take (over a pipe). It first forks its successor, a copy of itself that is
ready at once (the pages stay shared until either copy writes them) and takes the next order
on the same pipe; then it binds the dead worker's sockets, reprices only what moved since,
writes every row of the slot and from then on *is* that worker (it heartbeats under its name).
A second worker death moments after the first therefore finds a standby ready too.

The successor is forked twice so that its parent becomes the supervisor (a child subreaper),
which watches, stops and reaps it like the children it started. Where that cannot be done the
supervisor starts a new standby from scratch.

A standby costs memory (one more process holding the book) and no CPU while it waits. It runs
at the service's priority, not the workers' lower one (``worker_nice``), and its takeover
reprice on ``takeover_threads`` Numba threads (2: both cores, for the ~0.1 s it lasts): under
a busy desk a niced takeover waited up to 0.5 s for CPU. The worker it became then lowers its
priority and runs on ``numba_threads`` like the others.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection

import numba
import zmq

from workbench.book.io import load_book
from workbench.book.schema import ASSET_CLASSES
from workbench.engine.processes import shell
from workbench.engine.processes.inputs import book_path, market_path
from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.processes.worker import Prepared, WorkerProcess, prepare_on, worker_name
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs
from workbench.engine.transport.shm import QuoteTable
from workbench.market.io import load_market

log = logging.getLogger(__name__)

ROLE = "standby"
_WAIT_S = 0.1
_REPARENT_S = 2.0
"""How long a forked successor waits to become the supervisor's child before it gives up."""

Order = tuple[str, int] | None
"""A slot to take, (asset class, slot); None: stop."""


def slots(config: ServiceConfig) -> list[tuple[str, int]]:
    """Every (asset class, slot) a standby of ``config`` can take."""
    return [(c, s) for c in ASSET_CLASSES for s in range(config.workers.get(c, 0))]


class Standby:
    """Every slot's :class:`~workbench.engine.processes.worker.Prepared` state, priced once."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
        self.config = config
        self.stop = stop
        t0 = time.monotonic_ns()
        market = load_market(market_path(config))
        book = load_book(book_path(config), market=market)
        self.quotes = QuoteTable.attach(config.segments["quotes"], len(market.quote_ids))
        self.prepared: dict[tuple[str, int], Prepared] = {}
        for cls, slot in slots(config):
            p = prepare_on(config, cls, slot, self.quotes, book, market)
            try:
                p.repricer.full(p.repricer.market)  # compiles, warms the caches
            except Exception as exc:  # the worker taking over reports it again, retried
                logs.event(log, "standby_unpriced", f"{cls}-{slot}: {exc}", level=logging.WARNING)
            self.prepared[(cls, slot)] = p
        self.ms = (time.monotonic_ns() - t0) / 1e6
        self.ctx = zmq.Context()
        self.shell = shell.Shell(config, ROLE, stop, self.ctx, hwm=10)

    def stats(self) -> dict[str, float]:
        """The heartbeat's counters: how long the set-up took (ms)."""
        return {"setup_ms": self.ms}

    def histograms(self) -> dict[str, list[float]]:
        """No latency is measured while waiting."""
        return {}

    def release_sockets(self) -> None:
        """Close the heartbeat socket and its context (no ZeroMQ thread may cross a fork)."""
        if not self.shell.beats.closed:
            self.shell.beats.close(linger=0)
            self.ctx.term()

    def reopen_sockets(self) -> None:
        """A new context and heartbeat socket (in a forked successor), beating at once."""
        self.ctx = zmq.Context()
        self.shell = shell.Shell(self.config, ROLE, self.stop, self.ctx, hwm=10)

    def become(self, asset_class: str, slot: int) -> WorkerProcess:
        """The worker of ``(asset_class, slot)``, its sockets bound, its rows written."""
        prepared = self.prepared.pop((asset_class, slot))
        # the other slots' state is left alone: its pages are shared with the forked successor
        # (frozen out of the cyclic collector), dropping it would copy them
        self.release_sockets()
        logs.setup(self.config.name, f"worker:{worker_name(asset_class, slot)}")
        worker = WorkerProcess(self.config, asset_class, slot, self.stop, prepared, self.quotes)
        numba.set_num_threads(_threads(self.config.takeover_threads))
        try:
            worker.take_over()
        finally:
            numba.set_num_threads(_threads(self.config.numba_threads))
            shell.lower_priority(self.config.worker_nice)  # a worker from now on
        return worker

    def close(self) -> None:
        """Release what :meth:`become` did not take (the body's close, for the shell)."""
        self.prepared.clear()
        self.release_sockets()
        self.quotes.close()


def _threads(wanted: int) -> int:
    """``wanted`` Numba threads, at most the pool this process was started with."""
    pool = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))
    return max(1, min(wanted, pool))


def fork_successor(supervisor: int) -> bool:
    """Fork a copy of this (ready, socket-less) standby whose parent becomes ``supervisor``.

    Returns True in the successor, once it is the supervisor's child and bound to die with it;
    False in this process (also when the fork failed).
    """
    gc.freeze()  # the collector must not write to the pages both copies share
    try:
        first = os.fork()
    except OSError as exc:
        logs.event(log, "standby_fork_failed", str(exc), level=logging.WARNING)
        return False
    if first == 0:  # the intermediate: fork the successor and leave it to the supervisor
        try:
            if os.fork() != 0:
                os._exit(0)
        except OSError:
            os._exit(1)
        deadline = time.monotonic() + _REPARENT_S
        while os.getppid() != supervisor:  # re-parented when the intermediate exits
            if time.monotonic() > deadline:
                os._exit(1)  # not adopted (no subreaper): the supervisor starts a standby
            time.sleep(0.001)
        die_with_parent()
        return True
    os.waitpid(first, 0)
    return False


def _wait_for_order(standby: Standby, orders: Connection) -> Order:
    """Heartbeat until the supervisor names a slot to take; None when stopped or orphaned."""
    while standby.shell.running():
        standby.shell.beat_if_due(standby)
        if orders.poll(_WAIT_S):
            try:
                got = orders.recv()
            except EOFError:  # the supervisor went away
                return None
            return (str(got[0]), int(got[1]))
    return None


def run(config_json: str, orders: Connection) -> None:
    """Process entry point (``spawn``): get ready, wait for a slot to take, then serve it."""
    config = decode_config(config_json)
    logs.setup(config.name, ROLE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the supervisor stops us
    die_with_parent()
    # the standby keeps the service's priority (it uses no CPU while it waits) so that its
    # takeover, the burst that ends a slot's staleness, is not starved; the worker it becomes
    # then yields like the others (Standby.become)
    numba.set_num_threads(_threads(config.numba_threads))  # its pool is for takeovers
    stop = shell.Stop()
    standby = Standby(config, stop)  # SIGTERM meanwhile ends it at once: nothing to clean up
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logs.event(log, "ready", f"standby ready for {len(standby.prepared)} slots", ms=standby.ms)
    supervisor = multiprocessing.parent_process()
    parent = supervisor.pid if supervisor is not None and supervisor.pid else os.getppid()
    while True:
        order = _wait_for_order(standby, orders)
        if order is None:
            standby.close()
            return
        standby.release_sockets()
        t0 = time.monotonic_ns()
        if fork_successor(parent):
            logs.setup(config.name, ROLE)
            standby.reopen_sockets()
            logs.event(log, "ready", f"standby forked, ready for {len(standby.prepared)} slots",
                       ms=(time.monotonic_ns() - t0) / 1e6)  # fmt: skip
            continue
        orders.close()  # the successor takes the next order
        break
    shell.run_polling(lambda: standby.become(*order))
