"""Every path by which a number reaches the desk: right, or visibly stale.

A booking file rewritten under a running service, a worker killed after that, a reprice that
fails, a process that hangs, a peer that stops reading, a message of another schema version, a
configuration that cannot run. Real processes, sockets and shared memory; each test has a
service of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest
import zmq
import zmq.auth
from service_helpers import make_files, start, wait

import workbench
from workbench.client import Client, ServiceError
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import RemoteConfig
from workbench.engine.telemetry import logs
from workbench.engine.transport.gateway import generate_keys
from workbench.engine.transport.shm import QuoteTable
from workbench.risk.breaches import Breach

GREEKS = ("pv", "pv_ccy", "delta", "gamma", "vega", "theta")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return make_files(tmp_path)


@pytest.fixture
def quiet(files: tuple[Path, Path]) -> Iterator[Client]:
    """A service with no feed (nothing moves) and a recon every second."""
    svc = start(files, "trust", feed="none", recon_s=1.0)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def live(files: tuple[Path, Path]) -> Iterator[Client]:
    """A service under a slow synthetic feed (FX spots among the quotes that tick)."""
    svc = start(files, "trustlive", rate=1_000.0)
    try:
        yield svc
    finally:
        svc.stop()


def _pid(svc: Client, name: str) -> int:
    return int(next(p["pid"] for p in svc.status()["processes"] if p["name"] == name))


def _fresh(svc: Client) -> bool:
    return not svc.positions()["stale"].any()


def _recon(svc: Client) -> Breach | None:
    return next((b for b in svc.latest().breaches if b.measure == "recon"), None)


def _rewrite_without_first(book: Path, n: int, changed: int) -> str:
    """Rewrite the booking file as a booking export may: the same trades without the first
    ``n``, and one more (row ``changed`` of the rest) with another maturity. Its id."""
    frame = pl.read_parquet(book).slice(n)
    pid = frame["position_id"][changed]
    frame = frame.with_columns(
        pl.when(pl.col("position_id") == pid)
        .then(pl.col("maturity") + pl.duration(days=7))
        .otherwise(pl.col("maturity"))
        .alias("maturity")
    )
    tmp = book.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(book)
    return str(pid)


def test_a_rewritten_booking_file_changes_no_number_and_is_a_recon_breach(
    quiet: Client, files: tuple[Path, Path]
) -> None:
    svc = quiet
    before = svc.positions().sort("row")
    assert _recon(svc) is None
    changed = _rewrite_without_first(files[0], 200, changed=10)
    wait(lambda: _recon(svc) is not None, 5.0, "a recon breach for the rewritten file")
    breach = _recon(svc)
    assert breach is not None
    assert breach.value == 201.0
    assert "200 removed (IRS-000001" in breach.detail
    assert f"1 changed ({changed})" in breach.detail
    assert "0 added" in breach.detail
    # a worker and the aggregator that restart now price the book the service started with
    for name in ("rates-0", "aggregator"):
        os.kill(_pid(svc, name), signal.SIGKILL)
        time.sleep(0.5)
        wait(lambda: bool(svc.status()["ready"]), 60, f"{name} back")
        wait(lambda: _fresh(svc), 60, "every position fresh")
        after = svc.positions().sort("row")
        assert after.height == before.height == 1_000
        assert after["position_id"].to_list() == before["position_id"].to_list()
        for col in GREEKS:
            np.testing.assert_allclose(after[col].to_numpy(), before[col].to_numpy(), rtol=1e-12)
    assert _recon(svc) is not None  # still reported: the file still differs


def test_reload_book_swaps_the_book_atomically_and_refuses_a_bad_file(
    quiet: Client, files: tuple[Path, Path], tmp_path: Path
) -> None:
    svc = quiet
    _rewrite_without_first(files[0], 200, changed=10)
    wait(lambda: _recon(svc) is not None, 5.0, "a recon breach")
    bad = tmp_path / "bad.csv"
    pl.read_parquet(files[0]).head(5).with_columns(pl.lit("x").alias("notional")).write_csv(bad)
    with pytest.raises(ServiceError, match=r"bad\.csv.*row.*notional.*'?x"):
        svc.reload_book(bad)
    st = svc.status()
    assert st["book_generation"] == 0
    assert st["positions"] == 1_000

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(svc.endpoints.snapshots)
    try:
        out = svc.reload_book()
        assert out["book_generation"] == 1
        assert out["positions"] == 800
        counts: list[float] = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if sub.poll(200):
                counts.append(msg.snapshot_decoder.decode(sub.recv()).stats["positions"])
    finally:
        sub.close()
    # every snapshot holds one book: the old one's 1,000 positions, then only the new 800
    assert set(counts) <= {1_000.0, 800.0}
    assert 800.0 in counts
    assert 1_000.0 not in counts[counts.index(800.0) :]
    after = svc.positions()
    assert after.height == 800
    assert not after["stale"].any()
    assert svc.status()["book_generation"] == 1
    wait(lambda: _recon(svc) is None, 5.0, "the recon breach cleared on the new book")


def _rates_underlying(svc: Client) -> str:
    """A non-USD rates underlying: its swaps are re-converted to USD on every FX spot tick."""
    frame = svc.positions().filter(
        (pl.col("asset_class").cast(pl.String) == "rates")
        & (pl.col("currency").cast(pl.String) != "USD")
    )
    return str(frame["underlying"].cast(pl.String).value_counts(sort=True)["underlying"][0])


def test_a_failed_reprice_stays_stale_with_its_reason_until_a_reprice_succeeds(
    live: Client,
) -> None:
    svc = live
    wait(lambda: _fresh(svc), 30, "fresh at start")
    underlying = _rates_underlying(svc)
    hit = pl.col("underlying").cast(pl.String) == underlying
    svc.set_option("rates-0", "fail_reprice", f"rates:{underlying}")
    t0 = time.monotonic()

    def flagged() -> bool:
        p = svc.positions().filter(hit)
        return bool(p["stale"].all() and (p["stale_reason"] == "reprice failed").all())

    wait(flagged, 10, "the positions whose reprice fails flagged stale")
    fx_before = _fx_spot_flushes(svc)
    # spot ticks re-convert every rates row to USD: the failed ones must stay stale regardless
    while time.monotonic() - t0 < 6.0:
        p = svc.positions()
        assert p.filter(hit)["stale"].all(), "a failed reprice lost its stale flag"
        assert (p.filter(hit)["stale_reason"] == "reprice failed").all()
        assert not p.filter(~hit & (pl.col("asset_class").cast(pl.String) == "rates"))[
            "stale"
        ].any()
        time.sleep(0.3)
    assert _fx_spot_flushes(svc) > fx_before, "no FX spot moved meanwhile: the test proved nothing"
    ages = svc.positions().filter(hit)["age_s"]
    assert ages.min() > 4.0  # the last good values age
    failed = next(p for p in svc.status()["processes"] if p["name"] == "rates-0")["stats"]
    assert failed["failed_groups"] == 1.0
    snap = svc.snapshot()[1]
    assert list(snap["failed"]["rates-0"]) == [f"rates:{underlying}"]
    svc.set_option("rates-0", "fail_reprice", "")
    wait(lambda: _fresh(svc), 5, "fresh once a reprice succeeds")
    assert (svc.positions()["stale_reason"] == "").all()


def _fx_spot_flushes(svc: Client) -> float:
    """Reprices done by the FX worker (each follows an FX spot or vol move)."""
    return float(
        next(p for p in svc.status()["processes"] if p["name"] == "fx-0")["stats"]["reprices"]
    )


def test_a_reprice_failing_from_the_start_shows_its_reason(files: tuple[Path, Path]) -> None:
    svc = start(files, "trustfail", feed="none", fail_reprice=("equity:*",))
    try:
        p = svc.positions()
        eq = p.filter(pl.col("asset_class").cast(pl.String) == "equity")
        assert eq.height > 0
        assert eq["stale"].all()
        assert (eq["stale_reason"] == "reprice failed").all()
        assert not p.filter(pl.col("asset_class").cast(pl.String) != "equity")["stale"].any()
    finally:
        svc.stop()


def test_status_answers_in_a_second_with_any_process_hung_or_dead(live: Client) -> None:
    svc = live
    for name in ("aggregator", "ingest", "fx-0", "feed"):
        pid = _pid(svc, name)
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            st = svc.status()
            took = time.monotonic() - t0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert took < 1.0, f"status took {took:.2f} s with {name} stopped"
        assert st["answered_by"] == "supervisor"
    sup = svc.descriptor.pid
    os.kill(sup, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        st = svc.status()
        took = time.monotonic() - t0
    finally:
        os.kill(sup, signal.SIGCONT)
    assert took < 1.3, f"status took {took:.2f} s with the supervisor stopped"
    assert st["answered_by"] == "client"
    assert st["ready"] is False
    assert st["supervisor"] == "stopped"
    states = {p["name"]: p["state"] for p in st["processes"]}
    assert states["aggregator"] == "running"
    assert states["fx-0"] == "running"


def test_stop_works_with_the_aggregator_hung(files: tuple[Path, Path]) -> None:
    svc = start(files, "trustjam", feed="none")
    agg = _pid(svc, "aggregator")
    sup = svc.descriptor.pid
    os.kill(agg, signal.SIGSTOP)
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "stop", "--name", "trustjam"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    if done.returncode != 0:
        os.kill(agg, signal.SIGCONT)
        svc.stop()
    assert done.returncode == 0, done.stderr
    svc.close()
    assert not Path(f"/proc/{sup}").exists() or _zombie(sup)
    # the supervisor was asked, not signalled after the aggregator failed to relay the request
    records = logs.read(Path(svc.descriptor.config.run_dir) / "service.log")
    stopping = [r["msg"] for r in records if r["event"] == "stopping"]
    assert stopping == ["stop requested: stopping"], stopping
    assert took < 20


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _flood(address: str, payloads: list[bytes], seconds: float) -> tuple[int, int]:
    """Send every payload to a ROUTER at ``address`` without waiting for each answer (reading
    those already there as it goes); (sent, answered)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    try:
        answered = 0
        for p in payloads:  # a client that reads its answers while it sends
            sock.send_multipart([b"", p])
            while sock.poll(0):
                sock.recv_multipart()
                answered += 1
        deadline = time.monotonic() + seconds
        while answered < len(payloads) and time.monotonic() < deadline:
            if sock.poll(100):
                sock.recv_multipart()
                answered += 1
        return len(payloads), answered
    finally:
        sock.close()


def _publishing(svc: Client, seconds: float = 2.5) -> int:
    """Snapshots published in ``seconds`` (read on a fresh subscription)."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(svc.endpoints.snapshots)
    seqs: set[int] = set()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sub.poll(100):
                seqs.add(msg.snapshot_decoder.decode(sub.recv()).seq)
    finally:
        sub.close()
    return len(seqs)


def test_a_stalled_peer_never_stops_the_others(live: Client) -> None:
    svc = live
    control = svc.endpoints.control
    for stalled in ("fx-0", "supervisor", "ingest"):
        pid = svc.descriptor.pid if stalled == "supervisor" else _pid(svc, stalled)
        os.kill(pid, signal.SIGSTOP)
        try:
            if stalled == "supervisor":
                body = msg.encode(msg.StatusRequest())
            else:
                req = msg.SetOptionRequest(worker="fx-0", option="spline_cache", value=True)
                body = msg.encode(req)
            flood = [body] * 20_000 if stalled != "ingest" else []
            sent, answered = _flood(control, flood, 12.0) if flood else (0, 0)
            # every request is answered (an error for those the stalled peer cannot take),
            # and the snapshots keep coming while it is stopped
            assert answered == sent, f"{sent - answered} requests unanswered ({stalled} stalled)"
            assert _publishing(svc) >= 2, f"no snapshots while {stalled} is stopped"
            frame = svc.positions()
            assert frame.height == 1_000
        finally:  # a worker silent this long is killed by the supervisor (and restarted)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        wait(lambda: bool(svc.status()["ready"]), 60, f"every process ready after {stalled}")
    stats = svc.status()["aggregator"]
    assert stats["forward_dropped"] > 0
    # the aggregator stalled: the supervisor and the workers go on
    agg = _pid(svc, "aggregator")
    os.kill(agg, signal.SIGSTOP)
    try:
        before = svc.status()
        time.sleep(1.5)
        after = svc.status()
        reprices = {p["name"]: p["stats"].get("reprices", 0) for p in before["processes"]}
        moved = [
            p["name"]
            for p in after["processes"]
            if p["name"].startswith("fx") and p["stats"].get("reprices", 0) > reprices[p["name"]]
        ]
        assert moved, "the FX worker stopped pricing while the aggregator was stopped"
    finally:
        os.kill(agg, signal.SIGCONT)
    wait(lambda: _publishing(svc, 1.5) >= 1, 20, "snapshots again")


def test_a_message_of_another_schema_version_is_refused_and_counted(quiet: Client) -> None:
    svc = quiet
    future = msgspec.msgpack.encode({"op": "status", "v": msg.SCHEMA_VERSION + 1})
    for address in (svc.endpoints.control, svc.endpoints.supervisor):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        try:
            sock.send_multipart([b"", future])
            assert sock.poll(5_000)
            reply = msg.reply_decoder.decode(sock.recv_multipart()[-1])
        finally:
            sock.close()
        assert not reply.ok
        assert reply.error is not None
        assert f"schema version {msg.SCHEMA_VERSION + 1} refused" in reply.error
    # a notice of another version on the workers' result channel is dropped and counted
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(svc.endpoints.risk)
    notice = msg.RiskUpdated(
        worker="fx-0", asset_class="fx", quote_gen=10**9, flushed_ns=0, done_ns=0,
        reprice_ns=0, repriced=0, v=msg.SCHEMA_VERSION + 1,
    )  # fmt: skip
    push.send(msg.encode(notice))
    push.close()
    st = svc.status()
    assert st["requests"]["version_refused"] == 1
    wait(
        lambda: svc.status()["aggregator"].get("version_refused", 0) >= 2,
        10,
        "the aggregator's count of refused versions",
    )


@contextlib.contextmanager
def _fed(files: tuple[Path, Path], name: str) -> Iterator[tuple[Client, zmq.Socket[bytes]]]:
    """A service reading an external feed, and the PUB socket that is that feed."""
    pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        svc = start(files, name, feed=f"tcp://127.0.0.1:{port}")
        try:
            yield svc, pub
        finally:
            svc.stop()
    finally:
        pub.close()


def test_sequence_gaps_are_counted(files: tuple[Path, Path]) -> None:
    with _fed(files, "trustgaps") as (svc, pub):
        now = time.monotonic_ns()
        for seq in (1, 2, 5, 6, 20):  # gaps after 2 (3 missing... 2 seqs) and 6 (13)
            pub.send(msgspec.msgpack.encode(["FX.EURUSD", 1.1 + seq * 1e-5, seq, now]))
            time.sleep(0.05)

        def ingest() -> dict[str, float]:
            st = svc.status()
            return dict(next(p for p in st["processes"] if p["name"] == "ingest")["stats"])

        wait(lambda: ingest().get("accepted", 0) >= 5, 20, "the ticks accepted")
        wait(lambda: ingest().get("gaps", 0) == 2, 10, "two gaps")
        assert ingest()["gap_ticks"] == 15


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workers", "fx=9"], "--workers fx=9: expected 0 to 8"),
        (["--workers", "credit=1"], "has no credit positions"),
        (["--remote-host", "0.0.0.0"], "key"),
    ],
)
def test_a_configuration_that_cannot_run_is_refused_before_anything_starts(
    tmp_path: Path, args: list[str], says: str
) -> None:
    files = make_files(tmp_path)
    book = files[0]
    if "credit=1" in args:  # a book without credit positions
        frame = pl.read_parquet(book)
        frame.filter(~pl.col("product").str.starts_with("CDX")).write_parquet(book)

    def segments() -> set[str]:  # the refused service's (other services may share the machine)
        return {s for s in os.listdir("/dev/shm") if "_refused_" in s}

    shm_before = segments()
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "serve", "--book", str(book),
         "--market", str(files[1]), "--name", "refused", "--feed", "none", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert segments() <= shm_before


def test_ingest_killed_mid_write_leaves_a_quote_table_every_reader_can_read(
    quiet: Client,
) -> None:
    svc = quiet
    before = svc.positions().sort("row")
    config = svc.descriptor.config
    table = QuoteTable.attach(config.segments["quotes"], svc.descriptor.n_quotes)
    ingest = _pid(svc, "ingest")
    try:
        os.kill(ingest, signal.SIGSTOP)
        table.begin(0)  # as the ingestion leaves it when killed between begin() and end()
        os.kill(ingest, signal.SIGKILL)
        wait(lambda: not table.counters[0] & 1, 10, "the quote table's write ended")
        values, _, _ = table.snapshot()  # a consistent read again
    finally:
        table.close()
    assert np.isfinite(values).all()
    wait(lambda: bool(svc.status()["ready"]), 60, "ingest back")
    wait(lambda: _fresh(svc), 30, "fresh")
    after = svc.positions().sort("row")
    for col in GREEKS:  # every quote re-stamped: the curves re-solve from a warm start
        np.testing.assert_allclose(after[col].to_numpy(), before[col].to_numpy(), rtol=1e-9)


def _standby(svc: Client) -> dict[str, object] | None:
    got: dict[str, object] | None = svc.status()["standby"]
    return got


def _log_since(svc: Client, seen: int) -> list[dict[str, object]]:
    return logs.read(Path(svc.descriptor.config.run_dir) / "service.log")[seen:]


def _nice(pid: int) -> set[int]:
    """The nice values of every thread of process ``pid``."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return out


def test_workers_killed_one_after_another_each_find_a_ready_standby(quiet: Client) -> None:
    """A standby that takes a slot forks a ready copy of itself first: a second, third and
    fourth worker killed the moment the previous slot is fresh again (the same worker twice
    among them) are each taken over, none cold-started, and no number changes."""
    svc = quiet
    wait(lambda: (_standby(svc) or {}).get("state") == "ready", 120, "the standby ready")
    before = svc.positions().sort("row")
    seen = len(_log_since(svc, 0))
    takers: list[int] = []
    for name in ("fx-0", "equity-0", "fx-0", "rates-0"):
        ready = _standby(svc)
        assert ready is not None, f"no standby for {name}"
        assert ready["state"] == "ready", f"no standby ready for {name}"
        victim = _pid(svc, name)
        os.kill(victim, signal.SIGKILL)
        wait(lambda n=name, v=victim: _pid(svc, n) != v, 30, f"{name} replaced")  # type: ignore[misc]
        assert _pid(svc, name) == ready["pid"], f"{name}'s slot went to the standby"
        takers.append(int(str(ready["pid"])))
        wait(lambda: _fresh(svc), 30, f"{name}'s positions fresh")
        wait(lambda: _standby(svc) is not None, 10, f"a standby after {name}'s takeover")
    records = _log_since(svc, seen)
    exits = [r for r in records if r["event"] == "child_exited" and r.get("child") != "standby"]
    assert [r["standby"] for r in exits] == [True] * 4, exits
    spawned = [r for r in records if r["event"] == "child_started"]
    assert all(r.get("forked") for r in spawned), f"a process was started cold: {spawned}"
    takes = [r for r in records if r["event"] == "ready" and r.get("took_over")]
    threads = svc.descriptor.config.takeover_threads
    assert [r.get("threads") for r in takes] == [threads] * 4, "each takeover on both cores"
    # the standby waits at the service's priority (its takeover is not starved); the worker
    # it became runs, every thread of it, at the workers' lower one
    base = _nice(svc.descriptor.pid)
    standby = _standby(svc)
    assert standby is not None
    assert _nice(int(str(standby["pid"]))) == base
    lowered = min(19, next(iter(base)) + svc.descriptor.config.worker_nice)
    for name in ("fx-0", "equity-0", "rates-0"):
        assert _nice(_pid(svc, name)) == {lowered}, f"{name}'s threads"
    assert len(set(takers)) == 4
    after = svc.positions().sort("row")
    assert not after["stale"].any()
    for col in GREEKS:  # nothing moved: the same numbers, whichever process priced them
        np.testing.assert_allclose(after[col].to_numpy(), before[col].to_numpy(), rtol=1e-12)


def test_a_worker_that_dies_during_its_start_up_is_restarted_with_backoff(
    quiet: Client,
) -> None:
    """Only a worker that had been serving hands its slot to the standby: one killed while it
    starts (a crash loop) goes through the restart policy's backoff, the standby stays."""
    svc = quiet
    wait(lambda: (_standby(svc) or {}).get("state") == "ready", 120, "the standby ready")
    standby = _standby(svc)
    assert standby is not None
    seen = len(_log_since(svc, 0))
    old = _pid(svc, "equity-0")
    svc.restart("equity-0")  # a planned restart: a cold start, not the standby
    wait(lambda: _pid(svc, "equity-0") != old, 30, "equity-0 restarted")
    starting = _pid(svc, "equity-0")
    assert starting != standby["pid"]
    os.kill(starting, signal.SIGKILL)  # before it is ready (its start-up takes seconds)
    wait(lambda: _pid(svc, "equity-0") != starting, 60, "equity-0 started again")
    wait(lambda: _fresh(svc), 120, "fresh")
    records = _log_since(svc, seen)
    died = next(r for r in records if r["event"] == "child_exited" and r["child_pid"] == starting)
    assert died["standby"] is False
    assert not any(r["event"] == "ready" and r["pid"] == starting for r in records)
    assert _standby(svc) == standby, "the standby kept, still ready"
    restarted = svc.status()["processes"]
    assert next(p for p in restarted if p["name"] == "equity-0")["restarts"] >= 2


def test_the_remote_gateway_never_waits_on_a_stalled_aggregator(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """With the aggregator stopped, a remote client's status still answers (the gateway asks
    the supervisor), a flood of remote requests is answered at once with an error beyond what
    the queue to the aggregator holds (counted), and everything queued is answered once it
    reads again."""
    _, server = generate_keys(tmp_path / "server", "server")
    alice_public, alice = generate_keys(tmp_path / "clients", "alice")
    allowed = tmp_path / "authorized"
    allowed.mkdir()
    (allowed / alice_public.name).write_bytes(alice_public.read_bytes())
    remote = RemoteConfig(host="127.0.0.1", server_key=str(server), authorized_keys=str(allowed))
    svc = start(files, "trustremote", feed="none", remote=remote)
    ep = svc.descriptor.config.endpoints
    assert ep is not None
    client = workbench.connect_remote(ep.remote_control, ep.remote_snapshots,
                                      server_key=ep.server_public_key, client_key=alice,
                                      timeout_s=20)  # fmt: skip
    ctx = zmq.Context()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.setsockopt(zmq.SNDHWM, 0)
    flood.setsockopt(zmq.RCVHWM, 0)
    flood.curve_serverkey = ep.server_public_key.encode()
    flood.curve_publickey, flood.curve_secretkey = zmq.auth.load_certificate(alice)
    flood.connect(ep.remote_control)
    aggregator = _pid(svc, "aggregator")
    n = 5_000
    try:
        assert client.status()["ready"]
        os.kill(aggregator, signal.SIGSTOP)
        t0 = time.monotonic()
        st = client.status()
        assert time.monotonic() - t0 < 1.0
        assert st["answered_by"] == "supervisor"
        request = msg.encode(msg.AggregateRequest(by=("desk",)))
        for _ in range(n):
            flood.send(request)
        busy = 0
        while flood.poll(2000):
            reply = msg.reply_decoder.decode(flood.recv())
            assert not reply.ok
            assert "not reading requests" in reply.error
            busy += 1
        assert 0 < busy < n
        relay = client.status()["remote"]["relay"]
        assert relay["request_dropped"] == busy
        os.kill(aggregator, signal.SIGCONT)
        answered = 0
        while answered < n - busy and flood.poll(30_000):
            assert msg.reply_decoder.decode(flood.recv()).ok
            answered += 1
        assert answered == n - busy
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(aggregator, signal.SIGCONT)
        flood.close(linger=0)
        ctx.term()
        client.close()
        svc.stop()


def test_the_market_view_holds_every_quote_of_its_generation(files: tuple[Path, Path]) -> None:
    """client.market() is answered by a rates worker: an equity spot that moved (which that
    worker does not price) is in it at its new value, under the generation that holds it."""
    with _fed(files, "trustview") as (svc, pub):
        before = svc.market()
        spot = next(q for q in before.quotes["quote_id"] if q.startswith("EQ."))
        old = float(before.quotes.filter(pl.col("quote_id") == spot)["value"][0])

        def moved() -> bool:
            pub.send(msgspec.msgpack.encode([spot, old * 1.01, 1, time.monotonic_ns()]))
            return svc.market().generation > before.generation

        wait(moved, 30, "a new quote generation")
        view = svc.market()
        got = float(view.quotes.filter(pl.col("quote_id") == spot)["value"][0])
        assert got == pytest.approx(old * 1.01, rel=1e-12)
