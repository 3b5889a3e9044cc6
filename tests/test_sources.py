"""Polling sources and per-quote failover: the state machines, then a real ingestion process
polling a real HTTP server (tests/sources_server.py) that the test slows, stops, restarts and
makes answer garbage, with the test as the feed (tests/test_ingest.py's rig)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from procs import descendants
from sources_server import QuoteServer
from test_ingest import Rig, _tick, ingest_rig

from workbench.engine.processes.conflation import REJECT_REASONS, Conflator
from workbench.engine.processes.failover import Failover
from workbench.engine.processes.polling import (
    POLL_ERRORS,
    PollIntake,
    PollQuote,
    backoff_s,
    parse_reply,
)
from workbench.engine.protocol.config import (
    BackoffConfig,
    ConflationConfig,
    FeedConfig,
    PollSourceConfig,
    load_sources,
)
from workbench.engine.transport.endpoints import free_port
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market

S = 1_000_000_000
IG, HY, EURUSD = "CDX.IG.5Y", "CDX.HY.5Y", "FX.EURUSD"
FAST = ConflationConfig(
    fx_spot_ms=20.0, fx_vol_ms=20.0, rates_ms=20.0, equity_ms=20.0, credit_ms=20.0
)


def _source(url: str = "http://127.0.0.1:1/quotes", **kw: object) -> PollSourceConfig:
    fields: dict[str, object] = {"name": "poll", "url": url, "quotes": ("CDX.*.5Y",)}
    return PollSourceConfig(**(fields | kw))  # type: ignore[arg-type]


# --- the state machines -----------------------------------------------------------------------


def test_the_feed_wins_a_stale_feed_yields_to_the_first_live_fallback_and_takes_back() -> None:
    ids = [EURUSD, IG, HY]
    first = _source(stale_after_s=1.0)
    second = _source(name="backup", quotes=(IG,))
    f = Failover(ids, [first, second], start_ns=0)
    assert f.guarded == {1: (1, 2), 2: (1,)}
    assert not f.eligible(1, 1, S // 2)  # the feed has its grace period from the start
    assert f.eligible(1, 1, 2 * S)
    assert f.eligible(2, 1, 2 * S)  # the first source has not answered either
    f.took(1, 1, 2 * S)
    assert not f.eligible(2, 1, 2 * S + S // 2)  # the first source answers: it ranks
    assert f.eligible(2, 1, 4 * S)  # the first source silent for longer than 1 s too
    f.took(2, 1, 4 * S)
    f.primary(1, 5 * S)
    assert not f.eligible(1, 1, 5 * S + 1)
    assert not f.eligible(2, 1, 5 * S + 1)
    assert [(e.quote, e.before, e.after) for e in f.events] == [
        (IG, "feed", "poll"),
        (IG, "poll", "backup"),
        (IG, "backup", "feed"),
    ]
    assert f.flips == 3
    assert f.source_of.tolist() == [0, 0, 0]
    assert f.stats()["fallback_quotes"] == 0.0


def test_intake_validates_per_source_seqs_and_balances_the_accounting_per_source() -> None:
    ids = [EURUSD, IG, HY]
    conflator = Conflator(ids, [1.08, 0.0055, 0.032], FAST)
    failover = Failover(ids, [_source(stale_after_s=1.0)], start_ns=0)
    intake = PollIntake({q: i for i, q in enumerate(ids)}, conflator, failover)
    # the feed's ticks: one of IG (seq 100) at 0.5 s
    assert conflator.offer(1, 0.0056, 100, S // 2) is None
    failover.primary(1, S // 2)
    entries: list[PollQuote | None] = [
        PollQuote(IG, 0.0057, 1),  # outranked: the feed quoted IG 0.5 s ago
        PollQuote(HY, 0.033, 1),  # taken: the feed never quoted HY
        PollQuote(EURUSD, 1.09, 1),  # not a quote of this source
        PollQuote("NOPE", 1.0, 1),
        None,  # an entry without seq
    ]
    intake.take(1, entries, 3 * S // 2)
    intake.take(1, [PollQuote(IG, 0.0057, 1), PollQuote(HY, 0.033, 1)], 2 * S)  # HY again
    intake.take(1, [PollQuote(HY, -1.0, 2), PollQuote(HY, 7.0, 3)], 3 * S)
    assert failover.source_of.tolist() == [0, 1, 1]  # IG: the feed silent for 1.5 s at 2 s
    stats = intake.stats()
    poll = {k.removeprefix("source.poll."): v for k, v in stats.items() if "source.poll." in k}
    assert (poll["offered"], poll["accepted"]) == (9, 2)
    assert poll["rejected.outranked"] == 1
    assert poll["rejected.duplicate"] == 1
    assert poll["rejected.unknown_id"] == 2
    assert poll["rejected.bad_payload"] == 1
    assert poll["rejected.non_positive"] == 1
    assert poll["rejected.out_of_range"] == 1
    assert poll["errors.partial"] == 1  # the 3rd reply lacks IG
    feed = {k.removeprefix("source.feed."): v for k, v in stats.items() if "source.feed." in k}
    assert (feed["offered"], feed["accepted"], feed["rejected"]) == (1, 1, 0)
    for src in (poll, feed):
        assert src["offered"] == src["accepted"] + src["rejected"]
        assert src["rejected"] == sum(src[f"rejected.{r}"] for r in REJECT_REASONS)
    assert conflator.offered == 10
    assert conflator.accepted == 3
    assert conflator.gaps == 0  # a poll's skipped seqs are no gaps of the feed


def test_a_fallback_taking_a_quote_over_again_gives_its_current_value() -> None:
    ids = [EURUSD, IG]
    conflator = Conflator(ids, [1.08, 0.0055], FAST)
    failover = Failover(ids, [_source(stale_after_s=1.0)], start_ns=0)
    intake = PollIntake({q: i for i, q in enumerate(ids)}, conflator, failover)
    intake.take(1, [PollQuote(IG, 0.0057, 4)], 2 * S)  # the feed never quoted IG: taken
    assert conflator.offer(1, 0.0056, 1, 3 * S) is None
    failover.primary(1, 3 * S)  # the feed takes it back
    intake.take(1, [PollQuote(IG, 0.0057, 4)], 7 * S // 2)  # outranked
    intake.take(1, [PollQuote(IG, 0.0057, 4)], 5 * S)  # the feed silent 2 s: seq 4 again
    intake.take(1, [PollQuote(IG, 0.0057, 4)], 6 * S)  # on it now: a duplicate
    intake.take(1, [PollQuote(IG, 0.0057, 3)], 7 * S)
    counts = intake.counts[1]
    assert counts.accepted == 2
    assert counts.rejected["outranked"] == 1
    assert counts.rejected["duplicate"] == 1
    assert counts.rejected["out_of_order"] == 1
    assert [e.after for e in failover.events] == ["poll", "feed", "poll"]
    _, values, seqs = conflator.due(8 * S)
    assert values.tolist() == [0.0057]
    assert seqs.tolist() == [4]


def test_replies_and_backoff() -> None:
    assert parse_reply(b'{"quotes": []}') == ([], None)
    assert parse_reply(b'{"quotes": [{"id": "X", "value": "1", "seq": 1}]}') == ([None], None)
    assert parse_reply(b'{"quotes": [{"id": "X", "value": true, "seq": 1}]}') == ([None], None)
    assert parse_reply(b"")[1] == "bad_json"
    assert parse_reply(b"[1, 2]")[1] == "bad_shape"
    delays = [backoff_s(BackoffConfig(initial_s=1.0, max_s=30.0), n) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_sources_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "sources.json"
    good = {"name": "rest", "url": "http://127.0.0.1:8080/q", "quotes": ["CDX.*"]}
    path.write_text(json.dumps([good | {"backoff": {"initial_s": 0.5, "max_s": 10}}]))
    (src,) = load_sources(path)
    assert src.backoff.max_s == 10.0
    assert src.stale_after_s == 5.0
    for bad in ({"url": "ftp://x"}, {"quotes": []}, {"poll_s": 0}, {"name": "feed"}):
        path.write_text(json.dumps([good | bad]))
        with pytest.raises(ValueError, match="polling source"):
            load_sources(path)
    path.write_text(json.dumps([good, good]))
    with pytest.raises(ValueError, match="repeated"):
        load_sources(path)
    path.write_text(json.dumps([{"name": "rest"}]))
    with pytest.raises(ValueError, match="url"):
        load_sources(path)


# --- a real ingestion, a real HTTP server -----------------------------------------------------


@pytest.fixture
def server() -> Iterator[QuoteServer]:
    srv = QuoteServer(free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def market_file(market: MarketSnapshot, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("market") / "market.json"
    save_market(market, path)
    return path


@contextmanager
def poll_rig(market: MarketSnapshot, market_file: Path, server: QuoteServer) -> Iterator[Rig]:
    """An ingestion process polling ``server`` for IG and HY, the test its feed."""
    source = _source(
        url=f"{server.url}/quotes",
        quotes=(IG, HY),
        poll_s=0.1,
        timeout_s=0.3,
        stale_after_s=1.0,
        backoff=BackoffConfig(initial_s=0.1, max_s=0.4),
    )
    with ingest_rig(
        market, market_file, conflation=FAST, feed=FeedConfig(sources=(source,))
    ) as rig:
        yield rig


def _balanced(stats: dict[str, float]) -> None:
    for name in ("feed", "poll"):
        p = f"source.{name}"
        assert stats[f"{p}.offered"] == stats[f"{p}.accepted"] + stats[f"{p}.rejected"], name
        assert stats[f"{p}.rejected"] == sum(stats[f"{p}.rejected.{r}"] for r in REJECT_REASONS)
    assert stats["offered"] == stats["source.feed.offered"] + stats["source.poll.offered"]


def test_a_quote_the_feed_stops_goes_to_its_fallback_and_back_when_the_feed_resumes(
    market: MarketSnapshot,
    market_file: Path,
    server: QuoteServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server.order(quotes={IG: [0.0061, 7], HY: [0.031, 3]})
    with poll_rig(market, market_file, server) as rig:
        ig, hy, src = rig.index(IG), rig.index(HY), rig.table.columns["source"]
        seq = 0

        def feed_ig(seconds: float, value: float = 0.0056) -> None:
            nonlocal seq
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                seq += 1
                rig.send([_tick(IG, value, seq)])
                time.sleep(0.1)

        # the feed quotes IG, never HY: HY flips to the poll within ~1 s, IG stays on the feed
        feed_ig(2.0)
        assert src[hy] == 1
        assert rig.table.columns["value"][hy] == 0.031
        assert src[ig] == 0
        assert rig.table.columns["value"][ig] == 0.0056
        # the feed stops quoting IG: its fallback's value is taken
        stats = rig.heartbeat(lambda s: s.get("fallback.CDX.IG.5Y") == 1.0, timeout=5.0)
        time.sleep(0.1)  # the flush after the acceptance
        assert src[ig] == 1
        assert rig.table.columns["value"][ig] == 0.0061
        # it resumes: the feed takes over at its first tick
        feed_ig(0.5, value=0.0058)
        stats = rig.heartbeat(lambda s: s.get("fallback.CDX.IG.5Y") == 0.0)
        assert src[ig] == 0
        assert rig.table.columns["value"][ig] == 0.0058
        assert stats["flips"] == 3
        assert stats["fallback_quotes"] == 1
        assert stats["source.poll.on_fallback"] == 1
        # while the feed is live the fallback's new values of IG are refused, HY's taken
        server.order(quotes={IG: [0.0062, 8], HY: [0.0305, 4]})
        feed_ig(0.5, value=0.0059)
        stats = rig.heartbeat(lambda s: s.get("source.feed.accepted", 0) >= seq)
        assert rig.table.columns["value"][hy] == 0.0305
        assert rig.table.columns["value"][ig] == 0.0059
        assert stats["source.poll.rejected.outranked"] > 0
        assert stats["source.feed.offered"] == seq
        assert stats["source.feed.accepted"] == seq
        _balanced(stats)
    records = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    flips = [r for r in records if r.get("event") == "source_flip"]
    assert [(r["quote"], r["before"], r["after"]) for r in flips] == [
        (HY, "feed", "poll"),
        (IG, "feed", "poll"),
        (IG, "poll", "feed"),
    ]


def test_every_fault_is_counted_and_the_last_good_value_stays_and_ingestion_lives(
    market: MarketSnapshot, market_file: Path, server: QuoteServer
) -> None:
    server.order(quotes={HY: [0.031, 1], IG: [0.0061, 1]})
    with poll_rig(market, market_file, server) as rig:
        hy, values = rig.index(HY), rig.table.columns["value"]
        rig.heartbeat(lambda s: s.get("fallback.CDX.HY.5Y") == 1.0, timeout=5.0)
        faults = {
            "timeout": {"mode": "slow", "delay_s": 1.0},
            "http_5xx": {"mode": "error"},
            "http_status": {"mode": "missing"},
            "too_large": {"mode": "large"},
            "bad_json": {"mode": "garbage"},
            "bad_shape": {"mode": "shape"},
            "partial": {"mode": "partial", "quotes": {HY: [0.031, 1], IG: [0.0061, 1]}},
        }
        for error, order in faults.items():
            server.order(**order)
            key = f"source.poll.errors.{error}"
            rig.heartbeat(lambda s, key=key: s.get(key, 0) >= 2, timeout=5.0)
            assert values[hy] == 0.031  # the last good value stays (and ages)
        # out of range and negative values: refused by the same validation as the feed's
        server.order(mode="ok", quotes={HY: [1.5, 2], IG: [-0.001, 2]})
        stats = rig.heartbeat(lambda s: s.get("source.poll.rejected.non_positive", 0) >= 2)
        assert stats["source.poll.rejected.out_of_range"] >= 2
        assert values[hy] == 0.031
        # the server goes away: connection errors; it comes back with new values: taken
        server.stop()
        rig.heartbeat(lambda s: s.get("source.poll.errors.connect", 0) >= 2, timeout=5.0)
        server.start()
        server.order(quotes={HY: [0.0333, 5], IG: [0.0064, 5]})
        stats = rig.heartbeat(lambda s: values[hy] == 0.0333, timeout=5.0)
        assert stats["source.poll.rejected.bad_payload"] >= 1  # the partial reply's entry
        for error in POLL_ERRORS:
            assert stats[f"source.poll.errors.{error}"] >= 1, error
        # the feed's ticks still flow through the same process
        rig.send([_tick(EURUSD, 1.0901, 1)])
        stats = rig.heartbeat(lambda s: s.get("source.feed.accepted", 0) == 1)
        assert rig.proc.is_alive()
        _balanced(stats)
        # the polling process is killed: the ingestion starts another, the polls go on
        assert rig.proc.pid is not None
        (pollers,) = descendants(rig.proc.pid)
        os.kill(pollers, signal.SIGKILL)
        server.order(quotes={HY: [0.0334, 6], IG: [0.0064, 6]})
        stats = rig.heartbeat(lambda s: values[hy] == 0.0334, timeout=10.0)
        assert stats["pollers_restarts"] == 1
        assert descendants(rig.proc.pid) != {pollers}
