"""A new book accepted by a running service, waiting to be swapped in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from workbench.book.schema import Book
from workbench.engine.processes.children import ConfigRefusedError, load_frozen, resolve_workers
from workbench.engine.processes.inputs import freeze
from workbench.engine.protocol.config import ServiceConfig
from workbench.market.model import MarketSnapshot


@dataclass
class Reload:
    """A new book accepted, to be swapped in at ``due_ns``."""

    book: Book
    frozen: Path
    book_id: str
    generation: int
    source: str
    due_ns: int


def accept_book(
    source: str, config: ServiceConfig, run_dir: Path, market: MarketSnapshot, due_ns: int
) -> Reload:
    """Freeze and validate the booking file ``source`` as the next book of a service running
    ``config``, to be swapped in at ``due_ns``. Raises :class:`ConfigRefusedError` for a book
    that does not load or does not fit the running workers (nothing is kept then)."""
    gen = config.book_generation + 1
    try:
        frozen, book_id = freeze(source, run_dir, "book", gen)
    except (OSError, ValueError) as exc:  # ValueError: a path no file can have
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigRefusedError(f"cannot read booking file {source!r}: {why}") from None
    try:
        book = load_frozen(frozen, source, market)
        workers = resolve_workers(msgspec.structs.replace(config, workers={}), book)
        if workers != config.workers:
            wanted = ", ".join(f"{c}={n}" for c, n in workers.items())
            have = ", ".join(f"{c}={n}" for c, n in config.workers.items())
            raise ConfigRefusedError(
                f"book {source} needs workers {wanted}; this service runs {have}: "
                "restart the service to change its workers"
            )
    except ConfigRefusedError:
        frozen.unlink(missing_ok=True)
        raise
    return Reload(book, frozen, book_id, gen, source, due_ns)
