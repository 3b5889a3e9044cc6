"""Chaos on the whole service: ``kill -9`` of random processes under the feed, then what was lost.

Setting: the reference book (40,000 positions) and market, the synthetic feed at 5,000 ticks/s,
the default service (one worker per asset class, a warm standby), 2 shared cores; what else
runs on the machine is measured and printed (processes using ≥ 5% of a core) at the start and
the end. ``--worker-kills N`` (100) ``kill -9`` of a random serving worker and
``--other-kills K`` (5) each of the ingestion, the aggregator and the feed, in a random order
(``--seed``); each kill comes a random gap (``--gap-min`` … ``--gap-max`` s) after the service
has recovered from the previous one, so a worker may die with the standby ready (it takes the
slot) or not yet ready again (a cold restart).

Measured for each kill:

* positions lost: rows missing from ``positions()`` after recovery, or whose ``row`` /
  ``position_id`` differ from the ones before the first kill (goal: 0);
* seconds stale: for a worker, from the kill until the supervisor has replaced it and no row
  of that worker is stale (its rows' ``stale`` flags read from the shared risk table every
  5 ms); for the aggregator, until a snapshot made after the kill arrives with nothing stale;
  for the ingestion and the feed, until the new process is ready, quotes flow again into the
  quote table (for the feed: a quote with a sequence number of the new feed) and a snapshot
  made after that has nothing stale. Reported as median and max per kind (not goals here;
  ``bench_service.py`` has the targets for workers);
* wrong numbers, after recovery: the feed is stopped (SIGSTOP, at most 4 s: the supervisor
  kills a child silent for 5 s) until the ingestion has flushed every quote it received and two
  ``positions()`` reads 0.25 s apart have the same risk-table generation with nothing stale;
  the quote table is read from shared memory, the frozen book re-priced in this process by
  the batch pricer (``PortfolioPricer``, as ``workbench price``) on exactly those quotes, and
  every position's pv, pv_ccy, delta, gamma, vega (options), corr01 (tranches) and theta
  compared. Tolerance: ``|service - batch| / max(|service|, |batch|, floor) ≤ 1e-9`` where
  ``floor`` is 1% of the position's size (its notional, for equity options notional × spot,
  in USD; for pv_ccy in its currency): values near 0 are compared to the position's size, not
  to themselves, so a difference up to 1e-11 × notional counts as none (a PV is exact only to
  the curve solve's 1e-12 per unit of notional, and Greeks are differences of PVs: a swap's
  gamma differs by ~1e-5 of itself between two warm starts of the solver). The largest
  difference without the floor is printed too. Goal: no value beyond the tolerance. Done
  before the first kill, after every kill of a non-worker, after every 10th worker kill and
  at the end (``--compare-every``).

``--browser``: the desk dashboard (``workbench dashboard``: Voila and its kernel) of the service
stays open in headless Chromium through the kills, as a desk runs it (its processes share the
cores; printed with the setting).

``--supervisor-kill``: then ``kill -9`` of the supervisor: every child (the pids of
``processes.json``) must be gone within 2 s, and the next start of a service must reap every
segment the dead one left in ``/dev/shm`` (listed before and after).

Exit 1 on a failed goal. The service runs in a temporary run folder and is stopped (every
process and segment of it removed) at the end, on failure and on Ctrl-C.

Run: ``python benchmarks/bench_chaos.py [--worker-kills 100] [--other-kills 5] [--supervisor-kill]``
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _probes import (
    Reference,
    SnapshotWatch,
    alive,
    attached,
    freeze_and_read,
    segments,
    service_pids,
    setting_lines,
    status_proc,
    stop_service,
)
from _reference import desk_in_browser, reference_service, service_parser

import workbench
from workbench.engine.processes.partition import worker_rows
from workbench.engine.protocol import messages as msg
from workbench.engine.transport.shm import SHM_DIR, QuoteTable, RiskTable, pid_alive

RECOVERY_TIMEOUT_S = 120.0
NAME = "chaos"


@dataclass
class Kill:
    """One kill and what it cost."""

    n: int
    kind: str
    name: str
    pid: int
    standby_ready: bool | None
    stale_s: float
    lost: int
    recovered: bool
    t_kill_ns: int = 0


class Chaos:
    """The service under test and what is needed to watch it."""

    def __init__(self, svc: workbench.Client, quotes: QuoteTable, risk: RiskTable) -> None:
        self.svc = svc
        self.quotes = quotes
        self.risk = risk
        self.watch = SnapshotWatch(svc)
        self.ref = Reference(svc)
        base = svc.positions().sort("row")
        self.base_rows = base["row"].to_numpy()
        self.base_ids = base["position_id"].to_list()
        self.workers = svc.descriptor.config.workers

    # --- what the client sees ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.svc.status()

    def lost(self) -> int:
        """Rows of the first read missing from ``positions()`` now, or moved or renamed."""
        reply = self.svc.request(msg.PositionsRequest(asset_class=None), timeout_s=10.0)
        now = msg.bytes_to_frame(reply.tables["positions"])
        rows = now["row"].to_numpy()
        ids = now["position_id"].to_list()
        n = min(len(rows), len(self.base_rows))
        same = sum(
            1 for i in range(n) if rows[i] == self.base_rows[i] and ids[i] == self.base_ids[i]
        )
        return len(self.base_rows) - same

    def fresh_snapshot_after(self, t_ns: int, deadline: float) -> bool:
        """Wait for a snapshot made after ``t_ns`` with nothing stale."""
        while time.monotonic() < deadline:
            snap = self.watch.latest(0.2)
            if snap is not None and snap.made_ns > t_ns and snap.stats.get("stale", 1.0) == 0:
                return True
        return False

    # --- kills -------------------------------------------------------------------------

    def kill_worker(self, n: int, rng: random.Random) -> Kill:
        st = self.status()
        workers = [p for p in st["processes"] if str(p["role"]).startswith("worker:")]
        victim = rng.choice(workers)
        name, pid = str(victim["name"]), int(victim["pid"])
        cls, slot = name.rsplit("-", 1)
        rows = worker_rows(self.ref.book, self.ref.market, cls, int(slot), self.workers[cls])
        sb = st.get("standby")
        ready = bool(sb and sb["state"] == "ready")
        t_kill_ns = time.monotonic_ns()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it died by itself meanwhile (e.g. killed for silence)
            print(f"  {name} (pid {pid}) was already gone: its replacement is measured")
        stale_s = float("inf")
        stamps, stale = self.risk.columns["updated_ns"], self.risk.columns["stale"]
        while (time.monotonic_ns() - t_kill_ns) / 1e9 < RECOVERY_TIMEOUT_S:
            # fresh: every row of the slot written since the kill (by its replacement), and
            # none flagged stale (the supervisor flags the slot when it sees the death)
            if int(stamps[rows].min()) > t_kill_ns and not np.count_nonzero(stale[rows]):
                stale_s = (time.monotonic_ns() - t_kill_ns) / 1e9
                break
            time.sleep(0.002)
        recovered = stale_s != float("inf")
        return Kill(n, "worker", name, pid, ready, stale_s, self.lost() if recovered else -1,
                    recovered, t_kill_ns)  # fmt: skip

    def kill_other(self, n: int, name: str) -> Kill:
        p = status_proc(self.status(), name)
        if p is None:
            raise RuntimeError(f"no process {name!r} in the status")
        pid = int(p["pid"])
        t_kill_ns = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        deadline = t0 + RECOVERY_TIMEOUT_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        gen0 = self.quotes.generation  # only the dead ingestion could have moved it since
        ok = False
        while time.monotonic() < deadline:
            p = status_proc(self.status(), name)
            if p is not None and int(p["pid"]) != pid and p["state"] == "ready":
                ok = True
                break
            time.sleep(0.02)
        if ok and name in ("ingest", "feed"):
            ok = False
            while time.monotonic() < deadline:
                if name == "ingest":
                    ok = self.quotes.generation > gen0
                else:  # the new feed's sequence numbers start at its clock, after the kill
                    ok = int(self.quotes.columns["seq"].max()) >= t_kill_ns
                if ok:
                    break
                time.sleep(0.005)
        flowing_ns = time.monotonic_ns() if name != "aggregator" else t_kill_ns
        ok = ok and self.fresh_snapshot_after(flowing_ns, deadline)
        stale_s = time.monotonic() - t0 if ok else float("inf")
        return Kill(n, name, name, pid, None, stale_s, self.lost() if ok else -1, ok)

    # --- comparison --------------------------------------------------------------------

    def compare(self, when: str, tolerance: float) -> bool:
        frozen = freeze_and_read(self.svc, self.quotes)
        res = self.ref.compare(frozen, tolerance)
        worst = ", ".join(f"{m} {v:.0e} ({res.plain[m]:.0e})" for m, v in res.max_rel.items())
        verdict = "ok" if res.beyond == 0 else f"{res.beyond} BEYOND {tolerance:g}"
        print(f"  compare ({when}): feed stopped {frozen.stopped_s:.2f} s (try "
              f"{frozen.attempts}), quote generation {frozen.quote_generation}, "
              f"{res.checked:,} values, batch re-price {res.reprice_s:.2f} s: {verdict}; "
              f"largest relative difference per measure (without the floor): {worst}")  # fmt: skip
        if res.beyond:
            print("  beyond, per product and measure: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(res.beyond_by.items())))  # fmt: skip
            with pl.Config(tbl_rows=20, tbl_cols=10, tbl_width_chars=160):
                print(res.worst)
        return res.beyond == 0

    def close(self) -> None:
        self.watch.close()


def _figures(kills: list[Kill]) -> list[str]:
    lines = []
    groups: dict[str, list[Kill]] = {}
    for k in kills:
        label = k.kind
        if k.kind == "worker":
            label = "worker, standby ready" if k.standby_ready else "worker, no standby ready"
        groups.setdefault(label, []).append(k)
    for label, ks in sorted(groups.items()):
        xs = [k.stale_s for k in ks if k.recovered]
        failed = sum(not k.recovered for k in ks)
        lost = sum(max(k.lost, 0) for k in ks)
        if xs:
            fig = (f"seconds stale median {statistics.median(xs):.2f}, min {min(xs):.2f}, "
                   f"max {max(xs):.2f}")  # fmt: skip
        else:
            fig = "no recovery measured"
        extra = f", {failed} NOT RECOVERED in {RECOVERY_TIMEOUT_S:.0f} s" if failed else ""
        lines.append(f"  {label:<26} n={len(ks):>3}: {fig}; positions lost {lost}{extra}")
    return lines


def _takeover_lines(log_path: Path, kills: list[Kill]) -> list[str]:
    """Where each worker kill's stale time went, from the service log's monotonic stamps:
    the kill → the supervisor's order to the standby → the standby (after forking its
    successor) starts to reprice → its rows written."""
    exits: list[tuple[int, str]] = []
    readies: list[tuple[int, str, float, float]] = []
    for line in log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec.get("event") == "child_exited" and rec.get("standby"):
            exits.append((int(rec["mono_ns"]), str(rec["child"])))
        elif rec.get("event") == "ready" and rec.get("took_over"):
            readies.append((int(rec["mono_ns"]), str(rec["role"]).split(":")[-1],
                            float(rec["ms"]), float(rec.get("cpu_ms", "nan"))))  # fmt: skip
    lines = []
    for k in kills:
        if k.kind != "worker" or not k.recovered:
            continue
        order = next((t for t, c in exits if c == k.name and t >= k.t_kill_ns), None)
        ready = next((r for r in readies if r[1] == k.name and r[0] >= k.t_kill_ns), None)
        if order is None or ready is None:
            lines.append(f"  kill {k.n}: {k.name}: no standby takeover in the log")
            continue
        start_ns = ready[0] - ready[2] * 1e6
        lines.append(
            f"  kill {k.n}: {k.name}: order {(order - k.t_kill_ns) / 1e6:.0f} ms, reprice "
            f"starts {(start_ns - k.t_kill_ns) / 1e6:.0f} ms, reprice {ready[2]:.0f} ms "
            f"({ready[3]:.0f} ms of CPU), rows fresh {k.stale_s * 1e3:.0f} ms after the kill"
        )
    return lines


def _supervisor_kill(
    svc: workbench.Client, folder: Path, positions: int, rate: float
) -> tuple[bool, bool, workbench.Client | None]:
    """kill -9 the supervisor; every child gone ≤ 2 s? The next start reaps its segments?"""
    sup = svc.descriptor.pid
    pids = {n: p for n, p in service_pids(svc).items() if n != "supervisor"}
    before = sorted(segments(sup, svc.name))
    print(f"  children (processes.json): {', '.join(f'{n} {p}' for n, p in sorted(pids.items()))}")
    print(f"  segments of pid {sup} before: {', '.join(before)}")
    os.kill(sup, signal.SIGKILL)
    t0 = time.monotonic()
    os.waitpid(sup, 0)  # the supervisor is this process's child (workbench.start)
    while alive(pids) and time.monotonic() - t0 < 10.0:
        time.sleep(0.002)
    gone_s = time.monotonic() - t0
    left = alive(pids)
    children_ok = not left and gone_s <= 2.0
    print(f"  kill -9 supervisor (pid {sup}): every child gone after {gone_s:.3f} s"
          + (f"; STILL RUNNING: {left}" if left else ""))  # fmt: skip
    after_kill = sorted(segments(sup, svc.name))
    print(f"  segments of pid {sup} after the kill: {', '.join(after_kill) or 'none'}")
    t1 = time.monotonic()
    nxt, _, _ = reference_service(folder, f"{NAME}next", positions=positions, rate=rate)
    reaped = list(nxt.status().get("reaped_at_start", []))
    remaining = sorted(segments(sup, svc.name))
    print(f"  next start ({time.monotonic() - t1:.1f} s to ready, pid {nxt.descriptor.pid}): "
          f"reaped at start {', '.join(n for n in reaped if f'_{sup}_' in n) or 'none'}; "
          f"segments of pid {sup} left: {', '.join(remaining) or 'none'}")  # fmt: skip
    others = sorted(set(after_kill) - set(reaped))
    if others and not remaining:
        print(f"  (not reaped by this start but gone: {', '.join(others)}: another service's "
              "start on this machine reaped them first)")  # fmt: skip
    reaped_ok = bool(after_kill) and not remaining
    return children_ok, reaped_ok, nxt


def main() -> int:
    parser = service_parser(__doc__)
    parser.add_argument("--worker-kills", type=int, default=100, dest="worker_kills")
    parser.add_argument("--other-kills", type=int, default=5, dest="other_kills",
                        help="kills of each of ingest, aggregator and feed")  # fmt: skip
    parser.add_argument("--gap-min", type=float, default=1.0, dest="gap_min")
    parser.add_argument("--gap-max", type=float, default=5.0, dest="gap_max")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--compare-every", type=int, default=10, dest="compare_every",
                        help="compare the numbers after every n-th worker kill")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=1e-9)
    parser.add_argument("--supervisor-kill", action="store_true", dest="supervisor_kill")
    parser.add_argument("--browser", action="store_true", help="the desk open in Chromium")
    parser.add_argument("--keep-log", type=Path, default=None, dest="keep_log",
                        help="copy the service log here at the end")  # fmt: skip
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below

    rng = random.Random(args.seed)
    plan = ["worker"] * args.worker_kills
    plan += ["ingest", "aggregator", "feed"] * args.other_kills
    rng.shuffle(plan)
    goals: dict[str, bool] = {}
    kills: list[Kill] = []
    t_run = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp,
        contextlib.ExitStack() as desk,
    ):
        svc: workbench.Client | None = None
        nxt: workbench.Client | None = None
        chaos: Chaos | None = None
        try:
            t0 = time.monotonic()
            svc, root, _ = reference_service(Path(tmp), NAME, positions=args.positions,
                                             rate=args.rate)  # fmt: skip
            if args.browser:  # the user's setting: the desk dashboard drawn in a browser
                desk.enter_context(desk_in_browser(Path(tmp), root, NAME))
                print("attached: the desk dashboard (Voila, its kernel) in headless Chromium")
            print(f"service: {args.positions:,} positions, synthetic feed at {args.rate:,.0f} "
                  f"ticks/s, workers {svc.descriptor.config.workers}, standby on; ready "
                  f"after {time.monotonic() - t0:.1f} s")  # fmt: skip
            for line in setting_lines(svc):
                print(line)
            print(f"plan (seed {args.seed}): {args.worker_kills} worker kills, "
                  f"{args.other_kills} each of ingest, aggregator, feed, in random order, "
                  f"each {args.gap_min:g}-{args.gap_max:g} s after the previous recovery; "
                  f"numbers compared before the first kill, after every non-worker kill, "
                  f"after every {args.compare_every}th worker kill and at the end "
                  f"(tolerance {args.tolerance:g} relative, floor 1% of the position's "
                  f"notional)")  # fmt: skip
            with attached(svc) as (quotes, risk):
                chaos = Chaos(svc, quotes, risk)
                time.sleep(3.0)
                right = chaos.compare("before the first kill", args.tolerance)
                worker_kills = 0
                for n, kind in enumerate(plan, 1):
                    time.sleep(rng.uniform(args.gap_min, args.gap_max))
                    if kind == "worker":
                        k = chaos.kill_worker(n, rng)
                        worker_kills += 1
                    else:
                        k = chaos.kill_other(n, kind)
                    kills.append(k)
                    sb = ""
                    if k.standby_ready is not None:
                        sb = ", standby ready" if k.standby_ready else ", no standby ready"
                    fig = f"{k.stale_s:.2f} s" if k.recovered else "NOT RECOVERED"
                    print(f"kill {n}/{len(plan)}: {k.name} (pid {k.pid}{sb}) → stale {fig}, "
                          f"positions lost {k.lost}", flush=True)  # fmt: skip
                    if not k.recovered:
                        break
                    last = n == len(plan)
                    due = kind != "worker" or worker_kills % args.compare_every == 0
                    if due and not last:
                        right = chaos.compare(f"after kill {n}", args.tolerance) and right
                if kills and all(k.recovered for k in kills):
                    right = chaos.compare("at the end", args.tolerance) and right
                goals["no wrong numbers after recovery"] = right
                chaos.close()
                chaos = None
            goals["every kill recovered"] = all(k.recovered for k in kills)
            goals["no position lost"] = all(k.lost == 0 for k in kills)
            print(f"kills: {len(kills)} in {time.monotonic() - t_run:.0f} s")
            for line in _figures(kills):
                print(line)
            print("worker kills taken by a standby, from the service log:")
            for line in _takeover_lines(root / NAME / "service.log", kills):
                print(line)
            if args.supervisor_kill:
                print("supervisor kill:")
                children_ok, reaped_ok, nxt = _supervisor_kill(
                    svc, Path(tmp), args.positions, args.rate
                )
                goals["every child gone within 2 s of the supervisor's kill -9"] = children_ok
                goals["the next start reaps every segment left"] = reaped_ok
            for line in setting_lines(nxt or svc):
                print(f"(at the end) {line}")
        finally:
            if args.keep_log is not None and (Path(tmp) / "run" / NAME / "service.log").exists():
                shutil.copyfile(Path(tmp) / "run" / NAME / "service.log", args.keep_log)
            if chaos is not None:
                chaos.close()
            for s in (svc, nxt):
                forced = stop_service(s)
                if forced:
                    print(f"clean-up of {s.name if s else ''} by force: {'; '.join(forced)}")
            left = [p.name for p in SHM_DIR.iterdir() if p.name.startswith("wb_")
                    and p.name.split("_")[2] in (NAME, f"{NAME}next")
                    and not pid_alive(int(p.name.split("_")[1]))]  # fmt: skip
            if left:
                print(f"segments of dead {NAME} services still in /dev/shm: {left}")
    print(f"whole run: {time.monotonic() - t_run:.0f} s")
    for goal, ok in goals.items():
        print(f"{'PASS' if ok else 'FAIL'}: {goal}")
    return 0 if goals and all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
