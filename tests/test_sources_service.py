"""A live service with a polling source: the test is its feed (an external publisher) and runs
the HTTP quote server (tests/sources_server.py); status, the service log and the Telemetry
widget show the failover."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import polars as pl
import pytest
import zmq
from service_helpers import make_files, start, wait
from sources_server import QuoteServer

from workbench.cli import main
from workbench.client import BackoffConfig, Client, FeedConfig, PollSourceConfig, ServiceError
from workbench.engine.telemetry import logs
from workbench.engine.transport.endpoints import free_port
from workbench.widgets import Telemetry
from workbench.widgets.greek_table import GridModel

IG, HY = "CDX.IG.5Y", "CDX.HY.5Y"
ENCODE = msgspec.msgpack.Encoder().encode


def _ingest(client: Client) -> dict[str, float]:
    st = client.status()
    return next(p for p in st["processes"] if p["name"] == "ingest").get("stats") or {}


async def _until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s} s")
        await asyncio.sleep(0.1)


def test_a_live_service_fails_over_per_quote_and_shows_it(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    server = QuoteServer(free_port())
    server.start()
    ctx = zmq.Context()
    pub: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    address = f"tcp://127.0.0.1:{free_port()}"
    pub.bind(address)
    source = PollSourceConfig(
        name="rest",
        url=f"{server.url}/quotes",
        quotes=("CDX.*.5Y",),
        poll_s=0.2,
        timeout_s=0.5,
        stale_after_s=2.0,
        backoff=BackoffConfig(initial_s=0.2, max_s=1.0),
    )
    client: Client | None = None
    seq = 0

    def feed_ig(value: float) -> None:
        nonlocal seq
        seq += 1
        pub.send(ENCODE([IG, value, seq, time.monotonic_ns()]))

    try:
        server.order(quotes={IG: [0.0061, 7], HY: [0.031, 3]})
        client = start(files, "sources", feed=address, sources=[source])
        assert pub.poll(30_000), "the ingestion never subscribed"
        pub.recv()
        # IG ticks on the feed, HY does not: HY goes to its fallback, IG stays
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:
            feed_ig(0.0056)
            time.sleep(0.2)
        stats = _ingest(client)
        assert stats["fallback.CDX.HY.5Y"] == 1.0
        assert stats["fallback.CDX.IG.5Y"] == 0.0
        # the feed stops quoting IG: it goes to the fallback too
        wait(lambda: _ingest(client).get("fallback.CDX.IG.5Y") == 1.0, 10, "IG on its fallback")

        async def watch() -> str:
            tel = Telemetry(client, period_s=0.5)
            try:
                await _until(lambda: tel.refreshes >= 3, 30, "telemetry refreshes")
                return str(tel.sources.value)
            finally:
                tel.close()

        # the workers mark the positions priced off them; the snapshot counts them per group
        def credit_fallback() -> int:
            table = client.latest().grouped(("asset_class",))
            row = table.filter(pl.col("asset_class").cast(pl.String) == "credit")
            return int(row["fallback"][0])

        wait(lambda: credit_fallback() > 0, 20, "credit positions marked as on a fallback")
        snap = client.latest()
        by_class = snap.grouped(("asset_class",))
        others = by_class.filter(pl.col("asset_class").cast(pl.String) != "credit")
        assert others["fallback"].sum() == 0
        assert int(snap.grouped(())["fallback"][0]) == credit_fallback()
        model = GridModel()
        model.render(by_class, ("asset_class",), snap.grouped(()))
        markup = model.table_html(("asset_class",), "")
        marked = credit_fallback()
        assert f"⇄{marked}" in markup
        assert "<td class=fb>" in markup
        shown = asyncio.run(watch())
        assert f"{IG} (rest)" in shown
        assert f"{HY} (rest)" in shown
        assert "<td>rest</td>" in shown
        assert "<td>feed</td>" in shown
        # the feed resumes: it takes IG back at once
        for _ in range(5):
            feed_ig(0.0058)
            time.sleep(0.1)
        wait(lambda: _ingest(client).get("fallback.CDX.IG.5Y") == 0.0, 10, "IG on the feed")
        wait(lambda: credit_fallback() < marked, 20, "IG's positions no longer marked")
        wait(lambda: _ingest(client).get("source.feed.offered") == seq, 10, "every tick counted")
        stats = _ingest(client)
        assert stats["source.feed.accepted"] == seq
        assert stats["source.feed.offered"] == seq
        assert stats["source.rest.accepted"] >= 2
        for name in ("feed", "rest"):
            p = f"source.{name}"
            assert stats[f"{p}.offered"] == stats[f"{p}.accepted"] + stats[f"{p}.rejected"]
        log_path = Path(client.descriptor.config.run_dir) / "service.log"
        records = logs.read(log_path)
        flips = [(r["quote"], r["after"]) for r in records if r["event"] == "source_flip"]
        # (before the test's first tick IG had no feed for longer than 2 s: it flipped early)
        assert flips[-2:] == [(IG, "rest"), (IG, "feed")]
        assert [f for f in flips if f[0] == HY] == [(HY, "rest")]
        assert all(r["role"] == "ingest" for r in records if r["event"] == "source_flip")
        # the ingestion dies: its successor takes each quote's source from the quote table
        (old,) = [p for p in client.status()["processes"] if p["name"] == "ingest"]
        os.kill(old["pid"], signal.SIGKILL)

        def restarted() -> bool:
            procs = client.status()["processes"]
            new = next(p for p in procs if p["name"] == "ingest")
            return bool(new["pid"] != old["pid"] and new["state"] == "ready")

        wait(restarted, 60, "the ingestion restarted")
        assert _ingest(client).get("fallback.CDX.HY.5Y") == 1.0  # at once, not 2 s later
        wait(lambda: _ingest(client).get("source.rest.polls", 0) >= 15, 30, "3 s of polls")
        assert _ingest(client)["fallback.CDX.HY.5Y"] == 1.0
        records = logs.read(log_path)
        flips = [(r["quote"], r["after"]) for r in records if r["event"] == "source_flip"]
        assert [f for f in flips if f[0] == HY] == [(HY, "rest")]  # no flip counted again
        # the dead ingestion's polling process died with it: the supervisor reaps it
        supervisor = client.descriptor.pid
        wait(lambda: not _zombies_of(supervisor), 15, "no exited child left unreaped")
    finally:
        if client is not None:
            client.stop()
        pub.close(linger=0)
        ctx.term()
        server.stop()


def _zombies_of(pid: int) -> list[int]:
    """Pids of ``pid``'s children that exited and were not waited for."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def test_serve_refuses_a_bad_sources_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book, market = make_files(tmp_path)
    bad = tmp_path / "sources.json"
    bad.write_text('[{"name": "rest", "url": "ftp://x", "quotes": ["CDX.*"]}]')
    args = ["serve", "--book", str(book), "--market", str(market), "--sources", str(bad)]
    assert main([*args, "--name", "badsources"]) == 2
    assert "polling source rest: url must be http(s)" in capsys.readouterr().err
    bad.write_text('{"name": "rest"}')
    assert main([*args, "--name", "badsources"]) == 2
    assert "sources.json" in capsys.readouterr().err
    twice = PollSourceConfig(name="rest", url="http://127.0.0.1:1/q", quotes=("CDX.*",))
    with pytest.raises(ServiceError, match="repeated"):
        start((book, market), "badsources", feed=FeedConfig(sources=(twice, twice)))
