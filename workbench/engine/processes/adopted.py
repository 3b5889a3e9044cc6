"""A handle on a child process the supervisor did not start itself: a forked standby.

It answers what the supervisor asks of a :class:`multiprocessing.Process` (pid, exit code, an
exit sentinel to poll, terminate, kill, join), through a pidfd and ``waitpid``. The process must
be a child of the caller (re-parented to it, see :func:`lifetime.adopt_orphans`), so that its
exit code can be collected.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time


class AdoptedProcess:
    """A child process known by its pid (Linux ``pidfd_open``)."""

    def __init__(self, pid: int, name: str = "") -> None:
        self.pid: int | None = pid
        self.name = name
        self.sentinel = os.pidfd_open(pid)
        """A file descriptor that becomes readable when the process exits."""
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        """The exit code (negative: the signal that ended it), None while it runs."""
        if self._exitcode is None:
            self._poll()
        return self._exitcode

    def _poll(self) -> None:
        assert self.pid is not None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not ours to wait for: tell its end by the pidfd alone
            if select.select([self.sentinel], [], [], 0)[0]:
                self._ended(-1)
            return
        if pid != 0:
            self._ended(os.waitstatus_to_exitcode(status))

    def _ended(self, exitcode: int) -> None:
        self._exitcode = exitcode
        os.close(self.sentinel)
        self.sentinel = -1

    def is_alive(self) -> bool:
        """Whether the process still runs."""
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (None: for ever) for the process to exit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exitcode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            select.select([self.sentinel], [], [], left)

    def _signal(self, signum: int) -> None:
        if self.exitcode is None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.sentinel, signum)

    def terminate(self) -> None:
        """Send SIGTERM."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self._signal(signal.SIGKILL)
