"""The end-of-day report on the reference book, batch mode, end to end.

Target (docs/benchmarks.md): ≤ 60 s for 40,000 positions on 2 cores, from the command to the
published folder: batch re-risk (load, set-up, pricing, key rates, curves), kernel start and
notebook (tables, plots), HTML export and publish. Runs in a subprocess, as a scheduler would,
with private Jupyter and Numba folders; the first run pays Numba's compilation, the others use
its cache. Prints the stage breakdown of every run and the median.

Run: ``python benchmarks/bench_eod.py [--positions 40000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workbench.book.reference import generate_reference_book
from workbench.market.io import save_market
from workbench.market.reference import generate_reference_market

STAGES = ("snapshot", "notebook", "html")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-eod-") as tmp:
        folder = Path(tmp)
        market = generate_reference_market()
        save_market(market, folder / "market.json")
        generate_reference_book(market, positions=args.positions, seed=1).write_parquet(
            folder / "book.parquet"
        )
        env = dict(os.environ)
        for var in ("HOME", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
            (folder / var).mkdir()
            env[var] = str(folder / var)
        env.setdefault("NUMBA_CACHE_DIR", str(folder / "numba"))
        command = [
            sys.executable,
            "-m",
            "workbench.reports.cli",
            "eod",
            "--as-of",
            market.as_of.isoformat(),
            "--out",
            str(folder / "reports"),
            "--batch",
            "--book",
            str(folder / "book.parquet"),
            "--market",
            str(folder / "market.json"),
            "--quiet",
        ]
        walls: list[float] = []
        print(f"EOD report, batch, {args.positions:,} positions")
        print(f"{'run':<5}{'wall s':>9}" + "".join(f"{s + ' s':>12}" for s in STAGES))
        for i in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run(command, env=env, check=True)
            wall = time.perf_counter() - t0
            walls.append(wall)
            summary = json.loads(
                (folder / "reports" / market.as_of.isoformat() / "summary.json").read_text()
            )
            t = summary["timings_s"]
            print(f"{i + 1:<5}{wall:>9.2f}" + "".join(f"{t[s]:>12.2f}" for s in STAGES))
        rest = statistics.median(walls)
        print(
            f"median wall {rest:.2f} s (min {min(walls):.2f}, max {max(walls):.2f}, "
            f"n={len(walls)}); target 60 s"
        )
        print("wall = process start, imports, the three stages and publish")


if __name__ == "__main__":
    main()
