"""The process shell every service child runs on: real processes, real sockets on loopback.

The test plays the supervisor: it binds the heartbeat PULL and starts, with ``spawn``, a small
body of each kind (polling and asyncio) on :mod:`workbench.engine.processes.shell`. Every
process started here is stopped by pid in a ``finally``. The parent watch is proved on a real
body: tests/test_ingest.py, ``test_an_orphaned_ingestion_exits``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
import zmq

from workbench.engine.processes import shell
from workbench.engine.protocol import messages
from workbench.engine.protocol.config import ServiceConfig, encode_config
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport.endpoints import loopback_endpoints

SPAWN = multiprocessing.get_context("spawn")
resource_tracker.ensure_running()


class Polling:
    """A polling body: one turn every 10 ms, each counted as a 1 ms latency."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.shell = shell.Shell(config, "polling", stop, self.ctx)
        self.turns = 0
        self.begun = False
        self.latency = LatencyHistogram()

    def stats(self) -> dict[str, float]:
        return {"turns": float(self.turns), "begun": float(self.begun), "nice": os.nice(0)}

    def histograms(self) -> dict[str, list[float]]:
        return {"turn": self.latency.wire()}

    def begin(self) -> None:
        self.begun = True

    def turn(self) -> None:
        time.sleep(0.01)
        self.turns += 1
        self.latency.observe_ms(1.0)

    def close(self) -> None:
        self.shell.close()
        self.ctx.term()


class Tasks:
    """An asyncio body: one task that counts, and one that fails when told to."""

    def __init__(self, config: ServiceConfig, stop: shell.Stop, fail: bool) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.shell = shell.Shell(config, "tasks", stop, self.ctx)
        self.ticks = 0
        self.fail = fail

    def stats(self) -> dict[str, float]:
        return {"ticks": float(self.ticks), "nice": os.nice(0)}

    def histograms(self) -> dict[str, list[float]]:
        return {}

    async def count(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)

    async def broken(self) -> None:
        await asyncio.sleep(0.3)
        if self.fail:
            raise ValueError("broken on purpose")
        await asyncio.Event().wait()

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {"count": self.count(), "broken": self.broken()}

    def close(self) -> None:
        self.shell.close()
        self.ctx.term()


def run_polling(config_json: str) -> None:
    config, stop = shell.start(config_json, "polling", niced=True)
    shell.run_polling(lambda: Polling(config, stop))


def run_tasks(config_json: str, fail: bool) -> None:
    config, stop = shell.start(config_json, "tasks")
    shell.run_tasks(lambda: Tasks(config, stop, fail))


@contextmanager
def supervised(tmp_path: Path) -> Iterator[tuple[ServiceConfig, zmq.Socket[bytes]]]:
    """A configuration with loopback endpoints and the heartbeat PULL bound on it."""
    config = ServiceConfig(
        name="shelltest",
        run_dir=str(tmp_path),
        book="unused.csv",
        market="unused.json",
        heartbeat_s=0.05,
        worker_nice=3,
        endpoints=loopback_endpoints([]),
    )
    ctx = zmq.Context()
    beats: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
    beats.setsockopt(zmq.LINGER, 0)
    assert config.endpoints is not None
    beats.bind(config.endpoints.heartbeats)
    try:
        yield config, beats
    finally:
        ctx.destroy(linger=0)


def _beats(sock: zmq.Socket[bytes], n: int, timeout: float = 15.0) -> list[messages.Heartbeat]:
    out: list[messages.Heartbeat] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        if sock.poll(100):
            beat = messages.notice_decoder.decode(sock.recv())
            assert isinstance(beat, messages.Heartbeat)
            out.append(beat)
    assert len(out) >= n, f"{len(out)} heartbeats in {timeout} s, expected {n}"
    return out


def _drain(sock: zmq.Socket[bytes]) -> list[messages.Heartbeat]:
    out = []
    while sock.poll(500):
        beat = messages.notice_decoder.decode(sock.recv())
        assert isinstance(beat, messages.Heartbeat)
        out.append(beat)
    return out


def _stop(proc: BaseProcess) -> None:
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(3.0)


def test_a_polling_body_heartbeats_and_stops_on_sigterm_with_a_last_beat(
    tmp_path: Path,
) -> None:
    with supervised(tmp_path) as (config, beats):
        proc = SPAWN.Process(target=run_polling, args=(encode_config(config),))
        proc.start()
        try:
            got = _beats(beats, 4)
            assert {b.role for b in got} == {"polling"}
            assert {b.pid for b in got} == {proc.pid}
            assert all(b.ready for b in got)
            assert got[-1].stats["begun"] == 1.0  # begin ran before the first turn
            assert got[-1].stats["nice"] == min(os.nice(0) + 3, 19)  # niced: worker_nice
            assert got[-1].stats["turns"] > got[0].stats["turns"]
            assert got[-1].stats["heartbeats_sent"] >= 3
            assert got[-1].stats["heartbeats_dropped"] == 0
            # about one beat per heartbeat_s, not one per turn (turns are 10 ms, beats 50 ms)
            gap_s = (got[-1].sent_ns - got[0].sent_ns) / 1e9 / (len(got) - 1)
            assert 0.04 < gap_s < 0.5
            counted = got[-1].histograms["turn"]
            assert sum(counted[:-1]) == got[-1].stats["turns"]
            assert counted[4] == sum(counted[:-1])  # 1 ms: the ≤1 ms bucket
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGTERM)
            proc.join(2.0)
            assert proc.exitcode == 0
            last = _drain(beats)[-1]
            assert last.ready is False  # the last heartbeat, with the final counters
            assert last.stats["turns"] >= got[-1].stats["turns"]
        finally:
            _stop(proc)


def test_an_asyncio_body_stops_on_sigterm_and_a_failed_task_ends_the_process(
    tmp_path: Path,
) -> None:
    with supervised(tmp_path) as (config, beats):
        proc = SPAWN.Process(target=run_tasks, args=(encode_config(config), False))
        proc.start()
        try:
            got = _beats(beats, 3)
            assert {b.role for b in got} == {"tasks"}
            assert got[-1].stats["ticks"] > 0
            assert got[-1].stats["nice"] == os.nice(0)  # not niced unless asked
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGTERM)
            proc.join(2.0)
            assert proc.exitcode == 0
            assert _drain(beats)[-1].ready is False
        finally:
            _stop(proc)
        failing = SPAWN.Process(target=run_tasks, args=(encode_config(config), True))
        failing.start()
        try:
            failing.join(15.0)
            assert failing.exitcode == 1  # the task's failure is the process's
            assert _drain(beats)[-1].ready is False
        finally:
            _stop(failing)


def test_a_stop_flag_records_and_wakes_an_event_loop() -> None:
    stop = shell.Stop()
    assert not stop.requested

    async def waiter() -> float:
        t0 = time.monotonic()
        asyncio.get_running_loop().call_later(0.05, stop)
        await asyncio.wait_for(stop.wait(), 2.0)
        return time.monotonic() - t0

    assert asyncio.run(waiter()) < 1.0
    assert stop.requested

    async def already() -> None:
        await asyncio.wait_for(stop.wait(), 1.0)  # asked before the loop: returns at once

    asyncio.run(already())


def test_a_shell_needs_endpoints(tmp_path: Path) -> None:
    config = ServiceConfig(name="x", run_dir=str(tmp_path), book="b.csv", market="m.json")
    with zmq.Context() as ctx, pytest.raises(ValueError, match="no endpoints"):
        shell.Shell(config, "x", shell.Stop(), ctx)
