"""Scenario revaluation on Dask distributed: the same PnL as one process, spread over workers.

The book is cut into row chunks and the scenarios into blocks; a task is (chunk × block). The
chunks, their group codes and the market are scattered once; each worker keeps a
:class:`~workbench.pricing.scenario_book.ScenarioBook` per chunk it has seen (its set-up is the
expensive, quote-independent part), revalues the block's scenarios at once and returns only the
per-scenario PnL summed by group (block × groups): no per-position matrix crosses the network.
Asked for the Greeks' gap (:func:`distributed_pnl_and_gap`), the same task also estimates its
block from the chunk's Greeks (set up once per worker and chunk) and returns the desk sums of
both PnLs and its largest gaps (:mod:`workbench.scenario_greeks`).
Pricing is pure, so the result does not depend on chunking or on the number of workers (sums in
another order: equal to ~1e-15).

Where it runs: ``scheduler`` (``tcp://host:8786``, or ``DASK_SCHEDULER_ADDRESS``) for a real
cluster; else an embedded ``LocalCluster`` of one single-threaded worker process per core.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numba
import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.pricing.revaluation import BLOCK
from workbench.pricing.scenario_book import ScenarioBook
from workbench.scenario_greeks import (
    WORST,
    BlockGap,
    GreeksGap,
    GreeksState,
    block_gap,
    merge_gaps,
)

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
"""The environment variable naming a running scheduler (what Dask itself reads)."""

_PRICERS: dict[str, ScenarioBook] = {}
"""In a worker: the set-up book of each chunk it has revalued, by chunk key."""
_GREEKS: dict[str, GreeksState] = {}
"""In a worker: the Greeks of each chunk whose gap it has computed, by chunk key."""
_KEPT = 8
_T = TypeVar("_T")
CHUNK = 200_000
"""Positions per book chunk by default: the whole reference book is one chunk, so the work that
each scenario costs whatever the chunk's size (its curves, smiles and tranche loss
distributions) is done once, and the workers share the scenario blocks."""


def chunk_key(book: Book, market: MarketSnapshot, rows: IntArray) -> str:
    """What identifies a chunk's pricer: the positions' terms and the market's definitions
    (its date and quotes, not their values)."""
    h = hashlib.blake2b(digest_size=16)
    part = book.take(rows)
    h.update("\0".join(part.position_id).encode())
    columns = (
        part.product.codes, part.notional, part.maturity.view("int64"), part.strike,
        part.fixed_rate, part.option_sign, part.attach, part.detach, part.coupon,
    )  # fmt: skip
    for col in columns:
        h.update(np.ascontiguousarray(col).tobytes())
    h.update(f"{market.as_of}|{'|'.join(market.quote_ids)}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Layout:
    """How the work is cut: ``chunks`` book row chunks × scenario blocks of ``block`` each."""

    chunks: int
    block: int


def _kept(held: dict[str, _T], key: str, make: Callable[[], _T]) -> _T:
    """``held[key]``, made on first use; the oldest dropped beyond :data:`_KEPT`."""
    if key not in held:
        while len(held) >= _KEPT:
            held.pop(next(iter(held)))
        held[key] = make()
    return held[key]


def _chunk_task(
    key: str,
    chunk: Book,
    market: MarketSnapshot,
    scenarios: FloatArray,
    block: tuple[int, int],
    codes: IntArray,
    n_groups: int,
    gap: tuple[int, int, int] | None,
) -> tuple[FloatArray, BlockGap | None]:
    """In a worker: the chunk's PnL under scenario rows ``block`` = (first, end) of
    ``scenarios``, summed by group (block × groups, USD), and, with ``gap`` = (the block's
    first scenario, the chunk's first position, pairs kept), the Greeks' estimate of the block
    beside its full revaluation (:func:`workbench.scenario_greeks.block_gap`)."""
    # one Numba thread per task (the worker's threads are the parallelism): a spawned worker
    # imports Numba with the caller's main module, so an environment variable given to the
    # cluster came too late, and two 2-thread workers on two cores took 1.55× as long a task
    numba.set_num_threads(1)
    values = scenarios[block[0] : block[1]]
    pricer = _kept(_PRICERS, key, lambda: ScenarioBook(chunk, market))
    sums = pricer.group_pnl(values, codes, n_groups)
    if gap is None:
        return sums, None
    start, first, worst = gap
    rows = np.arange(first, first + len(chunk), dtype=np.int64)
    state = _kept(_GREEKS, key,
                  lambda: GreeksState(chunk, market, rows=rows, scenario_book=pricer))  # fmt: skip
    return sums, block_gap(state, values, start, worst)


@contextlib.contextmanager
def cluster(scheduler: str | None = None, *, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``) if given, else
    to an embedded ``LocalCluster`` (``workers`` single-threaded processes, one per core by
    default), closed (and the local cluster stopped) at the end of the block."""
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV)
    if address:
        with Client(address, timeout="30s") as client:  # type: ignore[no-untyped-call]
            yield client
        return
    n = workers or len(os.sched_getaffinity(0))
    local = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # no dashboard; the scheduler's HTTP routes (health, metrics) on any free port
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    with local, Client(local) as client:  # type: ignore[no-untyped-call]
        yield client


def distributed_group_pnl(
    client: Any,
    book: Book,
    market: MarketSnapshot,
    values: FloatArray,
    codes: IntArray,
    n_groups: int,
    *,
    layout: Layout | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FloatArray:
    """(scenarios × groups) PnL in USD of ``book`` under each row of ``values``, summed by the
    positions' group ``codes``, computed by ``client``'s workers.

    ``layout`` defaults to chunks of up to :data:`CHUNK` positions and blocks of
    :data:`~workbench.pricing.revaluation.BLOCK` scenarios (fewer when there are fewer
    scenarios than workers × blocks); ``progress(done, total)`` counts scenarios as blocks
    finish.
    """
    out, _ = _distributed(client, book, market, values, codes, n_groups, layout=layout,
                          progress=progress, worst=None)  # fmt: skip
    return out


def distributed_pnl_and_gap(
    client: Any,
    book: Book,
    market: MarketSnapshot,
    values: FloatArray,
    codes: IntArray,
    n_groups: int,
    names: Sequence[str],
    *,
    worst: int = WORST,
    layout: Layout | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[FloatArray, GreeksGap]:
    """:func:`distributed_group_pnl` and, from the same tasks, the Greeks' estimate of every
    scenario (named ``names``) beside its full revaluation
    (:func:`workbench.scenario_greeks.greeks_gap`'s result, computed on the workers)."""
    out, parts = _distributed(client, book, market, values, codes, n_groups, layout=layout,
                              progress=progress, worst=worst)  # fmt: skip
    return out, merge_gaps(parts, book, names, worst)


def _distributed(
    client: Any,
    book: Book,
    market: MarketSnapshot,
    values: FloatArray,
    codes: IntArray,
    n_groups: int,
    *,
    layout: Layout | None,
    progress: Callable[[int, int], None] | None,
    worst: int | None,
) -> tuple[FloatArray, list[BlockGap]]:
    """The group sums and, with ``worst``, each task's :class:`BlockGap`."""
    from distributed import as_completed

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    n_s = values.shape[0]
    # a few scenarios are still spread over every worker
    block = min(BLOCK, max(1, -(-n_s // n_workers)))
    cut = layout or Layout(chunks=1 + len(book) // CHUNK, block=block)
    chunks = [c for c in np.array_split(np.arange(len(book)), cut.chunks) if c.size]
    keys = [chunk_key(book, market, c) for c in chunks]
    # keys of this call's own (hash=False): data equal to a finished call's would get that
    # call's keys, which the scheduler may be releasing — its tasks then lose their inputs
    parts = client.scatter([book.take(c) for c in chunks], broadcast=True, hash=False)
    chunk_codes = client.scatter([np.ascontiguousarray(codes[c]) for c in chunks],
                                 broadcast=True, hash=False)  # fmt: skip
    shared_market = client.scatter(market, broadcast=True, hash=False)
    # the scenarios sent once to every worker, each task naming its rows: inline, every
    # block's rows would pass through the scheduler, whose CPU is the workers' on one machine
    shared_values = client.scatter(np.ascontiguousarray(values), broadcast=True, hash=False)
    starts = list(range(0, n_s, cut.block))
    futures = {}
    for k, (key, part, rows, part_codes) in enumerate(zip(keys, parts, chunks, chunk_codes,
                                                          strict=True)):  # fmt: skip
        for b in starts:
            gap = None if worst is None else (b, int(rows[0]), worst)
            fut = client.submit(_chunk_task, key, part, shared_market, shared_values,
                                (b, min(b + cut.block, n_s)), part_codes, n_groups, gap,
                                pure=False)  # fmt: skip
            futures[fut] = (k, b)
    sums: dict[tuple[int, int], FloatArray] = {}
    gaps: list[BlockGap] = []
    done = 0
    for fut in as_completed(futures):  # type: ignore[no-untyped-call]
        part_sum, part_gap = fut.result()
        sums[futures[fut]] = part_sum
        if part_gap is not None:
            gaps.append(part_gap)
        done += part_sum.shape[0]
        if progress is not None:
            progress(done // len(chunks), n_s)
    out = np.zeros((n_s, n_groups))
    for k in range(len(chunks)):  # in chunk order, whatever order the tasks ended in
        for b in starts:
            block_sum = sums[(k, b)]
            out[b : b + block_sum.shape[0]] += block_sum
    return out, gaps


__all__ = [
    "SCHEDULER_ENV",
    "Layout",
    "cluster",
    "distributed_group_pnl",
    "distributed_pnl_and_gap",
]
