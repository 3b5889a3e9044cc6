"""The wall clock jumps under a live service: back an hour, forward an hour, a leap second.

The clock is moved for real, in every process of the service, with Debian's libfaketime
(``LD_PRELOAD``): ``clock_gettime(CLOCK_REALTIME)``, ``gettimeofday`` and ``time`` return the
real time plus the offset in a file this test rewrites mid-run, so ``time.time``,
``datetime.now`` and ``time.gmtime`` all move, whichever of them the service calls.
``CLOCK_MONOTONIC`` is left alone (``FAKETIME_DONT_FAKE_MONOTONIC``), as the kernel leaves it on an
operator's ``date -s``, an NTP step or a leap second; file timestamps are left alone too
(``NO_FAKE_STAT``), as a real jump does not change the files already on disk. The service
measures ages and heartbeats on the monotonic clock: nothing it reports may move.

The test proves the fake clock reaches the processes (``/proc/<pid>/environ`` and ``maps`` of
each, and the wall-clock ``ts`` of the service's own log lines following every rewrite of the
offset, to the second) before it believes what they report. Two workers are then killed with
``kill -9`` on a clock an hour behind: one's slot goes to the warm standby, the other is started
again. .ci/run installs ``faketime``: its absence is a failure, not a skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from service_helpers import make_files, start, wait

from workbench.client import Client, ServiceError
from workbench.engine.telemetry import logs

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
MEASURES = ["pv", "pv_ccy", "delta", "gamma", "vega", "theta"]
SETTLE_S = 2.5  # at each clock step, before looking (the service's loops run many times over)

# the wall-clock offsets (libfaketime's relative format, seconds) and what each step is
STEPS = [
    (-3600, "back one hour"),
    (0, "forward one hour, to the real time"),
    (3600, "forward one hour"),
    (3599, "a leap second inserted: the same second again"),
    (3600, "a leap second removed: one second skipped"),
    (-3600, "back two hours"),
]
# then, on the clock of the last step, kill -9 two workers: the first one's slot goes to the
# warm standby; before the second the standby (the copy the first forked) is killed too, so the
# second finds none ready (the next one is still setting up) and is started again: both
# restart paths, on a clock an hour behind
KILLS = [("fx-0", True), ("equity-0", False)]


# what a child process reads: time.time, datetime.now, time.gmtime, time.monotonic; its pid
_CLOCKS = (
    "import calendar, datetime, os, time; print(time.time(), datetime.datetime.now(datetime.UTC)"
    ".timestamp(), calendar.timegm(time.gmtime()), time.monotonic(), os.getpid())"
)


def _drop_faketime_segments(pid: int) -> list[str]:
    """Remove, and name, the shared memory libfaketime made for the process tree ``pid`` heads.

    The first process started under ``LD_PRELOAD`` makes ``/dev/shm/faketime_shm_<pid>`` and
    ``sem.faketime_sem_<pid>`` (its children attach through ``FAKETIME_SHARED``) and removes them
    when it exits; one killed outright (a supervisor that would not stop) leaves them behind.
    """
    left = [f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"]
    left = [name for name in left if (Path("/dev/shm") / name).exists()]
    for name in left:
        (Path("/dev/shm") / name).unlink(missing_ok=True)
    return left


def _log_epoch(ts: str) -> float:
    """A log record's ``ts`` (UTC, ISO 8601, milliseconds) as seconds since the epoch."""
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _set_offset(path: Path, offset_s: int) -> None:
    """Move the services' wall clock to real time + ``offset_s`` (atomic: libfaketime reads the
    file on every call and must never see it half written)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{offset_s:+d}\n")
    tmp.replace(path)


def _pids(svc: Client) -> dict[str, int]:
    return {p["name"]: int(p["pid"]) for p in svc.status()["processes"]}


def _faked(pid: int, offset_file: Path) -> bool:
    """libfaketime loaded in ``pid`` and reading ``offset_file`` uncached, the monotonic clock
    left alone."""
    env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    wanted = {
        f"LD_PRELOAD={LIBFAKETIME}".encode(),
        f"FAKETIME_TIMESTAMP_FILE={offset_file}".encode(),
        b"FAKETIME_NO_CACHE=1",
        b"FAKETIME_DONT_FAKE_MONOTONIC=1",
    }
    return wanted <= env and str(LIBFAKETIME) in Path(f"/proc/{pid}/maps").read_text()


class _Reader:
    """Reads a service's positions, and checks each read against the one before it."""

    def __init__(self, svc: Client, started: float) -> None:
        self.svc = svc
        self.started = started  # monotonic, just before the service was started
        self.base = self._read()[0]
        self.last_frame, self.last_t = self._read()

    def _read(self) -> tuple[pl.DataFrame, float]:
        t0 = time.monotonic()
        frame = self.svc.positions().sort("row")
        return frame, (t0 + time.monotonic()) / 2

    def check(self, what: str, *, repriced: pl.Series | None = None) -> pl.DataFrame:
        """Greeks exactly as at the start, nothing stale, every age up by the monotonic time
        since the last read (``repriced`` rows: fresh since then instead)."""
        frame, t = self._read()
        assert frame["row"].to_list() == self.base["row"].to_list(), what
        for col in MEASURES:
            np.testing.assert_array_equal(
                frame[col].to_numpy(), self.base[col].to_numpy(), err_msg=f"{col}, {what}"
            )
        assert not frame["stale"].any(), what
        assert (frame["stale_reason"] == "").all(), what
        ages = frame["age_s"].to_numpy()
        grown = ages - self.last_frame["age_s"].to_numpy()
        dt = t - self.last_t
        assert np.all(np.isfinite(ages)), what
        assert ages.min() >= 0.0, what
        assert ages.max() <= time.monotonic() - self.started + 1.0, what
        old = np.ones(len(frame), dtype=bool) if repriced is None else ~repriced.to_numpy()
        off = np.abs(grown[old] - dt)
        assert off.max() < 0.5, (
            f"{what}: an age moved by {grown[old][off.argmax()]:+.3f} s in {dt:.3f} s"
        )
        if repriced is not None:
            assert ages[~old].max() < dt, f"{what}: the restarted worker's positions are fresh"
        # the next snapshot published (made after the read): its oldest position as old as the
        # read's, plus the monotonic time that passed between them
        stats = self.svc.latest().stats
        since = time.monotonic() - t
        assert stats["stale"] == 0.0, what
        assert ages.max() - 0.5 <= stats["max_age_s"] <= ages.max() + since + 0.5, what
        self.last_frame, self.last_t = frame, t
        return frame


@pytest.fixture
def offset_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The services started in this test run under libfaketime, their wall clock at real time
    plus the offset in the file returned (this process is not: ``LD_PRELOAD`` is read at exec)."""
    assert LIBFAKETIME.is_file(), "libfaketime missing: apt-get install faketime (.ci/run does)"
    path = tmp_path / "faketime.rc"
    _set_offset(path, 0)
    monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(path))
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")  # a rewrite is seen at the next call
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")  # only CLOCK_REALTIME moves
    monkeypatch.setenv("NO_FAKE_STAT", "1")  # files keep their real timestamps
    assert str(LIBFAKETIME) not in Path("/proc/self/maps").read_text()
    # a process started now reads every wall clock of Python moved (not only time.time, as a
    # patch of it would), the monotonic clock not
    _set_offset(path, -3600)
    t0 = time.time()
    probe = subprocess.run(
        [sys.executable, "-c", _CLOCKS], capture_output=True, text=True, check=True
    ).stdout.split()
    t1, mono = time.time(), time.monotonic()
    for clock, value in zip(("time.time", "datetime.now", "time.gmtime"), probe[:3], strict=True):
        assert t0 - 3601.0 <= float(value) <= t1 - 3599.0, f"{clock} not moved back an hour"
    assert mono - 5.0 <= float(probe[3]) <= mono, "the monotonic clock moved"
    assert not _drop_faketime_segments(int(probe[4])), "libfaketime left its segments"
    _set_offset(path, 0)
    return path


def _probe_wall_clock(svc: Client, tmp_path: Path, offset_s: int) -> None:
    """The supervisor (running since the start) logs the wall clock moved by ``offset_s``: a
    reload of a missing book is refused and logged, nothing else happens."""
    log = Path(svc.descriptor.config.run_dir) / "service.log"
    seen = len(logs.read(log))
    before = time.time()
    with pytest.raises(ServiceError, match="book not reloaded"):
        svc.reload_book(tmp_path / "no-such-book.parquet")
    after = time.time()
    refused = [r for r in logs.read(log)[seen:] if r["event"] == "reload_refused"]
    assert len(refused) == 1
    _logged_within(refused[0], before, after, offset_s)


def _logged_within(record: dict[str, Any], before: float, after: float, offset_s: int) -> None:
    """``record`` was written between ``before`` and ``after`` (this process's real wall clock)
    on a wall clock ``offset_s`` ahead (ms resolution: the log truncates to milliseconds)."""
    ts = _log_epoch(record["ts"])
    assert before + offset_s - 0.002 <= ts <= after + offset_s + 0.002, (
        f"{record['event']} logged at {record['ts']}: {ts - before:+.3f} s from the real time, "
        f"the clock was moved by {offset_s:+d} s"
    )


def _kill_and_recover(
    svc: Client, reader: _Reader, offset_file: Path, offset_s: int, name: str, *, standby: bool
) -> None:
    """``kill -9`` worker ``name`` under the moved clock: the warm standby takes its slot
    (``standby``) or it is started again (none ready); either way it comes back fresh, on the
    fake clock too, with the same numbers."""
    log = Path(svc.descriptor.config.run_dir) / "service.log"
    seen = len(logs.read(log))
    wait(lambda: svc.status()["standby"] is not None, 30, "a standby")
    if not standby:  # the cold path: the standby's replacement is still setting up
        spare = int(svc.status()["standby"]["pid"])
        os.kill(spare, signal.SIGKILL)
        wait(lambda: (svc.status()["standby"] or {}).get("pid") not in (None, spare), 30,
             "the standby replaced")  # fmt: skip
    ready = svc.status()["standby"]
    assert bool(ready and ready["state"] == "ready") == standby
    victim = _pids(svc)[name]
    mine = reader.last_frame["asset_class"].cast(pl.String) == name.split("-")[0]
    assert mine.any()
    before = time.time()
    os.kill(victim, signal.SIGKILL)
    wait(lambda: _pids(svc)[name] != victim, 30, f"{name} replaced")
    wait(lambda: not svc.positions()["stale"].any(), 60, f"{name}'s positions fresh again")
    after = time.time()
    new = _pids(svc)[name]
    if standby:
        assert ready is not None
        assert new == ready["pid"], "the standby took the slot"
    assert _faked(new, offset_file), f"{name} (pid {new}) runs without libfaketime"
    records = logs.read(log)[seen:]
    story = [
        next(r for r in records if r["event"] == "child_exited" and r["child"] == name),
        next(r for r in records if r["event"] == "ready" and r["pid"] == new),
    ]
    assert story[0]["exit_code"] == -signal.SIGKILL
    assert story[0]["standby"] is standby
    if not standby:
        story.append(
            next(r for r in records if r["event"] == "child_started" and r["child_pid"] == new)
        )
    for record in story:  # the supervisor's and the new worker's clock, both moved
        _logged_within(record, before, after, offset_s)
    reader.check(f"{name} killed and back at {offset_s:+d} s", repriced=mine)


def _same_processes(svc: Client, pids: dict[str, int], restarts: dict[str, int], what: str) -> None:
    """No process restarted but those killed: none looked late to the supervisor (as one
    would on a heartbeat timed on the wall clock, a jump forward)."""
    procs = {p["name"]: p for p in svc.status()["processes"]}
    assert {n: int(p["pid"]) for n, p in procs.items()} == pids, what
    assert {n: p["restarts"] for n, p in procs.items()} == restarts, what


def test_wall_clock_jumps_change_nothing_in_a_live_service(
    tmp_path: Path, offset_file: Path
) -> None:
    """Each clock step, then workers killed an hour in the past: the same Greeks, nothing
    stale, ages growing with the monotonic clock, no process restarted but those killed."""
    files = make_files(tmp_path)
    started = time.monotonic()
    svc = start(files, "wallclock", feed="none")
    try:
        pids = _pids(svc)
        restarts = dict.fromkeys(pids, 0)
        for name, pid in {"supervisor": svc.descriptor.pid, **pids}.items():
            assert _faked(pid, offset_file), f"{name} (pid {pid}) runs without libfaketime"
        _probe_wall_clock(svc, tmp_path, 0)
        reader = _Reader(svc, started)
        reader.check("at the start")
        for offset_s, what in STEPS:
            _set_offset(offset_file, offset_s)
            _probe_wall_clock(svc, tmp_path, offset_s)  # the rewrite is seen, to the second
            time.sleep(SETTLE_S)
            reader.check(f"{what} ({offset_s:+d} s)")
            _same_processes(svc, pids, restarts, what)
        wait(
            lambda: (svc.status()["standby"] or {}).get("state") == "ready",
            120,
            "the warm standby ready",
        )
        assert _faked(svc.status()["standby"]["pid"], offset_file), "the standby"
        for name, standby in KILLS:
            _kill_and_recover(svc, reader, offset_file, STEPS[-1][0], name, standby=standby)
            restarts[name] += 1
        pids = _pids(svc)
        time.sleep(SETTLE_S)
        reader.check("after the restarts")
        _same_processes(svc, pids, restarts, "after the restarts")
        # this process's clock never moved (LD_PRELOAD is read at exec, by its children only)
        assert str(LIBFAKETIME) not in Path("/proc/self/maps").read_text()
    finally:
        try:
            _set_offset(offset_file, 0)
            svc.stop()
        finally:
            left = _drop_faketime_segments(svc.descriptor.pid)
    assert not left, f"the supervisor did not exit by itself: libfaketime left {left}"
