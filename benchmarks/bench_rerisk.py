"""Full re-risk of the reference book in one process: pv + 4 Greeks + key-rate DV01s.

Target (docs/benchmarks.md): median ≤ 1.0 s for 40,000 positions on 2 cores, file I/O and
start-up (schedules, matrices, random numbers, compilation) reported separately. The baseline in
the same run is the same re-risk with the vol-spline cache switched off (every lookup rebuilds
the surface spline, as the essay's first FX worker did).

Run: ``python benchmarks/bench_rerisk.py [--positions 40000] [--repeat 7]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.market.io import load_market, save_market
from workbench.market.reference import generate_reference_market
from workbench.pricing.portfolio import PortfolioPricer


def _fmt(xs: list[float]) -> str:
    med = statistics.median(xs)
    return f"median {med:7.3f} s  (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        market = generate_reference_market()
        frame = generate_reference_book(market, positions=args.positions, seed=1)
        t_gen = time.perf_counter() - t0
        mpath, bpath = Path(tmp, "market.json"), Path(tmp, "book.parquet")
        save_market(market, mpath)
        save_book(frame, bpath)
        t0 = time.perf_counter()
        market = load_market(mpath)
        book = load_book(bpath, market=market)
        t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    pricer = PortfolioPricer(book, market)
    t_setup = time.perf_counter() - t0
    pricer.risk(market)  # first call: compilation and cold caches
    runs: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        pricer.forget_results()  # tranche losses and smiles are kept for unchanged quotes
        t0 = time.perf_counter()
        res = pricer.risk(market)
        runs.append(time.perf_counter() - t0)
        for k, v in res.timings.items():
            stages.setdefault(k, []).append(v)

    pricer.spline_cache.enabled = False
    base_runs: list[float] = []
    for _ in range(max(3, args.repeat // 2)):
        pricer.forget_results()
        t0 = time.perf_counter()
        pricer.risk(market)
        base_runs.append(time.perf_counter() - t0)
    pricer.spline_cache.enabled = True

    print(f"positions: {len(book):,}")
    print(f"generate (not part of re-risk): {t_gen:.3f} s")
    print(f"file load + validation:         {t_load:.3f} s")
    print(f"set-up (one-off):               {t_setup:.3f} s")
    print(f"full re-risk:                   {_fmt(runs)}")
    for stage, times in stages.items():
        print(f"  {stage:<14} median {statistics.median(times):7.3f} s")
    print(f"baseline, spline cache off:     {_fmt(base_runs)}")
    ratio = statistics.median(base_runs) / statistics.median(runs)
    print(f"ratio baseline / re-risk:       {ratio:.2f}x")
    print(f"key-rate rows:                  {res.key_rates.values.size:,}")


if __name__ == "__main__":
    main()
