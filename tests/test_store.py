"""The risk store on a live service: it fills while the service runs, a reader in another
process reads while the writer writes, the stored roll-ups equal the snapshots a client
received, and a ``kill -9`` of the writer or of the whole service loses at most the last
interval and leaves every file readable; retention deletes old dates at start; copies of the
positions follow a reloaded book; GreekHistory opens with the stored day."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from service_helpers import make_files, start, wait

from workbench.book.reference import generate_reference_book
from workbench.client import Client
from workbench.client.views import SnapshotView
from workbench.engine.protocol.config import StoreConfig
from workbench.market.io import load_market
from workbench.risk.limits import LimitConfig
from workbench.store import breaches, history, positions, store_root
from workbench.store.layout import file_name, files, partition, utc_date
from workbench.store.rows import AGGREGATES_SCHEMA

INTERVAL_S = 0.3
SLACK_S = 0.5
"""The writer reads a snapshot a little after the test's client does."""


@pytest.fixture(scope="module")
def book_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def service(book_files: tuple[Path, Path]) -> Iterator[Client]:
    store = StoreConfig(interval_s=INTERVAL_S, position_interval_s=1.0, merge_files=4)
    limits = (LimitConfig(measure="dv01", limit=1.0),)  # breached: the firm's DV01 is larger
    svc = start(book_files, "storefill", rate=1_000.0, store=store, limits=limits)
    try:
        yield svc
    finally:
        svc.stop()


def collect(svc: Client, seconds: float) -> list[tuple[float, SnapshotView]]:
    """Snapshots received over ``seconds``, each with the monotonic time it was read."""
    out = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        view = svc.latest(timeout_s=5.0)
        out.append((time.monotonic(), view))
    return out


def stored_seqs(root: Path) -> set[int]:
    return set(history(root, measures=["pv"])["seq"].to_list())


def readable(root: Path) -> int:
    """Rows in every finished file (each read on its own: a partial file would raise)."""
    found = [p for p in root.rglob("*.parquet")]
    return sum(pl.read_parquet(p).height for p in found)


def test_the_store_holds_the_snapshots_the_client_received(service: Client) -> None:
    got = [view for _, view in collect(service, 3.0)]
    root = store_root(service.descriptor)
    last = got[-1].seq
    wait(lambda: last in stored_seqs(root), 30, f"snapshot {last} stored")
    seqs = [v.seq for v in got]
    for grouping, by in (("firm", ()), ("desk", ("desk",)), ("asset_class", ("asset_class",)),
                         ("desk,currency", ("desk", "currency"))):  # fmt: skip
        stored = service.history(grouping=grouping, measures=["pv", "dv01", "positions"])
        assert stored.columns == ["made_ns", "seq", *by, "pv", "dv01", "positions"]
        for view in got:
            want = view.grouped(by).select(*by, "pv", "dv01", "positions")
            want = want.with_columns(pl.col(c).cast(pl.String) for c in by)
            want = want.sort(list(by)) if by else want  # stored keys sort as text
            row = stored.filter(pl.col("seq") == view.seq).drop("made_ns", "seq")
            assert row.equals(want), (grouping, view.seq)
    # times are UTC and in the order of the seqs; a range gives exactly its snapshots
    firm = history(root).filter(pl.col("seq").is_in(seqs))
    made = firm["made_ns"].to_list()
    assert made == sorted(made)
    now = time.time_ns()
    assert now - 120 * 10**9 < made[0] <= made[-1] < now
    lo, hi = made[len(made) // 4], made[3 * len(made) // 4]
    part = service.history(start=lo, end=hi, grouping="desk", measures=["pv"])
    assert set(part["made_ns"]) == {m for m in made if lo <= m < hi} | set(
        history(root, start_ns=lo, end_ns=hi)["made_ns"]
    )
    assert part["made_ns"].min() >= lo
    assert part["made_ns"].max() < hi
    stamp = dt.datetime.fromtimestamp(lo / 1e9, tz=dt.UTC)
    assert service.history(start=stamp)["made_ns"].min() >= lo - 1_000
    with pytest.raises(ValueError, match="grouping 'product' is not stored"):
        service.history(grouping="product")
    with pytest.raises(ValueError, match="measure 'gamma' is not stored"):
        service.history(measures=["gamma"])


def test_breaches_and_positions_are_stored(service: Client) -> None:
    root = store_root(service.descriptor)
    view = service.latest(timeout_s=5.0)
    assert any(b.measure == "dv01" for b in view.breaches)
    wait(lambda: view.seq in set(breaches(root)["seq"]), 10, "the breach stored")
    stored = breaches(root).filter(pl.col("seq") == view.seq)
    assert stored.select("scope", "measure", "value", "limit").rows() == [
        (b.scope, b.measure, b.value, b.limit) for b in view.breaches
    ]
    wait(lambda: positions(root).height > 0, 10, "a copy of the positions stored")
    first = positions(root)
    assert first.height == service.positions().height
    assert first["position_id"].n_unique() == first.height
    wait(lambda: positions(root)["made_ns"][0] > first["made_ns"][0], 10, "a second copy")
    assert positions(root, at_ns=int(first["made_ns"][0]))["made_ns"][0] == first["made_ns"][0]


_READER = """
import sys, time
import polars as pl
from pathlib import Path
from workbench.store import history, breaches
from workbench.store.layout import files
root = Path(sys.argv[1])
end = time.monotonic() + float(sys.argv[2])
reads, last = 0, 0
while time.monotonic() < end:
    n = history(root, grouping="desk")["seq"].n_unique()
    assert n >= last, (n, last)  # the store only grows while read
    last = n
    for path in files(root, "aggregates")[-3:]:
        try:
            pl.read_parquet(path)
        except FileNotFoundError:
            pass  # merged into a bigger file since it was listed
    breaches(root)
    reads += 1
print(reads, last)
"""


def test_a_reader_in_another_process_reads_while_the_writer_writes(service: Client) -> None:
    root = store_root(service.descriptor)
    done = subprocess.run(
        [sys.executable, "-c", _READER, str(root), "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    reads, seen = map(int, done.stdout.split())
    assert reads > 10
    assert seen > 0
    merged = service.status()["processes"]
    writer = next(p for p in merged if p["name"] == "store_writer")
    assert writer["stats"]["files_merged"] > 0  # merges happened under the reader
    assert writer["stats"]["write_errors"] == 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_kill_9_of_the_writer_then_of_the_service_loses_at_most_the_last_interval(
    book_files: tuple[Path, Path], tmp_path: Path
) -> None:
    root = tmp_path / "kept"
    today = utc_date(time.time_ns())
    old = partition(root, "aggregates", today - dt.timedelta(days=5))
    recent = partition(root, "aggregates", today - dt.timedelta(days=1))
    for folder in (old, recent):
        folder.mkdir(parents=True)
        AGGREGATES_SCHEMA.to_frame().write_parquet(folder / file_name("aggregates", 1, 1))
    store = StoreConfig(interval_s=INTERVAL_S, position_interval_s=1.0, retention_days=3,
                        root=str(root))  # fmt: skip
    svc = start(book_files, "storekill", rate=1_000.0, store=store)
    try:
        wait(lambda: not old.exists(), 30, "the old date deleted at start")
        assert recent.exists()

        def writer_pid() -> int:
            procs = svc.status()["processes"]
            return int(next(p["pid"] for p in procs if p["name"] == "store_writer"))

        before = collect(svc, 2.0)
        victim = writer_pid()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        newest = max(v.seq for _, v in before)
        # the supervisor restarts it; the new writer stores what is published from then on
        wait(lambda: max(stored_seqs(root)) > newest, 60, "the restarted writer storing")
        assert writer_pid() != victim
        stored = stored_seqs(root)
        kept = {v.seq for t, v in before if t < killed_at - INTERVAL_S - SLACK_S}
        assert kept
        assert kept <= stored, sorted(kept - stored)
        assert readable(root) > 0

        # copies of the positions follow a reloaded book (the writer reads the new segment)
        market = load_market(book_files[1])
        smaller = tmp_path / "smaller.parquet"
        generate_reference_book(market, positions=600, seed=5).write_parquet(smaller)
        svc.reload_book(smaller, timeout_s=120)
        reloaded = time.time_ns()
        wait(lambda: positions(root)["made_ns"][0] > reloaded, 30, "a copy of the new book")
        copy = positions(root)
        assert copy["position_id"].to_list() == svc.positions()["position_id"].to_list()
        assert copy.height == 600

        # now the whole service, at once
        pids = [p["pid"] for p in svc.status()["processes"]] + [svc.descriptor.pid]
        tail = collect(svc, 1.5)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for pid in pids:
            wait(lambda pid=pid: _zombie(pid), 10, f"process {pid} gone")
    finally:
        if svc.alive():
            svc.stop()
        else:
            svc.close()
            subprocess.run([sys.executable, "-m", "workbench.cli", "reap"], check=True,
                           capture_output=True)  # fmt: skip
    # the store of a killed service: where its run dir says, every file whole
    run_dir = Path(svc.descriptor.config.run_dir)
    assert store_root(run_dir) == root
    assert readable(root) > 0
    stored = stored_seqs(root)
    kept = {v.seq for t, v in tail if t < killed_at - INTERVAL_S - SLACK_S}
    assert kept
    assert kept <= stored, sorted(kept - stored)
    assert history(root, grouping="desk,currency").height > 0
    assert len(files(root, "aggregates")) > 0


def test_greek_history_opens_with_the_day_so_far_from_the_store(service: Client) -> None:
    import asyncio

    import numpy as np

    from workbench.widgets import GreekHistory

    root = store_root(service.descriptor)
    wait(lambda: len(stored_seqs(root)) > 5, 30, "a stored history")

    async def scenario() -> None:
        hist = GreekHistory(service, measures=("pv", "dv01"), scope="desk:USD Rates")
        try:
            deadline = time.monotonic() + 30
            while hist.t.size <= hist.stored or hist.stored == 0:
                assert time.monotonic() < deadline, "no stored and live points"
                await asyncio.sleep(0.1)
            n = hist.stored
            assert np.all(hist.t[:n] < 0)  # made before the widget opened
            assert np.all(np.diff(hist.t) > 0)
            assert len(set(hist.seqs.tolist())) == hist.seqs.size  # no seq twice
            stored = history(root, grouping="desk", measures=["pv", "dv01"]).filter(
                pl.col("desk") == "USD Rates"
            )
            by_seq = {s: (pv, dv01) for s, pv, dv01 in stored.select("seq", "pv", "dv01").rows()}
            for i in range(n):
                seq = int(hist.seqs[i])
                assert (hist.values["pv"][i], hist.values["dv01"][i]) == by_seq[seq]
        finally:
            hist.close()

    asyncio.run(scenario())
