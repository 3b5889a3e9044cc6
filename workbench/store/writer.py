"""The risk store's writer: rows buffered in memory and written as one immutable Parquet file
per dataset and interval, small files merged, old dates deleted (no sockets: the
``store_writer`` process of a service feeds it).

All interval timing is on ``time.monotonic_ns``; only the rows' stamps and the partition dates
are UTC (passed in).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from workbench.engine.protocol import messages as msg
from workbench.store.layout import (
    KINDS,
    expire,
    file_name,
    partition,
    remove_temporaries,
    utc_date,
    write_atomic,
)
from workbench.store.rows import position_rows, snapshot_rows

log = logging.getLogger(__name__)

MERGE_FILES: Final = 120
"""The default of ``StoreConfig.merge_files``."""


@dataclass
class Counters:
    """What the writer has done since it started (heartbeat counters)."""

    snapshots: int = 0
    position_copies: int = 0
    files_written: int = 0
    bytes_written: int = 0
    files_merged: int = 0
    dates_expired: int = 0
    write_errors: int = 0


@dataclass
class StoreWriter:
    """Rows of the store waiting for their file, and the files of this writer not yet merged.

    Parameters
    ----------
    root
        The store's folder.
    interval_s
        Seconds between two flushes (a file per dataset with rows).
    retention_days
        Days kept, today included (0: every day).
    merge_files
        A run of this many files of one dataset and date written by this writer is merged into
        one.
    """

    root: Path
    interval_s: float = 5.0
    retention_days: int = 7
    merge_files: int = MERGE_FILES
    pending: dict[str, list[pl.DataFrame]] = field(default_factory=dict)
    snapshots: list[tuple[msg.Snapshot, int]] = field(default_factory=list)
    """Snapshots read since the last flush, each with its wall-clock offset (converted to rows
    together at the flush)."""
    written: dict[tuple[str, dt.date], list[Path]] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    last_flush_ns: int = 0
    expired_on: dt.date | None = None

    def open(self, *, now_ns: int, today: dt.date) -> None:
        """Start: the temporaries a killed writer left removed, old dates deleted."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = remove_temporaries(self.root)
        if removed:
            log.warning("store: removed %d unfinished files of a writer that was killed", removed)
        self.expire(today)
        self.last_flush_ns = now_ns

    def add_snapshot(self, snap: msg.Snapshot, *, wall_offset_ns: int) -> None:
        """Buffer a snapshot's roll-ups and breaches (``wall_offset_ns``: UTC ns minus
        monotonic ns when it was read)."""
        self.snapshots.append((snap, wall_offset_ns))
        self.counters.snapshots += 1

    def add_positions(self, frame: pl.DataFrame, *, made_ns: int, seq: int) -> None:
        """Buffer a copy of the per-position risk taken at ``made_ns`` (UTC ns)."""
        self._add("positions", position_rows(frame, made_ns=made_ns, seq=seq))
        self.counters.position_copies += 1

    def _add(self, kind: str, rows: pl.DataFrame) -> None:
        if rows.height:
            self.pending.setdefault(kind, []).append(rows)

    def due(self, now_ns: int) -> bool:
        """Whether ``interval_s`` has passed since the last flush (monotonic ns)."""
        return now_ns - self.last_flush_ns >= self.interval_s * 1e9

    def flush(self, now_ns: int) -> int:
        """Write every buffered row, one file per dataset and UTC date; returns bytes written.
        Rows whose file could not be written are dropped and counted (the disk is full: the
        service goes on)."""
        self.last_flush_ns = now_ns
        if self.snapshots:
            aggregates, found = snapshot_rows(self.snapshots)
            self.snapshots = []
            self._add("aggregates", aggregates)
            self._add("breaches", found)
        pending, self.pending = self.pending, {}
        size = 0
        for kind in KINDS:
            parts = pending.get(kind)
            if not parts:
                continue
            rows = pl.concat(parts)
            dates = rows.select((pl.col("made_ns") // 86_400_000_000_000).alias("day")).to_series()
            for day in dates.unique().sort():
                part = rows.filter(dates == day)
                size += self._write(kind, part)
        return size

    def _write(self, kind: str, rows: pl.DataFrame) -> int:
        made = rows["made_ns"]
        first, last = int(made.min()), int(made.max())  # type: ignore[arg-type]
        date = utc_date(first)
        path = partition(self.root, kind, date) / file_name(kind, first, last)
        try:
            size = write_atomic(rows, path)
        except OSError as exc:
            self.counters.write_errors += 1
            log.error("store: %s not written (%s): %d rows lost", path.name, exc, rows.height)
            return 0
        self.counters.files_written += 1
        self.counters.bytes_written += size
        run = self.written.setdefault((kind, date), [])
        run.append(path)
        if len(run) >= self.merge_files:
            self._merge(kind, date, run)
        return size

    def _merge(self, kind: str, date: dt.date, run: list[Path]) -> None:
        """One file with the rows of ``run``; then the files of ``run`` deleted."""
        rows = pl.concat([pl.read_parquet(p) for p in run])
        made = rows["made_ns"]
        first, last = int(made.min()), int(made.max())  # type: ignore[arg-type]
        path = partition(self.root, kind, date) / file_name(kind, first, last)
        try:
            write_atomic(rows, path)
        except OSError as exc:
            self.counters.write_errors += 1
            log.error("store: merge into %s failed (%s); the small files stay", path.name, exc)
            return
        for p in run:
            if p != path:
                p.unlink(missing_ok=True)
        self.counters.files_merged += len(run)
        run.clear()

    def expire(self, today: dt.date) -> None:
        """Delete the dates older than the retention (once per UTC day)."""
        if self.expired_on == today:
            return
        self.expired_on = today
        gone = expire(self.root, keep_days=self.retention_days, today=today)
        self.counters.dates_expired += len(gone)
        self.written = {k: v for k, v in self.written.items() if k[1] not in gone}
        if gone:
            log.info(
                "store: deleted %d partitions older than %d days", len(gone), self.retention_days
            )

    def stats(self) -> dict[str, float]:
        """The counters, and the rows waiting (heartbeat form)."""
        out = {k: float(v) for k, v in vars(self.counters).items()}
        out["rows_pending"] = float(sum(f.height for p in self.pending.values() for f in p))
        out["snapshots_pending"] = float(len(self.snapshots))
        return out
