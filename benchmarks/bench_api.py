"""The HTTP API under load: 200 requests/s of mixed queries plus 20 stream subscribers.

Target (docs/benchmarks.md), 2 cores, the reference book under the synthetic feed: p99 of
``GET /v1/latest`` ≤ 50 ms, and the service's flush → publish p99 within its goal (≤ 50 ms)
while the API is loaded. The run alternates windows with the API load and windows without it
(the API idle, no reader), ``--seconds`` of each in all, so both figures come from the same
run of the same service.

The requests come from this process (httpx, asyncio), the streams from another, so that
neither reader's event loop delays the other's measurements. Prints per endpoint: requests,
errors, p50/p99 (``LatencyHistogram``, within 3.5%) and max (ms); per stream subscriber the
snapshots received; and the flush → publish p99 the aggregator reports at the end of each
window, with and without the load.

Run: ``python benchmarks/bench_api.py [--positions 40000] [--rate 5000] [--seconds 60]
[--rps 200] [--subscribers 20] [--windows 3] [--api-nice 0]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing.queues import Queue
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
from _machine import machine
from _reference import reference_service, service_options, service_parser

from workbench.engine.telemetry.histograms import LatencyHistogram

_ARROW = "application/vnd.apache.arrow.stream"
_MIX: tuple[tuple[str, dict[str, str], dict[str, str], float], ...] = (
    ("latest", {"grouping": "desk"}, {}, 0.25),
    ("latest", {"grouping": "firm"}, {}, 0.10),
    ("latest", {"grouping": "desk,currency", "format": "csv"}, {}, 0.10),
    ("latest", {"grouping": "asset_class"}, {"Accept": _ARROW}, 0.10),
    ("positions", {"asset_class": "credit", "measures": "pv,cs01"}, {}, 0.10),
    ("positions", {"desk": "USD Rates", "format": "csv"}, {}, 0.05),
    ("limits", {}, {}, 0.10),
    ("breaches", {}, {}, 0.05),
    ("status", {}, {}, 0.05),
    ("groupings", {}, {}, 0.10),
)  # fmt: skip
"""Endpoint, query, headers, share of the requests."""


class Tally:
    """Latencies (ms) and errors per endpoint."""

    def __init__(self) -> None:
        self.hist: dict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
        self.most: dict[str, float] = defaultdict(float)
        self.errors: dict[str, int] = defaultdict(int)
        self.kinds: dict[str, int] = defaultdict(int)
        """Errors by kind: the status code, or the exception's type."""

    def add(self, name: str, ms: float, ok: bool, kind: str = "") -> None:
        self.hist[name].observe_ms(ms)
        self.most[name] = max(self.most[name], ms)
        if not ok:
            self.errors[name] += 1
            self.kinds[kind] += 1


class _Pool:
    """Keep-alive HTTP/1.1 connections to one loopback server, opened as needed (at most
    ``most`` at once), each carrying one request at a time.

    A plain asyncio-streams client: a request costs this process ~0.1 ms of CPU where httpx
    costs ~5 ms, which at 200 requests/s took a whole core of the two and made the generator,
    not the server, the queue being measured.
    """

    def __init__(self, url: str, most: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.room = asyncio.Semaphore(most)

    async def get(self, target: str, headers: dict[str, str]) -> int:
        """``GET target``; the status code once the whole body has arrived. A kept-alive
        connection the server closed meanwhile (its idle timeout) is replaced once, as
        browsers and HTTP libraries do."""
        async with self.room:
            while self.idle:
                conn = self.idle.pop()
                try:
                    return await self._exchange(conn, target, headers)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    conn[1].close()
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise
            conn = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(conn, target, headers)

    async def _exchange(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: str,
        headers: dict[str, str],
    ) -> int:
        reader, writer = conn
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        else:  # chunked
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readline()
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _one(pool: _Pool, tally: Tally, rng: random.Random) -> None:
    name, params, headers, _ = rng.choices(_MIX, weights=[m[3] for m in _MIX])[0]
    target = f"/v1/{name}?{urlencode(params)}" if params else f"/v1/{name}"
    t0 = time.perf_counter()
    try:
        kind = str(await pool.get(target, headers))
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        kind = type(exc).__name__
    tally.add(name, (time.perf_counter() - t0) * 1e3, kind == "200", kind)


_EVENT = b"event: snapshot"


async def _subscriber(url: str, counts: list[int], slot: int) -> None:
    """One stream: count its ``snapshot`` events (in the raw bytes: no parsing)."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as http,
        http.stream("GET", "/v1/stream") as r,
    ):
        tail = b""
        async for chunk in r.aiter_bytes():
            seen = tail + chunk
            counts[slot] += seen.count(_EVENT)
            tail = seen[-(len(_EVENT) - 1) :]


async def _subscribers(url: str, n: int, seconds: float) -> list[int]:
    """``n`` streams for ``seconds``; the snapshots each received."""
    counts = [0] * n
    subs = [asyncio.create_task(_subscriber(url, counts, i)) for i in range(n)]
    await asyncio.sleep(seconds)
    for sub in subs:
        sub.cancel()
    await asyncio.gather(*subs, return_exceptions=True)
    return counts


def _subscribers_process(url: str, n: int, seconds: float, out: Queue[list[int]]) -> None:
    """:func:`_subscribers` in a process of its own (the readers do not share the request
    generator's event loop)."""
    out.put(asyncio.run(_subscribers(url, n, seconds)))


async def _requests(url: str, seconds: float, rps: float, tally: Tally) -> None:
    """``seconds`` of ``rps`` requests/s, paced (not waiting for answers)."""
    rng = random.Random(7)
    pool = _Pool(url, 200)
    pending: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()
    n = 0
    while (now := time.perf_counter() - t0) < seconds:
        due = n / rps
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(_one(pool, tally, rng))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    await asyncio.gather(*pending)
    pool.close()


def _loaded(url: str, seconds: float, rps: float, subscribers: int, tally: Tally) -> list[int]:
    """``seconds`` of ``rps`` requests/s from this process and ``subscribers`` streams from
    another; the snapshots each stream received."""
    ctx = multiprocessing.get_context("spawn")
    out: Queue[list[int]] = ctx.Queue()
    readers = ctx.Process(target=_subscribers_process, args=(url, subscribers, seconds, out))
    readers.start()
    try:
        asyncio.run(_requests(url, seconds, rps, tally))
        counts = out.get(timeout=seconds + 30)
    finally:
        readers.join(10)
        if readers.is_alive():
            readers.kill()
            readers.join()
    return counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _flush_p99(status: dict[str, object]) -> float:
    agg = status.get("aggregator") or {}
    assert isinstance(agg, dict)
    return float(agg.get("flush_to_publish_p99_ms", float("nan")))


def _start_api(
    folder: Path, root: Path, name: str, nice: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``workbench api --nice NICE`` for service ``name`` on a free loopback port, once
    ready."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WORKBENCH_RUN_DIR": str(root), "HOME": str(folder)}
    with (folder / "api.log").open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "api", "--service", name, "--port", str(port),
             "--nice", str(nice)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/v1/ready", timeout=2).status_code == 200:
                return api, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or api.poll() is not None:
            api.kill()
            raise SystemExit(f"the API did not get ready:\n{(folder / 'api.log').read_text()}")
        time.sleep(0.2)


def _report(
    args: argparse.Namespace,
    tally: Tally,
    received: list[int],
    published: float,
    p99: dict[str, list[float]],
) -> None:
    print(
        f"\n{args.rps:.0f} requests/s and {args.subscribers} streams for {args.seconds:.0f} s "
        f"({args.positions:,} positions, {args.rate:,.0f} ticks/s)"
    )
    print(f"{'endpoint':<12}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name in sorted(tally.hist):
        h = tally.hist[name]
        print(f"{name:<12}{h.count:>9}{tally.errors[name]:>8}{h.quantile_ms(0.5):>9.1f}"
              f"{h.quantile_ms(0.99):>9.1f}{tally.most[name]:>9.1f}")  # fmt: skip
    if tally.kinds:
        print("errors by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(tally.kinds.items())))
    print(
        f"stream snapshots received per subscriber: min {min(received)}, max {max(received)} "
        f"(published by the service in all: {published:.0f})"
    )
    for cond, values in p99.items():
        print(f"flush→publish p99 (ms), {cond}: {', '.join(f'{v:.1f}' for v in values)}")
    latest = tally.hist["latest"].quantile_ms(0.99)
    met = latest <= 50.0 and max(p99["under the API load"]) <= 50.0
    print(f"target (latest p99 ≤ 50 ms; flush→publish p99 ≤ 50 ms under load): "
          f"{'met' if met else 'NOT met'}")  # fmt: skip


def main() -> None:
    parser = service_parser(__doc__ or "")
    parser.add_argument("--seconds", type=float, default=60.0, help="of API load, in all")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--windows", type=int, default=3, help="loaded windows (as many idle)")
    parser.add_argument("--api-nice", type=int, default=0, dest="api_nice",
                        help="workbench api --nice (default 0)")  # fmt: skip
    args = parser.parse_args()
    print(machine(f"httpx {httpx.__version__}"))
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        folder = Path(tmp)
        svc, root, _ = reference_service(
            folder, "benchapi", positions=args.positions, rate=args.rate, **service_options(args)
        )
        api: subprocess.Popen[bytes] | None = None
        try:
            api, url = _start_api(folder, root, "benchapi", args.api_nice)
            tally = Tally()
            window = args.seconds / args.windows
            p99: dict[str, list[float]] = {"idle": [], "under the API load": []}
            received = [0] * args.subscribers
            for i in range(args.windows):
                time.sleep(window)  # no reader: the service alone
                p99["idle"].append(_flush_p99(svc.status()))
                counts = _loaded(url, window, args.rps, args.subscribers, tally)
                p99["under the API load"].append(_flush_p99(svc.status()))
                received = [a + b for a, b in zip(received, counts, strict=True)]
                print(f"window {i + 1}: flush→publish p99 {p99['idle'][-1]:.1f} ms idle, "
                      f"{p99['under the API load'][-1]:.1f} ms under the API load")  # fmt: skip
            agg = svc.status().get("aggregator") or {}
            _report(args, tally, received, float(agg.get("published", 0.0)), p99)
        finally:
            if api is not None:
                api.terminate()
                try:
                    api.wait(10)
                except subprocess.TimeoutExpired:
                    api.kill()
                    api.wait()
            svc.stop()


if __name__ == "__main__":
    main()
