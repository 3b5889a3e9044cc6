"""The warm standby: one process that holds every worker's state ready, to take a dead
worker's slot at once.

Restarting a worker costs seconds (start Python, load the book, set up schedules and cash-flow
matrices, compile, price everything): its positions are stale all that time. The standby has
done all of that in advance: it loaded the frozen book and market, built the repricer of every
(asset class, slot) and priced each once, then waits. When a worker dies the supervisor tells
it which slot to take (over a pipe); it binds that worker's sockets, reprices only what moved
since, writes every row of the slot and from then on *is* that worker (it heartbeats under its
name). The other slots' state is dropped, and the supervisor starts a new standby.

A standby costs memory (one more process holding the book) and no CPU while it waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from multiprocessing.connection import Connection

import zmq

from workbench.book.io import load_book
from workbench.book.schema import ASSET_CLASSES
from workbench.engine.processes.inputs import book_path, market_path
from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.processes.worker import (
    Prepared,
    WorkerProcess,
    _Stop,
    prepare_on,
    worker_name,
)
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs
from workbench.engine.transport.shm import QuoteTable
from workbench.market.io import load_market

log = logging.getLogger(__name__)

ROLE = "standby"
_WAIT_S = 0.1


def slots(config: ServiceConfig) -> list[tuple[str, int]]:
    """Every (asset class, slot) a standby of ``config`` can take."""
    return [(c, s) for c in ASSET_CLASSES for s in range(config.workers.get(c, 0))]


class Standby:
    """Every slot's :class:`~workbench.engine.processes.worker.Prepared` state, priced once."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
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
        assert config.endpoints is not None
        self.hb = self.ctx.socket(zmq.PUSH)
        self.hb.setsockopt(zmq.SNDHWM, 10)
        self.hb.setsockopt(zmq.LINGER, 0)
        self.hb.connect(config.endpoints.heartbeats)
        self.last_hb_ns = 0

    def heartbeat(self) -> None:
        """Tell the supervisor the standby is ready (non-blocking)."""
        now = time.monotonic_ns()
        if now - self.last_hb_ns < self.config.heartbeat_s * 1e9:
            return
        self.last_hb_ns = now
        beat = msg.Heartbeat(
            role=ROLE, pid=os.getpid(), sent_ns=now, ready=True, stats={"setup_ms": self.ms}
        )
        with contextlib.suppress(zmq.Again):
            self.hb.send(msg.encode(beat), zmq.NOBLOCK)

    def become(self, asset_class: str, slot: int) -> WorkerProcess:
        """The worker of ``(asset_class, slot)``, its sockets bound, its rows written."""
        prepared = self.prepared.pop((asset_class, slot))
        self.prepared.clear()  # the other slots' state: a new standby holds it
        self.hb.close(linger=0)
        self.ctx.term()
        logs.setup(self.config.name, f"worker:{worker_name(asset_class, slot)}")
        worker = WorkerProcess(self.config, asset_class, slot, prepared, self.quotes)
        worker.take_over()
        return worker

    def close(self) -> None:
        """Release what :meth:`become` did not take."""
        self.prepared.clear()
        if not self.hb.closed:
            self.hb.close(linger=0)
            self.ctx.term()
        self.quotes.close()


def run(config_json: str, orders: Connection) -> None:
    """Process entry point (``spawn``): get ready, wait for a slot to take, then serve it."""
    config = decode_config(config_json)
    logs.setup(config.name, ROLE)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    die_with_parent()
    if config.worker_nice > 0:
        os.nice(config.worker_nice)
    standby = Standby(config)
    logs.event(log, "ready", f"standby ready for {len(standby.prepared)} slots", ms=standby.ms)
    parent = os.getppid()
    order: tuple[str, int] | None = None
    while not stop.requested and os.getppid() == parent:
        standby.heartbeat()
        if orders.poll(_WAIT_S):
            try:
                got = orders.recv()
            except EOFError:  # the supervisor went away
                break
            order = (str(got[0]), int(got[1]))
            break
    if order is None:
        standby.close()
        return
    worker = standby.become(*order)
    try:
        worker.run(stop, initial=False)
    finally:
        worker.close()
