"""A child process's life bound to its supervisor's: it dies when the supervisor dies.

Every child also notices a changed parent pid in its loop, but a child that is busy (a full
reprice of a large book) or hung would outlive a supervisor killed with ``kill -9`` and hold
its sockets. Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) has the kernel send it
SIGKILL the moment its parent thread exits, whatever it is doing. The segments stay behind
for the next start (or ``workbench reap``) to unlink: their owner is dead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent exits; exit at once if the parent
    is already gone. Returns False where the call is not available (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None and os.getppid() != parent.pid:
        os._exit(1)  # the parent died before the call: nobody would reap or stop us
    return True
