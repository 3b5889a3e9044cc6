"""Shared-memory tables: the live quote table and the risk columns, with generation counters.

Segments are named ``wb_<owner pid>_<service>_<table>``: the supervisor creates and alone
unlinks them; every other process attaches. Python 3.11's resource tracker would unlink a
segment when *any* attaching process exits, so every handle here is unregistered from it at
once, and cleanup is explicit: the owner unlinks on shutdown, and :func:`reap` unlinks the
segments whose owner pid is dead (a service killed with ``kill -9``).

Each table is one segment holding separate, 64-byte-aligned columns (a float64 column can be
wrapped by NumPy or Polars without a copy) and a small header of int64 generation counters.
A writer makes its counter odd, writes, and makes it even again; a reader copies and retries
if the counter was odd or moved (a seqlock), so it never sees a torn row.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import TypeVar

import numpy as np

from workbench._types import FloatArray
from workbench.book.schema import ASSET_CLASSES

SHM_DIR = Path("/dev/shm")
_R = TypeVar("_R")
_NAME = re.compile(r"^wb_(\d+)_[A-Za-z0-9]+_[a-z]+[0-9]*$")
_ALIGN = 64
RISK_COLUMNS = ("pv", "pv_ccy", "delta", "gamma", "vega", "theta")
MAX_SLOTS = 8  # workers per asset class; each worker (class, slot) has its own counter

FRESH = 0.0
"""``stale_reason`` of a position whose last write succeeded."""
WORKER_DOWN = 1.0
"""``stale_reason``: its worker died or is restarting; the last values stay readable."""
REPRICE_FAILED = 2.0
"""``stale_reason``: its last reprice failed (a pricer exception); the last good values stay."""
NEVER_PRICED = 3.0
"""``stale_reason``: not priced yet (NaN Greeks)."""
STALE_REASONS = {
    FRESH: "",
    WORKER_DOWN: "worker down",
    REPRICE_FAILED: "reprice failed",
    NEVER_PRICED: "not priced yet",
}
"""The text of each ``stale_reason`` code."""


def writer_counter(asset_class: str, slot: int) -> int:
    """The risk-table counter of worker ``slot`` of ``asset_class``."""
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"worker slot {slot} outside 0..{MAX_SLOTS - 1}")
    return ASSET_CLASSES.index(asset_class) * MAX_SLOTS + slot


class TornReadError(RuntimeError):
    """A consistent copy could not be taken (the writer kept the counter moving)."""


def segment_name(service: str, table: str, owner_pid: int | None = None) -> str:
    """The segment name of ``table`` for ``service`` owned by ``owner_pid`` (this process)."""
    if not re.fullmatch(r"[A-Za-z0-9]+", service):
        raise ValueError(f"service name {service!r}: letters and digits only")
    return f"wb_{owner_pid or os.getpid()}_{service}_{table}"


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # The tracker keys segments by their "/name"; lifetime is managed here instead.
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]


def create_segment(name: str, nbytes: int) -> shared_memory.SharedMemory:
    """Create a zeroed segment owned by this process (not tracked by the resource tracker)."""
    shm = shared_memory.SharedMemory(name=name, create=True, size=max(nbytes, 1))
    _untrack(shm)
    return shm


def attach_segment(name: str) -> shared_memory.SharedMemory:
    """Attach to an existing segment without taking ownership of its lifetime."""
    shm = shared_memory.SharedMemory(name=name, create=False)
    _untrack(shm)
    return shm


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def reap(*, dry_run: bool = False) -> list[str]:
    """Unlink every ``wb_*`` segment whose owner process is gone; returns their names."""
    gone: list[str] = []
    if not SHM_DIR.is_dir():
        return gone
    for path in sorted(SHM_DIR.iterdir()):
        m = _NAME.match(path.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        gone.append(path.name)
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return gone


@dataclass(frozen=True)
class _Layout:
    n_counters: int
    float_columns: tuple[str, ...]
    int_columns: tuple[str, ...]
    rows: int

    def offsets(self) -> tuple[dict[str, int], int]:
        at = _ALIGN * (1 + (self.n_counters * 8) // _ALIGN)
        out: dict[str, int] = {}
        for name in self.float_columns + self.int_columns:
            out[name] = at
            at += _ALIGN * (1 + (self.rows * 8) // _ALIGN)
        return out, at


class _Table:
    """Columns and counters over one segment."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: _Layout, *, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.spec = layout
        offsets, _ = layout.offsets()
        buf = shm.buf
        self.counters = np.ndarray((layout.n_counters,), dtype=np.int64, buffer=buf, offset=0)
        self.columns: dict[str, np.ndarray] = {}
        for name in layout.float_columns:
            self.columns[name] = np.ndarray(
                (layout.rows,), dtype=np.float64, buffer=buf, offset=offsets[name]
            )
        for name in layout.int_columns:
            self.columns[name] = np.ndarray(
                (layout.rows,), dtype=np.int64, buffer=buf, offset=offsets[name]
            )

    @property
    def name(self) -> str:
        """The segment name."""
        return self.shm.name

    def begin(self, counter: int) -> None:
        """Start a write under ``counter`` (odd = writing)."""
        self.counters[counter] += 1

    def end(self, counter: int) -> None:
        """Finish a write under ``counter`` (even = stable)."""
        self.counters[counter] += 1

    def read(
        self, names: tuple[str, ...], counters: tuple[int, ...], *, timeout_s: float = 5.0
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Consistent copies of ``names`` and the counters they were read under.

        Retries while a writer is mid-write (odd counter) or finished one during the copy,
        backing off from 20 µs to 1 ms; gives up after ``timeout_s`` (a writer that never
        finishes) with :class:`TornReadError`.
        """
        return self.consistent(
            lambda cols: {n: cols[n].copy() for n in names}, counters, timeout_s=timeout_s
        )

    def consistent(
        self,
        reader: Callable[[Mapping[str, np.ndarray]], _R],
        counters: tuple[int, ...],
        *,
        timeout_s: float = 5.0,
    ) -> tuple[_R, np.ndarray]:
        """``reader(columns)`` over the live columns, and the counters it ran under: run again
        until no writer of ``counters`` wrote meanwhile, as :meth:`read` does. ``reader`` must
        only read, and must not keep the views: what it returns is consistent, the views
        are not. A reduction (sums per group) this way costs no copy of the columns."""
        idx = np.asarray(counters, dtype=np.int64)
        deadline = time.monotonic() + timeout_s
        pause = 20e-6
        attempts = 0
        while True:
            before = self.counters[idx].copy()
            if not np.any(before & 1):
                out = reader(self.columns)
                after = self.counters[idx]
                if np.array_equal(before, after):
                    return out, before
            attempts += 1
            if time.monotonic() > deadline:
                raise TornReadError(
                    f"{self.name}: no consistent read in {timeout_s} s ({attempts} attempts)"
                )
            if attempts > 3:
                time.sleep(pause)
                pause = min(pause * 2, 1e-3)

    def close(self) -> None:
        """Drop the views and the mapping; the owner also unlinks the segment."""
        self.columns.clear()
        del self.counters
        self.shm.close()
        if self.owner:
            # not SharedMemory.unlink(): it would unregister from the tracker a second time
            with contextlib.suppress(FileNotFoundError):
                (SHM_DIR / self.shm.name.lstrip("/")).unlink()


class QuoteTable(_Table):
    """The live quotes: ``value``, ``updated_ns`` (monotonic), ``seq`` and ``source`` (0: the
    feed, k: the k-th polling source of ``feed.sources``) per quote id, one counter."""

    @staticmethod
    def layout(n_quotes: int) -> _Layout:
        """Its layout for ``n_quotes`` quotes."""
        return _Layout(1, ("value",), ("updated_ns", "seq", "source"), n_quotes)

    @classmethod
    def create(cls, service: str, initial: FloatArray) -> QuoteTable:
        """A new table holding ``initial`` values, stamped now."""
        layout = cls.layout(initial.size)
        _, size = layout.offsets()
        table = cls(create_segment(segment_name(service, "quotes"), size), layout, owner=True)
        table.columns["value"][:] = initial
        table.columns["updated_ns"][:] = time.monotonic_ns()
        return table

    @classmethod
    def attach(cls, name: str, n_quotes: int) -> QuoteTable:
        """Attach to the table named ``name``."""
        return cls(attach_segment(name), cls.layout(n_quotes), owner=False)

    @property
    def generation(self) -> int:
        """The write counter (even when stable)."""
        return int(self.counters[0])

    def write(
        self,
        index: np.ndarray,
        values: FloatArray,
        seqs: np.ndarray,
        now_ns: int,
        sources: np.ndarray | None = None,
    ) -> int:
        """Store new values for quote rows ``index`` (from ``sources``, the feed if None);
        returns the new generation."""
        self.begin(0)
        self.columns["value"][index] = values
        self.columns["seq"][index] = seqs
        if sources is not None:
            self.columns["source"][index] = sources
        self.columns["updated_ns"][index] = now_ns
        self.end(0)
        return int(self.counters[0])

    def repair(self, now_ns: int) -> bool:
        """After the writer died: if it died mid-write (odd counter), end that write and stamp
        every quote ``now_ns``, so every reader sees a stable table again and every worker
        reprices on the values it holds (some of them of the interrupted write). Returns
        whether anything was repaired."""
        if not self.counters[0] & 1:
            return False
        self.columns["updated_ns"][:] = now_ns
        self.end(0)
        return True

    def snapshot(self) -> tuple[FloatArray, np.ndarray, int]:
        """Consistent copies of values and stamps, and the generation."""
        cols, gen = self.read(("value", "updated_ns"), (0,))
        return cols["value"], cols["updated_ns"], int(gen[0])


class RiskTable(_Table):
    """Greeks per position (float64, USD) with ``updated_ns`` and ``stale`` flags, and
    ``fallback`` (1.0: last priced off a quote of a polling source, docs/ticks.md).

    One generation counter per worker (asset class × slot): each is its counter's only writer.
    """

    @staticmethod
    def layout(n_positions: int) -> _Layout:
        """Its layout for ``n_positions`` positions."""
        n_counters = len(ASSET_CLASSES) * MAX_SLOTS
        return _Layout(
            n_counters,
            (*RISK_COLUMNS, "stale", "stale_reason", "fallback"),
            ("updated_ns",),
            n_positions,
        )

    @classmethod
    def create(cls, service: str, n_positions: int, generation: int = 0) -> RiskTable:
        """A new table for book ``generation`` (0 at start, +1 per reload: ``risk``, ``risk1``
        …); every position starts stale (never priced) with NaN Greeks."""
        layout = cls.layout(n_positions)
        _, size = layout.offsets()
        table_name = f"risk{generation}" if generation else "risk"
        table = cls(create_segment(segment_name(service, table_name), size), layout, owner=True)
        for name in RISK_COLUMNS:
            table.columns[name][:] = np.nan
        table.columns["stale"][:] = 1.0
        table.columns["stale_reason"][:] = NEVER_PRICED
        return table

    @classmethod
    def attach(cls, name: str, n_positions: int) -> RiskTable:
        """Attach to the table named ``name``."""
        return cls(attach_segment(name), cls.layout(n_positions), owner=False)

    def write(
        self,
        asset_class: str,
        slot: int,
        rows: np.ndarray,
        values: dict[str, FloatArray],
        now_ns: int,
    ) -> None:
        """Write fresh Greeks for ``rows`` of worker (``asset_class``, ``slot``); clear stale."""
        c = writer_counter(asset_class, slot)
        self.begin(c)
        for name, col in values.items():
            self.columns[name][rows] = col
        self.columns["updated_ns"][rows] = now_ns
        self.columns["stale"][rows] = 0.0
        self.columns["stale_reason"][rows] = FRESH
        self.end(c)

    def mark_stale(
        self, asset_class: str, slot: int, rows: np.ndarray, reason: float = WORKER_DOWN
    ) -> None:
        """Flag ``rows`` stale for ``reason`` (their worker is down, or their reprice failed);
        their last values and ``updated_ns`` stay, so their age keeps growing."""
        c = writer_counter(asset_class, slot)
        if self.counters[c] & 1:  # its writer died mid-write: those rows are suspect anyway
            self.counters[c] += 1
        self.begin(c)
        self.columns["stale"][rows] = 1.0
        if reason == WORKER_DOWN:  # a row never priced stays "not priced yet" when its worker dies
            never = self.columns["stale_reason"][rows] == NEVER_PRICED
            self.columns["stale_reason"][rows] = np.where(never, NEVER_PRICED, reason)
        else:
            self.columns["stale_reason"][rows] = reason
        self.end(c)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Consistent copies of every column."""
        names = (*RISK_COLUMNS, "stale", "stale_reason", "updated_ns")
        cols, _ = self.read(names, tuple(range(self.spec.n_counters)))
        return cols
