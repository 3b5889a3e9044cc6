"""What each client method asks of the service and how it reads the answers, with no I/O.

A method is a *plan*: a generator that yields steps — :class:`Ask` (a request; the reply is
sent back, a :class:`ServiceError` thrown in), :class:`Listen` (the next snapshot) or
:class:`Sleep` — and returns the method's result. :class:`Client` runs plans with blocking
sockets, :class:`AsyncClient` on the event loop; neither holds any request logic of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import polars as pl

from workbench.client import views
from workbench.client.errors import ServiceError
from workbench.client.session import STATUS_TIMEOUT_S, Session, log_tail
from workbench.client.views import MarketView, SnapshotView
from workbench.engine.protocol import messages as msg
from workbench.engine.transport.shm import pid_alive, reap
from workbench.risk.shocks import AnyShock
from workbench.store import query as store_query
from workbench.store.query import Moment, as_utc_ns, store_root

T = TypeVar("T")

_STOP_TERM_S: Final = 5.0
"""How long a stopping supervisor gets before it and its children are killed (seconds)."""
_POLL_S: Final = 0.2
"""Between two status checks while waiting for readiness (seconds)."""


@dataclass(frozen=True)
class Ask:
    """Send ``request`` and wait ``timeout_s`` seconds (None: the client's default) for the
    reply; to the supervisor directly when ``supervisor`` and the service is local."""

    request: msg.Request
    timeout_s: float | None = None
    supervisor: bool = False


@dataclass(frozen=True)
class Listen:
    """Wait up to ``timeout_s`` seconds for the next published snapshot."""

    timeout_s: float


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` (without blocking an event loop)."""

    seconds: float


@dataclass(frozen=True)
class AskLoss:
    """Send ``request`` to the live loss process and wait ``timeout_s`` seconds (None: the
    client's default) for the reply."""

    request: msg.LossRequest
    timeout_s: float | None = None


Step = Ask | AskLoss | Listen | Sleep
Plan = Generator[Step, Any, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """A plan has finished with ``value``."""

    value: T


def resume(plan: Plan[T], outcome: Any) -> Step | Done[T]:
    """Hand ``plan`` the outcome of its last step (a :class:`ServiceError` is thrown into it;
    None to start it) and return its next step, or :class:`Done` with its result."""
    try:
        if isinstance(outcome, ServiceError):
            return plan.throw(outcome)
        return plan.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)


def request(req: msg.Request, timeout_s: float | None) -> Plan[msg.Reply]:
    """One request through the service's control socket."""
    reply: msg.Reply = yield Ask(req, timeout_s)
    return reply


def supervisor_request(req: msg.Request, timeout_s: float) -> Plan[msg.Reply]:
    """One request to the supervisor (through the control socket when remote)."""
    reply: msg.Reply = yield Ask(req, timeout_s, supervisor=True)
    return reply


def status(s: Session, timeout_s: float) -> Plan[dict[str, Any]]:
    """The supervisor's status; when it does not answer, what ``/proc`` tells (local only)."""
    try:
        reply: msg.Reply = yield Ask(msg.StatusRequest(), timeout_s, supervisor=True)
    except ServiceError as exc:
        if not s.local:
            raise
        return s.status_from_processes(str(exc))
    return dict(reply.data)


def ping(timeout_s: float) -> Plan[dict[str, Any]]:
    """The status as answered through the control socket (the aggregator)."""
    reply: msg.Reply = yield Ask(msg.StatusRequest(), timeout_s)
    return dict(reply.data)


def _not_ready(st: dict[str, Any]) -> str:
    waiting = ", ".join(
        f"{p['name']} ({p['state']}, {p['restarts']} restarts)"
        for p in st["processes"]
        if p["state"] != "ready"
    )
    return f"waiting for {waiting}"


def wait_ready(s: Session, timeout_s: float) -> Plan[None]:
    """Poll the status until the service says ready; raise after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if s.exited():
            assert s.process is not None
            raise ServiceError(
                f"service {s.name} exited with {s.process.returncode}; "
                f"see {Path(s.descriptor.config.run_dir) / 'service.log'}"
            )
        try:
            st = yield from status(s, STATUS_TIMEOUT_S)
        except ServiceError as exc:
            last = str(exc)
        else:
            if st["ready"]:
                return
            last = _not_ready(st)
        yield Sleep(_POLL_S)
    raise ServiceError(
        f"service {s.name} not ready after {timeout_s:.0f} s ({last}); the end of its "
        f"log:\n{log_tail(Path(s.descriptor.config.run_dir))}"
    )


def positions(asset_class: str | None) -> Plan[pl.DataFrame]:
    """Per-position risk."""
    reply = yield from request(msg.PositionsRequest(asset_class=asset_class), None)
    return views.table(reply, "positions")


def history(
    s: Session,
    start: Moment,
    end: Moment,
    grouping: str,
    measures: Sequence[str] | None,
) -> Plan[pl.DataFrame]:
    """The stored roll-ups of one grouping over ``[start, end)``, read from the store's files
    (no request: the service's store is on this machine)."""
    yield from ()
    if not s.local:
        raise ServiceError(
            f"service {s.name} is on another machine: its store is read where it runs"
        )
    root = store_root(s.descriptor)
    return store_query.history(
        root,
        start_ns=as_utc_ns(start),
        end_ns=as_utc_ns(end),
        grouping=grouping,
        measures=measures,
    )


def snapshot(asset_class: str | None) -> Plan[tuple[pl.DataFrame, dict[str, Any]]]:
    """Per-position risk from one consistent copy, and that copy's identity."""
    reply = yield from request(msg.PositionsRequest(asset_class=asset_class), None)
    return views.table(reply, "positions"), dict(reply.data)


def aggregate(by: Sequence[str]) -> Plan[pl.DataFrame]:
    """Roll-ups grouped by ``by``."""
    reply = yield from request(msg.AggregateRequest(by=tuple(by)), None)
    return views.table(reply, "aggregate")


def limits(s: Session) -> Plan[pl.DataFrame]:
    """Limit usage per configured limit: the aggregator's, then the VaR/ES limits of the loss
    process's last result (when the service runs one and it has a result)."""
    reply = yield from request(msg.LimitsRequest(), None)
    usage = views.table(reply, "limits")
    if s.local and not s.descriptor.config.loss.enabled:
        return usage
    try:
        loss = views.loss_result((yield AskLoss(msg.LossRequest(what="var"), 5.0)))
    except ServiceError:  # the loss process not up: the aggregator's limits still count
        return usage
    if not loss.ready or loss.limits.height == 0:
        return usage
    return pl.concat([usage, loss.limits], how="vertical_relaxed")


def whatif(shocks: Sequence[AnyShock], by: Sequence[str]) -> Plan[pl.DataFrame]:
    """PnL of a shocked copy of the live market, grouped by ``by``."""
    reply = yield from request(msg.WhatIfRequest(shocks=tuple(shocks), by=tuple(by)), None)
    return views.table(reply, "pnl")


def market(
    curves: Sequence[str], shocks: Sequence[AnyShock], years: Sequence[float]
) -> Plan[MarketView]:
    """Quotes, pillars and base and shocked curves of one quote generation."""
    req = msg.MarketRequest(
        curves=tuple(curves), shocks=tuple(shocks), years=tuple(float(y) for y in years)
    )
    return views.market_view((yield from request(req, None)))


def _loss_here(s: Session) -> None:
    """Refuse a loss request to a local service without its loss process (a remote client's
    gateway answers that itself: this client does not know the service's configuration)."""
    if s.local and not s.descriptor.config.loss.enabled:
        raise ServiceError(f"service {s.name} runs without its loss process (loss.enabled)")


def loss_result(s: Session, what: str, wait_s: float) -> Plan[views.LossResult]:
    """The loss process's last ``"var"`` or ``"stress"`` result; waits up to ``wait_s``
    seconds for a first one (0: the answer as it is, perhaps not ready)."""
    _loss_here(s)
    until = time.monotonic() + wait_s
    while True:
        reply = yield AskLoss(msg.LossRequest(what=what))  # type: ignore[arg-type]
        result = views.loss_result(reply)
        if result.ready or wait_s <= 0:
            return result
        if time.monotonic() > until:
            why = f": {result.error}" if result.error else ""
            raise ServiceError(
                f"service {s.name}: no {what} result within {wait_s:g} s "
                f"({result.computing or 'waiting'} {result.done}/{result.total}){why}"
            )
        yield Sleep(_POLL_S)


def explain(s: Session, since_ns: int | None, wait_s: float) -> Plan[views.ExplainView]:
    """Intraday PnL explain since ``since_ns`` (UTC ns; None: the day's first quotes)."""
    _loss_here(s)
    until = time.monotonic() + wait_s
    while True:
        reply = yield AskLoss(msg.LossRequest(what="explain", since_ns=since_ns))
        if reply.data.get("ready"):
            return views.explain_view(reply)
        if time.monotonic() > until:
            raise ServiceError(f"service {s.name}: no quotes copied for an explain within "
                               f"{wait_s:g} s")  # fmt: skip
        yield Sleep(_POLL_S)


def profile(s: Session, worker: str, seconds: float) -> Plan[dict[str, Any]]:
    """A worker's profile over ``seconds`` of live work."""
    req = msg.ProfileRequest(worker=worker, seconds=seconds)
    reply = yield from request(req, seconds + s.timeout_s)
    return views.profile_frames(reply.data)


def set_option(worker: str, option: str, value: bool | int | float | str) -> Plan[dict[str, Any]]:
    """Set a worker option; the worker's counters come back."""
    reply = yield from request(
        msg.SetOptionRequest(worker=worker, option=option, value=value), None
    )
    return dict(reply.data)


def reprice_all(timeout_s: float) -> Plan[pl.DataFrame]:
    """A full re-risk on every worker."""
    return views.reprice_table((yield from request(msg.RepriceRequest(), timeout_s)))


def restart(worker: str) -> Plan[None]:
    """Restart one process."""
    yield from supervisor_request(msg.RestartRequest(worker=worker), 5.0)


def reload_book(s: Session, path: str | Path | None, timeout_s: float) -> Plan[dict[str, Any]]:
    """Take a new book and wait until every position of it is priced."""
    target = "" if path is None else str(Path(path).resolve())
    reply = yield from supervisor_request(msg.ReloadBookRequest(path=target), 60.0)
    gen = int(reply.data["book_generation"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = yield from status(s, STATUS_TIMEOUT_S)
        if st.get("book_generation") == gen and st.get("ready"):
            s.reread_descriptor()
            return dict(reply.data)
        yield Sleep(0.1)
    raise ServiceError(f"service {s.name}: book generation {gen} not priced in {timeout_s:g} s")


def _kill_all(s: Session) -> None:
    """SIGKILL the supervisor and every child it recorded."""
    for child in {*s.pids().values(), s.descriptor.pid}:
        if pid_alive(child):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)


def stop(s: Session, timeout_s: float) -> Plan[None]:
    """Ask the supervisor to stop; SIGTERM it if it does not answer, SIGKILL it and its
    children if it has not exited after 5 s (or half ``timeout_s``), then reap its segments."""
    pid = s.descriptor.pid
    if not s.local:  # remote: the supervisor is not on this machine
        yield from request(msg.StopRequest(), 10.0)
        return
    try:
        yield from supervisor_request(msg.StopRequest(), STATUS_TIMEOUT_S)
    except ServiceError:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    term_deadline = time.monotonic() + min(_STOP_TERM_S, timeout_s / 2)
    killed = False
    while not s.gone():
        if time.monotonic() > deadline:
            raise ServiceError(f"service {s.name} (pid {pid}) did not stop in {timeout_s} s")
        if not killed and time.monotonic() > term_deadline:
            _kill_all(s)
            killed = True
        yield Sleep(0.05)
    if killed:
        reap()  # the segments of a supervisor killed outright


def latest(timeout_s: float) -> Plan[SnapshotView]:
    """The next published snapshot."""
    view: SnapshotView = yield Listen(timeout_s)
    return view


def latency_buckets(s: Session) -> Plan[pl.DataFrame]:
    """Every boundary's histogram, the service's and this client's own."""
    st = yield from status(s, STATUS_TIMEOUT_S)
    return views.latency_buckets(st, s.to_client.wire())


def latencies(s: Session) -> Plan[pl.DataFrame]:
    """Count, p50 and p99 per boundary."""
    return views.latency_summary((yield from latency_buckets(s)))


def processes(s: Session) -> Plan[pl.DataFrame]:
    """The status's processes as a table."""
    return views.processes_table((yield from status(s, STATUS_TIMEOUT_S)))
