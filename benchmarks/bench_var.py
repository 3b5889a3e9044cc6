"""Historical VaR revaluation: 500 scenarios × the reference book, in process and on Dask.

Target (issue 15, docs/var.md): 500 historical scenarios × 40,000 positions by full
revaluation in ≤ 5 s on the 2-core machine. The baseline measured in the same run is the
per-scenario path (``PortfolioPricer.scenario_pv``, one PV-only re-price of the whole book per
scenario through the live pricers) on the first ``--baseline-scenarios`` scenarios,
extrapolated linearly to all of them. Reported: median and min–max of ``--runs`` runs, time per
scenario, in process (on one thread, then the pricers side by side on every core, as ``workbench
var`` runs) and on an embedded Dask cluster of 1 and 2 workers (the book chunk set
up in each worker on a first, untimed run; the whole book is one chunk up to 200,000 positions,
the workers share the scenario blocks), the scheduler's overhead per task (trivial tasks),
peak memory (this process and each worker) and one run at ``--big`` positions.

Run: ``python benchmarks/bench_var.py [--positions 40000] [--scenarios 500] [--runs 3]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine

from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.history import validate_history
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import BLOCK, group_pnl_by_block, scenario_pvs
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.scenarios import historical_scenarios
from workbench.scenario_cluster import CHUNK, cluster, distributed_group_pnl


def _fmt(xs: list[float], n_scenarios: int) -> str:
    med = statistics.median(xs)
    return (f"median {med:7.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)}), "
            f"{med / n_scenarios * 1e3:.1f} ms per scenario")  # fmt: skip


def _book(market: MarketSnapshot, positions: int, folder: Path) -> Book:
    path = folder / f"book{positions}.parquet"
    save_book(generate_reference_book(market, positions=positions, seed=1), path)
    return load_book(path, market=market)


def _timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _noop(x: int) -> int:
    return x


def _on_dask(
    book: Book, market: MarketSnapshot, values: np.ndarray, workers: int, runs: int
) -> tuple[list[float], float, list[float], int]:
    """Timed runs on a local cluster of ``workers``; the overhead per trivial task (s), the
    workers' peak memory (MiB) and the tasks per run."""
    codes, n = book.desk.codes, len(book.desk.labels)
    with cluster(workers=workers) as client:
        distributed_group_pnl(client, book, market, values, codes, n)  # set-up in each worker
        times = _timed(lambda: distributed_group_pnl(client, book, market, values, codes, n),
                       runs)  # fmt: skip
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(400), pure=False))
        overhead = (time.perf_counter() - t0) / 400
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    tasks = (1 + len(book) // CHUNK) * -(-values.shape[0] // BLOCK)
    return times, overhead, sorted(peaks.values()), tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40_000)
    parser.add_argument("--scenarios", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-scenarios", type=int, default=20, dest="baseline")
    parser.add_argument("--big", type=int, default=160_000, help="0: skip the large book")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts to time")
    args = parser.parse_args()
    print(machine())
    market = generate_reference_market()
    hist = validate_history(generate_history(market, days=args.scenarios + 1, seed=7), market)
    values = historical_scenarios(hist, market, window=args.scenarios).values(market)
    n_s = values.shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        book = _book(market, args.positions, Path(tmp))
        big = _book(market, args.big, Path(tmp)) if args.big else None
    print(f"{len(book):,} positions × {n_s} historical scenarios ({len(market.quote_ids)} quotes)")

    pricer = PortfolioPricer(book, market)
    pricer.pv(market)
    sub = values[: args.baseline]
    scenario_pvs(pricer, market, sub[:1])  # compilation
    base = _timed(lambda: scenario_pvs(pricer, market, sub), 1)[0] / sub.shape[0] * n_s
    print(f"baseline, per-scenario path: {base / n_s * 1e3:.1f} ms per scenario on "
          f"{sub.shape[0]} scenarios, extrapolated to {n_s}: {base:.1f} s")  # fmt: skip

    codes, n_desks = book.desk.codes, len(book.desk.labels)
    cores = len(os.sched_getaffinity(0))
    for threads in sorted({1, cores}):  # what workbench var runs in process: every core
        t0 = time.perf_counter()
        scen_book = ScenarioBook(book, market, threads=threads)
        setup = time.perf_counter() - t0
        group_pnl_by_block(scen_book, values[:BLOCK], codes, n_desks)  # compilation

        def revalue(sb: ScenarioBook = scen_book) -> None:
            group_pnl_by_block(sb, values, codes, n_desks)

        runs = _timed(revalue, args.runs)
        print(f"in process, {threads} thread(s) (set-up {setup:.2f} s, not timed): "
              f"{_fmt(runs, n_s)}; {base / statistics.median(runs):.1f}× the baseline")  # fmt: skip

    medians = {}
    for workers in (int(w) for w in args.workers.split(",")):
        times, overhead, peaks, tasks = _on_dask(book, market, values, workers, args.runs)
        medians[workers] = statistics.median(times)
        print(f"Dask, {workers} worker(s), {tasks} tasks of {BLOCK} scenarios: "
              f"{_fmt(times, n_s)}; {base / medians[workers]:.1f}× the baseline; overhead "
              f"{overhead * 1e3:.2f} ms per trivial task; workers' peak memory "
              f"{', '.join(f'{p:.0f}' for p in peaks)} MiB")  # fmt: skip
    if 1 in medians and 2 in medians:
        print(f"1 → 2 workers: {medians[1] / medians[2]:.2f}× faster")
    if big is not None:
        times, _, peaks, _ = _on_dask(big, market, values, 2, 1)
        print(f"{len(big):,} positions, Dask 2 workers: {_fmt(times, n_s)}; workers' peak "
              f"memory {', '.join(f'{p:.0f}' for p in peaks)} MiB")  # fmt: skip
    print(f"this process's peak memory: {_peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
