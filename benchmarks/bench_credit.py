"""Credit book with Greeks: 1,200 index + 800 tranche positions on 4 indices.

Target (docs/benchmarks.md): median ≤ 300 ms for pv, CS01, gamma and correlation vega of all
2,000 positions. Timed in the same run: the semi-analytic recursion (the default model), the
shared Monte Carlo (one 50,000-path simulation per index, the essay's fix), and the baseline
that prices each tranche with its own simulation (the essay's first credit worker), timed on a
sample of tranches and scaled to all of them. The kept tranche losses are dropped before each
timed run (repeats on the same quotes would otherwise reuse them).

Run: ``python benchmarks/bench_credit.py [--repeat 7] [--sample 8]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine

from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.market.reference import generate_reference_market
from workbench.pricing.credit_book import CreditPricer
from workbench.pricing.curves import CurveSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sample", type=int, default=8, help="tranches timed for the baseline")
    parser.add_argument("--paths", type=int, default=50_000)
    args = parser.parse_args()

    market = generate_reference_market()
    frame = generate_reference_book(market, positions=40_000, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "book.parquet")
        save_book(frame, path)
        book = load_book(path, market=market)
    rows = np.sort(np.concatenate([book.rows("CDX_INDEX"), book.rows("CDX_TRANCHE")]))
    curves = CurveSet(market)

    def timed(pricer: CreditPricer) -> list[float]:
        pricer.risk(market, curves)  # compile and warm
        runs = []
        for _ in range(args.repeat):
            pricer.forget()
            t0 = time.perf_counter()
            pricer.risk(market, curves)
            runs.append(time.perf_counter() - t0)
        return runs

    t0 = time.perf_counter()
    mc = CreditPricer(book, rows, market, n_paths=args.paths, method="mc")
    setup = time.perf_counter() - t0
    mc_runs = timed(mc)
    rec_runs = timed(CreditPricer(book, rows, market, method="recursion"))

    tranches = book.rows("CDX_TRANCHE")
    sample = tranches[: args.sample]
    naive = []
    for r in sample:
        one = CreditPricer(book, np.array([r]), market, n_paths=args.paths, method="mc")
        one.risk(market, curves)  # same work, its own simulation
        one.forget()
        t0 = time.perf_counter()
        one.risk(market, curves)
        naive.append(time.perf_counter() - t0)
    naive_total = statistics.median(naive) * tranches.size

    print(machine(f"numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}"))
    print(f"positions: {rows.size:,} ({tranches.size} tranches), paths {args.paths:,}")
    print(f"set-up (random numbers, schedules):  {setup:.3f} s")
    for label, runs in (("recursion", rec_runs), ("shared Monte Carlo", mc_runs)):
        print(f"credit risk with Greeks, {label}:  median {statistics.median(runs) * 1e3:7.1f} ms "
              f"(min {min(runs) * 1e3:.1f}, max {max(runs) * 1e3:.1f}, n={len(runs)})")  # fmt: skip
    print(f"baseline, one simulation per tranche: {statistics.median(naive) * 1e3:.1f} ms per "
          f"tranche × {tranches.size} = {naive_total:.1f} s (sample of {sample.size})")  # fmt: skip
    mc_med, rec_med = statistics.median(mc_runs), statistics.median(rec_runs)
    print(f"ratio baseline / shared simulation: {naive_total / mc_med:.0f}x; "
          f"baseline / recursion: {naive_total / rec_med:.0f}x; "
          f"shared simulation / recursion: {mc_med / rec_med:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
