"""Run every benchmark script in this folder, one after another, and print a report.

The report starts with the machine (CPU model, cores, memory, Python, NumPy) so that the numbers
copied into docs/benchmarks.md always say where they were measured.

Run: ``python benchmarks/run_all.py [--out report.txt] [names …]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _machine import machine

HERE = Path(__file__).resolve().parent
LONG: dict[str, list[str]] = {
    "bench_soak": ["--minutes", "5"],
    "bench_chaos": ["--worker-kills", "10", "--other-kills", "1"],
    "bench_fuzz": ["--ticks", "200000", "--requests", "2000"],
}
"""The arguments of the long benchmarks in a full run (their own defaults take an hour for the
soak, ~15 minutes for the chaos): run them alone for the figures of docs/benchmarks.md."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("names", nargs="*", help="benchmark names (default: all)")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if any(n in s.stem for n in args.names)]
    lines = [f"machine: {machine()}", ""]
    for script in scripts:
        print(f"== {script.name}", flush=True)
        proc = subprocess.run(
            [sys.executable, str(script), *LONG.get(script.stem, [])],
            capture_output=True,
            text=True,
            check=False,
        )
        out = proc.stdout + (proc.stderr if proc.returncode else "")
        print(out, flush=True)
        lines += [f"== {script.name} (exit {proc.returncode})", out]
    if args.out:
        args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
