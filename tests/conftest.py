"""Shared test set-up: private caches, and accounting for processes and shared memory.

Jupyter, Numba and Chromium write to ``$HOME`` caches; every run gets its own folder so runs do
not interfere. After each test, no child process and no new ``/dev/shm`` segment may remain.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_RUN_DIR = Path(tempfile.mkdtemp(prefix="workbench-tests-"))
for _var, _sub in (
    ("HOME", "home"),
    ("NUMBA_CACHE_DIR", "numba"),
    ("JUPYTER_CONFIG_DIR", "jupyter/config"),
    ("JUPYTER_DATA_DIR", "jupyter/data"),
    ("JUPYTER_RUNTIME_DIR", "jupyter/runtime"),
    ("IPYTHONDIR", "ipython"),
):
    (_RUN_DIR / _sub).mkdir(parents=True, exist_ok=True)
    os.environ[_var] = str(_RUN_DIR / _sub)

_SHM = Path("/dev/shm")


def _shm_names() -> set[str]:
    return {p.name for p in _SHM.iterdir()} if _SHM.is_dir() else set()


def _children() -> set[int]:
    """Pids of this process's live children (from /proc, no extra dependency)."""
    me = str(os.getpid())
    kids: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or a ``/dev/shm`` segment behind."""
    shm_before = _shm_names()
    kids_before = _children()
    yield
    leaked_shm = {n for n in _shm_names() - shm_before if n.startswith(("wb", "workbench"))}
    leaked_kids = _children() - kids_before
    assert not leaked_shm, f"shared-memory segments left behind: {sorted(leaked_shm)}"
    assert not leaked_kids, f"child processes left behind: {sorted(leaked_kids)}"


@pytest.fixture(scope="session")
def run_dir() -> Path:
    """A private folder for this test run."""
    return _RUN_DIR
