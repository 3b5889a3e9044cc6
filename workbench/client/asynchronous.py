"""The asynchronous client: every method of :class:`Client` as a coroutine, for a notebook's
running event loop (JupyterLab kernels run one) — no call blocks the loop.

>>> svc = workbench.connect("desk", asynchronous=True)                 # doctest: +SKIP
>>> await svc.aggregate(by=("desk",))                                   # doctest: +SKIP

Same names, arguments and results as :class:`Client`; both run the same plans
(:mod:`workbench.client.calls`), so they ask the same requests and decode the same replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import zmq
import zmq.asyncio

from workbench.client import calls
from workbench.client.errors import ServiceError
from workbench.client.session import STATUS_TIMEOUT_S, Attached, Session
from workbench.client.views import ExplainView, LossResult, MarketView, SnapshotView
from workbench.client.wire import (
    no_snapshot,
    read_reply,
    secure,
    subscribe,
    unanswered,
    unreachable,
)
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import loss_endpoint
from workbench.engine.transport.shm import pid_alive
from workbench.risk.shocks import AnyShock
from workbench.store.query import Moment, as_utc_ns


class AsyncClient(Attached):
    """A connection to one running service whose methods are awaited.

    Obtain it from ``workbench.connect(..., asynchronous=True)``,
    ``workbench.connect_remote(..., asynchronous=True)`` or :meth:`Client.asynchronous`. Each
    request uses a socket of its own, so concurrent calls (widgets on one loop) do not
    interfere. ``async with`` closes it.
    """

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- running a plan ----------------------------------------------------------------

    async def _run(self, plan: calls.Plan[calls.T]) -> calls.T:
        """Carry out ``plan``'s steps on the event loop; return what it returns."""
        step = calls.resume(plan, None)
        while not isinstance(step, calls.Done):
            try:
                outcome = await self._do(step)
            except ServiceError as exc:
                outcome = exc
            step = calls.resume(plan, outcome)
        return step.value

    async def _do(self, step: calls.Step) -> Any:
        if self._closed:
            raise ServiceError(f"service {self.name}: this client is closed")
        if isinstance(step, calls.Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, calls.Listen):
            return await self._listen(step.timeout_s)
        wait = self.timeout_s if step.timeout_s is None else step.timeout_s
        if isinstance(step, calls.AskLoss):
            # a remote client asks through the gateway's control listener, which relays it
            return await self._ask(step.request, wait, supervisor=False, loss=self.local)
        return await self._ask(step.request, wait, supervisor=step.supervisor and self.local)

    async def _ask(
        self,
        req: msg.Request | msg.LossRequest,
        wait_s: float,
        *,
        supervisor: bool,
        loss: bool = False,
    ) -> msg.Reply:
        sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if loss:
                sock.connect(loss_endpoint(self.endpoints))
            elif supervisor:
                sock.setsockopt(zmq.SNDHWM, 1)
                sock.connect(self.endpoints.supervisor)
            else:
                secure(sock, self._session.curve)
                sock.connect(self.endpoints.control)
            try:
                await sock.send_multipart([b"", msg.encode(req)], zmq.NOBLOCK)
            except zmq.Again:
                raise unreachable(self.name, supervisor=supervisor) from None
            if not await sock.poll(int(wait_s * 1000)):
                raise unanswered(self.name, req, wait_s, supervisor=supervisor)
            parts = await sock.recv_multipart()
        finally:
            sock.close(linger=0)
        return read_reply(self.name, parts[-1])

    def _subscriber(self, *, latest_only: bool) -> zmq.asyncio.Socket:
        sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
        subscribe(sock, latest_only=latest_only)
        secure(sock, self._session.curve)
        sock.connect(self.endpoints.snapshots)
        return sock

    async def _listen(self, timeout_s: float) -> SnapshotView:
        sock = self._subscriber(latest_only=False)
        try:
            if not await sock.poll(int(timeout_s * 1000)):
                raise no_snapshot(self.name, timeout_s)
            return self._session.received(await sock.recv())
        finally:
            sock.close(linger=0)

    # --- the service's answers (see Client for each) -----------------------------------

    async def request(self, req: msg.Request, *, timeout_s: float | None = None) -> msg.Reply:
        """:meth:`Client.request`: one request, its reply (seconds to wait)."""
        return await self._run(calls.request(req, timeout_s))

    async def supervisor_request(self, req: msg.Request, *, timeout_s: float) -> msg.Reply:
        """:meth:`Client.supervisor_request`: one request to the supervisor directly."""
        return await self._run(calls.supervisor_request(req, timeout_s))

    async def status(self, *, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        """:meth:`Client.status`: processes and service facts, within ``timeout_s`` seconds."""
        return await self._run(calls.status(self._session, timeout_s))

    async def ping(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """:meth:`Client.ping`: the status as the control socket answers it."""
        return await self._run(calls.ping(timeout_s))

    async def status_from_processes(self, why: str) -> dict[str, Any]:
        """:meth:`Client.status_from_processes`: the status from ``/proc`` alone."""
        return self._session.status_from_processes(why)

    async def alive(self) -> bool:
        """:meth:`Client.alive`: whether the supervisor process runs (True when remote)."""
        return not self.local or pid_alive(self.descriptor.pid)

    async def processes(self) -> pl.DataFrame:
        """:meth:`Client.processes`: the status as a table, one row per process."""
        return await self._run(calls.processes(self._session))

    async def wait_ready(self, timeout_s: float = 180.0) -> None:
        """:meth:`Client.wait_ready`: return once every position is priced."""
        return await self._run(calls.wait_ready(self._session, timeout_s))

    async def positions(self, asset_class: str | None = None) -> pl.DataFrame:
        """:meth:`Client.positions`: per-position risk (USD)."""
        return await self._run(calls.positions(asset_class))

    async def snapshot(self, asset_class: str | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
        """:meth:`Client.snapshot`: per-position risk of one consistent copy, its identity."""
        return await self._run(calls.snapshot(asset_class))

    async def aggregate(self, by: Sequence[str] = ("desk",)) -> pl.DataFrame:
        """:meth:`Client.aggregate`: roll-ups grouped by ``by`` (USD)."""
        return await self._run(calls.aggregate(by))

    async def history(
        self,
        start: Moment = None,
        end: Moment = None,
        *,
        grouping: str = "firm",
        measures: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """:meth:`Client.history`: the stored roll-ups of ``grouping`` over ``[start, end)``."""
        return await self._run(calls.history(self._session, start, end, grouping, measures))

    async def limits(self) -> pl.DataFrame:
        """:meth:`Client.limits`: usage of each configured limit (USD)."""
        return await self._run(calls.limits(self._session))

    async def whatif(
        self, shocks: Sequence[AnyShock], by: Sequence[str] = ("desk",)
    ) -> pl.DataFrame:
        """:meth:`Client.whatif`: PnL (USD) of the shocked market, grouped by ``by``."""
        return await self._run(calls.whatif(shocks, by))

    async def market(
        self,
        curves: Sequence[str] = (),
        shocks: Sequence[AnyShock] = (),
        years: Sequence[float] = (),
    ) -> MarketView:
        """:meth:`Client.market`: quotes, pillars, base and shocked curves (%)."""
        return await self._run(calls.market(curves, shocks, years))

    async def var(self, *, wait_s: float = 300.0) -> LossResult:
        """:meth:`Client.var`: the live VaR/ES, its generation and age."""
        return await self._run(calls.loss_result(self._session, "var", wait_s))

    async def stress(self, *, wait_s: float = 300.0) -> LossResult:
        """:meth:`Client.stress`: the live stress PnL, its generation and age."""
        return await self._run(calls.loss_result(self._session, "stress", wait_s))

    async def explain(self, since: Moment = None, *, wait_s: float = 60.0) -> ExplainView:
        """:meth:`Client.explain`: intraday PnL explain since ``since`` (None: the day's
        start)."""
        return await self._run(calls.explain(self._session, as_utc_ns(since), wait_s))

    async def profile(self, worker: str, seconds: float = 2.0) -> dict[str, Any]:
        """:meth:`Client.profile`: a worker's profile over ``seconds`` of live work."""
        return await self._run(calls.profile(self._session, worker, seconds))

    async def set_option(
        self, worker: str, option: str, value: bool | int | float | str
    ) -> dict[str, Any]:
        """:meth:`Client.set_option`: set a worker option."""
        return await self._run(calls.set_option(worker, option, value))

    async def reprice_all(self, *, timeout_s: float = 120.0) -> pl.DataFrame:
        """:meth:`Client.reprice_all`: a full re-risk, one row per worker (``ms``)."""
        return await self._run(calls.reprice_all(timeout_s))

    async def restart(self, worker: str) -> None:
        """:meth:`Client.restart`: restart one process."""
        return await self._run(calls.restart(worker))

    async def reload_book(
        self, path: str | Path | None = None, *, timeout_s: float = 300.0
    ) -> dict[str, Any]:
        """:meth:`Client.reload_book`: take a new book, return once it is priced."""
        return await self._run(calls.reload_book(self._session, path, timeout_s))

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        """:meth:`Client.stop`: stop the service, wait until its supervisor exits."""
        await self._run(calls.stop(self._session, timeout_s))
        await self.close()

    async def latest(self, timeout_s: float = 5.0) -> SnapshotView:
        """:meth:`Client.latest`: the next published snapshot."""
        return await self._run(calls.latest(timeout_s))

    async def snapshots(self) -> AsyncIterator[SnapshotView]:
        """Aggregated snapshots as they are published (latest wins: a slow reader skips)."""
        if self._closed:
            raise ServiceError(f"service {self.name}: this client is closed")
        sock = self._subscriber(latest_only=True)
        try:
            while True:
                yield self._session.received(await sock.recv())
        finally:
            sock.close(linger=0)

    async def latency_buckets(self) -> pl.DataFrame:
        """:meth:`Client.latency_buckets`: every boundary's histogram (ms buckets)."""
        return await self._run(calls.latency_buckets(self._session))

    async def latencies(self) -> pl.DataFrame:
        """:meth:`Client.latencies`: count, p50 and p99 (ms) per boundary."""
        return await self._run(calls.latencies(self._session))

    async def close(self) -> None:
        """Refuse further requests and subscriptions (each request's socket closes when it is
        answered; a :meth:`snapshots` stream already open runs until its reader stops it). The
        service keeps running."""
        self.release()

    def release(self) -> None:
        """:meth:`close` from synchronous code (what :meth:`Client.close` calls)."""
        self._closed = True
