"""The inputs a service prices: the booking and market files, frozen for the life of a book.

A booking system rewrites its export whenever it likes. The service must not follow it
silently: a worker that restarts and re-reads the file would price other trades under the same
risk-table rows. So the supervisor copies the bytes of both files once, at start-up (and at an
explicit :func:`workbench.client.Client.reload_book`), into ``<run dir>/frozen/``; every
process of the service reads those copies and only those. The original files are what the
recon job compares against (:mod:`risk.recon`): a changed booking file is a ``recon`` breach,
never a new book.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec

from workbench.engine.protocol.config import ServiceConfig

FROZEN_FOLDER = "frozen"


def digest_bytes(data: bytes) -> str:
    """Hex BLAKE2b-128 digest of ``data``: the identity of a frozen file."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str | Path) -> str:
    """:func:`digest_bytes` of the file at ``path`` (read whole)."""
    return digest_bytes(Path(path).read_bytes())


def freeze(source: str | Path, run_dir: str | Path, kind: str, generation: int) -> tuple[Path, str]:
    """Copy ``source``'s bytes to ``<run_dir>/frozen/<kind>-<generation><suffix>``.

    The bytes are read once and written from memory, so the copy is exactly one version of the
    file even while the booking system rewrites it. Returns the copy's path and its digest.
    """
    data = Path(source).read_bytes()
    folder = Path(run_dir) / FROZEN_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{kind}-{generation}{Path(source).suffix}"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target, digest_bytes(data)


def book_path(config: ServiceConfig) -> str:
    """The booking file the service's processes price: its frozen copy (the original only
    before the supervisor has frozen it)."""
    return config.frozen_book or config.book


def market_path(config: ServiceConfig) -> str:
    """The market file the service's processes were started on: its frozen copy."""
    return config.frozen_market or config.market


def write_json(path: Path, value: object) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a reader sees the old or the new file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(value))
    tmp.replace(path)
