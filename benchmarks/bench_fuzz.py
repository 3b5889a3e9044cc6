"""Fuzz a live service through its real sockets (issue 12, point 9).

A service is started on the reference market and a small reference book (``--positions``,
1,000 by default) with an external feed: its ingestion connects to a PUB socket bound here.
Then, at the same time:

* ``--ticks`` frames (default 1,000,000) of random and mutated ticks go out on that PUB
  (:class:`_fuzz.TickFuzzer`: every size from 0 to past the 4 KiB limit, valid ids with hostile
  values, wrong types, multi-part messages …). The PUB has no send limit (SNDHWM 0) and is paced
  on the ingestion's ``offered`` counter (at most 100,000 frames ahead), so ZeroMQ never drops;
  the ingestion's counters are compared with what was sent, and each frame is replayed here
  through the ingestion's own ``TickHandler`` for the expected count of each outcome.
* ``--requests`` control requests (default 10,000) go to the aggregator's control ROUTER and
  the supervisor's ROUTER (:class:`_fuzz.RequestFuzzer`), each on a DEALER of its own, 8 in
  flight, each with a deadline: the service's own bound for that request plus 10 s.

Then the properties, PASS or FAIL each (exit 1 on any FAIL): every process's pid unchanged
and restarts 0, nothing in service.log (no traceback, no unplanned exit), offered == accepted +
the sum of rejected.*, offered == frames sent, each outcome's count == the replayed model's,
every request answered, every reply readable and as expected. Last, a real stop through the
aggregator must be answered and the service must leave no process or segment.

``--skip-known-defects`` leaves out the requests that trigger the defects listed in
``_fuzz.KNOWN_DEFECTS`` (to test everything else while they are open).

Run: ``python benchmarks/bench_fuzz.py [--ticks 1000000] [--requests 10000] [--seed 1]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec
import zmq
from _fuzz import KNOWN_DEFECTS, FuzzResult, fuzz_service, not_books, restore_options
from _machine import machine

import workbench
from workbench.book.reference import generate_reference_book
from workbench.engine.protocol import messages as msg
from workbench.engine.transport.shm import pid_alive
from workbench.market.io import load_market, save_market
from workbench.market.reference import generate_reference_market


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    out: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), cmd.strip()[:90])
    return out


def others(seconds: float = 1.0) -> str:
    """The load average and the busiest other processes over ``seconds``."""
    a = _cpu_ticks()
    time.sleep(seconds)
    b = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = sorted(
        ((b[p][0] - a[p][0]) / hz / seconds, b[p][1]) for p in b if p in a and p != os.getpid()
    )[::-1]
    top = [f"{share:.0%} {cmd}" for share, cmd in busy[:4] if share >= 0.05]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {load}; busy besides this run: {'; '.join(top) or 'nothing'}"


def _table(title: str, rows: Sequence[tuple[str, ...]]) -> None:
    print(title)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def report(result: FuzzResult) -> None:
    """Counts by outcome and rates."""
    t = result.ticks
    total_s = t.send_s + result.drain_s
    print(
        f"ticks: {t.frames:,} frames in {t.messages:,} messages, {t.bytes / 1e6:,.1f} MB; "
        f"sent in {t.send_s:.1f} s ({t.frames / max(t.send_s, 1e-9):,.0f} frames/s, generation "
        f"and the local replay included); the ingestion done {result.drain_s:.1f} s later: "
        f"{t.frames / max(total_s, 1e-9):,.0f} ticks/s end to end"
    )
    base, end = result.ingest_base, result.ingest_end
    got = {
        k[len("rejected.") :]: end.get(k, 0.0) - base.get(k, 0.0)
        for k in end
        if k.startswith("rejected.")
    }
    got["accepted"] = end.get("accepted", 0.0) - base.get("accepted", 0.0)
    want = t.model.outcomes
    rows: list[tuple[str, ...]] = [("outcome", "counted by ingest", "replayed here")]
    for k in ["accepted", *sorted((set(got) | set(want)) - {"accepted"})]:
        rows.append((k, f"{got.get(k, 0.0):,.0f}", f"{want.get(k, 0):,}"))
    _table("tick outcomes:", rows)
    kinds = Counter({k: sum(c.values()) for k, c in t.model.by_kind.items()})
    print("tick kinds (frames): " + ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()))
    print(
        f"ingest: gaps {end.get('gaps', 0) - base.get('gaps', 0):,.0f}, flushed "
        f"{end.get('flushed', 0) - base.get('flushed', 0):,.0f}, latency_ignored "
        f"{end.get('latency_ignored', 0) - base.get('latency_ignored', 0):,.0f}"
    )
    r = result.requests
    rows = [("target", "sent", "answered", "ok", "error", "unanswered", "slowest s")]
    for name, o in sorted(r.by_target.items()):
        rows.append(
            (
                name,
                f"{o.sent:,}",
                f"{o.answered:,}",
                f"{o.ok:,}",
                f"{o.error:,}",
                f"{o.unanswered:,}",
                f"{o.slowest_s:.2f}",
            )
        )
    _table(
        f"requests: {r.total.sent:,} in {r.seconds:.1f} s "
        f"({r.total.sent / max(r.seconds, 1e-9):,.0f}/s)",
        rows,
    )
    rows = [("kind", "sent", "ok", "error", "unanswered", "slowest s")]
    for name, o in sorted(r.by_kind.items(), key=lambda kv: -kv[1].sent):
        rows.append(
            (
                name,
                f"{o.sent:,}",
                f"{o.ok:,}",
                f"{o.error:,}",
                f"{o.unanswered:,}",
                f"{o.slowest_s:.2f}",
            )
        )
    _table("requests by kind:", rows)
    print("error replies, the commonest per kind:")
    for kind, errors in sorted(r.errors.items()):
        print(f"  {kind}: " + "; ".join(f"{n}× {e!r}" for e, n in errors.most_common(3)))
    if result.skipped:
        print(f"not sent (drawn again): {dict(result.skipped)}")
    for req in r.unanswered[:10]:
        print(
            f"  unanswered: {req.kind} → {req.target} ({req.defect or 'no known defect'}): "
            f"{req.frames[-1][:100]!r}"
        )
    for req, why in r.unexpected[:10]:
        print(
            f"  unexpected: {req.kind} → {req.target}, expected {req.expect}, got {why[:100]}: "
            f"{req.frames[-1][:100]!r}"
        )
    for line in result.problems[:20]:
        print(f"  service.log: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--positions", type=int, default=1_000)
    parser.add_argument("--skip-known-defects", action="store_true")
    args = parser.parse_args()
    print(
        "machine: "
        + machine(
            f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})",
            f"msgspec {msgspec.__version__}",
        )
    )
    print(f"before the start: {others()}")
    skip = frozenset(KNOWN_DEFECTS) if args.skip_known_defects else frozenset()
    print(
        f"setting: {args.positions:,}-position reference book (seed 1), reference market, "
        f"default workers and conflation, warm standby on; feed: a PUB bound here "
        f"(tcp loopback, SNDHWM 0); {args.ticks:,} tick frames, {args.requests:,} requests, "
        f"seed {args.seed}; known-defect triggers "
        f"{'left out: ' + ', '.join(sorted(skip)) if skip else 'included'}"
    )
    results: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        folder = Path(tmp)
        market = generate_reference_market()
        save_market(market, folder / "market.json")
        book = generate_reference_book(market, positions=args.positions, seed=1)
        book.write_parquet(folder / "book.parquet")
        frozen = load_market(folder / "market.json")
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 0)  # no limit: nothing dropped here, paced on `offered`
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        t0 = time.monotonic()
        svc = workbench.start(
            folder / "book.parquet",
            folder / "market.json",
            name="benchfuzz",
            feed=f"tcp://127.0.0.1:{port}",
            run_root=folder / "run",
        )
        config = svc.descriptor.config
        pids: set[int] = set()
        try:
            print(f"service ready in {time.monotonic() - t0:.1f} s; {others()}")
            st = svc.status()
            pids = {int(p["pid"]) for p in st["processes"]} | {svc.descriptor.pid}
            result = fuzz_service(
                svc,
                pub,
                frozen.quote_ids,
                list(frozen.quotes),
                ticks=args.ticks,
                requests=args.requests,
                seed=args.seed,
                bad_files=not_books(folder),
                skip_defects=skip,
                progress=lambda line: print(line, flush=True),
            )
            st = svc.status()
            pids |= {int(p["pid"]) for p in st["processes"]}
            pids |= {pid for pid, _, _ in result.after.values()}
            print(f"at the end: {others()}")
            report(result)
            results += result.checks
            others_ = ("ingest", "aggregator", "standby", "supervisor")
            restore_options(svc, [n for n in result.before if n not in others_])
            try:
                reply = svc.request(msg.StopRequest(), timeout_s=40.0)
                stopped = (reply.ok, "answered ok")
            except workbench.ServiceError as exc:
                stopped = (False, str(exc))
            results.append(("a real stop through the aggregator is answered", *stopped))
        finally:
            svc.stop()
            pub.close()
            ctx.term()
        left = sorted(p for p in pids if pid_alive(p))
        shm = [s for s in config.segments.values() if Path("/dev/shm", s).exists()]
        results.append(
            (
                "nothing left behind (processes, /dev/shm segments)",
                not left and not shm,
                f"processes {left}, segments {shm}",
            )
        )
    print()
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    failed = [name for name, ok, _ in results if not ok]
    if skip:
        print(f"(known defects left out: {', '.join(sorted(skip))})")
    print("RESULT: " + ("PASS" if not failed else f"FAIL ({len(failed)} properties)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
