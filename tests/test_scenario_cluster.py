"""Scenario revaluation on Dask: a scheduler and two workers started from the command line on
loopback give the PnL of the single-process path, whatever the chunking."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from procs import descendants

from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.history import save_history, validate_history
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import group_pnl_by_block, scenario_pnl
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.loss import group_pnl
from workbench.risk.scenarios import historical_scenarios, stress_scenarios
from workbench.scenario_cluster import (
    _GREEKS,
    Layout,
    cluster,
    distributed_group_pnl,
    distributed_pnl_and_gap,
)
from workbench.scenario_greeks import greeks_gap

DASK = Path(sys.executable).parent / "dask"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes on loopback; the scheduler's address."""
    folder = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1",
           "DASK_TEMPORARY_DIRECTORY": str(folder / "tmp")}  # fmt: skip
    log = (folder / "dask.log").open("wb")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard", "--dashboard-address",
                               "127.0.0.1:0"], stdout=log, stderr=log, env=env)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.2)
        for i in range(2):
            procs.append(subprocess.Popen(
                [str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--no-dashboard", "--host", "127.0.0.1", "--local-directory",
                 str(folder / f"worker{i}")], stdout=log, stderr=log, env=env))  # fmt: skip
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        log.close()
    left = [p.pid for p in procs if p.poll() is None]
    assert not left, f"dask processes left: {left}"


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> tuple[MarketSnapshot, Book, Path]:
    folder = tmp_path_factory.mktemp("cluster-book")
    market = generate_reference_market()
    generate_reference_book(market, positions=400, seed=9).write_parquet(folder / "book.parquet")
    save_market(market, folder / "market.json")
    return market, load_book(folder / "book.parquet", market=market), folder


def _values(market: MarketSnapshot) -> np.ndarray:
    hist = validate_history(generate_history(market, days=9, seed=5), market)
    scen = [historical_scenarios(hist, market, window=8), stress_scenarios(market)]
    return np.vstack([s.values(market) for s in scen])


def test_workers_started_from_the_command_line_give_the_single_process_pnl(
    scheduler: str, priced: tuple[MarketSnapshot, Book, Path]
) -> None:
    market, book, _ = priced
    values = _values(market)
    n_desks = len(book.desk.labels)
    want = group_pnl_by_block(ScenarioBook(book, market), values, book.desk.codes, n_desks)
    floor = 1e-12 * np.abs(want).max()
    # the single-process path is the per-scenario one's: its swaps are summed through their
    # cash-flow matrices, so desk sums agree to rounding of the legs, not bit for bit
    pnl, _, _ = scenario_pnl(PortfolioPricer(book, market), market, values)
    one_by_one = group_pnl(pnl, book.desk.codes, n_desks)
    assert (np.abs(want - one_by_one) / np.maximum(np.abs(one_by_one), floor)).max() <= 1e-10
    from distributed import Client

    with Client(scheduler, timeout="60s") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        for layout in (None, Layout(chunks=1, block=5), Layout(chunks=3, block=2)):
            got = distributed_group_pnl(client, book, market, values, book.desk.codes, n_desks,
                                        layout=layout)  # fmt: skip
            rel = np.abs(got - want) / np.maximum(np.abs(want), floor)
            assert rel.max() <= 1e-12, f"{layout}: {rel.max():.1e}"


def _var_args(priced: tuple[MarketSnapshot, Book, Path]) -> list[str]:
    """``workbench var`` on the test book and 8 days of a history written beside it."""
    market, _, folder = priced
    save_history(generate_history(market, days=9, seed=5), folder / "history.parquet")
    return [sys.executable, "-m", "workbench.cli", "var", "--book", str(folder / "book.parquet"),
            "--market", str(folder / "market.json"), "--history",
            str(folder / "history.parquet"), "--window", "8"]  # fmt: skip


def test_workbench_var_runs_on_a_scheduler_and_on_the_embedded_cluster(
    scheduler: str, priced: tuple[MarketSnapshot, Book, Path]
) -> None:
    args, folder = _var_args(priced), priced[2]
    outs = {}
    for label, extra in (("remote", ["--scheduler", scheduler]), ("local", []),
                         ("in-process", ["--in-process"])):  # fmt: skip
        out = folder / label
        done = subprocess.run([*args, *extra, "--out", str(out)], capture_output=True,
                              text=True, timeout=600, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outs[label] = pl.read_parquet(out / "pnl.parquet")["pnl"].to_numpy()
    for label in ("remote", "local"):
        rel = np.abs(outs[label] - outs["in-process"]) / np.maximum(
            np.abs(outs["in-process"]), 1e-12 * np.abs(outs["in-process"]).max()
        )
        assert rel.max() <= 1e-12, f"{label}: {rel.max():.1e}"


def test_the_embedded_cluster_starts_and_leaves_nothing(tmp_path: Path) -> None:
    before = set(descendants(os.getpid()))
    with cluster(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(sum, [1, 2, 3]).result() == 6
    time.sleep(1.0)
    left = set(descendants(os.getpid())) - before
    assert not left, f"processes left by the local cluster: {left}"


def test_the_embedded_cluster_leaves_this_process_environment_alone() -> None:
    """The caller's environment is not changed (Numba refuses a changed NUMBA_NUM_THREADS once
    its threads run: every later compile failed)."""
    before = dict(os.environ)
    with cluster(workers=1) as client:
        assert client.submit(sum, [1, 2], pure=False).result() == 3
    assert dict(os.environ) == before


_THREADS_SCRIPT = """
import sys

import numba  # imported by the main module, as `workbench var` and the benchmarks do

from workbench.book.io import load_book
from workbench.market.io import load_market
from workbench.scenario_cluster import cluster, distributed_group_pnl

if __name__ == "__main__":
    market = load_market(sys.argv[1])
    book = load_book(sys.argv[2], market=market)
    values = market.quotes[None, :].repeat(2, axis=0)
    with cluster(workers=1) as client:
        distributed_group_pnl(client, book, market, values, book.desk.codes,
                              len(book.desk.labels))
        print(client.submit(numba.get_num_threads, pure=False).result())
"""


def test_embedded_workers_revalue_on_one_numba_thread(
    priced: tuple[MarketSnapshot, Book, Path], tmp_path: Path
) -> None:
    """A spawned worker imports the caller's main module, and Numba with it, before the
    cluster's NUMBA_NUM_THREADS applies: its tasks ran two threads each, and two workers on two
    cores were each 1.55× slower per task. Each task now sets one (its worker's only task
    thread keeps it)."""
    folder = priced[2]
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(folder / "market.json"),
                           str(folder / "book.parquet")], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "1", done.stdout


def test_the_greeks_gap_is_computed_by_the_workers_and_equals_the_in_process_one(
    scheduler: str, priced: tuple[MarketSnapshot, Book, Path]
) -> None:
    market, book, _ = priced
    values = _values(market)
    names = [f"s{i}" for i in range(values.shape[0])]
    n_desks = len(book.desk.labels)
    want = greeks_gap(book, market, values, names, worst=40)
    want_pnl = group_pnl_by_block(ScenarioBook(book, market), values, book.desk.codes, n_desks)
    from distributed import Client

    def _forget_greeks() -> None:  # nested: sent to the workers by value
        from workbench import scenario_cluster

        scenario_cluster._GREEKS.clear()

    def _greeks_held() -> int:
        from workbench import scenario_cluster

        return len(scenario_cluster._GREEKS)

    with Client(scheduler, timeout="60s") as client:
        client.run(_forget_greeks)
        first = None
        for layout in (None, Layout(chunks=3, block=2)):
            pnl, got = distributed_pnl_and_gap(client, book, market, values, book.desk.codes,
                                               n_desks, names, worst=40, layout=layout)  # fmt: skip
            floor = 1e-12 * np.abs(want_pnl).max()
            assert (np.abs(pnl - want_pnl) / np.maximum(np.abs(want_pnl), floor)).max() <= 1e-12
            first = first or got
            _same_gap(got.by_desk, first.by_desk)  # whatever the chunks and blocks
            _same_gap(got.by_desk, want.by_desk)  # and as in this process
            assert got.worst.height == 40
            assert got.worst.select("position_id", "scenario").equals(
                want.worst.select("position_id", "scenario")
            )
            scale = np.abs(want.by_desk["full"].to_numpy()).max()
            np.testing.assert_allclose(got.worst["gap"].to_numpy(), want.worst["gap"].to_numpy(),
                                       rtol=0.0, atol=1e-11 * scale)  # fmt: skip
        # the Greeks were set up in the workers (one per chunk each worker ran)
        held = client.run(_greeks_held)
    assert sum(held.values()) >= 2, held
    assert not _GREEKS  # and not here


def _same_gap(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Full revaluation by desk to 1e-12 relative; the Greeks' estimate and the gap to 1e-11
    of the firm's PnL: the live pricers' Greeks (finite differences) differ by ~1e-14 between
    processes with other thread counts, a desk's estimate by up to ~1e-12 of the firm's."""
    assert got.select("scenario", "desk").equals(want.select("scenario", "desk"))
    a, b = got["full"].to_numpy(), want["full"].to_numpy()
    scale = np.abs(b).max()
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12 * scale)
    assert rel.max() <= 1e-12, f"full: {rel.max():.1e}"
    for col in ("greeks", "gap"):
        off = np.abs(got[col].to_numpy() - want[col].to_numpy()).max() / scale
        assert off <= 1e-11, f"{col}: {off:.1e} of the firm's PnL"


def test_workbench_var_greeks_and_groupings_on_a_scheduler_equal_in_process(
    scheduler: str, priced: tuple[MarketSnapshot, Book, Path]
) -> None:
    folder = priced[2]
    args = [*_var_args(priced), "--greeks", "--by", "asset_class,currency"]
    outs = {}
    for label, extra in (("remote", ["--scheduler", scheduler]), ("in-process", ["--in-process"])):
        out = folder / f"greeks-{label}"
        done = subprocess.run([*args, *extra, "--out", str(out)], capture_output=True,
                              text=True, timeout=600, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outs[label] = {f: pl.read_parquet(out / f) for f in
                       ("greeks_pnl.parquet", "greeks_gap.parquet", "pnl_by.parquet")}  # fmt: skip
    _same_gap(outs["remote"]["greeks_pnl.parquet"], outs["in-process"]["greeks_pnl.parquet"])
    scale = np.abs(outs["in-process"]["greeks_pnl.parquet"]["full"].to_numpy()).max()
    a, b = (outs[k]["greeks_gap.parquet"]["gap"].to_numpy() for k in ("remote", "in-process"))
    assert np.abs(a - b).max() <= 1e-11 * scale
    a, b = (outs[k]["pnl_by.parquet"]["pnl"].to_numpy() for k in ("remote", "in-process"))
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12 * np.abs(b).max())
    assert rel.max() <= 1e-12, f"pnl_by: {rel.max():.1e}"
