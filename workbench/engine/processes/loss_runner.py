"""The live loss process: VaR/ES, stresses and PnL explain of the book on the live quotes.

Every ``loss.every_s`` seconds (from the end of a run) it copies the quote table at one
generation (the seqlock copy, as the workers read it), revalues the book under the historical
scenarios and the stress library with the batch engine's functions, single-threaded in this
process (:mod:`~.loss_measures`), and keeps the result with that generation and the copy's UTC
time. Clients ask for the last result on this process's own socket (ROUTER
``<sockets>/loss.ipc``, :class:`~workbench.engine.protocol.messages.LossRequest`), answered
by one thread of its own, which also sends the heartbeats: a run never holds a request or a
heartbeat (the run itself is single-threaded). An explain is computed when asked, from a
kept copy of the quotes (the day's first, or the latest at or before a chosen time) to a fresh
one, in the hot path's gaps like a run's blocks. Heartbeats carry the summary (firm and desk
VaR/ES, age, progress).
It runs niced (``loss.nice``) on the process shell, role ``loss``. With ``loss.between_flushes``
(the default) a run revalues its blocks only in the hot path's gaps (:mod:`~.flush_gaps`):
after a flush's snapshot is out, sized to end before the next conflation instant, so that it
does not delay the service's snapshots; it learns of flushes and snapshots from ingestion's
notices and the aggregator's snapshot socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import zmq

from workbench._types import FloatArray
from workbench.book.io import load_book
from workbench.engine.processes import shell
from workbench.engine.processes.conflation import next_flush_ns
from workbench.engine.processes.flush_gaps import UNBOUNDED, FlushGaps
from workbench.engine.processes.inputs import book_path, market_path
from workbench.engine.processes.loss_measures import (
    LIVE_BLOCK,
    Computed,
    ExplainBase,
    LiveLoss,
    Stages,
)
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig, loss_endpoint
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import QuoteTable, TornReadError
from workbench.market.history import save_history
from workbench.market.io import load_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference_history import generate_history
from workbench.risk.explain import COMPONENTS
from workbench.risk.limits import LOSS_MEASURES, LimitMonitor, LimitReport

log = logging.getLogger(__name__)

_POLL_MS: Final = 100
_GAP_POLL_MS: Final = 5
"""Longest wait for news of the hot path while a block waits for a gap (ms)."""
_FIRST_STEP_NS: Final = 40_000_000
"""A block's time per scenario assumed before one has been timed (ns)."""
_STEP_SAFETY: Final = 1.25
"""The last block's time per scenario is taken this much longer when sizing the next."""
COPY_EVERY_S: Final = 60.0
"""Seconds between two kept copies of the quotes (the bases an explain may start from)."""
KEPT_COPIES: Final = 1_500
"""Copies kept (a day at one a minute); the day's first is kept apart."""
_DAY_NS: Final = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class QuoteCopy:
    """One consistent copy of the quote table: its ``generation``, when it was taken
    (``made_ns``, UTC ns since the epoch) and the ``values``."""

    generation: int
    made_ns: int
    values: FloatArray


def reference_history_file(config: ServiceConfig, market: MarketSnapshot) -> Path:
    """``loss.history``, or a reference history for ``market`` written once to
    ``<run dir>/loss/history.parquet`` (docs/history.md)."""
    if config.loss.history:
        return Path(config.loss.history)
    path = Path(config.run_dir) / "loss" / "history.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_history(generate_history(market), tmp)
        tmp.replace(path)
    return path


class LossProcess:
    """The loss process's socket, timer and results (built and run by :func:`run`)."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
        assert config.endpoints is not None
        self.config = config
        self.every_ns = int(config.loss.every_s * 1e9)
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, msg.MAX_CONTROL_BYTES)
        self.router.bind(loss_endpoint(config.endpoints))
        self.push = self.ctx.socket(zmq.PUSH)  # each result's summary to the aggregator
        self.push.setsockopt(zmq.SNDHWM, 10)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(config.endpoints.risk)
        self.shell = shell.Shell(config, "loss", stop, self.ctx)
        self.shell.ready = False  # set-up: the supervisor allows startup_timeout_s of silence
        self.market = load_market(market_path(config))
        self.book = load_book(book_path(config), market=self.market)
        self.quotes = QuoteTable.attach(config.segments["quotes"], len(self.market.quote_ids))
        self.loss: LiveLoss | None = None
        self.limits = LimitMonitor(config.limits, desks=list(self.book.desk.labels),
                                   measures=LOSS_MEASURES)  # fmt: skip
        self.results: dict[str, Computed] = {}
        self.copies: list[QuoteCopy] = []
        self.day_first: QuoteCopy | None = None
        self.explain_base: ExplainBase | None = None
        self.next_run_ns = 0
        self.next_copy_ns = 0
        self.progress = (0, 0)
        self.what = ""
        self.error = ""
        self.counts = {"runs": 0, "errors": 0, "requests": 0, "bad_requests": 0,
                       "replies_dropped": 0, "torn_reads": 0, "breaches": 0, "blocks": 0,
                       "gap_wait_ms": 0, "late_blocks": 0, "flushes_seen": 0,
                       "snapshots_seen": 0, "explain_stages": 0}  # fmt: skip
        self.last_run_s = 0.0
        self.summary: dict[str, float] = {}
        self.stopping = False
        self.copying = threading.Lock()
        self.pricing = threading.Lock()  # one thread prices at a time (Numba's pool is one)
        self.pricing_wanted = threading.Event()
        # the hot path's flushes and snapshots, read by the thread holding ``pricing``
        self.gaps = FlushGaps(config.conflation) if config.loss.between_flushes else None
        self.notices = self.ctx.socket(zmq.SUB)
        self.snapshots = self.ctx.socket(zmq.SUB)
        for sock, address in ((self.notices, config.endpoints.notices),
                              (self.snapshots, config.endpoints.snapshots)):  # fmt: skip
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100)
            if sock is self.snapshots:  # only that one came matters: the latest kept
                sock.setsockopt(zmq.CONFLATE, 1)
            if self.gaps is not None:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(address)
        self.hot_path = zmq.Poller()
        self.hot_path.register(self.notices, zmq.POLLIN)
        self.hot_path.register(self.snapshots, zmq.POLLIN)
        self.step_ns_per_scenario = 0  # the last block's, 0 before the first of a phase
        self.step_started_ns = 0
        self.step_size = 0
        self.step_deadline_ns = 0  # the grid instant the block should end before (0: none)
        self.stage_name = ""  # the stage of the book's Greeks under way ("" none)
        self.stage_ns: dict[str, int] = {}  # each stage's last time
        self.explain_stage = ""  # the stage of an explain's pricing under way ("" none)
        self.explain_started_ns = 0
        self.explain_ns: dict[str, int] = {}  # each explain stage's last time

    def begin(self) -> None:
        """Build the scenarios (the history is generated first when none is configured) and
        compile the kernels; then the process is ready (the heartbeats may stop for a while
        before: Numba holds the GIL while it compiles)."""
        lc = self.config.loss
        loss = LiveLoss(self.book, self.market,
                        history=reference_history_file(self.config, self.market),
                        window=lc.window, stresses=lc.stresses, greeks=lc.greeks)  # fmt: skip
        loss.warm()
        self.loss = loss
        self.shell.ready = True

    def turn(self) -> None:
        """Keep a copy of the quotes when due; run when due; else wait a little."""
        now = time.monotonic_ns()
        if now >= self.next_copy_ns:
            self.next_copy_ns = now + int(COPY_EVERY_S * 1e9)
            self._copy()
        if now >= self.next_run_ns and self.copies and self.loss is not None:
            self._run()
            self.next_run_ns = time.monotonic_ns() + self.every_ns
        else:
            time.sleep(_POLL_MS / 1000)

    def serve_requests(self) -> None:
        """The request thread: answer what arrives and beat, until the process stops (an
        explain prices here, on one Numba thread as the runs do: the setting is per thread)."""
        import numba

        numba.set_num_threads(1)
        while not self.stopping and self.shell.running():
            if self.router.poll(_POLL_MS):
                self._serve()
            self.shell.beat_if_due(self)
        self.stopping = True

    # --- the copies of the quotes ----------------------------------------------------------

    def _copy(self) -> QuoteCopy | None:
        with self.copying:  # the run and the request thread both take copies
            try:
                values, _, gen = self.quotes.snapshot()
            except TornReadError:
                self.counts["torn_reads"] += 1
                return None
            copy = QuoteCopy(gen, time.time_ns(), values)
            first = self.day_first
            if first is None or copy.made_ns // _DAY_NS != first.made_ns // _DAY_NS:
                self.day_first = copy
            self.copies = [*self.copies[-(KEPT_COPIES - 1) :], copy]
            return copy

    def base_copy(self, since_ns: int | None) -> QuoteCopy:
        """The copy an explain since ``since_ns`` starts from: the latest at or before it, the
        first kept when none is; None: the day's first."""
        assert self.day_first is not None
        if since_ns is None:
            return self.day_first
        before = [c for c in self.copies if c.made_ns <= since_ns]
        if before:
            return before[-1]
        return min([self.day_first, *self.copies], key=lambda c: c.made_ns)

    # --- a run ---------------------------------------------------------------------------

    def _between_blocks(self, done: int, total: int) -> None:
        if self.step_size:  # the block just done: its time per scenario sizes the next
            took = self._block_done()
            self.step_ns_per_scenario = max(1, took // self.step_size)
            self.step_size = 0
        self.progress = (done, total)
        if self.stopping:
            raise _StoppedError
        if self.pricing_wanted.is_set():  # an explain waits: let it price, then go on
            self.pricing.release()
            try:
                while self.pricing_wanted.is_set() and not self.stopping:
                    time.sleep(0.005)
            finally:
                self.pricing.acquire()

    def _block_done(self) -> int:
        """A block (or a stage) just ended: its time (ns), counted late if it ran into the
        next flush instant."""
        now = time.monotonic_ns()
        if 0 < self.step_deadline_ns < now:
            self.counts["late_blocks"] += 1
        return now - self.step_started_ns

    def _hot_path_news(self, wait_ms: int) -> None:
        """Read ingestion's flush notices and the snapshots that arrived (waiting up to
        ``wait_ms`` for the first) into :attr:`gaps`."""
        assert self.gaps is not None
        events = dict(self.hot_path.poll(wait_ms))
        now = time.monotonic_ns()
        if self.notices in events:
            for notice in sockets.drain(self.notices):
                if isinstance(notice, msg.QuotesDirty):
                    self.gaps.flushed(notice.flushed_ns, now)
                    self.counts["flushes_seen"] += 1
        if self.snapshots in events:
            seen = False
            with contextlib.suppress(zmq.Again):
                while True:
                    self.snapshots.recv(zmq.NOBLOCK, copy=False)
                    seen = True
            if seen:
                self.gaps.published(now)
                self.counts["snapshots_seen"] += 1

    def _gap_for(self, step_ns: int) -> tuple[int, int]:
        """Wait until a step of ``step_ns`` may start (:meth:`FlushGaps.may_start`); the room
        there and the step's deadline (the next conflation instant, 0: none), ns."""
        assert self.gaps is not None
        waited = time.monotonic_ns()
        self._hot_path_news(0)
        while True:
            if self.stopping:
                raise _StoppedError
            now = time.monotonic_ns()
            room = self.gaps.room_ns(now)
            if self.gaps.may_start(now, step_ns):
                break
            self._hot_path_news(_GAP_POLL_MS)
        self.counts["gap_wait_ms"] += (now - waited) // 1_000_000
        return room, 0 if room >= UNBOUNDED else next_flush_ns(now, self.config.conflation)

    def _wait_for(self, took_ns: dict[str, int], name: str) -> int:
        """Before stage ``name`` (of the book's Greeks or of an explain): with the gaps kept,
        wait for one as long as the stage took last time (``took_ns``); its deadline, ns (0:
        none)."""
        if self.stopping:
            raise _StoppedError
        if self.gaps is None:
            return 0
        return self._gap_for(int(took_ns.get(name, _FIRST_STEP_NS) * _STEP_SAFETY))[1]

    def _next_size(self, done: int, total: int) -> int:
        """How many scenarios the next block revalues: as many as fit before the next
        conflation instant, after waiting for the hot path to be done with the last flush
        (1 at least: a block longer than every gap starts early in one)."""
        if done == 0:
            self.step_ns_per_scenario = 0  # a new phase (revaluation, gap, stresses)
        self.step_deadline_ns = 0
        size = LIVE_BLOCK
        if self.gaps is not None:
            per = int((self.step_ns_per_scenario or _FIRST_STEP_NS) * _STEP_SAFETY)
            room, self.step_deadline_ns = self._gap_for(per)
            size = int(max(1, min(LIVE_BLOCK, room // per)))
        self.counts["blocks"] += 1
        self.step_size = size
        self.step_started_ns = time.monotonic_ns()
        return size

    def _stage(self, name: str) -> None:
        """Before each stage of the book's Greeks: the last one's time kept, then wait for a
        gap as long as this one took last time."""
        if self.stage_name:
            self.stage_ns[self.stage_name] = self._block_done()
        self.stage_name = name
        if not name:
            return
        self.step_deadline_ns = self._wait_for(self.stage_ns, name)
        self.counts["blocks"] += 1
        self.step_started_ns = time.monotonic_ns()

    def _run(self) -> None:
        assert self.loss is not None
        copy = self._copy() or self.copies[-1]
        market = self.loss.market(copy.values)
        t0 = time.perf_counter()
        self.pricing.acquire()
        try:
            book = self.loss.scenario_book(market)
            for what in ("var", "stress"):
                self.what = what
                start = time.perf_counter()
                if what == "var":
                    computed = self.loss.var(market, self._between_blocks, self._next_size,
                                             book=book, stages=self._stage)  # fmt: skip
                else:
                    computed = self.loss.stress(market, self._between_blocks, self._next_size,
                                                book=book)  # fmt: skip
                computed.data.update(generation=copy.generation, made_ns=copy.made_ns,
                                     seconds=time.perf_counter() - start)  # fmt: skip
                if what == "var":
                    self._limits(computed)
                    self.summary = _summary(computed)
                    self._announce(int(copy.made_ns))
                self.results[what] = computed
            self.error = ""
            self.counts["runs"] += 1
        except _StoppedError:
            return
        except Exception as exc:  # a failed run keeps the last result and says why
            self.counts["errors"] += 1
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loss: run failed")
        finally:
            self.pricing.release()
            self.what = ""
            self.progress = (0, 0)
            self.last_run_s = time.perf_counter() - t0

    def _announce(self, made_ns: int) -> None:
        """Send the summary to the aggregator, which puts it in every snapshot with its age."""
        summary = msg.LossSummary(values=dict(self.summary), made_ns=made_ns)
        with contextlib.suppress(zmq.Again):  # the aggregator is away: the next run sends again
            self.push.send(msg.encode(summary), zmq.NOBLOCK)

    def _limits(self, computed: Computed) -> None:
        """The VaR/ES limits on ``computed``: table ``limits`` (as the aggregator's usage),
        ``breaches`` in force (their start on this machine's monotonic clock)."""
        table = msg.bytes_to_frame(computed.tables["measures"])
        firm = table.filter(table["group"] == "Firm")
        desk = table.filter(table["group"] != "Firm").rename({"group": "desk"})
        report: LimitReport = self.limits.evaluate_rollups(firm, desk, time.monotonic_ns())
        computed.tables["limits"] = msg.frame_to_bytes(report.usage)
        computed.data["breaches"] = [msgspec.to_builtins(b) for b in report.breaches]
        self.counts["breaches"] = len(report.breaches)

    # --- requests ------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, payload = parts[:-1], parts[-1]
            self.counts["requests"] += 1
            try:
                req = msg.loss_request_decoder.decode(payload)
                msg.check_version(req)
                reply = self._answer(req)
            except (msgspec.DecodeError, msgspec.ValidationError, msg.VersionError) as exc:
                self.counts["bad_requests"] += 1
                reply = msg.error_reply(f"bad request: {exc}")
            except Exception as exc:  # a request it cannot serve never ends its loop
                reply = msg.error_reply(f"loss: {type(exc).__name__}: {exc}")
            if not sockets.send_reply(self.router, envelope, reply):
                self.counts["replies_dropped"] += 1

    def _facts(self) -> dict[str, Any]:
        done, total = self.progress
        return {"computing": self.what, "done": done, "total": total, "error": self.error,
                "every_s": self.config.loss.every_s, "as_of": self.market.as_of.isoformat(),
                "now_ns": time.time_ns()}  # fmt: skip

    def _answer(self, req: msg.LossRequest) -> msg.Reply:
        if req.what == "explain":
            return self._explain(req.since_ns)
        found = self.results.get(req.what)
        if found is None:
            return msg.Reply(ok=True, data={**self._facts(), "ready": False})
        return msg.Reply(ok=True, data={**found.data, **self._facts(), "ready": True},
                         tables=found.tables)  # fmt: skip

    def _explain(self, since_ns: int | None) -> msg.Reply:
        if self.day_first is None:
            return msg.Reply(ok=True, data={**self._facts(), "ready": False})
        self.pricing_wanted.set()
        with self.pricing:
            self.pricing_wanted.clear()
            return self._explained(since_ns)

    def _explained(self, since_ns: int | None) -> msg.Reply:
        base = self.base_copy(since_ns)
        now = self._copy() or self.copies[-1]
        if self.explain_base is None or self.explain_base.generation != base.generation:
            market0 = self.market.with_quote_values(base.values)
            self.explain_base = ExplainBase(self.book, market0, generation=base.generation,
                                            between=self._explain_stages("base"))  # fmt: skip
        positions, by_desk = self.explain_base.explain(
            self.market.with_quote_values(now.values), between=self._explain_stages("now")
        )
        data = {**self._facts(), "ready": True, "base_generation": base.generation,
                "base_ns": base.made_ns, "generation": now.generation, "made_ns": now.made_ns,
                "components": list(COMPONENTS)}  # fmt: skip
        tables = {"by_desk": msg.frame_to_bytes(by_desk),
                  "positions": msg.frame_to_bytes(positions)}  # fmt: skip
        return msg.Reply(ok=True, data=data, tables=tables)

    def _explain_stages(self, part: str) -> Stages | None:
        """The stage hook of an explain's pricing (``part``: ``"base"``, the Greeks at the
        start; ``"now"``, the PVs at the end): before each stage, the last one's time kept and
        a heartbeat if due; between the flushes, a wait for a gap as long as the stage took
        last time (the request thread holds ``pricing``: no run reads the hot path meanwhile).
        None when the process revalues at any time."""

        def stage(name: str) -> None:
            now = time.monotonic_ns()
            if self.explain_stage:
                self.explain_ns[self.explain_stage] = now - self.explain_started_ns
            self.explain_stage = f"{part}:{name}" if name else ""
            self.shell.beat_if_due(self)
            if self.explain_stage:
                self._wait_for(self.explain_ns, self.explain_stage)
                self.counts["explain_stages"] += 1
                self.explain_started_ns = time.monotonic_ns()

        return stage if self.gaps is not None else None

    # --- the shell's side ----------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Counters, progress and the last VaR/ES summary: ``var:<desk>`` (the first level),
        ``es:<desk>`` (USD, the firm as ``Firm``), ``var_age_s``."""
        out = {k: float(v) for k, v in self.counts.items()}
        out.update(done=float(self.progress[0]), total=float(self.progress[1]),
                   last_run_s=self.last_run_s)  # fmt: skip
        out.update(self.summary)
        made_ns = self.results["var"].data["made_ns"] if "var" in self.results else None
        if made_ns is not None:
            out["var_age_s"] = (time.time_ns() - int(made_ns)) / 1e9
        return out

    def histograms(self) -> dict[str, list[float]]:
        """None of its own."""
        return {}

    def close(self) -> None:
        """Detach from the quote table (its owner, the supervisor, unlinks it); close."""
        try:
            self.quotes.close()
        finally:
            self.shell.close()
            for sock in (self.router, self.push, self.notices, self.snapshots):
                sock.close()
            self.ctx.term()


class _StoppedError(Exception):
    """The process is stopping: a run ends between two blocks."""


def _summary(computed: Computed) -> dict[str, float]:
    """``var:<desk>`` (the first level) and ``es:<desk>`` (USD, the firm as ``Firm``) and the
    quote generation of a VaR result, for the heartbeats."""
    frame = msg.bytes_to_frame(computed.tables["measures"])
    var_col, es_col = frame.columns[1], frame.columns[1 + len(computed.data["levels"])]
    out = {"var_generation": float(computed.data["generation"])}
    for row in frame.iter_rows(named=True):
        out[f"var:{row['group']}"] = float(row[var_col])
        out[f"es:{row['group']}"] = float(row[es_col])
    return out


def serve(body: LossProcess) -> None:
    """Start the request thread, build the scenarios, run on the timer until a stop or the
    parent's exit; then the last heartbeat and the close."""
    server = threading.Thread(target=body.serve_requests, name="loss-requests", daemon=True)
    server.start()
    try:
        body.begin()
        _runs_on_idle_cpu()
        while not body.stopping and body.shell.running():
            body.turn()
    finally:
        body.stopping = True
        server.join(5.0)
        try:
            body.shell.beat(body, ready=False)  # final counters
        finally:
            body.close()


def _runs_on_idle_cpu() -> None:
    """Put the calling thread (the one that runs VaR) under ``SCHED_IDLE``: it gets only CPU no
    other thread wants, and a flush's worker preempts it at once. The request and heartbeat
    thread keeps its nice value, so heartbeats and answers still come on a busy machine (a run
    then takes longer: its age shows it). Measured on the reference book: this did not lower
    the service's flush → publish p99 while a run goes on (84 ms, against 92 ms niced alone and
    ~50 ms with no run; docs/benchmarks.md), nor did every thread of the process on
    ``SCHED_IDLE`` (Numba's work-queue thread, which runs the tranche recursion, included): what
    a run costs the hot path is not its share of the CPU; the cause is not known."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the nice value only
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def run(config_json: str) -> None:
    """Process entry point (``spawn``): serve until SIGTERM/SIGINT or the parent's exit."""
    config, stop = shell.start(config_json, "loss")
    import numba

    numba.set_num_threads(1)  # single-threaded: the cores are the hot path's
    shell.lower_priority(config.loss.nice)
    serve(LossProcess(config, stop))


__all__ = ["COPY_EVERY_S", "KEPT_COPIES", "LossProcess", "QuoteCopy", "reference_history_file",
           "run", "serve"]  # fmt: skip
