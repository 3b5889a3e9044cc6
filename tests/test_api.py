"""The HTTP API against a real uvicorn (``python -m workbench.cli api``) on loopback and a real
service (1,000 positions, no feed: the market holds still, so the numbers of two snapshots
differ only in their ages), read with httpx.

Every table endpoint in every format equals what the client reads of the same snapshot seq;
tokens give 401/403/200; bad input gets a 4xx naming the parameter; concurrent readers all get
answers; the stream delivers snapshots and a stalled subscriber neither slows another nor
builds a backlog; the API answers 503 while its service is away and recovers when it is back.
The restart test stops the service; the last test runs on one of that name with a live feed.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from service_helpers import POSITIONS, make_files, start, wait

import workbench
from workbench.client import Client, LimitConfig, ServiceError, SnapshotView

NAME = "apisvc"
MAX_ROWS = 500
"""The API's row bound: below the book's 1,000 positions, above any desk's."""
ARROW = "application/vnd.apache.arrow.stream"
LIMITS = (LimitConfig(measure="dv01", limit=1.0), LimitConfig(measure="pv", limit=1e15))
"""One limit breached (|firm dv01| > 1 USD), one not."""


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    """Whether something accepts connections on loopback ``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m workbench.cli`` with ``args`` (this worktree's code)."""
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


class Api:
    """A ``workbench api`` subprocess on a free loopback port."""

    def __init__(self, service: str, tokens: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tokens.parent / f"api-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workbench.cli", "api", "--service", service,
                 "--port", str(self.port), "--tokens", str(tokens), *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/v1/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait(ready, timeout_s, "the API ready")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the port is free afterwards."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        wait(lambda: not port_open(self.port), 10, f"port {self.port} closed")


class Recorder(threading.Thread):
    """Every snapshot a client of the service reads, by seq (its own attachment)."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.client = workbench.connect(name)
        self.views: dict[int, SnapshotView] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                view = self.client.latest(2.0)
            except ServiceError:
                continue
            self.views[view.seq] = view

    def view(self, seq: int) -> SnapshotView:
        wait(lambda: seq in self.views, 5, f"the client reading snapshot {seq}")
        return self.views[seq]

    def has(self, seq: int) -> bool:
        """Whether the client read snapshot ``seq`` (waiting for it if it is newer)."""
        if self.views and seq < min(self.views):
            return False
        try:
            wait(lambda: seq in self.views, 3, f"snapshot {seq}")
        except AssertionError:
            return False
        return True

    def stop(self) -> None:
        self.done.set()
        self.join(5)
        self.client.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def held() -> dict[str, Client]:
    """The module's service client (the restart test replaces it)."""
    return {}


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path], held: dict[str, Client]) -> Iterator[Client]:
    held["svc"] = start(files, NAME, feed="none", limits=LIMITS)
    try:
        yield held["svc"]
    finally:
        svc = held["svc"]
        if svc.alive():
            svc.stop()
        else:
            svc.close()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tokens file written by ``workbench api token``: one read token, one control token."""
    path = tmp_path_factory.mktemp("tokens") / "api-tokens"
    made = {
        scope: cli("api", "token", "--scope", scope, "--tokens", str(path)).stdout.split()[0]
        for scope in ("read", "control")
    }
    return {"path": path, **made}


@pytest.fixture(scope="module")
def api(service: Client, tokens: dict[str, Any]) -> Iterator[Api]:
    server = Api(NAME, tokens["path"], "--max-rows", str(MAX_ROWS))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def read(api: Api, tokens: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {tokens['read']}"}, timeout=30
    ) as http:
        yield http


@pytest.fixture
def recorder(service: Client) -> Iterator[Recorder]:
    rec = Recorder(NAME)
    rec.start()
    wait(lambda: bool(rec.views), 10, "the client's first snapshot")
    try:
        yield rec
    finally:
        rec.stop()


# --- reading answers -------------------------------------------------------------------------


def json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """``frame``'s rows as JSON gives them: categories as text, non-finite numbers as None."""
    out = frame.with_columns(pl.col(pl.Enum, pl.Categorical).cast(pl.String)).to_dicts()
    return [
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        for row in out
    ]


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Enum, pl.Categorical).cast(pl.String))


def fetch(
    http: httpx.Client, path: str, params: dict[str, Any], fmt: str
) -> tuple[Any, int, httpx.Response]:
    """GET ``path`` in ``fmt`` (json by default, arrow by Accept, csv by Accept or ?format=):
    the decoded body (JSON object or frame) and its snapshot seq."""
    headers = {}
    if fmt == "arrow":
        headers["Accept"] = ARROW
    elif fmt == "csv":
        headers["Accept"] = "text/csv"
    elif fmt == "csv-param":
        params = {**params, "format": "csv"}
    r = http.get(path, params=params, headers=headers)
    assert r.status_code == 200, r.text
    if fmt == "json":
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        return body, int(body["snapshot_seq"]), r
    seq = int(r.headers["x-workbench-snapshot-seq"])
    if fmt == "arrow":
        assert r.headers["content-type"] == ARROW
        return pl.read_ipc_stream(io.BytesIO(r.content)), seq, r
    assert r.headers["content-type"].startswith("text/csv")
    return pl.read_csv(io.BytesIO(r.content)), seq, r


def fetch_seen(
    http: httpx.Client, path: str, params: dict[str, Any], fmt: str, recorder: Recorder
) -> tuple[Any, SnapshotView, httpx.Response]:
    """:func:`fetch` an answer of a snapshot the client also read (asked again, at most five
    times, when the client did not read it), and that snapshot as the client read it."""
    for _ in range(5):
        decoded, seq, r = fetch(http, path, params, fmt)
        if recorder.has(seq):
            return decoded, recorder.views[seq], r
    raise AssertionError(f"the client read none of the snapshots {path} answered")


def assert_same(decoded: Any, fmt: str, expected: pl.DataFrame) -> None:
    if fmt == "json":
        assert decoded["rows"] == json_rows(expected)
    elif fmt == "arrow":
        assert_frame_equal(decoded, expected)
    elif expected.height:  # CSV: the same text and numbers (an empty CSV has no types)
        assert_frame_equal(decoded, as_text(expected), check_dtypes=False)
    else:
        assert decoded.height == 0


FORMATS = ("json", "arrow", "csv", "csv-param")


# --- the tests -------------------------------------------------------------------------------


def test_every_grouping_in_every_format_equals_the_clients_snapshot_of_that_seq(
    read: httpx.Client, recorder: Recorder
) -> None:
    names = read.get("/v1/groupings").json()["groupings"]
    assert names[:4] == ["firm", "desk", "asset_class", "desk,currency"]
    for grouping in names:
        for fmt in FORMATS:
            decoded, view, _ = fetch_seen(read, "/v1/latest", {"grouping": grouping}, fmt, recorder)
            expected = view.tables[grouping]
            assert expected.height > 0
            assert_same(decoded, fmt, expected)
    asked = {"grouping": "desk", "measures": "pv,dv01"}
    body, view, _ = fetch_seen(read, "/v1/latest", asked, "json", recorder)
    assert list(body["rows"][0]) == ["desk", "positions", "stale", "unpriced", "max_age_s",
                                     "pv", "dv01"]  # fmt: skip
    desk = view.tables["desk"]
    assert [r["dv01"] for r in body["rows"]] == desk["dv01"].to_list()


def test_limits_and_breaches_in_every_format_equal_the_snapshot(
    read: httpx.Client, recorder: Recorder
) -> None:
    for fmt in FORMATS:
        decoded, view, _ = fetch_seen(read, "/v1/limits", {}, fmt, recorder)
        expected = view.tables["limits"]
        assert expected.height == len(LIMITS)
        assert_same(decoded, fmt, expected)
        decoded, view, _ = fetch_seen(read, "/v1/breaches", {}, fmt, recorder)
        assert [b.measure for b in view.breaches] == ["dv01"]
        rows = [
            {"scope": b.scope, "measure": b.measure, "value": b.value, "limit": b.limit,
             "since_ns": b.since_ns, "detail": b.detail}
            for b in view.breaches
        ]  # fmt: skip
        assert_same(decoded, fmt, pl.DataFrame(rows))


_STILL = pl.exclude("age_s")
"""Position columns that do not move while the market holds still (ages do)."""


def test_positions_in_every_format_equal_the_clients_and_are_bounded(
    service: Client, read: httpx.Client
) -> None:
    whole, _ = service.snapshot()
    desks = whole.group_by("desk").len().sort("len", descending=True)["desk"].cast(pl.String)
    big, small = desks[0], desks[-1]
    for fmt in FORMATS:
        decoded, _, r = fetch(read, "/v1/positions", {"desk": [big, small]}, fmt)
        expected = whole.filter(pl.col("desk").cast(pl.String).is_in([big, small])).select(_STILL)
        if fmt == "json":
            got = [{k: v for k, v in row.items() if k != "age_s"} for row in decoded["rows"]]
            assert got == json_rows(expected)
        else:
            assert_same(decoded.select(_STILL), fmt, expected)
        identity = decoded if fmt == "json" else r.headers
        assert int(identity["x-workbench-generation" if fmt != "json" else "generation"]) > 0
    ids = whole["position_id"].head(3).to_list()
    body = read.get("/v1/positions", params={"id": ids[:2], "measures": "pv"}).json()
    assert [r["position_id"] for r in body["rows"]] == ids[:2]
    assert [r["pv"] for r in body["rows"]] == whole["pv"].head(2).to_list()
    rates = read.get("/v1/positions", params={"asset_class": "rates,fx", "format": "csv"})
    n = whole.filter(pl.col("asset_class").cast(pl.String).is_in(["rates", "fx"])).height
    assert rates.status_code == 413 if n > MAX_ROWS else rates.status_code == 200
    # the whole book is more than the server's bound: 413 with what to do
    r = read.get("/v1/positions")
    assert POSITIONS > MAX_ROWS
    assert r.status_code == 413
    assert f"{POSITIONS} rows" in r.json()["error"]
    assert "filter" in r.json()["error"]


def test_status_and_health(api: Api, read: httpx.Client, service: Client) -> None:
    health = httpx.get(f"{api.url}/v1/health")  # no token: for probes
    assert health.status_code == 200
    assert health.json()["state"] == "up"
    assert httpx.get(f"{api.url}/v1/ready").status_code == 200
    body = read.get("/v1/status").json()
    assert body["api"]["service"] == NAME
    assert body["service"]["name"] == NAME
    assert body["service"]["pid"] == service.descriptor.pid
    names = sorted(p["name"] for p in body["service"]["processes"])
    for fmt in ("arrow", "csv"):
        r = read.get("/v1/status", params={"format": fmt})
        frame = pl.read_ipc_stream(r.content) if fmt == "arrow" else pl.read_csv(r.content)
        assert sorted(frame["name"].to_list()) == names


def test_tokens_401_without_403_without_the_scope(api: Api, tokens: dict[str, Any]) -> None:
    whatif = {"shocks": [{"kind": "parallel", "bp": 10.0}], "by": ["asset_class"]}
    for path in ("/v1/latest", "/v1/positions?desk=x", "/v1/limits", "/v1/status",
                 "/v1/stream", "/v1/history", "/v1/groupings"):  # fmt: skip
        r = httpx.get(api.url + path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["error"]
        wrong = httpx.get(api.url + path, headers={"Authorization": "Bearer not-a-token"})
        assert wrong.status_code == 401
        assert "not known" in wrong.json()["error"]
    read = {"Authorization": f"Bearer {tokens['read']}"}
    control = {"Authorization": f"Bearer {tokens['control']}"}
    assert httpx.post(f"{api.url}/v1/whatif", json=whatif).status_code == 401
    r = httpx.post(f"{api.url}/v1/whatif", json=whatif, headers=read)
    assert r.status_code == 403
    assert "needs control" in r.json()["error"]
    r = httpx.post(f"{api.url}/v1/whatif", json=whatif, headers=control, timeout=60)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert {row["asset_class"] for row in rows} == {"rates", "fx", "credit", "equity"}
    assert next(row for row in rows if row["asset_class"] == "rates")["pnl"] < 0.0  # rates up
    assert httpx.get(f"{api.url}/v1/latest", headers=control).status_code == 200  # control reads


BAD_GETS: list[tuple[str, dict[str, Any], int, str]] = [
    ("/v1/latest", {"grouping": "nope"}, 400, "grouping='nope'"),
    ("/v1/latest", {"grouping": ""}, 400, "grouping=''"),
    ("/v1/latest", {"grouping": "x" * 200}, 400, "grouping"),
    ("/v1/latest", {"grouping": "desk", "measures": "pv,zzz"}, 400, "measures='zzz'"),
    ("/v1/latest", {"format": "xml"}, 400, "format='xml'"),
    ("/v1/latest", {"format": ""}, 400, "format=''"),
    ("/v1/latest", {"grouping": "desk\x00"}, 400, "grouping"),
    ("/v1/latest", {"grouping": "'; drop table--"}, 400, "grouping"),
    ("/v1/latest", {"limit": "10"}, 400, "'limit'"),
    ("/v1/latest", {"grouping": ["desk", "firm"], "x": "1"}, 400, "'x'"),
    ("/v1/positions", {"desk": "Nowhere"}, 400, "desk='Nowhere'"),
    ("/v1/positions", {"asset_class": "bonds"}, 400, "asset_class='bonds'"),
    ("/v1/positions", {"asset_class": "rates", "measures": "pv,€"}, 400, "measures='€'"),
    ("/v1/positions", {"id": ",".join(["P"] * 600)}, 400, "id: 600 values"),
    ("/v1/positions", {"desks": "AUD Rates"}, 400, "'desks'"),
    ("/v1/positions", {"format": "parquet"}, 400, "format='parquet'"),
    ("/v1/history", {"from": "yesterday"}, 400, "from='yesterday'"),
    ("/v1/history", {"to": "2026-13-45"}, 400, "to='2026-13-45'"),
    ("/v1/history", {"from": "2026-12-04T10:00", "to": "2026-12-04T09:00"}, 400, "before"),
    ("/v1/history", {"from": "1" * 50}, 400, "'from'"),
    ("/v1/history/positions", {"at": "noon"}, 400, "at='noon'"),
    ("/v1/history/breaches", {"to": "%%%"}, 400, "to='%%%'"),
    ("/v1/stream", {"grouping": "nope"}, 400, "grouping='nope'"),
    ("/v1/status", {"format": "html"}, 400, "format='html'"),
    ("/v1/limits", {"since": "1"}, 400, "'since'"),
    ("/v1/breaches", {"format": "json,csv"}, 400, "format="),
]


def test_bad_queries_get_a_4xx_naming_the_parameter_and_value(read: httpx.Client) -> None:
    for path, params, status, needle in BAD_GETS:
        r = read.get(path, params=params)
        assert r.status_code == status, (path, params, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), (path, params)
        error = r.json()["error"]
        assert needle in error, (path, params, error)
        assert "Traceback" not in r.text
        assert 'File "' not in r.text
    # an unknown path, a wrong method
    assert read.get("/v2/latest").status_code == 404
    assert read.post("/v1/latest").status_code == 405
    # a query string over the bound: 414 before any route
    r = read.get("/v1/latest", params={"grouping": "d" * 5_000})
    assert r.status_code == 414
    assert "query string" in r.json()["error"]


def test_bad_bodies_get_a_4xx_naming_what_was_wrong(api: Api, tokens: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {tokens['control']}"}
    url = f"{api.url}/v1/whatif"
    cases: list[tuple[bytes, int, str]] = [
        (b"", 400, "not JSON"),
        (b"{", 400, "not JSON"),
        (b"[]", 400, "body"),
        (b'{"shocks": []}', 400, "body.shocks: 0 shocks"),
        (b'{"shocks": [{"kind": "parallel", "bp": "ten"}]}', 400, "$.shocks[0].bp"),
        (b'{"shocks": [{"kind": "earthquake"}]}', 400, "earthquake"),
        (b'{"shocks": [{"kind": "parallel", "bp": 1}], "by": ["planet"]}', 400, "'planet'"),
        (b'{"shocks": [{"kind": "parallel", "bp": 1}], "by": ["desk", "desk"]}', 400, "repeated"),
        (b'{"shocks": [{"kind": "parallel", "bp": 1}], "extra": 1}', 400, "extra"),
        (b'{"shocks": [{"kind": "quote", "quote_id": "NOPE", "bp": 1}]}', 422, "NOPE"),
    ]
    for body, status, needle in cases:
        r = httpx.post(url, content=body, headers=auth, timeout=60)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["error"], (body, r.json())
    r = httpx.post(url, content=b"{" + b" " * 70_000 + b"}", headers=auth)
    assert r.status_code == 413
    assert "at most" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(100):
            yield b" " * 1_000

    r = httpx.post(url, content=chunks(), headers=auth)
    assert r.status_code == 413
    assert "over" in r.json()["error"]


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


def _events(raw: str) -> list[dict[str, Any]]:
    """The ``snapshot`` events of an SSE text."""
    out = []
    for block in raw.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "snapshot":
            out.append(json.loads(lines["data"]))
    return out


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
            seen = _events(buffer)
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


def test_history_without_a_store_is_a_503_saying_so(read: httpx.Client) -> None:
    try:
        import workbench.store.query  # noqa: F401
    except ImportError:
        r = read.get("/v1/history", params={"grouping": "firm"})
        assert r.status_code == 503
        assert "risk store" in r.json()["error"]
    else:
        pytest.skip("this installation has the risk store: test_history_equals_the_store's")


def test_history_equals_the_store_for_the_same_window(read: httpx.Client, service: Client) -> None:
    query = pytest.importorskip("workbench.store.query")
    root = Path(service.descriptor.config.run_dir) / "store"
    wait(root.is_dir, 120, f"the risk store at {root} (the API's default for this service)")
    end_ns = time.time_ns()
    expected = query.history(root, end_ns=end_ns, grouping="desk", measures=["pv", "dv01"])
    for fmt in ("json", "arrow", "csv"):
        params = {"to": str(end_ns), "grouping": "desk", "measures": ["pv", "dv01"]}
        if fmt != "json":
            params["format"] = fmt
        r = read.get("/v1/history", params=params)
        assert r.status_code == 200, r.text
        if fmt == "json":
            assert r.json()["rows"] == json_rows(expected)
        elif fmt == "arrow":
            assert_frame_equal(pl.read_ipc_stream(r.content), expected)
        elif expected.height:
            assert_frame_equal(pl.read_csv(r.content), as_text(expected), check_dtypes=False)
    breaches = read.get("/v1/history/breaches", params={"to": str(end_ns)})
    assert breaches.json()["rows"] == json_rows(query.breaches(root, end_ns=end_ns))


def test_a_non_loopback_bind_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    env_home = Path(os.environ["HOME"]) / ".workbench" / "api-tokens"
    assert not env_home.exists()  # no default tokens file either
    done = cli("api", "--service", NAME, "--host", "0.0.0.0", "--port", str(free_port()),
               check=False)  # fmt: skip
    assert done.returncode == 2
    assert "--host 0.0.0.0" in done.stderr
    assert "--tokens" in done.stderr
    bad = tmp_path / "tokens"
    bad.write_text("not-a-hash read\n")
    done = cli("api", "--service", NAME, "--tokens", str(bad), check=False)
    assert done.returncode == 2
    assert "line 1" in done.stderr
    assert "SHA-256" in done.stderr


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
        done = _events("\n\n".join(blocks) + "\n\n") if blocks else []
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
