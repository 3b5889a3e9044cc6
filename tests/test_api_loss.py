"""The live loss measures over HTTP against a real uvicorn and a real service with its loss
process: ``/v1/var`` and ``/v1/stress`` in every format equal the client's result of the same
quote generation; ``/v1/explain`` needs the control scope and equals the client's columns and
desks; bad input gets a 4xx naming the parameter and value. Set-up in tests/test_api_support.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import test_api_support as support
from service_helpers import start, wait
from test_api_support import ARROW, LIMITS, Api, as_text, json_rows

from workbench.client import Client, LossConfig

NAME = "apiloss"
files = support.files
tokens = support.tokens
api = support.api
read = support.read


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    """The module's service with its loss process (20 historical days, every 600 s: one
    result, the same for the whole module)."""
    svc = start(files, NAME, feed="none", limits=LIMITS,
                loss=LossConfig(every_s=600.0, window=20))  # fmt: skip
    try:
        yield svc
    finally:
        svc.stop()


def _get(http: httpx.Client, path: str, fmt: str, **params: Any) -> tuple[Any, httpx.Response]:
    accept = {"arrow": ARROW, "csv": "text/csv"}.get(fmt)
    headers = {"Accept": accept} if accept else {}
    r = http.get(path, params=params, headers=headers)
    assert r.status_code == 200, r.text
    if fmt == "json":
        return r.json(), r
    if fmt == "arrow":
        return pl.read_ipc_stream(io.BytesIO(r.content)), r
    return pl.read_csv(io.BytesIO(r.content)), r


def _first_result(http: httpx.Client) -> None:
    """Wait for the loss process's first VaR run (503 with its progress until then)."""

    def ready() -> bool:
        r = http.get("/v1/var")
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert "no var result yet" in r.json()["error"], r.text
            assert r.headers["retry-after"] == "5"
        return r.status_code == 200

    wait(ready, 240, "the first VaR result over HTTP")


def test_var_and_stress_in_every_format_equal_the_clients_result(
    api: Api, read: httpx.Client, service: Client
) -> None:
    _first_result(read)
    result = service.var(wait_s=0)
    assert result.ready
    assert result.measures is not None
    assert result.greeks is not None
    tables = {"measures": result.measures, "pnl": result.pnl, "worst": result.worst,
              "limits": result.limits, "greeks_by_desk": result.greeks.by_desk}  # fmt: skip
    for table, want in tables.items():
        for fmt in ("json", "arrow", "csv"):
            got, r = _get(read, "/v1/var", fmt, table=table)
            assert int(r.headers["x-workbench-generation"]) == result.generation
            assert int(r.headers["x-workbench-made-ns"]) == result.made_ns
            if fmt == "json":
                assert (got["generation"], got["table"]) == (result.generation, table)
                assert got["rows"] == json_rows(want), table
            elif fmt == "arrow":
                assert got.equals(want), table
            else:
                assert got.columns == want.columns, table
                assert got.height == want.height, table
                for col in want.columns:
                    if want.schema[col] == pl.Float64:
                        assert got[col].to_list() == pytest.approx(want[col].to_list(), rel=1e-12)
                    else:
                        assert (
                            got[col].cast(pl.String).to_list()
                            == as_text(want)[col].cast(pl.String).to_list()
                        )
    stress = service.stress(wait_s=60)
    got, r = _get(read, "/v1/stress", "arrow")
    assert got.equals(stress.pnl)
    assert int(r.headers["x-workbench-scenarios"]) == stress.scenarios
    got, _ = _get(read, "/v1/stress", "json", table="worst")
    assert got["rows"] == json_rows(stress.worst)


def test_explain_needs_the_control_scope_and_equals_the_clients(
    api: Api, read: httpx.Client, service: Client, tokens: dict[str, Any]
) -> None:
    r = read.get("/v1/explain")
    assert r.status_code == 403, r.text
    want = service.explain(wait_s=60)
    control = {"Authorization": f"Bearer {tokens['control']}"}
    with httpx.Client(base_url=api.url, timeout=120, headers=control) as http:
        got, r = _get(http, "/v1/explain", "arrow")
        assert got.columns == want.by_desk.columns
        assert got["desk"].to_list() == want.by_desk["desk"].to_list()
        assert int(r.headers["x-workbench-base-ns"]) == want.base_ns
        since = "2000-01-01T00:00:00"  # before every copy kept: the earliest is the base
        got, r = _get(http, "/v1/explain", "json", since=since)
        assert [row["desk"] for row in got["rows"]] == want.by_desk["desk"].to_list()
        # 1,000 positions, more than the server's 500-row bound: refused, naming the bound
        big = http.get("/v1/explain", params={"table": "positions"})
        assert big.status_code == 413, big.text
        assert "1000 rows, more than this server's 500" in big.json()["error"]
        bad = http.get("/v1/explain", params={"since": "yesterday"})
        assert bad.status_code == 400, bad.text
        assert "since='yesterday'" in bad.json()["error"]


def test_bad_loss_queries_get_a_4xx_naming_the_parameter_and_value(read: httpx.Client) -> None:
    for path, params, named in (("/v1/var", {"table": "everything"}, "table='everything'"),
                                ("/v1/stress", {"table": "measures"}, "table='measures'"),
                                ("/v1/var", {"tabel": "pnl"}, "'tabel'")):  # fmt: skip
        r = read.get(path, params=params)
        assert r.status_code == 400, r.text
        assert named in r.json()["error"], r.text
