"""The asynchronous client: every method of Client has an awaited twin on AsyncClient, with the
same arguments and results, and it runs on a live service without blocking the event loop.

One small service (1,000 positions, no feed: the market holds still, so the twin's answers
equal the blocking client's); the last test stops it through the asynchronous client.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from service_helpers import POSITIONS, make_files, start

import workbench
from workbench.client import AsyncClient, Client, ParallelShock, ServiceError, SnapshotView
from workbench.engine.protocol import messages as msg

_MEASURES = ["desk", "positions", "pv", "dv01", "cs01", "fx_delta", "vega"]
"""Aggregate columns that do not move while the market holds still (ages do)."""


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    """The public methods a class defines or inherits (properties are not methods)."""
    return {
        name: fn
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def test_every_client_method_has_an_async_twin_with_the_same_signature() -> None:
    sync, twin = _methods(Client), _methods(AsyncClient)
    # the blocking methods, and snapshots (an async iterator on both)
    own = {n: f for n, f in sync.items() if n != "asynchronous" and not _is_async(f)}
    assert {"aggregate", "whatif", "stop", "reload_book", "latencies", "snapshots"} <= set(own)
    missing = sorted(set(own) - set(twin))
    assert not missing, f"AsyncClient lacks {missing}"
    for name, fn in own.items():
        assert _is_async(twin[name]), f"AsyncClient.{name} is not async"
        assert inspect.signature(twin[name]) == inspect.signature(fn), name
    # the a-prefixed coroutines widgets use are the twin's methods under another name
    legacy = {n: f for n, f in sync.items() if _is_async(f) and n != "snapshots"}
    assert {"aaggregate", "apositions", "awhatif", "amarket", "aping", "astatus"} <= set(legacy)
    for name, fn in legacy.items():
        assert name.startswith("a"), name
        assert name[1:] in own, name
        assert inspect.signature(twin[name[1:]]) == inspect.signature(fn), name
    for prop in ("descriptor", "name", "endpoints", "timeout_s", "to_client", "local"):
        assert isinstance(inspect.getattr_static(AsyncClient, prop), property), prop


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("async"))


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    svc = start(files, "asyncsvc", feed="none")
    try:
        yield svc
    finally:
        if svc.alive():
            svc.stop()
        else:
            svc.close()


def test_connect_gives_the_async_client_and_its_answers_equal_the_blocking_ones(
    service: Client,
) -> None:
    shocks = [ParallelShock(bp=25.0, currency="USD")]

    async def scenario() -> dict[str, Any]:
        svc = workbench.connect("asyncsvc", asynchronous=True)
        assert isinstance(svc, AsyncClient)
        async with svc:
            assert svc.name == "asyncsvc"
            assert svc.local
            assert await svc.alive()
            status = await svc.status()
            by_desk, pnl = await asyncio.gather(svc.aggregate(("desk",)), svc.whatif(shocks))
            positions = await svc.positions("fx")
            frame, identity = await svc.snapshot()
            market = await svc.market(("USD.SOFR",), shocks, (1.0, 5.0))
            return {
                "status": status,
                "ping": await svc.ping(),
                "by_desk": by_desk,
                "pnl": pnl,
                "positions": positions,
                "snapshot": (frame, identity),
                "market": market,
                "limits": await svc.limits(),
                "processes": await svc.processes(),
                "reply": await svc.request(msg.AggregateRequest(by=("asset_class",))),
                "sup": await svc.supervisor_request(msg.StatusRequest(), timeout_s=5.0),
            }

    got = asyncio.run(scenario())
    assert got["status"]["ready"]
    assert got["status"]["positions"] == POSITIONS
    assert got["ping"]["name"] == "asyncsvc"
    assert got["sup"].data["pid"] == service.descriptor.pid
    assert got["by_desk"].select(_MEASURES).equals(service.aggregate(("desk",)).select(_MEASURES))
    # two what-ifs re-solve the shocked curves from different warm starts: equal to the
    # solver's precision (a last-digit difference in a desk's sum was seen), not bit for bit
    assert_frame_equal(got["pnl"], service.whatif(shocks), check_exact=False, rel_tol=1e-12)
    assert got["positions"].height == service.positions("fx").height > 0
    frame, identity = got["snapshot"]
    assert frame.height == POSITIONS
    assert identity["service"] == "asyncsvc"
    assert got["market"].curves["years"].to_list() == [1.0, 5.0]
    assert got["market"].quotes.equals(service.market().quotes)
    assert set(got["processes"]["name"]) == set(service.processes()["name"])
    by_class = msg.bytes_to_frame(got["reply"].tables["aggregate"])
    assert by_class["positions"].sum() == POSITIONS
    assert "utilisation" in got["limits"].columns or got["limits"].height == 0


def test_the_async_client_never_blocks_the_event_loop(service: Client) -> None:
    """A profile takes 1 s of the worker's time; the loop keeps ticking meanwhile."""

    async def scenario() -> tuple[int, dict[str, Any], float]:
        svc = service.asynchronous()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        t0 = time.monotonic()
        prof = await svc.profile("rates-0", 1.0)
        took = time.monotonic() - t0
        task.cancel()
        return ticks, prof, took

    ticks, prof, took = asyncio.run(scenario())
    assert took >= 0.9
    assert ticks >= 20, f"the loop ticked {ticks} times in {took:.2f} s"
    assert isinstance(prof["functions"], pl.DataFrame)
    assert isinstance(prof["tree"], pl.DataFrame)


def test_snapshots_latest_and_latencies_through_the_async_client(service: Client) -> None:
    async def scenario() -> tuple[SnapshotView, list[SnapshotView], pl.DataFrame, pl.DataFrame]:
        svc = service.asynchronous()
        latest = await svc.latest(timeout_s=10.0)
        stream = svc.snapshots()
        seen = [await anext(stream), await anext(stream)]
        await stream.aclose()  # type: ignore[attr-defined]
        return latest, seen, await svc.latency_buckets(), await svc.latencies()

    latest, seen, buckets, summary = asyncio.run(scenario())
    assert latest.stats["positions"] == POSITIONS
    assert seen[1].seq > seen[0].seq >= latest.seq
    assert all(s.transit_ms >= 0.0 for s in seen)
    mine = summary.filter(pl.col("boundary") == "aggregator_to_client")
    assert mine["count"][0] >= 3  # the twin counts into the shared client histogram
    assert buckets.filter(pl.col("boundary") == "aggregator_to_client")["count"].sum() >= 3
    assert service.to_client is service.asynchronous().to_client


def test_refusals_raise_service_error_and_the_legacy_coroutines_work(service: Client) -> None:
    async def scenario() -> list[str]:
        svc = service.asynchronous()
        errors = []
        for call in (
            svc.set_option("nope-0", "spline_cache", False),
            svc.profile("nope-0", 0.1),
            svc.supervisor_request(msg.RestartRequest(worker="nope-0"), timeout_s=5.0),
        ):
            with pytest.raises(ServiceError) as info:
                await call
            errors.append(str(info.value))
        opts = await service.aset_option("fx-0", "spline_cache", True)
        assert isinstance(opts, dict)
        assert (await service.astatus(timeout_s=2.0))["ready"]
        assert (await service.aaggregate(("desk",))).height > 0
        return errors

    errors = asyncio.run(scenario())
    assert all("nope-0" in e for e in errors), errors


def test_a_closed_async_client_refuses_requests(service: Client) -> None:
    async def scenario() -> None:
        svc = workbench.connect("asyncsvc", asynchronous=True)
        assert (await svc.ping())["name"] == "asyncsvc"
        await svc.close()
        with pytest.raises(ServiceError, match="closed"):
            await svc.aggregate()
        with pytest.raises(ServiceError, match="closed"):
            await anext(svc.snapshots())
        assert (await service.asynchronous().ping())["name"] == "asyncsvc"  # another is open

    asyncio.run(scenario())


def test_restart_reload_and_stop_through_the_async_client(service: Client) -> None:
    before = service.descriptor

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        svc = service.asynchronous()
        await svc.restart("equity-0")
        await svc.wait_ready(120.0)
        reloaded = await svc.reload_book(timeout_s=240.0)
        after = await svc.status()
        await svc.stop(timeout_s=60.0)
        return reloaded, after

    reloaded, after = asyncio.run(scenario())
    assert reloaded["book_generation"] == 1
    assert reloaded["positions"] == POSITIONS
    assert after["ready"]
    assert after["book_generation"] == 1
    assert service.descriptor is not before  # re-read, and seen by the blocking client too
    assert service.descriptor.pid == before.pid
    assert not service.alive()
    assert service.process is not None
    assert service.process.poll() is not None
