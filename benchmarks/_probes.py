"""Shared by the chaos and soak benchmarks: what each process of a service costs (memory, open
files, CPU, from ``/proc``), the service's segments in ``/dev/shm``, the other load on the
machine, the market frozen for a comparison (the feed stopped with SIGSTOP until the service
has priced the last quotes), the batch re-price of those quotes in this process, and a stop
that leaves no process and no segment behind whatever state the service is in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl
import zmq
from _machine import machine

import workbench
from workbench.engine.protocol import messages as msg
from workbench.engine.telemetry.histograms import BUCKETS_MS
from workbench.engine.transport.shm import SHM_DIR, QuoteTable, RiskTable, pid_alive
from workbench.pricing.conversion import base_per_unit, base_rate_column
from workbench.pricing.portfolio import PortfolioPricer

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
FREEZE_LIMIT_S: Final = 4.0
"""Longest the feed is kept stopped: the supervisor kills a child silent for
``heartbeat_timeout_s`` (5 s), counted from its last heartbeat (up to 0.5 s before the stop)."""
SETTLE_S: Final = 0.5
"""The positions are read no sooner than this after the quote table's last write (a worker
reprices a flush in 10-50 ms)."""
MEASURES: Final = ("pv", "pv_ccy", "delta", "gamma", "vega", "corr01", "theta")
"""What the comparison checks, as :meth:`workbench.Client.positions` names them (``vega``: the
options' vega, ``corr01``: the tranches' correlation sensitivity; both the raw ``vega``
column of the risk table)."""
FLOOR_SHARE: Final = 1e-2
"""The tolerance floor of every measure of a position, as a share of its size: its notional
in USD (equity options: notional × spot; FX: the notional is in the pair's base currency), for
``pv_ccy`` in the position's currency. Greeks are
differences of PVs, and a PV is exact only to the curve solve's tolerance (1e-12 per unit of
notional): a swap's gamma (~10 USD on 30 million) differs by ~1e-5 of itself between two warm
starts of the solver. With this floor a difference up to 1e-11 × notional counts as none."""


# --- the service's processes and segments ----------------------------------------------


def service_pids(svc: workbench.Client) -> dict[str, int]:
    """Every process of the service by name (``supervisor``, ``feed``, ``ingest``, workers,
    ``aggregator``, ``standby``), from ``processes.json`` in its run folder."""
    path = Path(svc.descriptor.config.run_dir) / "processes.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=dict[str, int])
    except (OSError, msgspec.DecodeError):
        return {"supervisor": svc.descriptor.pid}


def memory_kb(pid: int) -> tuple[int, int] | None:
    """RSS and PSS of ``pid`` in KiB (``/proc/<pid>/smaps_rollup``); None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = pss = 0
    for line in text.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def open_fds(pid: int) -> int | None:
    """How many file descriptors ``pid`` holds open; None if it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (seconds); None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def segments(owner_pid: int, service: str) -> dict[str, tuple[int, int]]:
    """The ``/dev/shm`` segments of service ``service`` owned by ``owner_pid``: name → (size,
    bytes allocated: the pages touched)."""
    out: dict[str, tuple[int, int]] = {}
    prefix = f"wb_{owner_pid}_{service}_"
    with contextlib.suppress(OSError):
        for path in SHM_DIR.iterdir():
            if path.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    st = path.stat()
                    out[path.name] = (st.st_size, st.st_blocks * 512)
    return out


def alive(pids: dict[str, int]) -> dict[str, int]:
    """The entries of ``pids`` whose process still runs (a zombie counts as gone)."""
    return {n: p for n, p in pids.items() if pid_alive(p)}


def _ours(pid: int) -> bool:
    """True if ``pid`` runs a service process (a supervisor or a spawned child)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"workbench.engine.processes.supervise" in cmd or b"spawn_main" in cmd


def stop_service(svc: workbench.Client | None) -> list[str]:
    """Stop ``svc`` and make sure nothing of it is left: every process recorded in its
    ``processes.json`` that still runs gets SIGKILL, and the segments its supervisor owned are
    unlinked once it is dead. Returns what had to be cleaned up by force (empty: nothing)."""
    if svc is None:
        return []
    forced: list[str] = []
    sup = svc.descriptor.pid
    pids = {**service_pids(svc), "supervisor": sup}
    for name, pid in pids.items():  # a feed left stopped would delay the stop
        if name == "feed" and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    if pid_alive(sup):
        try:
            svc.stop(timeout_s=30.0)
        except Exception as exc:  # the clean-up below still runs
            forced.append(f"stop failed: {exc}")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(sup, os.WNOHANG)
    pids.update(service_pids(svc))
    killed: dict[str, int] = {}
    for name, pid in sorted(alive(pids).items()):
        if not _ours(pid):
            continue  # the pid was taken by another process since
        forced.append(f"SIGKILL {name} (pid {pid})")
        killed[name] = pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive(killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not pid_alive(sup):
        for name in segments(sup, svc.name):
            forced.append(f"unlink /dev/shm/{name}")
            with contextlib.suppress(FileNotFoundError):
                (SHM_DIR / name).unlink()
    with contextlib.suppress(Exception):
        svc.close()
    return forced


def status_proc(status: dict[str, Any], name: str) -> dict[str, Any] | None:
    """One process's entry of :meth:`workbench.Client.status`."""
    for p in status.get("processes", []):
        if p["name"] == name:
            return dict(p)
    return None


# --- the setting -------------------------------------------------------------------------


def other_load(exclude: set[int], seconds: float = 2.0, min_pct: float = 5.0) -> list[str]:
    """The processes not in ``exclude`` (nor this one) that used at least ``min_pct`` % of a
    core over the next ``seconds``, busiest first: ``"pid, % of a core, command"``."""

    def snapshot() -> dict[int, float]:
        out: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                cpu = cpu_seconds(int(entry.name))
                if cpu is not None:
                    out[int(entry.name)] = cpu
        return out

    mine = {os.getpid(), *exclude}
    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    rows: list[tuple[float, int, str]] = []
    for pid, cpu in after.items():
        if pid in mine or pid not in before:
            continue
        pct = (cpu - before[pid]) / seconds * 100.0
        if pct >= min_pct:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmd = "?"
            rows.append((pct, pid, cmd.strip()[:90]))
    return [f"pid {pid}: {pct:.0f}% of a core: {cmd}" for pct, pid, cmd in sorted(rows)[::-1]]


def setting_lines(svc: workbench.Client, seconds: float = 2.0) -> list[str]:
    """The setting of a run: the machine, its load average, this service's processes and what
    else runs (processes using ≥ 5% of a core over ``seconds``, measured now)."""
    pids = service_pids(svc)
    ours = set(pids.values())
    before = {p: cpu_seconds(p) or 0.0 for p in ours}
    others = other_load(ours, seconds)
    own = []
    for name, pid in sorted(pids.items()):
        now = cpu_seconds(pid)
        if now is not None:
            own.append(f"{name} {(now - before.get(pid, now)) / seconds * 100:.0f}%")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return [
        f"machine: {machine()}",
        f"load average (1, 5, 15 min): {load}",
        f"this service's processes, % of a core over {seconds:g} s: {', '.join(own)}",
        "other processes using ≥ 5% of a core over the same seconds: "
        + ("none" if not others else f"{len(others)}"),
        *(f"  {line}" for line in others),
    ]


# --- snapshots ---------------------------------------------------------------------------


class SnapshotWatch:
    """A subscription to the service's snapshots, open for the whole run (it reconnects by
    itself to a restarted aggregator): the latest one read, when asked."""

    def __init__(self, svc: workbench.Client) -> None:
        self.ctx = zmq.Context()
        self.sock: zmq.Socket[bytes] = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.CONFLATE, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(svc.endpoints.snapshots)

    def latest(self, timeout_s: float) -> msg.Snapshot | None:
        """The newest snapshot waiting (or the next within ``timeout_s``); None if none."""
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        snap: msg.Snapshot | None = None
        while True:
            try:
                raw = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return snap
            snap = msg.snapshot_decoder.decode(raw)

    def close(self) -> None:
        """Close the socket and its context."""
        self.sock.close(linger=0)
        self.ctx.term()


# --- the market frozen, and the batch re-price ---------------------------------------------


@dataclass(frozen=True)
class Frozen:
    """What the service showed with the feed stopped and every quote priced."""

    values: np.ndarray
    """The quote table's values (shared memory), in quote-table order."""
    quote_generation: int
    positions: pl.DataFrame
    """:meth:`workbench.Client.positions`, read twice with the same risk-table generation."""
    risk_generation: int
    stopped_s: float
    """How long the feed was stopped."""
    attempts: int


def _ingest_settled(svc: workbench.Client, since: float) -> bool:
    """True once the ingestion has sent a heartbeat after ``since`` (monotonic s) with no quote
    waiting for its conflation window (everything it received is in the quote table)."""
    t0 = time.monotonic()
    ing = status_proc(svc.status(), "ingest")
    if ing is None or not ing["stats"]:
        return False
    return t0 - float(ing["heartbeat_age_s"]) > since and ing["stats"].get("pending", 1.0) == 0.0


def _read_stable(
    svc: workbench.Client, quotes: QuoteTable, deadline: float
) -> tuple[np.ndarray, int, pl.DataFrame, int] | None:
    """Quote values, then positions read twice ≥ 0.25 s apart under the same risk-table
    generation with nothing stale, the quote generation the same throughout, the first read
    ≥ :data:`SETTLE_S` after the last write of the quote table; None if that does not happen
    before ``deadline``."""
    while (time.monotonic_ns() - int(quotes.columns["updated_ns"].max())) / 1e9 < SETTLE_S:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    cols, gen = quotes.read(("value",), (0,))
    values, qgen = cols["value"], int(gen[0])
    _, meta = svc.snapshot()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        frame, now = svc.snapshot()
        if quotes.generation != qgen:
            return None
        if now["generation"] == meta["generation"] and not bool(frame["stale"].any()):
            return values, qgen, frame, int(now["generation"])
        meta = now
    return None


def freeze_and_read(svc: workbench.Client, quotes: QuoteTable, tries: int = 4) -> Frozen:
    """Stop the feed (SIGSTOP), wait until the ingestion has flushed every quote it received
    and the positions no longer change with nothing stale, read the quote table and the
    positions, and let the feed go on (SIGCONT). Each try keeps the feed stopped at most
    :data:`FREEZE_LIMIT_S`; raises RuntimeError after ``tries`` tries."""
    for attempt in range(1, tries + 1):
        feed = status_proc(svc.status(), "feed")
        if feed is None or feed["state"] != "ready":
            time.sleep(1.0)
            continue
        pid = int(feed["pid"])
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        got = None
        try:
            deadline = t_stop + FREEZE_LIMIT_S
            while time.monotonic() < deadline and not _ingest_settled(svc, t_stop + 0.05):
                time.sleep(0.05)
            if time.monotonic() < deadline:
                got = _read_stable(svc, quotes, deadline)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stopped = time.monotonic() - t_stop
        if got is not None:
            values, qgen, frame, rgen = got
            return Frozen(values, qgen, frame, rgen, stopped, attempt)
        time.sleep(2.0)  # let the feed's catch-up burst pass before the next try
    raise RuntimeError(f"the service did not settle within {FREEZE_LIMIT_S} s ({tries} tries)")


@dataclass(frozen=True)
class Comparison:
    """The service's numbers against the batch re-price of the same quotes."""

    checked: int
    """Values compared (positions × measures)."""
    beyond: int
    """Values whose relative difference exceeds the tolerance."""
    worst: pl.DataFrame
    """The worst offenders, one row per (position, measure), largest difference first."""
    max_rel: dict[str, float]
    """Largest relative difference per measure (with the floor)."""
    plain: dict[str, float]
    """Largest ``|a - b| / max(|a|, |b|)`` per measure (no floor)."""
    beyond_by: dict[str, int]
    """Values beyond the tolerance per ``"<product> <measure>"``."""
    reprice_s: float


class Reference:
    """The batch pricer of the service's frozen book, built once in this process: a full
    re-risk (:class:`PortfolioPricer`, as ``workbench price`` and ``bench_rerisk.py``) on a
    market whose quotes are exactly the quote table's."""

    def __init__(self, svc: workbench.Client) -> None:
        from workbench.book.io import load_book
        from workbench.market.io import load_market

        cfg = svc.descriptor.config
        self.market = load_market(cfg.frozen_market)
        self.book = load_book(cfg.frozen_book, market=self.market)
        self.pricer = PortfolioPricer(
            self.book, self.market, n_paths=cfg.n_paths, tranche_method=cfg.tranche_method
        )
        self.pricer.spline_cache.enabled = False  # nothing kept between comparisons
        book, market = self.book, self.market
        fx = base_rate_column(market, book.currency.codes, book.currency.labels)
        size = np.abs(np.asarray(book.notional, dtype=np.float64)) * fx
        usd = base_per_unit(market)
        spots = {e.id: market.quote(e.spot_quote) for e in market.equities}
        pairs = {p.pair: p.base_ccy for p in market.fx_pairs}
        products = book.product.labels
        eq = products.index("EQ_OPTION") if "EQ_OPTION" in products else -1
        fx_codes = [i for i, p in enumerate(products) if p.startswith("FX_")]
        for code, label in enumerate(book.underlying.labels):
            on = book.underlying.codes == code
            if label in spots:  # equity options: notional in shares
                size[on & (book.product.codes == eq)] *= spots[label]
            if label in pairs:  # FX: notional in the pair's base currency
                at = on & np.isin(book.product.codes, fx_codes)
                size[at] = np.abs(np.asarray(book.notional)[at]) * usd[pairs[label]]
        self.size_usd = size
        self.size_ccy = size / fx

    def compare(self, frozen: Frozen, tolerance: float, top: int = 8) -> Comparison:
        """Re-price on ``frozen.values`` (every kept result dropped first) and compare every
        position's measures: ``|a - b| / max(|a|, |b|, floor)`` with ``floor`` =
        :data:`FLOOR_SHARE` × the position's size (:data:`FLOOR_SHARE`)."""
        t0 = time.perf_counter()
        self.pricer.forget_results()
        ref = self.pricer.risk(self.market.with_quote_values(frozen.values))
        reprice_s = time.perf_counter() - t0
        pos = frozen.positions.sort("row")
        n = len(self.book)
        if pos.height != n or not np.array_equal(pos["row"].to_numpy(), np.arange(n)):
            raise RuntimeError(f"positions() has {pos.height} rows, the book {n}")
        product = pos["product"].cast(pl.String).to_numpy()
        asset = pos["asset_class"].cast(pl.String).to_numpy()
        option = np.isin(asset, ["fx", "equity"])
        tranche = product == "CDX_TRANCHE"
        expected = {
            "pv": ref.pv,
            "pv_ccy": ref.pv_ccy,
            "delta": ref.delta,
            "gamma": ref.gamma,
            "vega": np.where(option, ref.vega, 0.0),
            "corr01": np.where(tranche, ref.vega, 0.0),
            "theta": ref.theta,
        }
        parts: list[pl.DataFrame] = []
        max_rel: dict[str, float] = {}
        plain: dict[str, float] = {}
        by_product: dict[str, int] = {}
        beyond = 0
        for m in MEASURES:
            a = pos[m].to_numpy().astype(np.float64)
            b = np.asarray(expected[m], dtype=np.float64)
            both_nan = np.isnan(a) & np.isnan(b)
            floor = FLOOR_SHARE * (self.size_ccy if m == "pv_ccy" else self.size_usd)
            diff = np.abs(a - b)
            big = np.maximum(np.abs(a), np.abs(b))
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.where(both_nan, 0.0, diff / np.maximum(big, floor))
                unfloored = np.where(both_nan | (diff == 0), 0.0, diff / big)
            rel = np.where(np.isnan(rel), np.inf, rel)
            max_rel[m] = float(rel.max()) if rel.size else 0.0
            plain[m] = float(np.nanmax(unfloored)) if rel.size else 0.0
            out = rel > tolerance
            beyond += int(np.count_nonzero(out))
            for label, count in zip(*np.unique(product[out], return_counts=True), strict=True):
                key = f"{label} {m}"
                by_product[key] = by_product.get(key, 0) + int(count)
            k = np.argsort(rel)[::-1][:top]
            parts.append(
                pl.DataFrame(
                    {
                        "row": k.astype(np.int64),
                        "position_id": pos["position_id"].to_numpy()[k],
                        "product": product[k],
                        "measure": [m] * k.size,
                        "service": a[k],
                        "batch": b[k],
                        "size_usd": self.size_usd[k],
                        "rel_diff": rel[k],
                    }
                )
            )
        worst = pl.concat(parts).sort("rel_diff", descending=True).head(top)
        return Comparison(n * len(MEASURES), beyond, worst, max_rel, plain, by_product, reprice_s)


# --- latency buckets ---------------------------------------------------------------------


def bucket_quantile(counts: np.ndarray, q: float) -> tuple[float, float, float]:
    """The ``q`` quantile of histogram ``counts`` (:mod:`workbench.engine.telemetry.histograms`
    buckets): (lower edge, upper edge of its bucket, linear interpolation inside it) in ms;
    NaNs when nothing was counted."""
    total = float(counts.sum())
    if total <= 0:
        return float("nan"), float("nan"), float("nan")
    edges = [0.0, *BUCKETS_MS, float("inf")]
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, q * total))
    lo, hi = edges[i], edges[i + 1]
    below = float(cum[i - 1]) if i else 0.0
    share = (q * total - below) / max(float(counts[i]), 1.0)
    inside = lo + share * (hi - lo) if hi != float("inf") else lo
    return lo, hi, inside


@contextlib.contextmanager
def attached(svc: workbench.Client) -> Iterator[tuple[QuoteTable, RiskTable]]:
    """The service's quote and risk tables, attached read-only for the block."""
    cfg = svc.descriptor.config
    quotes = QuoteTable.attach(cfg.segments["quotes"], svc.descriptor.n_quotes)
    risk = RiskTable.attach(cfg.segments["risk"], svc.descriptor.n_positions)
    try:
        yield quotes, risk
    finally:
        for table in (quotes, risk):
            with contextlib.suppress(Exception):
                table.close()
