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

import contextlib
import cProfile
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import polars as pl
import zmq

from workbench.book.io import load_book
from workbench.book.schema import Book
from workbench.engine.processes.inputs import book_path, market_path
from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.processes.market_view import market_view
from workbench.engine.processes.repricing import Repricer, Update
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.telemetry.profiling import call_tree, profile_rows
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import REPRICE_FAILED, QuoteTable, RiskTable
from workbench.market.io import load_market
from workbench.market.model import MarketError, MarketSnapshot
from workbench.risk.whatif import apply_shocks

log = logging.getLogger(__name__)

_POLL_MS = 50
_RETRY_NS = 1_000_000_000
"""A group whose reprice failed is retried this often even when none of its quotes move."""


def worker_name(asset_class: str, slot: int) -> str:
    """The name a worker goes by in status tables, metrics and requests (``fx-0``)."""
    return f"{asset_class}-{slot}"


@dataclass
class _Profiling:
    envelope: list[bytes]
    until_ns: int
    profiler: cProfile.Profile
    started_ns: int


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


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:  # signal handler: only records
        self.requested = True


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


class WorkerProcess:
    """The process shell around :class:`Repricer`."""

    def __init__(
        self,
        config: ServiceConfig,
        asset_class: str,
        slot: int,
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
        self.reported_gen = -1  # the last quote generation the aggregator was told of
        self.broken = ""  # why the last reprice failed as a whole ("" when it did not)
        self.failed: dict[str, str] = {}  # group key → why its last reprice failed
        self.last_try_ns = 0  # when the last reprice (or retry) ran
        self.stats = _Stats()
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
        self.push_hb = self.ctx.socket(zmq.PUSH)
        self.push_hb.setsockopt(zmq.SNDHWM, 100)
        self.push_hb.setsockopt(zmq.LINGER, 0)
        self.push_hb.connect(self.endpoints.heartbeats)
        self.last_hb = 0
        self.ready = False
        self.to_worker = LatencyHistogram()  # a flush to this worker starting to reprice
        self.reprice = LatencyHistogram()  # one incremental reprice and its write

    # --- work --------------------------------------------------------------------------

    def _write(self, update: Update, flushed_ns: int, quote_gen: int) -> None:
        t0 = time.perf_counter_ns()
        now = time.monotonic_ns()
        self.risk.write(self.asset_class, self.slot, update.rows, update.columns, now)
        if update.failed_rows.size:
            self.risk.mark_stale(self.asset_class, self.slot, update.failed_rows, REPRICE_FAILED)
        self._report_failures(update.failed)
        update.timings_ns["shm_write"] = time.perf_counter_ns() - t0
        spent = sum(update.timings_ns.values())
        self.stats.reprices += 1
        self.stats.repriced_positions += int(update.rows.size)
        self.stats.last_reprice_ns = spent
        self.stats.total_reprice_ns += spent
        for k, v in update.timings_ns.items():
            stage = k.split(":")[0] if ":" in k else k
            self.stats.stage_ns[stage] = self.stats.stage_ns.get(stage, 0) + v
        self._notify(int(update.rows.size), flushed_ns, quote_gen, now, spent)

    def _report_failures(self, failed: dict[str, str]) -> None:
        """Log the groups that newly failed or recovered."""
        before = self.failed
        self.failed = dict(failed)
        for key in sorted(failed.keys() - before.keys()):
            self.stats.stage_ns["errors"] = self.stats.stage_ns.get("errors", 0) + 1
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
        self.stats.stage_ns["errors"] = self.stats.stage_ns.get("errors", 0) + 1
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
            self._heartbeat(force=True)
            return
        self._write(update, time.monotonic_ns(), self.priced_gen)
        self.stats.full_reprice_ns = time.monotonic_ns() - t0
        self.ready = True
        logs.event(
            log,
            "ready",
            f"{self.name} priced {update.rows.size:,} positions",
            positions=int(update.rows.size),
            ms=self.stats.full_reprice_ns / 1e6,
        )
        self._heartbeat(force=True)

    def take_over(self) -> None:
        """Start serving a slot whose worker died, from a repricer priced ahead of time: reprice
        what moved since, write every row, declare readiness (a fraction of :meth:`initial`)."""
        t0 = time.monotonic_ns()
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
        self.stats.full_reprice_ns = time.monotonic_ns() - t0
        self.ready = True
        logs.event(
            log,
            "ready",
            f"{self.name} taken over by a standby: {self.repricer.rows.size:,} positions "
            f"({changed.size} quotes moved since it priced them)",
            positions=int(self.repricer.rows.size),
            ms=self.stats.full_reprice_ns / 1e6,
            took_over=True,
        )
        self._heartbeat(force=True)

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
            self.stats.dropped_notices += 1

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

    # --- requests ----------------------------------------------------------------------

    def _reply(self, envelope: list[bytes], reply: msg.Reply) -> None:
        """Answer with the request's envelope (routing id, request id …) echoed back; never
        waits (a requester gone or not reading loses its answer, counted)."""
        if not sockets.send_reply(self.router, envelope, reply):
            self.stats.reply_dropped += 1

    def _stats_data(self) -> dict[str, Any]:
        s = self.stats
        return {
            "worker": self.name,
            "asset_class": self.asset_class,
            "positions": int(self.repricer.rows.size),
            "groups": len(self.repricer.groups),
            "reprices": s.reprices,
            "repriced_positions": s.repriced_positions,
            "last_reprice_ms": s.last_reprice_ns / 1e6,
            "total_reprice_ms": s.total_reprice_ns / 1e6,
            "stage_ms": {k: v / 1e6 for k, v in s.stage_ns.items()},
            "spline_cache": self.repricer.cache.stats(),
            "spline_cache_enabled": self.repricer.cache.enabled,
            "fail_reprice": ",".join(self.repricer.fail_patterns),
            "failed": self._failed_now(),
            "pid": os.getpid(),
        }

    def handle_request(self) -> None:
        """Answer one request from the router socket."""
        parts = self.router.recv_multipart()
        envelope, payload = parts[:-1], parts[-1]
        try:
            msg.check_size(payload)
            req = msg.worker_request_decoder.decode(payload)
            msg.check_version(req)
        except msgspec.DecodeError as exc:
            self.stats.bad_requests += 1
            self._reply(envelope, msg.error_reply(f"bad request: {exc}"))
            return
        except msg.VersionError as exc:
            self.stats.version_refused += 1
            self._reply(envelope, msg.error_reply(str(exc)))
            return
        try:
            if isinstance(req, msg.WorkerWhatIf):
                shocked = apply_shocks(self.repricer.market, req.shocks)
                rows, base, new = self.repricer.whatif(shocked)
                moved = new != base  # the rest: PnL exactly 0, the aggregator fills them in
                frame = pl.DataFrame({"row": rows[moved], "pv": base[moved],
                                      "pv_shocked": new[moved]})  # fmt: skip
                self._reply(
                    envelope,
                    msg.Reply(ok=True, tables={"pnl": msg.frame_to_bytes(frame)}),
                )
            elif isinstance(req, msg.WorkerMarket):  # every quote of one generation
                values, _, gen = self.quotes.snapshot()  # (the repricer's market holds only
                market = self.repricer.market.with_quote_values(values)  # the ones it reads)
                tables, data = market_view(market, req.curves, req.shocks, req.years)
                data["generation"] = gen
                self._reply(envelope, msg.Reply(ok=True, data=data, tables=tables))
            elif isinstance(req, msg.WorkerProfile):
                if self.profiling is not None:
                    self._reply(envelope, msg.error_reply(f"{self.name} is already profiling"))
                    return
                seconds = min(max(req.seconds, 0.1), 60.0)
                prof = cProfile.Profile()
                now = time.monotonic_ns()
                self.profiling = _Profiling(envelope, now + int(seconds * 1e9), prof, now)
                prof.enable()
            elif isinstance(req, msg.WorkerReprice):
                self.repricer.forget()  # cold: as if every quote had moved
                t0 = time.monotonic_ns()
                try:
                    update = self.repricer.full(self.repricer.market)
                except Exception as exc:
                    self._fail_all(exc)
                    self._reply(envelope, msg.error_reply(f"{self.name}: {self.broken}"))
                    return
                self.broken = ""
                self._write(update, t0, self.priced_gen)
                spent = time.monotonic_ns() - t0
                self.stats.full_reprice_ns = spent
                self._reply(
                    envelope,
                    msg.Reply(
                        ok=True, data={"positions": int(update.rows.size), "ms": spent / 1e6}
                    ),
                )
            elif isinstance(req, msg.WorkerSetOption):
                if req.option == "spline_cache":
                    self.repricer.cache.enabled = bool(req.value)
                    self.repricer.cache.clear()
                    self._reply(envelope, msg.Reply(ok=True, data=self._stats_data()))
                elif req.option == "fail_reprice":  # fault injection (docs/service.md)
                    text = str(req.value)
                    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
                    self.repricer.fail_patterns = patterns
                    self.last_try_ns = 0  # retry (or fail) at the next look
                    self._reply(envelope, msg.Reply(ok=True, data=self._stats_data()))
                else:
                    self._reply(envelope, msg.error_reply(f"unknown option {req.option!r}"))
            else:
                self._reply(envelope, msg.Reply(ok=True, data=self._stats_data()))
        except (MarketError, ValueError) as exc:
            self._reply(envelope, msg.error_reply(str(exc)))
        except Exception as exc:  # a request this worker cannot serve never ends its loop
            self._reply(envelope, msg.error_reply(f"{self.name}: {type(exc).__name__}: {exc}"))

    def finish_profile(self, *, force: bool = False) -> None:
        """Answer a profile request whose time is up."""
        p = self.profiling
        if p is None or (not force and time.monotonic_ns() < p.until_ns):
            return
        p.profiler.disable()
        self.profiling = None
        data = self._stats_data()
        data["profiled_s"] = (time.monotonic_ns() - p.started_ns) / 1e9
        data["functions"] = profile_rows(p.profiler)
        data["tree"] = call_tree(p.profiler)
        self._reply(p.envelope, msg.Reply(ok=True, data=data))

    # --- loop --------------------------------------------------------------------------

    def _heartbeat(self, *, force: bool = False) -> None:
        now = time.monotonic_ns()
        if not force and now - self.last_hb < self.config.heartbeat_s * 1e9:
            return
        self.last_hb = now
        s = self.stats
        hb = msg.Heartbeat(
            role=f"worker:{self.name}",
            pid=os.getpid(),
            sent_ns=now,
            ready=self.ready,
            stats={
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
            },
            histograms={
                "ingest_to_worker": self.to_worker.wire(),
                "reprice": self.reprice.wire(),
            },
        )
        with contextlib.suppress(zmq.Again):
            self.push_hb.send(msg.encode(hb), zmq.NOBLOCK)

    def run(self, stop: _Stop, *, initial: bool = True) -> None:
        """Serve until asked to stop or orphaned (``initial``: price everything first)."""
        parent = os.getppid()
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        if initial:
            self.initial()
        while not stop.requested and os.getppid() == parent:
            events = dict(poller.poll(_POLL_MS))
            flushed_ns = time.monotonic_ns()
            if self.sub in events:
                for notice in sockets.drain(self.sub):  # only the latest state matters
                    if isinstance(notice, msg.QuotesDirty):
                        flushed_ns = notice.flushed_ns
            self.poll_quotes(flushed_ns)
            if self.router in events:
                self.handle_request()
            self.finish_profile()
            self._heartbeat()
        self.finish_profile(force=True)

    def close(self) -> None:
        """Close sockets and detach from shared memory (never unlink: not the owner)."""
        for sock in (self.sub, self.router, self.push_risk, self.push_hb):
            sock.close(linger=0)
        self.ctx.term()
        self.quotes.close()
        self.risk.close()


def run(config_json: str, asset_class: str, slot: int) -> None:
    """Process entry point (``spawn``): serve one worker until SIGTERM/SIGINT."""
    config = decode_config(config_json)
    logs.setup(config.name, f"worker:{worker_name(asset_class, slot)}")
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if config.worker_nice > 0:
        # on a small machine the workers can keep every core busy; ingestion (tick latency)
        # and the aggregator (snapshots, requests) must not queue behind them
        os.nice(config.worker_nice)
    if config.rolling_restart_s > 0:
        gc.disable()  # only together with rolling restarts, which bound the garbage
    die_with_parent()
    worker = WorkerProcess(config, asset_class, slot)
    if config.rolling_restart_s > 0:
        gc.freeze()
    try:
        worker.run(stop)
    finally:
        worker.close()
