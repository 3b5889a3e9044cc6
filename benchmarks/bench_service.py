"""The whole service on the reference book: latency, full re-risk, restart time, memory.

Targets (docs/benchmarks.md), 2 cores: at 5,000 ticks/s, p99 from conflation flush to the
aggregated snapshot published ≤ 50 ms; full re-risk through the service (every position
repriced by its worker) ≤ 1.5 s; worker ``kill -9`` → its positions fresh again ≤ 3 s; total
PSS of all processes ≤ 1.5 GB (the warm standby included); no position stale for more than
0.5 s after a worker dies (the standby takes its slot).

The kills: ``--kills`` random workers, one at a time, each once the standby is ready again;
then, as the baseline in the same run, the same number on a second service started without
a standby (``--no-baseline`` skips it).

Run: ``python benchmarks/bench_service.py [--positions 40000] [--rate 5000] [--seconds 30]``
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

from _reference import service_parser

import workbench
from workbench.book.reference import generate_reference_book
from workbench.market.io import save_market
from workbench.market.reference import generate_reference_market


def _pss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _standby_ready(svc: workbench.Client) -> bool:
    sb = svc.status().get("standby")
    return bool(sb and sb["state"] == "ready")


def _print_pss(svc: workbench.Client, when: str) -> None:
    """Print the total PSS of the service's processes, the standby included."""
    st = svc.status()
    pids = [p["pid"] for p in st["processes"]] + [svc.descriptor.pid]
    if st.get("standby"):
        pids.append(st["standby"]["pid"])
    pss = sum(_pss_mb(p) for p in pids)
    print(f"total PSS of {len(pids)} processes (standby included){when}: {pss:.0f} MB")


def _kills(svc: workbench.Client, n: int, seed: int, *, standby: bool) -> list[float]:
    """Seconds from ``kill -9`` of a random worker until none of the book is stale, n times."""
    rng = random.Random(seed)
    out: list[float] = []
    for _ in range(n):
        deadline = time.monotonic() + 120
        while standby and not _standby_ready(svc) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        workers = [p for p in svc.status()["processes"] if p["role"].startswith("worker:")]
        victim = rng.choice(workers)
        os.kill(victim["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        seen_stale = False
        while time.monotonic() - t0 < 60:
            frame = svc.aggregate(("asset_class",))
            stale = int(frame["stale"].sum())
            seen_stale = seen_stale or stale > 0
            if seen_stale and stale == 0:
                break
            time.sleep(0.01)
        out.append(time.monotonic() - t0)
        print(f"  kill -9 {victim['name']} → fresh again: {out[-1]:.2f} s")
    return out


def _summary(what: str, xs: list[float]) -> str:
    med = statistics.median(xs)
    return f"{what}: median {med:.2f} s, min {min(xs):.2f}, max {max(xs):.2f} (n={len(xs)})"


def main() -> None:
    parser = service_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true", dest="no_baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        market = generate_reference_market()
        save_market(market, Path(tmp, "market.json"))
        generate_reference_book(market, positions=args.positions, seed=1).write_parquet(
            Path(tmp, "book.parquet")
        )
        t0 = time.monotonic()
        svc = workbench.start(
            Path(tmp, "book.parquet"), Path(tmp, "market.json"), name="bench", rate=args.rate,
            run_root=Path(tmp, "run"),
        )  # fmt: skip
        print(f"start-up to ready: {time.monotonic() - t0:.1f} s")
        try:
            time.sleep(args.seconds)
            st = svc.status()
            procs = {p["name"]: p for p in st["processes"]}
            full = {n: p["stats"].get("full_reprice_ms", 0.0) for n, p in procs.items()
                    if n.split("-")[0] in ("rates", "fx", "credit", "equity")}  # fmt: skip
            print("full re-risk per worker at start-up (ms):",
                  {k: round(v) for k, v in sorted(full.items())})  # fmt: skip
            print(f"full re-risk through the service (slowest worker): {max(full.values()):.0f} ms")
            agg = st.get("aggregator", {})
            print(f"flush → snapshot published: p50 {agg.get('flush_to_publish_p50_ms', 0):.1f} ms,"
                  f" p99 {agg.get('flush_to_publish_p99_ms', 0):.1f} ms")  # fmt: skip
            ing = procs["ingest"]["stats"]
            print(f"ingest: accepted {ing.get('accepted', 0):.0f}, rejected "
                  f"{ing.get('rejected', 0):.0f}, conflation ratio "
                  f"{ing.get('conflation_ratio', 0):.2f}, feed→accept p99 "
                  f"{ing.get('latency_p99_us', 0):.0f} µs")  # fmt: skip
            for n in sorted(full):
                s = procs[n]["stats"]
                print(f"  {n}: reprices {s.get('reprices', 0):.0f}, last "
                      f"{s.get('last_reprice_ms', 0):.1f} ms")  # fmt: skip
            runs = []
            for _ in range(3):  # every quote dirty, on the live service under the feed's load
                t0 = time.monotonic()
                per_worker = svc.reprice_all()
                runs.append((time.monotonic() - t0, per_worker))
            walls = sorted(w for w, _ in runs)
            last = runs[-1][1]
            per = {w: round(ms) for w, ms in zip(last["worker"], last["ms"], strict=True)}
            print(f"full re-risk on demand (every position, Greeks; wall, 3 runs): "
                  f"median {walls[1] * 1e3:.0f} ms, min {walls[0] * 1e3:.0f}, "
                  f"max {walls[2] * 1e3:.0f}; per worker (last run, ms): {per}")  # fmt: skip
            deadline = time.monotonic() + 120
            while not _standby_ready(svc) and time.monotonic() < deadline:
                time.sleep(0.2)
            _print_pss(svc, "")
            with_standby = _kills(svc, args.kills, seed=7, standby=True)
            time.sleep(10.0)  # the takers' pages diverge from their successors' as they work
            _print_pss(svc, f", 10 s after {args.kills} kills (each slot taken by a standby)")
        finally:
            svc.stop()
        print(_summary("kill -9 → fresh, warm standby", with_standby))
        if args.no_baseline:
            return
        svc = workbench.start(
            Path(tmp, "book.parquet"), Path(tmp, "market.json"), name="benchbase",
            rate=args.rate, run_root=Path(tmp, "run"), standby=False,
        )  # fmt: skip
        try:
            time.sleep(5.0)
            without = _kills(svc, args.kills, seed=7, standby=False)
        finally:
            svc.stop()
        print(_summary("kill -9 → fresh, without a standby (baseline, same run)", without))
        ratio = statistics.median(without) / statistics.median(with_standby)
        print(f"median ratio baseline / standby: {ratio:.1f}×")


if __name__ == "__main__":
    main()
