"""The supervisor's side of the warm standby: start it, know when it is ready, hand it a dead
worker's slot, adopt the successor it forks, stop it.

States: no standby (one is due at ``due_ns``, or never when the service runs without); a
standby starting (spawned, setting up: seconds); a standby ready (its heartbeat said so); a
successor awaited (a standby took a slot and is forking a ready copy of itself, adopted on its
first heartbeat; if none beats within :data:`SUCCESSOR_WAIT_S`, a standby is spawned afresh).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from workbench.engine.processes.adopted import AdoptedProcess
from workbench.engine.processes.lifetime import parent_pid, zombie_children
from workbench.engine.protocol import messages as msg
from workbench.engine.telemetry import logs

log = logging.getLogger(__name__)

Child = BaseProcess | AdoptedProcess
"""A child process as the supervisor handles it: started by it, or adopted."""

GRACE_S = 3.0
"""How long a stopped standby gets to exit before SIGKILL (seconds)."""
SUCCESSOR_WAIT_S = 3.0
"""How long a standby that took a slot has to fork a ready successor (seconds)."""
_SPAWN_DELAY_S = 1.0
"""After a takeover without a successor, how long before a standby is spawned (its set-up
takes the CPU for seconds: let the new worker's first reprices go first)."""
_REAP_EVERY_NS = 1_000_000_000


@dataclass
class _Standby:
    """The warm standby process and the pipe that tells it which slot to take."""

    process: Child
    orders: Connection
    started_ns: int
    ready: bool = False


@dataclass
class _Successor:
    """A standby that took a slot and forks a copy of itself: the pipe it will read from."""

    orders: Connection
    forked_by: int
    due_ns: int


class StandbyKeeper:
    """The warm standby of one service.

    Parameters
    ----------
    spawn
        Starts a fresh standby process given the reading end of its orders pipe; returns it.
    pipe
        Makes an orders pipe: (reading end, writing end).
    enabled
        Whether the service keeps a standby at all.
    backoff_s, max_backoff_s
        The wait after a standby that died before it was ready, doubling per failure (s).
    """

    def __init__(
        self,
        spawn: Callable[[Connection], Child],
        pipe: Callable[[], tuple[Connection, Connection]],
        *,
        enabled: bool,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self._spawn = spawn
        self._pipe = pipe
        self.enabled = enabled
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.standby: _Standby | None = None
        self.successor: _Successor | None = None
        self.failures = 0  # standbys in a row that died before they were ready
        self.due_ns: int | None = 0 if enabled else None
        self.forked = 0  # successors adopted
        self._reaped_ns = 0
        self._strays = False  # whether a fork may have left exited children to reap
        self._strays_until_ns = 0  # look for them until then, found or not

    @property
    def process(self) -> Child | None:
        """The standby process, if any."""
        return self.standby.process if self.standby is not None else None

    def status(self) -> dict[str, Any] | None:
        """``{"pid", "state"}`` of the standby (ready or starting), None without one."""
        sb = self.standby
        if sb is None:
            return None
        return {"pid": sb.process.pid, "state": "ready" if sb.ready else "starting"}

    def take(self, asset_class: str, slot: int, now_ns: int) -> Child | None:
        """Hand slot ``(asset_class, slot)`` to a ready standby: the process that now serves
        it, None when no standby is ready."""
        sb = self.standby
        if sb is None or not sb.ready or sb.process.exitcode is not None:
            return None
        try:
            sb.orders.send((asset_class, slot))
        except OSError:
            return None
        self.standby = None
        self.successor = _Successor(
            sb.orders, sb.process.pid or 0, now_ns + int(SUCCESSOR_WAIT_S * 1e9)
        )
        self.due_ns = None
        self._strays = True
        return sb.process

    def heartbeat(self, hb: msg.Heartbeat, now_ns: int) -> bool:
        """Take a standby's heartbeat (role ``standby``); True when it adopted a forked
        successor (the set of processes changed)."""
        sb = self.standby
        if sb is not None and sb.process.pid == hb.pid:
            if not sb.ready:
                sb.ready = True
                self.failures = 0
            return False
        succ = self.successor
        if sb is None and succ is not None and parent_pid(hb.pid) == os.getpid():
            try:
                proc = AdoptedProcess(hb.pid, name="wb-standby")
            except OSError:  # gone already
                return False
            self.successor = None
            self.standby = _Standby(proc, succ.orders, now_ns, ready=True)
            self.failures = 0
            self.forked += 1
            logs.event(
                log,
                "child_started",
                f"standby forked by pid {succ.forked_by} (pid {hb.pid}), ready",
                child="standby",
                child_pid=hb.pid,
                forked=True,
            )
            return True
        return False

    def expect_strays(self, now_ns: int, for_s: float = 10.0) -> None:
        """Look for exited adopted children for the next ``for_s`` seconds: a child of the
        supervisor died, and its own children (e.g. the ingestion's polling process, which dies
        with its parent) become the supervisor's to reap."""
        self._strays_until_ns = max(self._strays_until_ns, now_ns + int(for_s * 1e9))

    def check(self, now_ns: int, *, service_ready: bool, known: set[int]) -> bool:
        """Notice a standby's exit, give up on a successor that did not come, start a standby
        when one is due (once the service is ready), reap adopted children that exited.
        ``known``: the pids of the supervisor's own children. True when the set of processes
        changed."""
        changed = False
        sb = self.standby
        if sb is not None and sb.process.exitcode is not None:
            self._exited(sb, now_ns)
            changed = True
        succ = self.successor
        if succ is not None and now_ns >= succ.due_ns:
            self.successor = None
            succ.orders.close()  # a successor that comes after all reads EOF and leaves
            self._strays = True  # (and is reaped here)
            self.due_ns = now_ns + int(_SPAWN_DELAY_S * 1e9)
            logs.event(
                log,
                "standby_not_forked",
                f"no standby forked by pid {succ.forked_by}: starting one",
                level=logging.WARNING,
            )
        due = self.due_ns is not None and now_ns >= self.due_ns
        if self.standby is None and self.successor is None and due and service_ready:
            self._start(now_ns)
            changed = True
        looking = self._strays or now_ns < self._strays_until_ns
        if looking and now_ns - self._reaped_ns >= _REAP_EVERY_NS:
            self._reaped_ns = now_ns
            mine = set(known)
            if self.standby is not None and self.standby.process.pid is not None:
                mine.add(self.standby.process.pid)
            strays = [pid for pid in zombie_children() if pid not in mine]
            for pid in strays:  # an adopted process nobody else waits for
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            # look again only while a fork may still leave one (not every second for ever)
            self._strays = bool(strays) or self.successor is not None
        return changed

    def _exited(self, sb: _Standby, now_ns: int) -> None:
        if isinstance(sb.process, BaseProcess):
            sb.process.join(0)
        sb.orders.close()
        self.standby = None
        if sb.ready:
            self.failures = 0
            delay = 0.0
        else:
            self.failures += 1
            delay = min(self.backoff_s * 2 ** (self.failures - 1), self.max_backoff_s)
        self.due_ns = now_ns + int(delay * 1e9) if self.enabled else None
        logs.event(
            log,
            "child_exited",
            f"standby (pid {sb.process.pid}) exited with {sb.process.exitcode}",
            level=logging.WARNING,
            child="standby",
            child_pid=sb.process.pid,
            exit_code=sb.process.exitcode,
            planned=False,
        )

    def _start(self, now_ns: int) -> None:
        ours, theirs = self._pipe()
        proc = self._spawn(ours)
        ours.close()  # the child's end: ours is `theirs`, the sending one
        self.standby = _Standby(proc, theirs, now_ns)
        self.due_ns = None
        logs.event(log, "child_started", f"standby started (pid {proc.pid})", child="standby",
                   child_pid=proc.pid)  # fmt: skip

    def terminate(self) -> None:
        """Send the standby SIGTERM without waiting (:meth:`stop` then waits)."""
        sb = self.standby
        if sb is not None and sb.process.exitcode is None:
            sb.process.terminate()

    def stop(self, *, restart: bool = False) -> None:
        """Stop the standby (and forget an awaited successor); ``restart``: start a new one as
        soon as the service is ready (after a book reload: the old one holds the old book)."""
        succ, self.successor = self.successor, None
        if succ is not None:
            succ.orders.close()
        sb, self.standby = self.standby, None
        self.due_ns = 0 if restart and self.enabled else None
        if sb is None:
            return
        if sb.process.exitcode is None:
            sb.process.terminate()
        sb.process.join(GRACE_S)
        if sb.process.exitcode is None:
            sb.process.kill()
            sb.process.join(1.0)
        sb.orders.close()
