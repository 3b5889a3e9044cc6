"""The HTTP API against a real uvicorn (``python -m workbench.cli api``) on loopback and a real
service (1,000 positions, no feed: the market holds still, so the numbers of two snapshots
differ only in their ages), read with httpx.

Every table endpoint in every format equals what the client reads of the same snapshot seq;
tokens give 401/403/200; bad input gets a 4xx naming the parameter and value, never a 500.
Set-up in tests/test_api_support.py; streams, concurrent readers and a service that goes away
in tests/test_api_live.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import test_api_support as support
from polars.testing import assert_frame_equal
from service_helpers import POSITIONS, wait
from test_api_support import (
    FORMATS,
    LIMITS,
    MAX_ROWS,
    Api,
    Recorder,
    as_text,
    assert_same,
    cli,
    fetch,
    fetch_seen,
    free_port,
    json_rows,
)

from workbench.client import Client
from workbench.store import query

NAME = "apisvc"
files = support.files
held = support.held
service = support.service
tokens = support.tokens
api = support.api
read = support.read
recorder = support.recorder


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


def test_loss_measures_of_a_service_without_its_loss_process_are_a_422_saying_so(
    read: httpx.Client,
) -> None:
    for path in ("/v1/var", "/v1/stress"):
        r = read.get(path)
        assert r.status_code == 422, r.text
        assert "without its loss process" in r.json()["error"], r.text


def test_history_without_a_store_is_a_503_saying_so(
    service: Client, tokens: dict[str, Any], tmp_path: Path
) -> None:
    missing = tmp_path / "no-store-here"
    server = Api(service.name, tokens["path"], "--store", str(missing))
    try:
        server.wait_ready()
        auth = {"Authorization": f"Bearer {tokens['read']}"}
        r = httpx.get(f"{server.url}/v1/history", params={"grouping": "firm"}, headers=auth)
        assert r.status_code == 503, r.text
        assert f"no risk store at {missing}" in r.json()["error"]
    finally:
        server.stop()


def test_history_equals_the_store_for_the_same_window(read: httpx.Client, service: Client) -> None:
    root = Path(query.store_root(service.descriptor.config.run_dir))
    wait(root.is_dir, 120, f"the risk store at {root}")
    end_ns = time.time_ns()
    start = datetime.fromtimestamp(end_ns / 1e9 - 3_600, UTC).isoformat()  # an hour before
    expected = query.history(root, end_ns=end_ns, grouping="firm", measures=["pv", "dv01"])
    assert expected.height > 0
    for fmt in ("json", "arrow", "csv"):
        params = {"from": start, "to": str(end_ns), "grouping": "firm", "measures": "pv,dv01"}
        if fmt != "json":
            params["format"] = fmt
        r = read.get("/v1/history", params=params)
        assert r.status_code == 200, r.text
        if fmt == "json":
            assert r.json()["rows"] == json_rows(expected)
        elif fmt == "arrow":
            assert_frame_equal(pl.read_ipc_stream(r.content), expected)
        else:
            assert_frame_equal(pl.read_csv(r.content), as_text(expected), check_dtypes=False)
    desk = query.history(root, end_ns=end_ns, grouping="desk")
    r = read.get("/v1/history", params={"to": str(end_ns), "grouping": "desk"})
    if desk.height > MAX_ROWS:  # the server's row bound
        assert r.status_code == 413
        assert f"{desk.height} rows" in r.json()["error"]
    else:
        assert r.json()["rows"] == json_rows(desk)
    r = read.get("/v1/history", params={"grouping": "book"})
    assert r.status_code == 400
    assert "book" in r.json()["error"]
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
