"""The aggregator process: roll-ups, limits and staleness over the shared risk columns.

It reads the risk table (a consistent copy under the workers' generation counters), publishes
aggregated :class:`messages.Snapshot` s on a PUB socket once the workers' results of a flush
have settled, at most ``snapshot_hz`` in any second (:mod:`engine.processes.pacing`; once a
second regardless, so ages keep moving), compares the booking file with the book priced on
its timer (recon), and answers the control plane (:mod:`~.control`). It runs on the polling
process shell (:mod:`~.shell`): heartbeats with the counters and the ``worker_to_aggregator``
and ``flush_to_publish`` histograms; SIGTERM, SIGINT or the parent's exit stop it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Final

import numpy as np
import polars as pl
import zmq

from workbench.book.io import load_book
from workbench.engine.processes import shell
from workbench.engine.processes.control import ControlPlane
from workbench.engine.processes.inputs import book_path, file_digest, market_path
from workbench.engine.processes.pacing import FlushTracker, PublishPacer
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig
from workbench.engine.telemetry import logs
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import RISK_COLUMNS, RiskTable
from workbench.market.io import load_market
from workbench.risk.aggregation import risk_frame, static_frame
from workbench.risk.breaches import Breach
from workbench.risk.cells import CellSums
from workbench.risk.fallback import with_fallback_counts
from workbench.risk.limits import LimitMonitor, LimitReport
from workbench.risk.recon import recon, recon_breach, terms_frame

log = logging.getLogger(__name__)

_FRAME_COLUMNS = (*RISK_COLUMNS, "stale", "stale_reason", "updated_ns")
_TABLES = tuple(msg.table_name(by) for by in msg.SNAPSHOT_GROUPINGS)
RECENT_FLUSHES: Final = 1024
"""The snapshot's ``flush_to_publish_p50_ms`` and ``_p99_ms`` are of the latest 1,024 to 2,048
flushes published."""
_MAX_POLL_MS: Final = 100

_FLUSH_GIVE_UP_NS = 10_000_000_000
"""A flush a worker has not priced in this long (it is down or restarting) stops being waited
for; that worker's positions show as stale."""


class Aggregator:
    """The aggregator's sockets, timers and roll-up state (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
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
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 10)  # a slow client drops snapshots, never blocks us
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(ep.snapshots)
        self.requests = ControlPlane(self.ctx, config, self)
        self.shell = shell.Shell(config, "aggregator", stop, self.ctx, hwm=100)
        self.seq = 0
        self.to_aggregator = LatencyHistogram()  # a worker's write done to its notice read here
        self.end_to_end = LatencyHistogram(recent=RECENT_FLUSHES)  # a flush to its snapshot
        self.last_publish_ns = 0
        self.published = 0
        self.publish_ms = 0.0  # the time spent in publish(), every snapshot's, ms
        self.publish_cpu_ms = 0.0  # the CPU time this thread spent there, ms
        self.snapshot_bytes = 0  # the last snapshot's size on the wire
        self.snapshot_stats: dict[str, float] = {}
        self.failed: dict[str, dict[str, str]] = {}  # worker → its groups whose reprice failed
        self.loss_summary: msg.LossSummary | None = None  # the loss process's last VaR/ES
        self.pacer = PublishPacer(config.snapshot_hz)
        self.poller = zmq.Poller()
        for sock in (self.flush_sub, self.pull):
            self.poller.register(sock, zmq.POLLIN)
        self.requests.register(self.poller)

    # --- what the control plane reads --------------------------------------------------

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

    def limit_report(self) -> LimitReport:
        """The limits of the last snapshot (evaluated now before the first)."""
        return self.last_report or self.limits.evaluate(self.frame(), time.monotonic_ns())

    def live_pv(self) -> pl.DataFrame:
        """The static columns of every position and its live ``pv`` (USD)."""
        cols, _ = self.risk.read(("pv",), tuple(range(self.risk.spec.n_counters)))
        return self.static.with_columns(pl.Series("pv", cols["pv"]))

    # --- snapshots ---------------------------------------------------------------------

    def publish(self) -> None:
        """Aggregate and publish one snapshot."""
        now = time.monotonic_ns()
        cpu = time.thread_time_ns()
        # per-cell sums straight off the shared columns, retried if a worker wrote meanwhile
        cells, _ = self.risk.consistent(
            lambda cols: self.cells.cells(cols, now), tuple(range(self.risk.spec.n_counters))
        )
        # every grouping a grid offers, reduced from the cells once for every client
        grouped = dict(zip(_TABLES, self.cells.grouped(cells, msg.SNAPSHOT_GROUPINGS), strict=True))
        if self.config.feed.sources:  # groups priced off a polling source's quotes
            marked = np.flatnonzero(self.risk.columns["fallback"])
            for name, by in zip(_TABLES, msg.SNAPSHOT_GROUPINGS, strict=True):
                grouped[name] = with_fallback_counts(grouped[name], by, self.static, marked)
        firm = grouped["firm"]
        report = self.limits.evaluate_rollups(firm, grouped["desk"], now)
        self.last_report = report
        breaches = report.breaches + ((self.recon_breach,) if self.recon_breach else ())
        tables = {name: msg.frame_to_bytes(frame) for name, frame in grouped.items()}
        tables["limits"] = msg.frame_to_bytes(report.usage)
        self.seq += 1
        done = time.monotonic_ns()
        priced = [(done - f) / 1e6 for f in self.tracker.take_complete()]
        self.end_to_end.observe_ms(priced)
        e2e = self.end_to_end
        stats = {
            "positions": float(firm["positions"][0]),
            "stale": float(firm["stale"][0]),
            "max_age_s": float(firm["max_age_s"][0]),
            "flush_to_publish_p50_ms": e2e.quantile_ms(0.5, recent=True) if e2e.count else 0.0,
            "flush_to_publish_p99_ms": e2e.quantile_ms(0.99, recent=True) if e2e.count else 0.0,
            "aggregate_ms": (done - now) / 1e6,
            "flushes_unpriced": float(self.tracker.dropped),
            "book_generation": float(self.config.book_generation),
            "failed_groups": float(sum(len(f) for f in self.failed.values())),
        }
        if self.loss_summary is not None:  # the loss process's last VaR/ES, with its age
            stats.update({f"loss.{k}": v for k, v in self.loss_summary.values.items()})
            stats["loss.age_s"] = (time.time_ns() - self.loss_summary.made_ns) / 1e9
        snap = msg.Snapshot(
            seq=self.seq, made_ns=done, tables=tables, breaches=breaches, stats=stats
        )
        wire = msg.encode(snap)
        with contextlib.suppress(zmq.Again):
            self.pub.send(wire, zmq.NOBLOCK)
        self.snapshot_bytes = len(wire)
        self.publish_ms += (time.monotonic_ns() - now) / 1e6
        self.publish_cpu_ms += (time.thread_time_ns() - cpu) / 1e6
        self.published += 1
        self.last_publish_ns = done
        self.snapshot_stats = stats

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

    # --- the loop (on the process shell) -----------------------------------------------

    def stats(self) -> dict[str, float]:
        """The last snapshot's figures and this process's counters, for the heartbeat."""
        stats = dict(self.snapshot_stats)
        stats["published"] = float(self.published)
        stats["publish_ms_total"] = self.publish_ms
        stats["publish_cpu_ms_total"] = self.publish_cpu_ms
        stats["snapshot_bytes"] = float(self.snapshot_bytes)
        stats.update(self.requests.stats())
        stats["version_refused"] += float(sockets.DRAINED.version)
        stats["bad_notices"] = float(sockets.DRAINED.bad)
        return stats

    def histograms(self) -> dict[str, list[float]]:
        """The ``worker_to_aggregator`` and ``flush_to_publish`` histograms."""
        return {
            "worker_to_aggregator": self.to_aggregator.wire(),
            "flush_to_publish": self.end_to_end.wire(),
        }

    def begin(self) -> None:
        """Publish a first snapshot."""
        self.publish()
        self.pacer.published(self.last_publish_ns)

    def turn(self) -> None:
        """Wait for input until the next snapshot is due (≤ 100 ms), then take the flushes and
        the workers' results, serve requests, publish when due and recon on its timer."""
        pacer = self.pacer
        now = time.monotonic_ns()
        wait_ms = max(0, -(-(pacer.next_due_ns(now) - now) // 1_000_000))  # ceil
        events = dict(self.poller.poll(min(wait_ms, _MAX_POLL_MS)))
        if self.flush_sub in events:  # before the results: a flush is known when they come
            for notice in sockets.drain(self.flush_sub):
                if isinstance(notice, msg.QuotesDirty):
                    self.tracker.flushed(notice.gen, notice.flushed_ns)
                    pacer.result(time.monotonic_ns(), expecting=self.tracker.waiting())
        if self.pull in events:
            for notice in sockets.drain(self.pull):
                if isinstance(notice, msg.LossSummary):
                    self.loss_summary = notice
                elif isinstance(notice, msg.RiskUpdated):
                    self.failed[notice.worker] = notice.failed
                    self.tracker.priced(notice.worker, notice.quote_gen)
                    now = time.monotonic_ns()
                    if notice.repriced:
                        self.to_aggregator.observe_ms((now - notice.done_ns) / 1e6)
                    pacer.result(now, expecting=self.tracker.waiting())
        self.tracker.expire(time.monotonic_ns(), _FLUSH_GIVE_UP_NS)
        self.requests.handle(events)
        if pacer.due(time.monotonic_ns()):
            self.publish()
            pacer.published(self.last_publish_ns)
        self.maybe_recon()

    def close(self) -> None:
        """Close sockets and detach from the risk table."""
        self.shell.close()
        self.requests.close()
        for sock in (self.flush_sub, self.pull, self.pub):
            sock.close(linger=0)
        self.ctx.term()
        self.risk.close()


def run(config_json: str) -> None:
    """Process entry point (``spawn``): serve until SIGTERM/SIGINT or the parent's exit."""
    config, stop = shell.start(config_json, "aggregator")
    shell.run_polling(lambda: Aggregator(config, stop))
