"""A pricing worker process: one asset class (and slot), repricing what ticks make dirty.

The loop waits on the ingestion's notices and its own request socket. Notices are only
wake-ups: the worker compares the quote table's ``updated_ns`` stamps with the ones it last saw,
so a dropped notice delays a reprice by at most one poll interval and never loses it. Results
go into the shared risk table under this worker's own generation counter.

Requests (:class:`messages.WorkerRequest`) arrive on a ROUTER socket: what-if (priced on a
copy of the market), profile (cProfile over N seconds of live work, answered when done with a
function table and a call tree, see :mod:`workbench.engine.telemetry.profiling`), set_option
(``spline_cache`` on/off) and stats.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

import numba
import numpy as np
import zmq

from workbench.book.io import load_book
from workbench.book.schema import Book
from workbench.engine.processes import shell
from workbench.engine.processes.failover import GroupFallback
from workbench.engine.processes.inputs import book_path, market_path
from workbench.engine.processes.repricing import Repricer, Update
from workbench.engine.processes.worker_requests import WorkerRequests, _Profiling
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import REPRICE_FAILED, QuoteTable, RiskTable
from workbench.market.io import load_market
from workbench.market.model import MarketSnapshot

log = logging.getLogger(__name__)

_POLL_MS = 50
_RETRY_NS = 1_000_000_000
"""A group whose reprice failed is retried this often even when none of its quotes move."""


def worker_name(asset_class: str, slot: int) -> str:
    """The name a worker goes by in status tables, metrics and requests (``fx-0``)."""
    return f"{asset_class}-{slot}"


@dataclass
class _Stats:
    reprices: int = 0
    repriced_positions: int = 0
    last_reprice_ns: int = 0
    total_reprice_ns: int = 0
    stage_ns: dict[str, int] = field(default_factory=dict)
    dropped_notices: int = 0
    full_reprice_ns: int = 0
    reply_dropped: int = 0
    bad_requests: int = 0
    version_refused: int = 0


@dataclass
class Prepared:
    """A worker's state made ahead of time (by a standby): its repricer, priced on the quote
    table as it was at ``seen_ns`` / ``priced_gen``."""

    repricer: Repricer
    seen_ns: np.ndarray
    priced_gen: int


def prepare(config: ServiceConfig, asset_class: str, slot: int, quotes: QuoteTable) -> Prepared:
    """Load the frozen book and market and build (not yet price) the repricer of one slot on
    the quote table's current values."""
    market = load_market(market_path(config))
    book = load_book(book_path(config), market=market)
    return prepare_on(config, asset_class, slot, quotes, book, market)


def prepare_on(
    config: ServiceConfig,
    asset_class: str,
    slot: int,
    quotes: QuoteTable,
    book: Book,
    market: MarketSnapshot,
) -> Prepared:
    """:func:`prepare` on a book and market already loaded."""
    values, seen_ns, gen = quotes.snapshot()
    repricer = Repricer(
        book,
        market.with_quote_values(values),
        asset_class,
        slot=slot,
        n_slots=config.workers.get(asset_class, 1),
        n_paths=config.n_paths,
        tranche_method=config.tranche_method,
    )
    repricer.fail_patterns = config.fail_reprice
    return Prepared(repricer, seen_ns, gen)


class WorkerProcess(WorkerRequests):
    """A worker: its :class:`Repricer` on the quote table, its sockets, on the process shell."""

    def __init__(
        self,
        config: ServiceConfig,
        asset_class: str,
        slot: int,
        stop: shell.Stop,
        prepared: Prepared | None = None,
        quotes: QuoteTable | None = None,
    ) -> None:
        assert config.endpoints is not None
        self.config = config
        self.asset_class = asset_class
        self.slot = slot
        self.name = worker_name(asset_class, slot)
        self.endpoints = config.endpoints
        if quotes is None:
            n_quotes = len(load_market(market_path(config)).quote_ids)
            quotes = QuoteTable.attach(config.segments["quotes"], n_quotes)
        self.quotes = quotes
        if prepared is None:
            prepared = prepare(config, asset_class, slot, quotes)
        self.repricer = prepared.repricer
        self.seen_ns, self.priced_gen = prepared.seen_ns, prepared.priced_gen
        self.risk = RiskTable.attach(config.segments["risk"], len(self.repricer.book))
        self.fallback: GroupFallback | None = None  # with polling sources: rows marked
        if config.feed.sources:
            groups = ((g.rows, g.quotes) for g in self.repricer.groups)
            self.fallback = GroupFallback(groups, len(self.repricer.book))
        self.reported_gen = -1  # the last quote generation the aggregator was told of
        self.broken = ""  # why the last reprice failed as a whole ("" when it did not)
        self.failed: dict[str, str] = {}  # group key → why its last reprice failed
        self.last_try_ns = 0  # when the last reprice (or retry) ran
        self.tally = _Stats()
        self.profiling: _Profiling | None = None
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 1000)
        self.sub.connect(self.endpoints.notices)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an answer dropped is counted
        self.router.bind(self.endpoints.workers[self.name])
        self.push_risk = self.ctx.socket(zmq.PUSH)
        self.push_risk.setsockopt(zmq.SNDHWM, 1000)
        self.push_risk.setsockopt(zmq.LINGER, 0)
        self.push_risk.connect(self.endpoints.risk)
        self.shell = shell.Shell(config, f"worker:{self.name}", stop, self.ctx, hwm=100)
        self.ready = False
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.router, zmq.POLLIN)
        self.to_worker = LatencyHistogram()  # a flush to this worker starting to reprice
        self.reprice = LatencyHistogram()  # one incremental reprice and its write

    # --- work --------------------------------------------------------------------------

    def _write(self, update: Update, flushed_ns: int, quote_gen: int) -> None:
        t0 = time.perf_counter_ns()
        now = time.monotonic_ns()
        if self.fallback is not None:
            sources = self.quotes.columns["source"]
            update.columns["fallback"] = self.fallback.flags(sources, update.rows)
        self.risk.write(self.asset_class, self.slot, update.rows, update.columns, now)
        if update.failed_rows.size:
            self.risk.mark_stale(self.asset_class, self.slot, update.failed_rows, REPRICE_FAILED)
        self._report_failures(update.failed)
        update.timings_ns["shm_write"] = time.perf_counter_ns() - t0
        spent = sum(update.timings_ns.values())
        self.tally.reprices += 1
        self.tally.repriced_positions += int(update.rows.size)
        self.tally.last_reprice_ns = spent
        self.tally.total_reprice_ns += spent
        for k, v in update.timings_ns.items():
            stage = k.split(":")[0] if ":" in k else k
            self.tally.stage_ns[stage] = self.tally.stage_ns.get(stage, 0) + v
        self._notify(int(update.rows.size), flushed_ns, quote_gen, now, spent)

    def _report_failures(self, failed: dict[str, str]) -> None:
        """Log the groups that newly failed or recovered."""
        before = self.failed
        self.failed = dict(failed)
        for key in sorted(failed.keys() - before.keys()):
            self.tally.stage_ns["errors"] = self.tally.stage_ns.get("errors", 0) + 1
            logs.event(
                log,
                "reprice_failed",
                f"{self.name}: reprice of {key} failed, its positions stay stale: {failed[key]}",
                level=logging.WARNING,
                group=key,
                error=failed[key],
            )
        for key in sorted(before.keys() - failed.keys()):
            logs.event(log, "reprice_recovered", f"{self.name}: {key} priced again", group=key)

    def _fail_all(self, exc: Exception) -> None:
        """A reprice that failed as a whole: every position of this worker stays stale."""
        why = f"{type(exc).__name__}: {exc}"
        if not self.broken:
            logs.event(
                log,
                "reprice_failed",
                f"{self.name}: reprice failed, its positions stay stale: {why}",
                level=logging.WARNING,
                error=why,
            )
        self.tally.stage_ns["errors"] = self.tally.stage_ns.get("errors", 0) + 1
        self.broken = why
        self.risk.mark_stale(self.asset_class, self.slot, self.repricer.rows, REPRICE_FAILED)

    def initial(self) -> None:
        """Price everything once and declare readiness."""
        t0 = time.monotonic_ns()
        self.last_try_ns = t0
        try:
            update = self.repricer.full(self.repricer.market)
        except Exception as exc:  # a market this worker cannot price at all: stale, retried
            self._fail_all(exc)
            self.ready = True
            self._heartbeat()
            return
        self._write(update, time.monotonic_ns(), self.priced_gen)
        self.tally.full_reprice_ns = time.monotonic_ns() - t0
        self.ready = True
        logs.event(
            log,
            "ready",
            f"{self.name} priced {update.rows.size:,} positions",
            positions=int(update.rows.size),
            ms=self.tally.full_reprice_ns / 1e6,
        )
        self._heartbeat()

    def take_over(self) -> None:
        """Start serving a slot whose worker died, from a repricer priced ahead of time: reprice
        what moved since, write every row, declare readiness (a fraction of :meth:`initial`)."""
        t0 = time.monotonic_ns()
        cpu0 = time.process_time_ns()
        values, stamps, gen = self.quotes.snapshot()
        changed = np.flatnonzero(stamps != self.seen_ns)
        self.seen_ns, self.priced_gen = stamps, gen
        self.last_try_ns = t0
        try:
            if changed.size:
                self.repricer.update(values, changed)
            update = self.repricer.current()
        except Exception as exc:
            self._fail_all(exc)
        else:
            self._write(update, t0, gen)
        self.tally.full_reprice_ns = time.monotonic_ns() - t0
        self.ready = True
        logs.event(
            log,
            "ready",
            f"{self.name} taken over by a standby: {self.repricer.rows.size:,} positions "
            f"({changed.size} quotes moved since it priced them)",
            positions=int(self.repricer.rows.size),
            ms=self.tally.full_reprice_ns / 1e6,
            cpu_ms=(time.process_time_ns() - cpu0) / 1e6,  # of every thread of the process
            threads=numba.get_num_threads(),
            took_over=True,
        )
        self._heartbeat()

    def poll_quotes(self, flushed_ns: int) -> None:
        """Reprice what the quote table's changes since the last look make dirty, then tell the
        aggregator which quote generation this worker has priced (an empty acknowledgement when
        nothing of it moved), so it can publish a flush once every worker has answered."""
        values, stamps, gen = self.quotes.snapshot()
        self._reprice(values, stamps, gen, flushed_ns)
        self._retry(values, gen)
        if gen > self.reported_gen:
            self._notify(0, flushed_ns, gen, time.monotonic_ns(), 0)

    def _notify(
        self, repriced: int, flushed_ns: int, quote_gen: int, done_ns: int, spent_ns: int
    ) -> None:
        notice = msg.RiskUpdated(
            worker=self.name,
            asset_class=self.asset_class,
            quote_gen=quote_gen,
            flushed_ns=flushed_ns,
            done_ns=done_ns,
            reprice_ns=spent_ns,
            repriced=repriced,
            failed=self._failed_now(),
        )
        try:
            self.push_risk.send(msg.encode(notice), zmq.NOBLOCK)
            self.reported_gen = max(self.reported_gen, quote_gen)
        except zmq.Again:
            self.tally.dropped_notices += 1

    def _failed_now(self) -> dict[str, str]:
        """Every pricing group of this worker whose last reprice failed, and why."""
        if self.broken:
            return {f"{self.asset_class}:*": self.broken}
        return dict(self.failed)

    def _reprice(self, values: np.ndarray, stamps: np.ndarray, gen: int, flushed_ns: int) -> None:
        changed = np.flatnonzero(stamps != self.seen_ns)
        if changed.size == 0:
            return
        started = time.monotonic_ns()
        self.to_worker.observe_ms((started - flushed_ns) / 1e6)
        self.seen_ns = stamps
        self.priced_gen = gen
        self.last_try_ns = started
        if self.broken:  # the last reprice failed as a whole: start again from every quote
            self._reprice_all(values, flushed_ns, gen)
            return
        try:
            update = self.repricer.update(values, changed)
        except Exception as exc:  # e.g. a curve that does not bootstrap, any pricer exception
            self._fail_all(exc)
            return
        if update is not None:
            self._write(update, flushed_ns, gen)
            self.reprice.observe_ms((time.monotonic_ns() - started) / 1e6)

    def _reprice_all(self, values: np.ndarray, flushed_ns: int, gen: int) -> None:
        try:
            self.repricer.forget()
            update = self.repricer.full(self.repricer.market.with_quote_values(values))
        except Exception as exc:
            self._fail_all(exc)
            return
        self.broken = ""
        logs.event(log, "reprice_recovered", f"{self.name}: priced again")
        self._write(update, flushed_ns, gen)

    def _retry(self, values: np.ndarray, gen: int) -> None:
        """Reprice the groups whose last reprice failed, once a second while none of their
        quotes moves (a fault that clears by itself, a fault-injection switch turned off)."""
        if not (self.broken or self.repricer.failed):
            return
        now = time.monotonic_ns()
        if now - self.last_try_ns < _RETRY_NS:
            return
        self.last_try_ns = now
        if self.broken:
            self._reprice_all(values, now, gen)
            return
        try:
            update = self.repricer.update(values, np.empty(0, dtype=np.int64))
        except Exception as exc:
            self._fail_all(exc)
            return
        if update is not None:
            self._write(update, now, gen)

    # --- loop --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the heartbeats say ready (once every position was priced once)."""
        return self.shell.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.shell.ready = value

    def _heartbeat(self) -> None:
        self.shell.beat(self)

    def stats(self) -> dict[str, float]:
        """The heartbeat's counters."""
        s = self.tally
        return {
            "reprices": float(s.reprices),
            "repriced_positions": float(s.repriced_positions),
            "last_reprice_ms": s.last_reprice_ns / 1e6,
            "full_reprice_ms": s.full_reprice_ns / 1e6,
            "cache_hits": float(self.repricer.cache.hits),
            "cache_misses": float(self.repricer.cache.misses),
            "dropped_notices": float(s.dropped_notices),
            "failed_groups": float(len(self._failed_now())),
            "reply_dropped": float(s.reply_dropped),
            "bad_requests": float(s.bad_requests),
            "version_refused": float(s.version_refused + sockets.DRAINED.version),
            "bad_notices": float(sockets.DRAINED.bad),
        }

    def histograms(self) -> dict[str, list[float]]:
        """The heartbeat's latency histograms: a flush to this worker starting to reprice,
        and one incremental reprice with its write (ms)."""
        return {"ingest_to_worker": self.to_worker.wire(), "reprice": self.reprice.wire()}

    def begin(self) -> None:
        """Price everything first, unless the worker took over a slot priced ahead of time."""
        if not self.ready:
            self.initial()

    def turn(self) -> None:
        """One poll of the notices and requests, and the work it found."""
        events = dict(self.poller.poll(_POLL_MS))
        flushed_ns = time.monotonic_ns()
        if self.sub in events:
            for notice in sockets.drain(self.sub):  # only the latest state matters
                if isinstance(notice, msg.QuotesDirty):
                    flushed_ns = notice.flushed_ns
        self.poll_quotes(flushed_ns)
        if self.router in events:
            self.handle_request()
        self.finish_profile()

    def close(self) -> None:
        """Answer a profile still running, close sockets and detach from shared memory (never
        unlink: not the owner)."""
        self.finish_profile(force=True)
        self.shell.close()
        for sock in (self.sub, self.router, self.push_risk):
            sock.close(linger=0)
        self.ctx.term()
        self.quotes.close()
        self.risk.close()


def run(config_json: str, asset_class: str, slot: int) -> None:
    """Process entry point (``spawn``): serve one worker until SIGTERM/SIGINT."""
    # niced: on a small machine the workers can keep every core busy; ingestion (tick latency)
    # and the aggregator (snapshots, requests) must not queue behind them
    config, stop = shell.start(config_json, f"worker:{worker_name(asset_class, slot)}", niced=True)
    if config.rolling_restart_s > 0:
        gc.disable()  # only together with rolling restarts, which bound the garbage

    def make() -> WorkerProcess:
        worker = WorkerProcess(config, asset_class, slot, stop)
        if config.rolling_restart_s > 0:
            gc.freeze()
        return worker

    shell.run_polling(make)
