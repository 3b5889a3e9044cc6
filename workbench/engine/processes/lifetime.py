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
from pathlib import Path

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


_PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process the parent of its orphaned descendants (``PR_SET_CHILD_SUBREAPER``).

    A standby's successor is forked by the standby and re-parented here when its intermediate
    parent exits, so the supervisor can watch, stop and reap it like any child. Returns False
    where the call is not available (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def parent_pid(pid: int) -> int | None:
    """The parent pid of process ``pid`` (``/proc``), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (2nd field) is in parentheses and may hold spaces: split after it
    return int(stat.rsplit(")", 1)[1].split()[1])


def zombie_children() -> list[int]:
    """Pids of this process's children that exited and were not waited for."""
    me = os.getpid()
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            out.append(int(entry.name))
    return out


def yield_to_interactive(nice: int) -> bool:
    """Lower the CPU share of this process's session — the whole service — against other
    sessions (a notebook kernel, JupyterLab) when the cores are busy.

    The service runs in a session of its own; Linux schedules sessions as groups (autogroup),
    between which per-process nice values do nothing, so the group's own nice is set
    (``/proc/self/autogroup``). Returns whether it could (no autogroup: nothing to do).
    """
    if nice <= 0:
        return False
    try:
        Path("/proc/self/autogroup").write_text(str(min(nice, 19)))
    except OSError:
        return False
    return True
