"""Shared test set-up: private caches, and accounting for processes and shared memory.

Jupyter, Numba, Dask and Chromium write to ``$HOME`` caches; every run gets its own folder so
runs do not interfere. After each test, no child process and no new ``/dev/shm`` segment may remain.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest
from procs import descendants, parents

_RUN_DIR = Path(tempfile.mkdtemp(prefix="workbench-tests-"))
for _var, _sub in (
    ("HOME", "home"),
    ("NUMBA_CACHE_DIR", "numba"),
    ("JUPYTER_CONFIG_DIR", "jupyter/config"),
    ("JUPYTER_DATA_DIR", "jupyter/data"),
    ("JUPYTER_RUNTIME_DIR", "jupyter/runtime"),
    ("IPYTHONDIR", "ipython"),
    ("DASK_TEMPORARY_DIRECTORY", "dask"),  # workers' scratch space
    ("DASK_CONFIG", "dask-config"),
):
    (_RUN_DIR / _sub).mkdir(parents=True, exist_ok=True)
    os.environ[_var] = str(_RUN_DIR / _sub)
os.environ["WORKBENCH_RUN_DIR"] = str(_RUN_DIR / "services")

_SHM = Path("/dev/shm")

# multiprocessing's resource tracker is a session-long helper process: start it before any test
resource_tracker.ensure_running()


def _shm_names() -> set[str]:
    return {p.name for p in _SHM.iterdir()} if _SHM.is_dir() else set()


def _children() -> set[int]:
    """Pids of this process's live descendants."""
    return descendants(os.getpid())


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker lives for the whole session by design."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _ours(segment: str, kids: set[int]) -> bool:
    """A workbench segment made by this run: owner pid (in its name) is us, a descendant, or
    dead. Segments of other live processes (another run on the machine) are not ours."""
    if segment.startswith("workbench"):
        return True
    parts = segment.split("_")
    if len(parts) < 2 or parts[0] != "wb" or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid == os.getpid() or pid in kids or not Path(f"/proc/{pid}").exists()


def _under(pid: int, owners: set[int], parent_of: dict[int, int]) -> bool:
    """Whether ``pid`` descends from any of ``owners``."""
    seen: set[int] = set()
    while pid in parent_of and pid not in seen:
        seen.add(pid)
        pid = parent_of[pid]
        if pid in owners:
            return True
    return False


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or a ``/dev/shm`` segment behind."""
    shm_before = _shm_names()
    kids_before = _children()
    yield
    parent_of = parents()
    kids_after = descendants(os.getpid(), parent_of)
    helpers = {pid for pid in kids_after if _is_resource_tracker(pid)}
    kids_after -= helpers
    leaked_shm = {n for n in _shm_names() - shm_before if _ours(n, kids_after)}
    # a process started meanwhile by one that outlives this test (a module-scoped service's
    # supervisor starting its standby or replacing a worker) belongs to that fixture
    leaked_kids = {
        k for k in kids_after - kids_before if not _under(k, kids_before & kids_after, parent_of)
    }
    assert not leaked_shm, f"shared-memory segments left behind: {sorted(leaked_shm)}"
    assert not leaked_kids, f"child processes left behind: {sorted(leaked_kids)}"


@pytest.fixture(scope="session")
def run_dir() -> Path:
    """A private folder for this test run."""
    return _RUN_DIR
