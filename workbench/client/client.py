"""The synchronous client: one attachment to a running service, each method a blocking call.

>>> import workbench                                                    # doctest: +SKIP
>>> svc = workbench.start(book="out/book.parquet", market="out/market.json")  # doctest: +SKIP
>>> svc.aggregate(by=("desk",))                                         # doctest: +SKIP

Every method returns Polars frames, views or plain dicts; the service's refusals raise
:class:`ServiceError` with its message. :meth:`Client.asynchronous` gives the same methods as
coroutines for a notebook's event loop.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import zmq

from workbench.client import calls
from workbench.client.asynchronous import AsyncClient
from workbench.client.errors import ServiceError
from workbench.client.session import STATUS_TIMEOUT_S, Attached, Session
from workbench.client.views import ExplainView, LossResult, MarketView, SnapshotView
from workbench.client.wire import (
    CurveKeys,
    no_snapshot,
    read_reply,
    secure,
    subscribe,
    unanswered,
    unreachable,
)
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import Descriptor, loss_endpoint
from workbench.engine.transport.shm import pid_alive
from workbench.risk.shocks import AnyShock
from workbench.store.query import Moment, as_utc_ns


class Client(Attached):
    """A connection to one running service (found through its descriptor); blocking calls."""

    def __init__(
        self,
        descriptor: Descriptor,
        *,
        timeout_s: float = 60.0,
        process: subprocess.Popen[bytes] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        super().__init__(Session(descriptor, timeout_s=timeout_s, process=process, curve=curve))
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._twin: AsyncClient | None = None

    # --- running a plan ----------------------------------------------------------------

    def _run(self, plan: calls.Plan[calls.T]) -> calls.T:
        """Carry out ``plan``'s steps on blocking sockets; return what it returns."""
        step = calls.resume(plan, None)
        while not isinstance(step, calls.Done):
            try:
                outcome = self._do(step)
            except ServiceError as exc:
                outcome = exc
            step = calls.resume(plan, outcome)
        return step.value

    def _do(self, step: calls.Step) -> Any:
        if isinstance(step, calls.Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, calls.Listen):
            return self._listen(step.timeout_s)
        wait = self.timeout_s if step.timeout_s is None else step.timeout_s
        if isinstance(step, calls.AskLoss):  # remote: the gateway relays it to the process
            if self.local:
                return self._ask_at(loss_endpoint(self.endpoints), step.request, wait)
            return self._ask(step.request, wait)
        if step.supervisor and self.local:
            return self._ask_supervisor(step.request, wait)
        return self._ask(step.request, wait)

    def _control(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            secure(sock, self._session.curve)
            sock.connect(self.endpoints.control)
            self._sock = sock
        return self._sock

    def _drop_control(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _ask(self, req: msg.Request | msg.LossRequest, wait_s: float) -> msg.Reply:
        sock = self._control()
        try:
            sock.send(msg.encode(req), zmq.NOBLOCK)
        except zmq.Again:  # nobody connected to take it: never block the caller
            self._drop_control()
            raise unreachable(self.name, supervisor=False) from None
        if not sock.poll(int(wait_s * 1000)):
            self._drop_control()  # a REQ socket cannot send again before it receives
            raise unanswered(self.name, req, wait_s, supervisor=False)
        return read_reply(self.name, sock.recv())

    def _ask_supervisor(self, req: msg.Request, wait_s: float) -> msg.Reply:
        return self._ask_at(self.endpoints.supervisor, req, wait_s)

    def _ask_at(
        self, endpoint: str, req: msg.Request | msg.LossRequest, wait_s: float
    ) -> msg.Reply:
        """One request to a process's ROUTER on this machine (the supervisor, the loss
        process), on a socket of its own."""
        supervisor = endpoint == self.endpoints.supervisor
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1)
        try:
            sock.connect(endpoint)
            try:
                sock.send_multipart([b"", msg.encode(req)], zmq.NOBLOCK)
            except zmq.Again:
                raise unreachable(self.name, supervisor=supervisor) from None
            if not sock.poll(int(wait_s * 1000)):
                raise unanswered(self.name, req, wait_s, supervisor=supervisor)
            return read_reply(self.name, sock.recv_multipart()[-1])
        finally:
            sock.close(linger=0)

    def _listen(self, timeout_s: float) -> SnapshotView:
        sock = self._ctx.socket(zmq.SUB)
        try:
            subscribe(sock, latest_only=False)
            secure(sock, self._session.curve)
            sock.connect(self.endpoints.snapshots)
            if not sock.poll(int(timeout_s * 1000)):
                raise no_snapshot(self.name, timeout_s)
            return self._session.received(sock.recv())
        finally:
            sock.close(linger=0)

    # --- the service's answers ---------------------------------------------------------

    def request(self, req: msg.Request, *, timeout_s: float | None = None) -> msg.Reply:
        """Send one request through the control socket and wait ``timeout_s`` seconds
        (default :attr:`timeout_s`) for its reply (raises :class:`ServiceError`)."""
        return self._run(calls.request(req, timeout_s))

    def supervisor_request(self, req: msg.Request, *, timeout_s: float) -> msg.Reply:
        """Ask the supervisor directly (status, restart, stop, reload), not through the
        aggregator: these must work whatever state the aggregator is in."""
        return self._run(calls.supervisor_request(req, timeout_s))

    def status(self, *, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        """Processes (pid, state, restarts, heartbeat age in s, counters) and service facts.

        Asked of the supervisor directly; when it does not answer within ``timeout_s``
        seconds the answer comes from the run directory and ``/proc`` instead
        (:meth:`status_from_processes`: ``answered_by`` is then ``"client"``, ``ready`` False
        and ``error`` says why). Never depends on the aggregator.
        """
        return self._run(calls.status(self._session, timeout_s))

    def ping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The status as answered through the service's control socket (the aggregator, which
        asks the supervisor): what a widget's requests will meet. Raises :class:`ServiceError`
        when no answer comes within ``timeout_s`` seconds."""
        return self._run(calls.ping(timeout_s))

    def status_from_processes(self, why: str) -> dict[str, Any]:
        """What can be known without asking any process of the service: each process's pid
        from ``processes.json`` and whether it runs (``state``: ``running``, ``stopped`` for a
        process stopped by a signal, ``dead``); ``error`` is ``why``."""
        return self._session.status_from_processes(why)

    def alive(self) -> bool:
        """Whether the service's supervisor process runs (True for a remote service: its
        process is not on this machine; a request tells)."""
        return not self.local or pid_alive(self.descriptor.pid)

    def processes(self) -> pl.DataFrame:
        """:meth:`status` as a table, one row per process."""
        return self._run(calls.processes(self._session))

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Block until every process has finished its set-up and priced its positions
        (raises :class:`ServiceError` after ``timeout_s`` seconds, with the log's end)."""
        return self._run(calls.wait_ready(self._session, timeout_s))

    def positions(self, asset_class: str | None = None) -> pl.DataFrame:
        """Per-position risk (USD measures, ``stale``, ``age_s`` in seconds)."""
        return self._run(calls.positions(asset_class))

    def snapshot(self, asset_class: str | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
        """Per-position risk from one consistent copy, and that copy's identity.

        The identity holds ``generation`` (sum of the writers' counters: it changes whenever any
        Greek does), the per-writer ``counters``, ``snapshot_seq`` of the last published
        aggregate and the ``service`` name: what a report records to be audited.
        """
        return self._run(calls.snapshot(asset_class))

    def aggregate(self, by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """Roll-ups of the live risk grouped by ``by`` (USD measures)."""
        return self._run(calls.aggregate(by))

    def history(
        self,
        start: Moment = None,
        end: Moment = None,
        *,
        grouping: str = "firm",
        measures: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """The stored roll-ups of ``grouping`` over ``[start, end)``, from the service's risk
        store (docs/store.md).

        Parameters
        ----------
        start, end
            UTC ns since the epoch or datetimes (naive: UTC); None: unbounded.
        grouping
            ``"firm"``, ``"desk"``, ``"asset_class"`` or ``"desk,currency"``.
        measures
            Stored columns (``pv``, ``dv01``, ``pv_gross``, ``positions`` …); None: all.

        Returns
        -------
        pl.DataFrame
            One row per stored snapshot and group: ``made_ns`` (UTC ns), ``seq``, the key
            columns, the measures (USD); sorted by ``made_ns``. A bad grouping or measure
            raises :class:`ValueError`.
        """
        return self._run(calls.history(self._session, start, end, grouping, measures))

    def limits(self) -> pl.DataFrame:
        """Limit usage (value and limit in USD, utilisation, breached) per configured limit."""
        return self._run(calls.limits(self._session))

    def whatif(self, shocks: Sequence[AnyShock], by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """PnL (USD) of a shocked copy of the live market, grouped by ``by``."""
        return self._run(calls.whatif(shocks, by))

    def market(
        self,
        curves: Sequence[str] = (),
        shocks: Sequence[AnyShock] = (),
        years: Sequence[float] = (),
    ) -> MarketView:
        """The live quotes and curve pillars at one quote generation, and for ``curves``
        (ids such as ``USD.SOFR``) their zero and 3M forward rates (%) at ``years`` (default
        0.25 to 30 years), base and with ``shocks`` applied. Works over :func:`connect_remote`."""
        return self._run(calls.market(curves, shocks, years))

    def var(self, *, wait_s: float = 300.0) -> LossResult:
        """The live historical VaR/ES of the book (docs/var.md, "Live"): the loss process's
        last result, computed on one copy of the live quotes every ``loss.every_s`` seconds,
        with its quote ``generation`` and ``age_s``. Waits up to ``wait_s`` seconds for a first
        result (0: the answer as it is, ``ready`` False before one). Over
        :func:`connect_remote` the service's gateway relays it; programs without the client:
        ``GET /v1/var`` of ``workbench api`` (docs/api.md)."""
        return self._run(calls.loss_result(self._session, "var", wait_s))

    def stress(self, *, wait_s: float = 300.0) -> LossResult:
        """The book's PnL under each stress of the service's stress file, on the live quotes
        (as :meth:`var`; ``measures`` is None)."""
        return self._run(calls.loss_result(self._session, "stress", wait_s))

    def explain(self, since: Moment = None, *, wait_s: float = 60.0) -> ExplainView:
        """Intraday PnL explain by desk and risk factor (USD) from the quotes at ``since``
        (UTC ns or a datetime, naive: UTC; the latest copy the loss process kept at or before
        it, one a minute; None: the service's first quotes of the UTC day) to the live ones,
        with the unexplained residual (docs/var.md, "Live")."""
        return self._run(calls.explain(self._session, as_utc_ns(since), wait_s))

    def profile(self, worker: str, seconds: float = 2.0) -> dict[str, Any]:
        """Profile ``worker`` (e.g. ``"fx-0"``) for ``seconds`` of live work.

        Returns its stage timings, cache counters, a ``functions`` table (per-function
        calls and times, the heaviest first) and a ``tree`` table (the call tree, one row per
        node, see :func:`workbench.engine.telemetry.profiling.tree_from_stats`).
        """
        return self._run(calls.profile(self._session, worker, seconds))

    def set_option(
        self, worker: str, option: str, value: bool | int | float | str
    ) -> dict[str, Any]:
        """Set a worker option, e.g. ``set_option("fx-0", "spline_cache", False)``."""
        return self._run(calls.set_option(worker, option, value))

    def reprice_all(self, *, timeout_s: float = 120.0) -> pl.DataFrame:
        """Re-risk every position now on every worker in parallel (Greeks included): the
        full re-risk through the service. One row per worker: ``positions``, ``ms``."""
        return self._run(calls.reprice_all(timeout_s))

    def restart(self, worker: str) -> None:
        """Restart one process (a worker's positions are stale until it has repriced them)."""
        return self._run(calls.restart(worker))

    def reload_book(
        self, path: str | Path | None = None, *, timeout_s: float = 300.0
    ) -> dict[str, Any]:
        """Take a new book: the booking file at ``path`` (None: the file the service was
        started with, as it is now). The file is validated first (a bad file raises
        :class:`ServiceError` naming file, row, column and value, and the running book stays);
        then the workers and the aggregator restart on it and this returns once every
        position of the new book is priced (within ``timeout_s`` seconds). No snapshot mixes
        the two books. Returns ``book_generation`` (+1 per reload), ``book_id`` (digest of the
        file's bytes) and ``positions``."""
        return self._run(calls.reload_book(self._session, path, timeout_s))

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop the service and wait up to ``timeout_s`` seconds until its supervisor exits.

        Asked of the supervisor directly (the aggregator may be dead); a supervisor that does
        not answer gets SIGTERM, then SIGKILL (its children die with it, its shared memory is
        reaped).
        """
        self._run(calls.stop(self._session, timeout_s))
        self.close()

    def latest(self, timeout_s: float = 5.0) -> SnapshotView:
        """The next aggregated snapshot published (waits up to ``timeout_s`` seconds)."""
        return self._run(calls.latest(timeout_s))

    def snapshots(self) -> AsyncIterator[SnapshotView]:
        """Aggregated snapshots as they are published (latest wins: a slow reader skips)."""
        return self.asynchronous().snapshots()

    def latency_buckets(self) -> pl.DataFrame:
        """Latency histograms of every process boundary, long form: ``process``, ``boundary``,
        ``le_ms`` (bucket upper bound, ms; inf for the last), ``count`` (in that bucket).

        The service's processes count their boundaries since they started (see
        :mod:`workbench.engine.telemetry.histograms`); ``aggregator_to_client`` is this client's
        own count.
        """
        return self._run(calls.latency_buckets(self._session))

    def latencies(self) -> pl.DataFrame:
        """Per process boundary: ``count``, ``p50_ms``, ``p99_ms`` (bucket upper bounds, an
        overestimate by at most one bucket) — from :meth:`latency_buckets`."""
        return self._run(calls.latencies(self._session))

    def close(self) -> None:
        """Release the sockets (the service keeps running)."""
        self._drop_control()
        self._ctx.term()
        if self._twin is not None:
            self._twin.release()

    # --- the same on an event loop -----------------------------------------------------

    def asynchronous(self) -> AsyncClient:
        """The :class:`AsyncClient` of this attachment: every method above as a coroutine,
        sharing this client's descriptor, keys and latency counts."""
        if self._twin is None:
            self._twin = AsyncClient(self._session)
        return self._twin

    async def arequest(self, req: msg.Request, *, timeout_s: float | None = None) -> msg.Reply:
        """:meth:`AsyncClient.request`."""
        return await self.asynchronous().request(req, timeout_s=timeout_s)

    async def astatus(self, *, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        """:meth:`AsyncClient.status`."""
        return await self.asynchronous().status(timeout_s=timeout_s)

    async def aping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """:meth:`AsyncClient.ping`."""
        return await self.asynchronous().ping(timeout_s)

    async def aaggregate(self, by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """:meth:`AsyncClient.aggregate`."""
        return await self.asynchronous().aggregate(by)

    async def ahistory(
        self,
        start: Moment = None,
        end: Moment = None,
        *,
        grouping: str = "firm",
        measures: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """:meth:`AsyncClient.history`."""
        return await self.asynchronous().history(start, end, grouping=grouping, measures=measures)

    async def apositions(self, asset_class: str | None = None) -> pl.DataFrame:
        """:meth:`AsyncClient.positions`."""
        return await self.asynchronous().positions(asset_class)

    async def awhatif(
        self, shocks: Sequence[AnyShock], by: Sequence[str] = ("desk",)
    ) -> pl.DataFrame:
        """:meth:`AsyncClient.whatif`."""
        return await self.asynchronous().whatif(shocks, by)

    async def amarket(
        self,
        curves: Sequence[str] = (),
        shocks: Sequence[AnyShock] = (),
        years: Sequence[float] = (),
    ) -> MarketView:
        """:meth:`AsyncClient.market`."""
        return await self.asynchronous().market(curves, shocks, years)

    async def avar(self, *, wait_s: float = 300.0) -> LossResult:
        """:meth:`AsyncClient.var`."""
        return await self.asynchronous().var(wait_s=wait_s)

    async def astress(self, *, wait_s: float = 300.0) -> LossResult:
        """:meth:`AsyncClient.stress`."""
        return await self.asynchronous().stress(wait_s=wait_s)

    async def aexplain(self, since: Moment = None, *, wait_s: float = 60.0) -> ExplainView:
        """:meth:`AsyncClient.explain`."""
        return await self.asynchronous().explain(since, wait_s=wait_s)

    async def aprofile(self, worker: str, seconds: float = 2.0) -> dict[str, Any]:
        """:meth:`AsyncClient.profile`."""
        return await self.asynchronous().profile(worker, seconds)

    async def aset_option(
        self, worker: str, option: str, value: bool | int | float | str
    ) -> dict[str, Any]:
        """:meth:`AsyncClient.set_option`."""
        return await self.asynchronous().set_option(worker, option, value)
