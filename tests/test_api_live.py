"""The HTTP API with readers at once, streams, its service going away and coming back, and a
live feed: concurrent readers all get answers; the stream delivers each snapshot; it answers
503 with the reason while the service is away and the same numbers once a service of that name
runs again; a stalled stream subscriber neither slows another nor builds a backlog.

The set-up of tests/test_api_support.py, for a service called ``NAME`` here; the
restart test stops the module's service, the last test runs on one of that name with the
synthetic feed (about ten snapshots a second).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import test_api_support as support
from service_helpers import start, wait
from test_api_support import LIMITS, Api, Recorder, json_rows, snapshot_events

from workbench.client import Client

NAME = "apilive"
files = support.files
held = support.held
service = support.service
tokens = support.tokens
api = support.api
read = support.read
recorder = support.recorder


def test_concurrent_readers_all_get_answers(api: Api, tokens: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {tokens['read']}"}
    paths = ["/v1/latest?grouping=desk", "/v1/positions?asset_class=credit",
             "/v1/latest?grouping=desk,currency&format=csv", "/v1/limits", "/v1/status",
             "/v1/breaches"]  # fmt: skip

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http:
            return await asyncio.gather(*(http.get(paths[i % len(paths)]) for i in range(120)))

    answers = asyncio.run(run())
    assert [r.status_code for r in answers] == [200] * len(answers)
    credit = [r.json() for r in answers if "asset_class=credit" in str(r.url)]
    assert credit[0]["rows"]
    by_seq: dict[int, list[Any]] = {}
    for body in credit:  # one read of the service per snapshot: the same copy, ages included
        by_seq.setdefault(body["snapshot_seq"], []).append(body["rows"])
    for copies in by_seq.values():
        assert all(rows == copies[0] for rows in copies)
    still = [[{k: v for k, v in r.items() if k != "age_s"} for r in b["rows"]] for b in credit]
    assert all(rows == still[0] for rows in still)


def test_readers_of_one_positions_copy_share_one_rendered_answer(
    api: Api, tokens: dict[str, Any], service: Client
) -> None:
    auth = {"Authorization": f"Bearer {tokens['read']}"}
    asks = [{"asset_class": "credit", "measures": "pv,cs01"},
            {"asset_class": "credit", "measures": "pv,cs01", "format": "csv"}]  # fmt: skip
    before = httpx.get(f"{api.url}/v1/health").json()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http:
            return await asyncio.gather(
                *(http.get("/v1/positions", params=asks[i % 2]) for i in range(60))
            )

    answers = asyncio.run(run())
    after = httpx.get(f"{api.url}/v1/health").json()
    assert [r.status_code for r in answers] == [200] * len(answers)
    copies = after["positions_copies"] - before["positions_copies"]
    renders = after["positions_renders"] - before["positions_renders"]
    # at most one read of the service a second; the copy in hand is served while it runs
    assert 0 <= copies <= 5, (before, after)
    served = copies + 1  # the copies answered: the one in hand before, and those read
    assert 1 <= renders <= 2 * served, (before, after)  # once per question and copy, not 60
    by_copy: dict[tuple[str, str], set[bytes]] = {}
    for r in answers:
        seq = r.json()["snapshot_seq"] if "json" in r.headers["content-type"] else None
        key = (r.headers["content-type"], str(seq or r.headers["x-workbench-snapshot-seq"]))
        by_copy.setdefault(key, set()).add(r.content)
    assert len(by_copy) <= 2 * served
    expected, _ = service.snapshot()  # no feed: the numbers hold still
    credit = expected.filter(pl.col("asset_class").cast(pl.String) == "credit")
    rows = next(r for r in answers if "json" in r.headers["content-type"]).json()["rows"]
    assert [r["position_id"] for r in rows] == credit["position_id"].to_list()
    assert [r["pv"] for r in rows] == credit["pv"].to_list()
    assert [r["cs01"] for r in rows] == credit["cs01"].to_list()


def test_the_stream_delivers_each_snapshot_as_an_event(
    api: Api, tokens: dict[str, Any], recorder: Recorder
) -> None:
    auth = {"Authorization": f"Bearer {tokens['read']}"}
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{api.url}/v1/stream", headers=auth, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        for text in r.iter_text():
            buffer += text
            seen = snapshot_events(buffer)
            if len(seen) >= 4:
                break
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert seqs[-1] - seqs[1] == len(seqs) - 2  # one event per snapshot: none skipped
    for event in seen[1:]:
        view = recorder.view(event["seq"])
        assert sorted(event["tables"]) == ["asset_class", "desk", "desk,currency", "firm"]
        for name, rows in event["tables"].items():
            assert rows == json_rows(view.tables[name])
        assert [b["measure"] for b in event["breaches"]] == [b.measure for b in view.breaches]


def test_the_api_answers_503_while_the_service_is_away_and_recovers(
    api: Api, read: httpx.Client, files: tuple[Path, Path], held: dict[str, Client]
) -> None:
    """The module's service stops; another of that name starts, and stops again."""
    before = read.get("/v1/latest", params={"grouping": "desk"}).json()["rows"]
    held["svc"].stop()

    def away() -> bool:
        return read.get("/v1/latest").status_code == 503

    assert wait(away, 15, "503 while the service is away") < 10
    r = read.get("/v1/latest")
    assert NAME in r.json()["error"]
    assert r.headers["retry-after"] == "1"
    assert read.get("/v1/positions", params={"desk": "x"}).status_code == 503
    assert httpx.get(f"{api.url}/v1/ready").status_code == 503
    assert httpx.get(f"{api.url}/v1/health").json()["state"] == "away"
    back = start(files, NAME, feed="none", limits=LIMITS)
    try:
        wait(lambda: read.get("/v1/latest").status_code == 200, 30, "the API back")

        def same() -> bool:  # the same numbers once the new service has priced its book
            after = read.get("/v1/latest", params={"grouping": "desk"}).json()["rows"]
            return [r["pv"] for r in after] == pytest.approx([r["pv"] for r in before], rel=1e-12)

        wait(same, 15, "the numbers of before the restart")
        assert read.get("/v1/health").json()["reconnects"] >= 1
    finally:
        back.stop()


class EventReader:
    """SSE ``snapshot`` events parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.buffer = ""
        self.events: list[dict[str, Any]] = []

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Take ``text``; return the events it completed."""
        self.buffer += text
        *blocks, self.buffer = self.buffer.split("\n\n")
        done = snapshot_events("\n\n".join(blocks) + "\n\n") if blocks else []
        self.events.extend(done)
        return done


def _subscribe_raw(port: int, token: str) -> socket.socket:
    """An SSE subscriber on a bare socket with a tiny receive buffer, that reads nothing; its
    events carry every grouping (~100 kB each)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    query = "&".join(f"grouping={g}" for g in ("firm", "desk", "book", "product", "underlying",
                                                "currency", "desk,asset_class"))  # fmt: skip
    sock.sendall(
        f"GET /v1/stream?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        .encode()
    )  # fmt: skip
    return sock


@pytest.fixture(scope="module")
def live(files: tuple[Path, Path], held: dict[str, Client], read: httpx.Client) -> Iterator[Client]:
    """The service again, under a live feed (about ten snapshots a second), once the module's
    still one has stopped."""
    if held["svc"].alive():
        held["svc"].stop()
    svc = start(files, NAME, feed="synthetic", rate=2_000, limits=LIMITS)
    try:
        wait(lambda: read.get("/v1/ready").status_code == 200, 30, "the API following it")
        yield svc
    finally:
        svc.stop()


def test_a_stalled_subscriber_neither_slows_others_nor_builds_a_backlog(
    live: Client, api: Api, tokens: dict[str, Any], read: httpx.Client
) -> None:
    stalled = _subscribe_raw(api.port, tokens["read"])
    try:
        wait(lambda: read.get("/v1/health").json()["subscribers"] == 1, 10, "the subscriber")
        auth = {"Authorization": f"Bearer {tokens['read']}"}
        lags: list[int] = []
        reader = EventReader()
        first = read.get("/v1/health").json()["snapshot_seq"]
        with httpx.stream("GET", f"{api.url}/v1/stream", headers=auth, timeout=10) as r:
            t0 = time.monotonic()
            for text in r.iter_text():
                for event in reader.feed(text):
                    lags.append(read.get("/v1/health").json()["snapshot_seq"] - event["seq"])
                if time.monotonic() - t0 > 12:
                    break
            health = read.get("/v1/health").json()
        published = health["snapshot_seq"] - first
        seqs = [e["seq"] for e in reader.events]
        # the live reader kept up: (nearly) every snapshot, each the latest when it came
        assert published >= 30, f"{published} snapshots in 12 s: the feed is not live"
        assert len(seqs) >= 0.8 * published, (len(seqs), published)
        assert sorted(lags)[int(0.95 * len(lags))] <= 1, lags
        # the stalled one's writes block: its mailbox skips (latest wins) instead of queueing
        assert health["skipped"] > 0
        # once it reads again it catches up at once with the latest snapshot, not a backlog
        stalled.settimeout(10)
        received, last_seq, deadline = b"", -1, time.monotonic() + 10
        latest = read.get("/v1/health").json()["snapshot_seq"]
        while time.monotonic() < deadline and last_seq < latest:
            received += stalled.recv(1 << 20)
            ids = [int(line[4:]) for line in received.split(b"\n") if line.startswith(b"id: ")]
            last_seq = ids[-1] if ids else -1
        ids = [int(line[4:]) for line in received.split(b"\n") if line.startswith(b"id: ")]
        assert last_seq >= latest, (ids, latest)
        assert len(ids) < (latest - ids[0] + 1) / 2, ids  # most snapshots were skipped
    finally:
        stalled.close()
    wait(lambda: read.get("/v1/health").json()["subscribers"] == 0, 10, "the stream closed")
