"""The process shell every service child runs on: set-up, stop, heartbeats, serve loop, close.

A child process is a *body* (its sockets and work) on a :class:`Shell` (what every child does
the same way):

* :func:`start` — decode the configuration, JSON logs under the child's role, SIGTERM and
  SIGINT only recorded (:class:`Stop`), SIGKILL when the supervisor dies
  (:func:`~.lifetime.die_with_parent`), optionally the workers' ``nice`` increment;
* :class:`Shell` — the heartbeat PUSH socket to ``endpoints.heartbeats`` (bounded queue, never
  waits; a heartbeat that does not fit is counted in ``heartbeats_dropped``), one
  :class:`~.messages.Heartbeat` every ``heartbeat_s`` with the body's counters and latency
  histograms, the parent watch (a changed parent pid stops the process);
* the serve loop, in two forms: :func:`serve_tasks` runs an asyncio body's tasks with the
  heartbeat task until a stop, the parent's exit or a task's failure; :func:`serve_polling`
  calls a polling body's ``turn`` (one poll with a timeout and its work) until a stop or the
  parent's exit, with a heartbeat whenever one is due. Both end with a last heartbeat
  (``ready`` False, the final counters);
* close — :func:`run_tasks` and :func:`run_polling` build the body, serve it and close it
  whatever happened; the body's ``close`` calls :meth:`Shell.close` (200 ms for that last
  heartbeat to leave) before it ends its ZeroMQ context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, Protocol

import zmq

from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import ServiceConfig, decode_config
from workbench.engine.telemetry import logs

log = logging.getLogger(__name__)

HEARTBEAT_HWM: Final = 16
"""Heartbeats a child may queue for the supervisor before it counts them dropped."""
FINAL_BEAT_LINGER_MS: Final = 200
"""How long the last heartbeat (``ready`` False, final counters) may take to leave at exit."""


class Stop:
    """Whether this process was asked to stop: a signal handler that only records (and wakes
    the event loop of :func:`serve_tasks`)."""

    def __init__(self) -> None:
        self.requested = False
        self._event: asyncio.Event | None = None

    def __call__(self, signum: int = 0, frame: Any = None) -> None:
        self.requested = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once a stop was requested (inside :func:`serve_tasks`' event loop)."""
        if self._event is None:
            self._event = asyncio.Event()
        if self.requested:
            self._event.set()
        await self._event.wait()


def start(config_json: str, role: str, *, niced: bool = False) -> tuple[ServiceConfig, Stop]:
    """Set a child process up: its configuration, JSON logs as ``role``, SIGTERM and SIGINT
    recorded in the returned :class:`Stop`, death with the parent, and (``niced``) a lower
    priority.

    Parameters
    ----------
    config_json
        The service configuration as JSON (:func:`~.config.encode_config`).
    role
        The name in logs and heartbeats (``feed``, ``ingest``, ``worker:rates-0`` …).
    niced
        Raise the nice value by ``config.worker_nice`` (a worker, a standby), so that ingestion
        (tick latency) and the aggregator (snapshots, requests) get the cores first.
    """
    config = decode_config(config_json)
    logs.setup(config.name, role)
    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    die_with_parent()
    if niced and config.worker_nice > 0:
        os.nice(config.worker_nice)
    return config, stop


def lower_priority(by: int) -> None:
    """Raise the nice value of every thread of this process by ``by`` (Linux nice values are
    per thread: ``os.nice`` would change the calling thread only, not the threads already
    started — a Numba pool, ZeroMQ's I/O thread)."""
    if by <= 0:
        return
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            tid = int(task.name)
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + by))


class Body(Protocol):
    """What runs on a :class:`Shell`: the counters and histograms its heartbeats carry."""

    shell: Shell

    def stats(self) -> dict[str, float]:
        """Counters for the next heartbeat (interval values restart)."""
        ...

    def histograms(self) -> dict[str, list[float]]:
        """Latency histograms by boundary (:meth:`~.histograms.LatencyHistogram.wire`)."""
        ...

    def close(self) -> None:
        """Release sockets and shared memory; calls :meth:`Shell.close`."""
        ...


class TaskBody(Body, Protocol):
    """A body that runs as asyncio tasks (:func:`serve_tasks`)."""

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Its tasks by name (the heartbeat task is the shell's)."""
        ...


class PollingBody(Body, Protocol):
    """A body that runs as a loop of turns (:func:`serve_polling`)."""

    def begin(self) -> None:
        """Work before the first turn (a first snapshot, a first full price)."""
        ...

    def turn(self) -> None:
        """One turn: a poll with a timeout of at most ~100 ms and the work it found."""
        ...


class Shell:
    """A child's heartbeats, stop flag and parent watch.

    Parameters
    ----------
    config
        The service configuration (``endpoints.heartbeats``, ``heartbeat_s``).
    role
        The heartbeat's and the logs' role.
    stop
        The process's stop flag (from :func:`start`).
    ctx
        The body's ZeroMQ context (the heartbeat socket is created in it).
    hwm
        Heartbeats queued before one is dropped.
    """

    def __init__(
        self,
        config: ServiceConfig,
        role: str,
        stop: Stop,
        ctx: zmq.Context[Any],
        *,
        hwm: int = HEARTBEAT_HWM,
    ) -> None:
        if config.endpoints is None:
            raise ValueError(f"{role}: the configuration has no endpoints")
        self.config = config
        self.role = role
        self.stop = stop
        self.parent = os.getppid()
        self.ready = True
        """What the heartbeats say (a worker is not ready before its first price)."""
        self.beats: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
        self.beats.setsockopt(zmq.LINGER, 0)
        self.beats.setsockopt(zmq.SNDHWM, hwm)
        self.beats.connect(config.endpoints.heartbeats)
        self.heartbeats_sent = 0
        self.heartbeats_dropped = 0
        self.last_beat_ns = 0
        self.period_ns = int(config.heartbeat_s * 1e9)

    def orphaned(self) -> bool:
        """True (once logged) when the parent process is gone: the process must stop."""
        if os.getppid() == self.parent:
            return False
        if not self.stop.requested:
            log.warning("%s: parent process %d is gone, stopping", self.role, self.parent)
            self.stop()
        return True

    def running(self) -> bool:
        """Neither asked to stop nor orphaned."""
        return not self.stop.requested and not self.orphaned()

    def beat(self, body: Body, *, ready: bool | None = None) -> None:
        """Send one heartbeat now (``ready`` None: :attr:`ready`); never waits."""
        now = time.monotonic_ns()
        self.last_beat_ns = now
        stats = body.stats()
        stats["heartbeats_sent"] = float(self.heartbeats_sent)
        stats["heartbeats_dropped"] = float(self.heartbeats_dropped)
        beat = messages.Heartbeat(
            role=self.role,
            pid=os.getpid(),
            sent_ns=now,
            ready=self.ready if ready is None else ready,
            stats=stats,
            histograms=body.histograms(),
        )
        try:
            self.beats.send(messages.encode(beat), zmq.NOBLOCK)
            self.heartbeats_sent += 1
        except zmq.Again:
            self.heartbeats_dropped += 1

    def beat_if_due(self, body: Body) -> None:
        """Send a heartbeat when ``heartbeat_s`` has passed since the last one."""
        if time.monotonic_ns() - self.last_beat_ns >= self.period_ns:
            self.beat(body)

    async def beat_loop(self, body: Body) -> None:
        """Send a heartbeat every ``heartbeat_s``; stop the process if the parent is gone."""
        while True:
            self.beat(body)
            self.orphaned()
            await asyncio.sleep(self.config.heartbeat_s)

    def close(self) -> None:
        """Close the heartbeat socket, leaving the last heartbeat 200 ms to go out."""
        self.beats.close(linger=FINAL_BEAT_LINGER_MS)


async def serve_tasks(body: TaskBody) -> None:
    """Run the body's tasks and the heartbeat task until a stop, the parent's exit or a task's
    failure (raised as :class:`RuntimeError`); then send the last heartbeat."""
    shell = body.shell
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shell.stop)
    named = {**body.tasks(), "heartbeat": shell.beat_loop(body)}
    tasks = [asyncio.create_task(coro, name=name) for name, coro in named.items()]
    stopper = asyncio.create_task(shell.stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopper, *tasks):
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        shell.beat(body, ready=False)  # final counters
    for task in tasks:
        if task in done and task.exception() is not None:
            raise RuntimeError(f"{shell.role}: task {task.get_name()} failed") from task.exception()


def serve_polling(body: PollingBody) -> None:
    """``begin``, then turns until a stop or the parent's exit, a heartbeat whenever one is due;
    then the last heartbeat."""
    shell = body.shell
    body.begin()
    while shell.running():
        body.turn()
        shell.beat_if_due(body)
    shell.beat(body, ready=False)  # final counters


def run_tasks(make: Callable[[], TaskBody]) -> None:
    """Build an asyncio body inside a new event loop, serve it, close it."""

    async def main() -> None:
        body = make()
        try:
            await serve_tasks(body)
        finally:
            body.close()

    asyncio.run(main())


def run_polling(make: Callable[[], PollingBody]) -> None:
    """Build a polling body, serve it, close it."""
    body = make()
    try:
        serve_polling(body)
    finally:
        body.close()
