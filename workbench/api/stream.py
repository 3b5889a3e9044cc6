"""The live stream: Server-Sent Events, one ``snapshot`` event per published snapshot.

Each subscriber has a mailbox of one (latest value wins): a reader slower than the service
skips snapshots and is never sent a backlog. While the service is away the stream sends one
``away`` event with the reason and resumes with the next snapshot; a comment line every
``_KEEPALIVE_S`` keeps idle proxies from closing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Final

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from workbench.api import formats
from workbench.api.guards import known_parameters, link, require, settings
from workbench.api.live import ServiceLink
from workbench.api.risk import grouping_name
from workbench.client import SnapshotView

router = APIRouter(
    prefix="/v1",
    tags=["stream"],
    dependencies=[Depends(require("read")), Depends(known_parameters)],
)
DEFAULT_TABLES: Final = ("firm", "desk", "asset_class", "desk,currency")
"""The roll-ups an event carries when the stream is opened without ``grouping``."""
_KEEPALIVE_S: Final = 15.0
"""Seconds between two keep-alive comments of an idle stream."""


def snapshot_event(view: SnapshotView, names: tuple[str, ...]) -> bytes:
    """One SSE ``snapshot`` event: ``seq``, ``made_ns``, ``stats``, ``breaches`` and the rows
    of each table in ``names`` under ``tables`` (USD; non-finite numbers as null)."""
    payload = {
        "seq": view.seq,
        "made_ns": view.made_ns,
        "stats": view.stats,
        "breaches": [msgspec.structs.asdict(b) for b in view.breaches],
        "tables": {name: view.tables[name].to_dicts() for name in names},
    }
    data = formats.json_bytes(payload)
    return b"id: %d\nevent: snapshot\ndata: %s\n\n" % (view.seq, data)


def away_event(reason: str) -> bytes:
    """One SSE ``away`` event: the service cannot be followed now, and why."""
    return b"event: away\ndata: %s\n\n" % formats.json_bytes({"reason": reason})


async def _events(live: ServiceLink, names: tuple[str, ...]) -> AsyncIterator[bytes]:
    async with live.subscription() as box:
        if live.latest is not None and live.state == "up":
            box.put(live.latest)
        told_away = False
        while not box.closed:
            view = await box.take(_KEEPALIVE_S if live.state == "up" else 0.5)
            if view is not None:
                told_away = False
                carried = names or tuple(n for n in view.tables if n != "limits")
                yield live.rendered(
                    view.seq,
                    ("event", carried),
                    lambda: snapshot_event(view, carried),  # noqa: B023
                )
            elif live.state in ("away", "connecting") and not told_away:
                told_away = True
                yield away_event(live.reason)
            elif not box.closed:
                yield b": keep-alive\n\n"


@router.get(
    "/stream",
    summary="Snapshots as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    grouping: Annotated[
        list[str] | None,
        Query(description="roll-ups to carry, repeated (firm, desk, asset_class, desk,currency)"),
    ] = None,
) -> StreamingResponse:
    """``event: snapshot`` with ``id:`` the snapshot's seq and ``data:`` its JSON, one per
    published snapshot; ``event: away`` while the service is away."""
    live = link(request)
    _, view = live.require()
    names = tuple(grouping_name(view, g) for g in grouping or DEFAULT_TABLES)
    most = settings(request).max_subscribers
    if live.subscribers >= most:
        raise HTTPException(503, f"{live.subscribers} streams open; at most {most}")
    return StreamingResponse(
        _events(live, names),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
