"""Faults on a live service: a worker killed with ``kill -9``, a planned restart.

Each test gets a service of its own (the processes it kills come back with new pids). Wall-clock
jumps (an hour back and forward, a leap second) are in test_wallclock.py, under libfaketime.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from service_helpers import make_files, start, wait

from workbench.client import Client, ServiceError
from workbench.engine.telemetry import logs


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def own_service(files: tuple[Path, Path]) -> Iterator[Client]:
    """A service of its own, for tests that kill or restart its processes."""
    svc = start(files, "faults", rate=2_000.0)
    try:
        yield svc
    finally:
        svc.stop()


def test_kill_9_a_worker_marks_its_positions_stale_then_fresh(own_service: Client) -> None:
    service = own_service
    st = service.status()
    victim = next(p for p in st["processes"] if p["name"] == "fx-0")
    os.kill(victim["pid"], signal.SIGKILL)
    killed = time.monotonic()

    def stale() -> bool:
        frame = service.aggregate(("asset_class",))
        row = frame.filter(pl.col("asset_class").cast(pl.String) == "fx")
        return bool(row["stale"][0] > 0)

    wait(stale, 10, "fx positions flagged stale")

    def fresh() -> bool:
        frame = service.aggregate(("asset_class",))
        return bool(frame["stale"].sum() == 0)

    wait(fresh, 60, "fx positions fresh again")
    recovered = time.monotonic() - killed
    procs = {p["name"]: p for p in service.status()["processes"]}
    assert procs["fx-0"]["restarts"] == 1
    assert procs["fx-0"]["pid"] != victim["pid"]
    # the structured log tells the story: the exit (signal 9, unplanned), the new start
    records = logs.read(Path(service.descriptor.config.run_dir) / "service.log")
    exits = [r for r in records if r["event"] == "child_exited" and r["child"] == "fx-0"]
    assert exits
    assert exits[0]["exit_code"] == -signal.SIGKILL
    assert exits[0]["planned"] is False
    assert exits[0]["level"] == "warning"
    assert exits[0]["role"] == "supervisor"
    starts = [r["child_pid"] for r in records if r["event"] == "child_started"]
    assert procs["fx-0"]["pid"] in starts
    print(f"\nfx-0 kill -9 → positions fresh again in {recovered:.2f} s")


def test_restart_request_is_a_planned_restart(own_service: Client) -> None:
    service = own_service
    pid = next(p["pid"] for p in service.status()["processes"] if p["name"] == "equity-0")
    service.restart("equity-0")

    def back() -> bool:
        p = next(p for p in service.status()["processes"] if p["name"] == "equity-0")
        return bool(p["pid"] != pid and p["state"] == "ready")

    wait(back, 60, "equity-0 back")
    with pytest.raises(ServiceError, match="unknown process 'nobody-0'"):
        service.restart("nobody-0")
