"""What a service runs: the configuration checked against its book, the children it starts
(one spec each) and their live processes, and stopping a set of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.book.io import load_book
from workbench.book.schema import ASSET_CLASS, ASSET_CLASSES, Book
from workbench.engine.processes.partition import worker_rows
from workbench.engine.processes.restarts import RestartPolicy
from workbench.engine.processes.standby_keeper import GRACE_S, Child
from workbench.engine.processes.worker import worker_name
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig, encode_config
from workbench.engine.transport.shm import MAX_SLOTS
from workbench.market.model import MarketSnapshot


class ConfigRefusedError(ValueError):
    """A configuration, book or market the service cannot run: refused before anything starts
    (exit 2, one line)."""


def book_classes(book: Book) -> set[str]:
    """The asset classes ``book`` has positions of."""
    codes = np.unique(book.product.codes) if len(book) else np.empty(0, dtype=np.int64)
    return {ASSET_CLASS[book.product.labels[int(c)]] for c in codes}


def resolve_workers(config: ServiceConfig, book: Book) -> dict[str, int]:
    """Workers per asset class: as configured, one for a class left out that the book holds,
    none for a class it does not hold. Raises :class:`ConfigRefusedError` for a configuration that
    cannot run: more workers of a class than the risk table has slots, an unknown class, or
    workers for a class of which the book has no positions."""
    held = book_classes(book)
    for cls, n in sorted(config.workers.items()):
        if cls not in ASSET_CLASSES:
            known = ", ".join(ASSET_CLASSES)
            raise ConfigRefusedError(f"--workers {cls}={n}: unknown asset class (one of {known})")
        if not 0 <= n <= MAX_SLOTS:
            raise ConfigRefusedError(
                f"--workers {cls}={n}: expected 0 to {MAX_SLOTS} workers per asset class"
            )
    empty = sorted(c for c, n in config.workers.items() if n > 0 and c not in held)
    if empty:
        asked = ",".join(f"{c}={config.workers[c]}" for c in empty)
        raise ConfigRefusedError(
            f"--workers {asked}: book {book.source} has no {', '.join(empty)} positions"
        )
    return {c: config.workers.get(c, 1 if c in held else 0) for c in ASSET_CLASSES}


@dataclass
class ChildSpec:
    """A child the supervisor starts: its name, entry point and restart group."""

    name: str
    role: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    group: str
    rolls: bool
    asset_class: str | None = None
    slot: int = 0


@dataclass
class Live:
    """A child's running process and what the supervisor knows of it."""

    spec: ChildSpec
    process: Child
    started_ns: int
    planned_exit: bool = False
    last_hb: msg.Heartbeat | None = None
    restart_ns: list[int] = field(default_factory=list)


def child_specs(config: ServiceConfig) -> list[ChildSpec]:
    """Every child of a service of ``config``, in start order."""
    from workbench.engine.processes import (
        aggregator,
        feed,
        ingest,
        loss_runner,
        store_writer,
        worker,
    )

    text = encode_config(config)
    out: list[ChildSpec] = []
    if config.feed.mode in ("synthetic", "replay"):
        out.append(ChildSpec("feed", "feed", feed.run, (text,), "feed", False))
    out.append(ChildSpec("ingest", "ingest", ingest.run, (text,), "ingest", False))
    for cls in ASSET_CLASSES:
        for slot in range(config.workers.get(cls, 0)):
            name = worker_name(cls, slot)
            out.append(
                ChildSpec(
                    name, f"worker:{name}", worker.run, (text, cls, slot), cls, True, cls, slot
                )
            )
    out.append(ChildSpec("aggregator", "aggregator", aggregator.run, (text,), "agg", False))
    if config.store.enabled:
        out.append(
            ChildSpec("store_writer", "store_writer", store_writer.run, (text,), "store", False)
        )
    if config.loss.enabled:
        out.append(ChildSpec("loss", "loss", loss_runner.run, (text,), "loss", False))
    return out


def load_frozen(frozen: Path, original: str, market: MarketSnapshot) -> Book:
    """The book in the frozen copy ``frozen`` of ``original``; its errors name the original."""
    try:
        return load_book(frozen, market=market)
    except ValueError as exc:  # BookError and the reader's own: name the file the user gave
        raise ConfigRefusedError(str(exc).replace(str(frozen), original)) from None


def stop_all(processes: Iterable[Child], grace_s: float = GRACE_S) -> None:
    """SIGTERM every process, wait up to ``grace_s`` seconds for them all, SIGKILL the rest."""
    procs = list(processes)
    for proc in procs:
        if proc.exitcode is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            proc.kill()
            proc.join(1.0)


def process_rows(live: dict[str, Live], policy: RestartPolicy, now_ns: int) -> list[dict[str, Any]]:
    """A status row per child: pid, state, restarts, heartbeat age and uptime (s), counters."""
    rows = []
    for name, lv in live.items():
        c = policy.children[name]
        hb = lv.last_hb
        rows.append(
            {
                "name": name,
                "role": lv.spec.role,
                "pid": lv.process.pid,
                "state": "ready" if c.ready else ("starting" if c.up else "down"),
                "restarts": c.restarts,
                "heartbeat_age_s": (now_ns - c.last_beat_ns) / 1e9,
                "uptime_s": (now_ns - lv.started_ns) / 1e9,
                "stats": dict(hb.stats) if hb else {},
                "histograms": dict(hb.histograms) if hb else {},
            }
        )
    return rows


def rows_by_worker(
    specs: Iterable[ChildSpec], workers: dict[str, int], book: Book, market: MarketSnapshot
) -> dict[str, np.ndarray]:
    """The book rows each worker of ``specs`` prices, by worker name."""
    out: dict[str, np.ndarray] = {}
    for s in specs:
        if s.asset_class is not None:
            n = workers[s.asset_class]
            out[s.name] = worker_rows(book, market, s.asset_class, s.slot, n)
    return out
