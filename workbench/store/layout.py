"""Where a risk store keeps its files, how a file is written so that no reader sees it half
done, and which files a query reads.

A store is a folder (:func:`store_root`) holding one Parquet dataset per kind of row
(:data:`KINDS`), each partitioned by the UTC date of its rows::

    <root>/aggregates/date=2026-12-04/aggregates-1764892800123456789-1764892804987654321.parquet
    <root>/breaches/date=2026-12-04/...
    <root>/positions/date=2026-12-04/...

A file is named by the first and last ``made_ns`` of its rows. A file is immutable once it
has its name: it is written under a hidden temporary name
(``.<name>.tmp``, never matched by ``*.parquet``), flushed to disk (``fsync``) and renamed
into place (atomic on one file system), then the folder is flushed. A reader therefore sees a
file whole or not at all, and a killed writer leaves at most a temporary file (removed by the
next writer at start). The writer merges a run of small files into one (the same rows, its
span covering theirs) and then deletes them; a reader that lists both keeps only the merged
file (:func:`files`), and one that finds a listed file gone lists again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec
import polars as pl

from workbench.engine.protocol.config import Descriptor, ServiceConfig

KINDS: Final[tuple[str, ...]] = ("aggregates", "breaches", "positions")
"""The datasets of a store, each a folder of ``date=YYYY-MM-DD`` partitions."""
STORE_FOLDER: Final = "store"
"""The store's folder under a service's run dir when its configuration names none."""
_DATE_DIR: Final = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_NS_PER_DAY: Final = 86_400 * 10**9


def store_root(where: str | Path | ServiceConfig | Descriptor) -> Path:
    """The folder of a service's risk store.

    Parameters
    ----------
    where
        A service's run dir (``<run root>/<name>``: its ``service.json`` or ``config.json`` is
        read for a configured folder), its :class:`~workbench.engine.protocol.config.Descriptor`
        or its :class:`~workbench.engine.protocol.config.ServiceConfig`.

    Returns
    -------
    Path
        ``store.root`` of the configuration when set (a relative folder is taken under the run
        dir), else ``<run dir>/store``. A run dir without a readable configuration gives
        ``<run dir>/store``.

    Examples
    --------
    >>> store_root("/tmp/run/desk1")
    PosixPath('/tmp/run/desk1/store')
    """
    if isinstance(where, Descriptor):
        where = where.config
    if isinstance(where, ServiceConfig):
        return _configured(Path(where.run_dir), where.store.root)
    run_dir = Path(where)
    for config in (_read_config(run_dir / "service.json"), _read_config(run_dir / "config.json")):
        if config is not None:
            return _configured(run_dir, config.store.root)
    return run_dir / STORE_FOLDER


def _read_config(path: Path) -> ServiceConfig | None:
    """The configuration in a descriptor or configuration file; None if unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        return msgspec.json.decode(data, type=Descriptor).config
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        return msgspec.json.decode(data, type=ServiceConfig)
    return None


def _configured(run_dir: Path, root: str) -> Path:
    if not root:
        return run_dir / STORE_FOLDER
    path = Path(root).expanduser()
    return path if path.is_absolute() else run_dir / path


def utc_date(ns: int) -> dt.date:
    """The UTC date of ``ns`` (nanoseconds since the Unix epoch)."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=ns // _NS_PER_DAY)


def partition(root: Path, kind: str, date: dt.date) -> Path:
    """The folder of ``kind``'s rows of ``date``."""
    return root / kind / f"date={date.isoformat()}"


def partitions(root: Path, kind: str) -> list[tuple[dt.date, Path]]:
    """Every date folder of ``kind``, oldest first."""
    folder = root / kind
    if not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        m = _DATE_DIR.match(entry.name)
        if m and entry.is_dir():
            out.append((dt.date.fromisoformat(m.group(1)), entry))
    return sorted(out)


def files(
    root: Path, kind: str, *, start_ns: int | None = None, end_ns: int | None = None
) -> list[Path]:
    """The finished files of ``kind`` whose date may hold rows in ``[start_ns, end_ns)``
    (UTC ns; None: unbounded), oldest date first, by name within a date."""
    first = utc_date(start_ns) if start_ns is not None else dt.date.min
    last = utc_date(end_ns - 1) if end_ns is not None else dt.date.max
    out: list[Path] = []
    for date, folder in partitions(root, kind):
        if first <= date <= last:
            out.extend(_uncovered(folder.glob("*.parquet")))
    return out


def file_name(kind: str, first_ns: int, last_ns: int) -> str:
    """The name of a file of ``kind`` holding rows made from ``first_ns`` to ``last_ns``."""
    return f"{kind}-{first_ns}-{last_ns}.parquet"


def span(path: Path) -> tuple[int, int]:
    """The ``(first_ns, last_ns)`` of a file named by :func:`file_name` ((0, -1) if not)."""
    parts = path.stem.rsplit("-", 2)
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return 0, -1


def _uncovered(paths: Iterable[Path]) -> list[Path]:
    """``paths`` by first time, less every file whose span lies inside another's: a merged
    file replaces the files it was made of, which may still be there for a moment."""
    spans = sorted(((span(p), p) for p in paths), key=lambda e: (e[0][0], -e[0][1], e[1]))
    out: list[Path] = []
    reach = -1  # the latest last_ns of the files kept so far (they start no later)
    for (_, last), path in spans:
        if last > reach or last < 0:
            out.append(path)
            reach = max(reach, last)
    return out


def write_atomic(frame: pl.DataFrame, path: Path) -> int:
    """Write ``frame`` as the Parquet file ``path``: a temporary name, ``fsync``, an atomic
    rename, ``fsync`` of the folder. Returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    size = tmp.stat().st_size
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return size


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(root: Path) -> int:
    """Delete the temporary files a killed writer left; returns how many."""
    n = 0
    for kind in KINDS:
        for _, folder in partitions(root, kind):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                n += 1
    return n


def expire(root: Path, *, keep_days: int, today: dt.date) -> list[dt.date]:
    """Delete every partition older than ``keep_days`` days before ``today`` (``keep_days``
    0: keep everything). Returns the dates deleted (one entry per date and kind)."""
    if keep_days <= 0:
        return []
    oldest = today - dt.timedelta(days=keep_days - 1)
    gone: list[dt.date] = []
    for kind in KINDS:
        for date, folder in partitions(root, kind):
            if date < oldest:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(date)
    return gone


def total_bytes(root: Path, kinds: Iterable[str] = KINDS) -> dict[str, int]:
    """Bytes of the finished files of each of ``kinds``."""
    return {k: sum(p.stat().st_size for p in files(root, k)) for k in kinds}
