"""Soak: the whole service for an hour under the feed, sampled every minute for growth and loss.

Setting: the reference book (40,000 positions) and market, the synthetic feed at 5,000 ticks/s,
the default service (one worker per asset class, a warm standby), 2 shared cores; what else
runs on the machine is measured and printed (processes using ≥ 5% of a core) at the start and
the end. ``--minutes N`` (60) minutes after the service is ready; the first minute is the
warm-up: the first sample is taken after it, at minute 1, and growth is measured from that
sample to the last one.

Sampled every minute:

* RSS and PSS of every process (``/proc/<pid>/smaps_rollup``: supervisor, feed, ingest,
  workers, aggregator, standby) and their totals; open file descriptors per process
  (``/proc/<pid>/fd``); the bytes of this service's segments in ``/dev/shm`` (pages allocated,
  and how many segments);
* flush → snapshot published over that minute: the difference of the aggregator's cumulative
  ``flush_to_publish`` bucket counts (its heartbeats, as ``Client.latency_buckets`` reads
  them) between two samples: the p99's bucket (bounds 25, 30, 40, 50, 75, 100 ms …), a linear
  interpolation inside it, and the exact mean (sum / count);
* ticks: the feed's ``sent`` (its heartbeat) against the ingestion's ``offered`` (= accepted +
  rejected, checked): ``sent − offered`` at the sample is what was in flight, or counted by the
  two heartbeats up to 0.5 s apart, not a loss (also shown corrected by the feed's rate for
  the age difference of the two heartbeats); ticks lost, exactly: the feed's ``dropped`` plus
  the ingestion's ``gap_ticks`` (sequence numbers a quote skipped between two accepted ticks)
  less the ticks rejected for their value (they leave such a gap too). At the end the feed is
  stopped (SIGSTOP, ≤ 4 s) until the ingestion has taken everything: ``sent`` (its last
  heartbeat, from before the stop) − ``offered`` must then be ≤ 0.

Goals: growth first → last sample < 5% for total RSS, total PSS, open files and shared memory
(per process shown too); no tick lost; no process restarted. Exit 1 on a failed goal. The
samples are written to ``--out`` (CSV, or Parquet for a ``.parquet`` name) after every
minute. The service runs in
a temporary run folder and is stopped (every process and segment of it removed) at the end, on
failure and on Ctrl-C.

Run: ``python benchmarks/bench_soak.py [--minutes 60] [--out soak.csv]``
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _probes import (
    bucket_quantile,
    memory_kb,
    open_fds,
    segments,
    service_pids,
    setting_lines,
    status_proc,
    stop_service,
)
from _reference import reference_service, service_parser

import workbench

NAME = "soak"
VALUE_REJECTS = ("nan", "non_positive", "out_of_range")
"""Reject reasons of a tick checked for its value (its sequence number is then skipped)."""
MB = 1024.0


def _stat(st: dict[str, Any], proc: str, key: str) -> float:
    p = status_proc(st, proc)
    return float(p["stats"].get(key, 0.0)) if p and p["stats"] else 0.0


def _sample(svc: workbench.Client, minute: int, t0: float) -> tuple[dict[str, Any], np.ndarray]:
    """One sample row and the aggregator's cumulative flush → publish histogram (counts and
    sum as the last element)."""
    st = svc.status()
    row: dict[str, Any] = {"minute": minute, "t_s": round(time.monotonic() - t0, 1)}
    rss = pss = fds = 0
    for name, pid in sorted(service_pids(svc).items()):
        mem = memory_kb(pid)
        nfd = open_fds(pid)
        row[f"{name}_pid"] = pid
        row[f"{name}_rss_mb"] = mem[0] / MB if mem else float("nan")
        row[f"{name}_pss_mb"] = mem[1] / MB if mem else float("nan")
        row[f"{name}_fds"] = nfd if nfd is not None else -1
        if mem:
            rss, pss = rss + mem[0], pss + mem[1]
        fds += nfd or 0
    row["rss_mb"], row["pss_mb"], row["fds"] = rss / MB, pss / MB, fds
    segs = segments(svc.descriptor.pid, svc.name)
    row["shm_segments"] = len(segs)
    row["shm_size_bytes"] = sum(s for s, _ in segs.values())
    row["shm_bytes"] = sum(a for _, a in segs.values())
    feed, ing = status_proc(st, "feed"), status_proc(st, "ingest")
    row["sent"] = _stat(st, "feed", "sent")
    row["dropped"] = _stat(st, "feed", "dropped")
    for key in ("offered", "accepted", "rejected", "gap_ticks"):
        row[key] = _stat(st, "ingest", key)
    row["value_rejects"] = sum(_stat(st, "ingest", f"rejected.{r}") for r in VALUE_REJECTS)
    row["in_flight"] = row["sent"] - row["offered"]
    # the feed's count is from age_f seconds ago, the ingestion's from age_i: bring the feed's
    # to the ingestion's instant with the feed's own rate
    age_f = float(feed["heartbeat_age_s"]) if feed else 0.0
    age_i = float(ing["heartbeat_age_s"]) if ing else 0.0
    rate = _stat(st, "feed", "rate")
    row["in_flight_est"] = row["sent"] + rate * (age_f - age_i) - row["offered"]
    row["lost"] = row["dropped"] + row["gap_ticks"] - row["value_rejects"]
    row["restarts"] = sum(int(p["restarts"]) for p in st["processes"])
    agg = status_proc(st, "aggregator")
    wire = (agg or {}).get("histograms", {}).get("flush_to_publish")
    hist = np.asarray(wire, dtype=np.float64) if wire else np.zeros(1)
    return row, hist


def _latency(row: dict[str, Any], hist: np.ndarray, prev: np.ndarray | None) -> None:
    """The minute's flush → publish figures from two cumulative histograms."""
    if prev is None or prev.size != hist.size or np.any(hist[:-1] < prev[:-1]):
        prev = np.zeros_like(hist)  # a restarted aggregator counts from 0 again
    diff = hist - prev
    counts, total_ms = diff[:-1], float(diff[-1])
    n = float(counts.sum())
    lo, hi, inside = bucket_quantile(counts, 0.99)
    row.update(flushes=int(n), p99_lo_ms=lo, p99_hi_ms=hi, p99_interp_ms=inside,
               mean_ms=total_ms / n if n else float("nan"))  # fmt: skip


def _line(row: dict[str, Any], note: str) -> str:
    return (
        f"min {row['minute']:>3} (t={row['t_s']:>6.0f} s){note}: RSS {row['rss_mb']:,.0f} MB, "
        f"PSS {row['pss_mb']:,.0f} MB, fds {row['fds']}, shm {row['shm_bytes'] / 2**20:.2f} MB "
        f"({row['shm_segments']} segments); flush→publish p99 {row['p99_lo_ms']:g}–"
        f"{row['p99_hi_ms']:g} ms (≈{row['p99_interp_ms']:.0f}), mean {row['mean_ms']:.1f} ms, "
        f"n={row['flushes']:,}; ticks sent {row['sent']:,.0f}, offered {row['offered']:,.0f} "
        f"(accepted {row['accepted']:,.0f} + rejected {row['rejected']:,.0f}), sent−offered "
        f"{row['in_flight']:,.0f} (≈{row['in_flight_est']:,.0f} at one instant), lost "
        f"{row['lost']:,.0f}; restarts {row['restarts']}"
    )


def _write(rows: list[dict[str, Any]], out: Path) -> pl.DataFrame:
    """The samples so far to ``out`` (Parquet for a ``.parquet`` name, else CSV)."""
    frame = pl.DataFrame(rows)
    if out.suffix == ".parquet":
        frame.write_parquet(out)
    else:
        frame.write_csv(out)
    return frame


def _growth(first: float, last: float) -> float:
    return (last - first) / first * 100.0 if first else float("nan")


def _end_accounting(svc: workbench.Client) -> tuple[float, float, float]:
    """Stop the feed until the ingestion has counted every tick it will get; (sent by the
    feed's last heartbeat, seconds that heartbeat is older than the stop, offered)."""
    feed = status_proc(svc.status(), "feed")
    if feed is None:
        raise RuntimeError("no feed in the status")
    pid = int(feed["pid"])
    t_stop = time.monotonic()
    age_at_stop = float(feed["heartbeat_age_s"])
    os.kill(pid, signal.SIGSTOP)
    try:
        offered: list[float] = []
        while time.monotonic() - t_stop < 4.0:
            t = time.monotonic()
            st = svc.status()
            ing = status_proc(st, "ingest")
            if ing and t - float(ing["heartbeat_age_s"]) > t_stop + 0.1:
                offered.append(float(ing["stats"].get("offered", 0.0)))
                if len(offered) >= 2 and offered[-1] == offered[-2]:
                    sent = _stat(st, "feed", "sent")
                    return sent, age_at_stop, offered[-1]
            time.sleep(0.25)
    finally:
        os.kill(pid, signal.SIGCONT)
    raise RuntimeError("the ingestion's count did not settle within 4 s of the feed's stop")


def main() -> int:
    parser = service_parser(__doc__)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("soak.csv"))
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes: at least 2 (a warm-up minute, then samples)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below
    rows: list[dict[str, Any]] = []
    goals: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        svc: workbench.Client | None = None
        try:
            t_start = time.monotonic()
            svc, _, _ = reference_service(Path(tmp), NAME, positions=args.positions,
                                          rate=args.rate)  # fmt: skip
            print(f"service: {args.positions:,} positions, synthetic feed at {args.rate:,.0f} "
                  f"ticks/s, workers {svc.descriptor.config.workers}, standby on; ready "
                  f"after {time.monotonic() - t_start:.1f} s; sampled every minute for "
                  f"{args.minutes} minutes, the first minute a warm-up (growth from minute 1 "
                  f"to minute {args.minutes})")  # fmt: skip
            for line in setting_lines(svc):
                print(line)
            t0 = time.monotonic()
            row, prev = _sample(svc, 0, t0)
            _latency(row, prev, None)
            print(_line(row, " start, not used"), flush=True)
            rows.append(row)
            for minute in range(1, args.minutes + 1):
                time.sleep(max(t0 + 60.0 * minute - time.monotonic(), 0.0))
                row, hist = _sample(svc, minute, t0)
                _latency(row, hist, prev)
                prev = hist
                rows.append(row)
                print(_line(row, " (first sample)" if minute == 1 else ""), flush=True)
                _write(rows, args.out)  # every minute: an interrupted soak keeps its samples
            sent, age, offered = _end_accounting(svc)
            for line in setting_lines(svc):
                print(f"(at the end) {line}")
        finally:
            forced = stop_service(svc)
            if forced:
                print(f"clean-up by force: {'; '.join(forced)}")
    frame = _write(rows, args.out)
    print(f"samples written to {args.out} ({frame.height} rows, {frame.width} columns)")

    first, last = rows[1], rows[-1]
    print(f"growth from minute 1 to minute {last['minute']} (after the warm-up minute):")
    for key, label in (("rss_mb", "total RSS"), ("pss_mb", "total PSS"), ("fds", "open files"),
                       ("shm_bytes", "shared memory")):  # fmt: skip
        g = _growth(float(first[key]), float(last[key]))
        goals[f"{label} grows < 5% ({first[key]:,.1f} → {last[key]:,.1f}: {g:+.2f}%)"] = g < 5.0
    names = sorted({k[: -len("_pss_mb")] for k in first if k.endswith("_pss_mb")})
    for n in names:
        same = first.get(f"{n}_pid") == last.get(f"{n}_pid")
        parts = []
        for key, what in (("rss_mb", "RSS MB"), ("pss_mb", "PSS MB"), ("fds", "fds")):
            a, b = float(first.get(f"{n}_{key}", 0)), float(last.get(f"{n}_{key}", 0))
            parts.append(f"{what} {a:,.1f} → {b:,.1f} ({_growth(a, b):+.1f}%)")
        print(f"  {n:<11} {', '.join(parts)}" + ("" if same else "  (pid changed: restarted)"))
    p99s = [r["p99_interp_ms"] for r in rows[1:]]
    print(f"flush→publish p99 per minute (interpolated in its bucket): median "
          f"{float(np.nanmedian(p99s)):.0f} ms, min {np.nanmin(p99s):.0f}, max "
          f"{np.nanmax(p99s):.0f} (n={len(p99s)} minutes); buckets "
          f"{sorted({(r['p99_lo_ms'], r['p99_hi_ms']) for r in rows[1:]})}")  # fmt: skip
    identity = all(r["offered"] == r["accepted"] + r["rejected"] for r in rows)
    print(f"ticks over the run: sent {last['sent']:,.0f}, offered {last['offered']:,.0f}, "
          f"accepted {last['accepted']:,.0f}, rejected {last['rejected']:,.0f} (of which for "
          f"their value {last['value_rejects']:,.0f}); offered = accepted + rejected in every "
          f"sample: {identity}; feed dropped {last['dropped']:,.0f}, sequence gaps "
          f"{last['gap_ticks']:,.0f}")  # fmt: skip
    print(f"with the feed stopped: sent by its last heartbeat {sent:,.0f} ({age:.2f} s before "
          f"the stop), offered {offered:,.0f}: sent − offered {sent - offered:,.0f} (≤ 0: the "
          f"ticks of those {age:.2f} s are in offered, not yet in sent)")  # fmt: skip
    lost = last["lost"]
    goals[
        f"no tick lost (dropped + sequence gaps − value rejects = {lost:,.0f}; sent − offered "
        f"with the feed stopped {sent - offered:,.0f} ≤ 0)"
    ] = lost == 0 and sent <= offered
    goals[f"no process restarted ({last['restarts']} restarts)"] = last["restarts"] == 0
    print(f"whole run: {time.monotonic() - t_start:.0f} s")
    for goal, ok in goals.items():
        print(f"{'PASS' if ok else 'FAIL'}: {goal}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
