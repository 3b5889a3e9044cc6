"""Shared by the API tests (tests/test_api.py, tests/test_api_live.py); no test of its own.

A module's fixtures start a service called the module's ``NAME`` (1,000 positions, no feed:
the market holds still) and ``workbench api`` on a free loopback port with a read and a
control token made by ``workbench api token``; the helpers read answers in each format.
"""

from __future__ import annotations

import io
import json
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from service_helpers import make_files, start, wait

import workbench
from workbench.client import Client, LimitConfig, ServiceError, SnapshotView

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
def service(
    request: pytest.FixtureRequest, files: tuple[Path, Path], held: dict[str, Client]
) -> Iterator[Client]:
    """The module's service, called its ``NAME``, with no feed."""
    held["svc"] = start(files, request.module.NAME, feed="none", limits=LIMITS)
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
    server = Api(service.name, tokens["path"], "--max-rows", str(MAX_ROWS))
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
    rec = Recorder(service.name)
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


def snapshot_events(raw: str) -> list[dict[str, Any]]:
    """The ``snapshot`` events of an SSE text."""
    out = []
    for block in raw.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "snapshot":
            out.append(json.loads(lines["data"]))
    return out
