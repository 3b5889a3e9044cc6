"""The day's risk from the risk store: aggregates, breaches and positions over time.

Times are UTC: ``from``, ``to`` and ``at`` take an ISO-8601 date-time (``2026-12-04T09:30``,
``2026-12-04T09:30:00+01:00``; without an offset: UTC) or nanoseconds since the Unix epoch.
The store is read in a thread of its own; the answer is bounded like every other.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from workbench.api import formats
from workbench.api.guards import known_parameters, link, require, settings
from workbench.api.risk import AcceptHeader, FormatParam, bounded
from workbench.store import query

router = APIRouter(
    prefix="/v1/history",
    tags=["history"],
    dependencies=[Depends(require("read")), Depends(known_parameters)],
)
TimeParam = Annotated[
    str | None, Query(max_length=40, description="ISO-8601 date-time (UTC) or epoch ns")
]


def epoch_ns(name: str, text: str | None) -> int | None:
    """``text`` (ISO-8601, UTC unless it has an offset, or integer epoch ns) as ns since the
    Unix epoch.

    Raises
    ------
    HTTPException
        400 naming ``name`` and the value.
    """
    if text is None or text == "":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(
            400, f"{name}={text!r}: expected an ISO-8601 date-time or epoch nanoseconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


def store_root(request: Request) -> Path:
    """The risk store's folder: the server's ``--store``, else the one the service's
    configuration names (:func:`workbench.store.query.store_root` of its run directory).

    Raises
    ------
    HTTPException
        503 when neither is known or the folder does not exist.
    """
    root = settings(request).store
    if root is None:
        run_dir = link(request).run_dir
        if run_dir is None:
            raise HTTPException(503, "no risk store known yet: start the API with --store DIR")
        root = Path(query.store_root(run_dir))
    if not root.is_dir():
        raise HTTPException(503, f"no risk store at {root}")
    return root


async def _query(request: Request, name: str, **kw: Any) -> pl.DataFrame:
    """Call ``workbench.store.query.<name>`` on the store in a thread; its refusals as 400."""
    root = store_root(request)
    try:
        frame: pl.DataFrame = await asyncio.to_thread(getattr(query, name), root, **kw)
    except (ValueError, KeyError) as exc:
        raise HTTPException(400, str(exc).strip("'\"")) from None
    return frame


def _window(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and end < start:
        raise HTTPException(400, f"to={end} is before from={start}")


@router.get("", summary="Aggregates over time from the risk store (USD)")
async def history(
    request: Request,
    from_: Annotated[TimeParam, Query(alias="from")] = None,
    to: TimeParam = None,
    grouping: Annotated[str, Query(max_length=100)] = "firm",
    measures: Annotated[list[str] | None, Query(description="measures to keep")] = None,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The stored aggregates of ``grouping`` between ``from`` and ``to`` (every measure, or
    the ``measures`` asked)."""
    fmt = formats.negotiate(accept, format_)
    start, end = epoch_ns("from", from_), epoch_ns("to", to)
    _window(start, end)
    wanted = [m for value in measures or () for m in value.split(",") if m] or None
    frame = await _query(
        request, "history", start_ns=start, end_ns=end, grouping=grouping, measures=wanted
    )
    bounded(frame, request, "history", "narrow from/to, or ask fewer measures")
    return formats.render(frame, fmt, {"grouping": grouping})


@router.get("/breaches", summary="Breaches over time from the risk store")
async def breaches(
    request: Request,
    from_: Annotated[TimeParam, Query(alias="from")] = None,
    to: TimeParam = None,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The stored breaches between ``from`` and ``to``."""
    fmt = formats.negotiate(accept, format_)
    start, end = epoch_ns("from", from_), epoch_ns("to", to)
    _window(start, end)
    frame = await _query(request, "breaches", start_ns=start, end_ns=end)
    bounded(frame, request, "breaches", "narrow from/to")
    return formats.render(frame, fmt, {})


@router.get("/positions", summary="Per-position risk stored at a time (USD)")
async def positions(
    request: Request,
    at: TimeParam = None,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The per-position risk stored last at or before ``at`` (the latest when omitted)."""
    fmt = formats.negotiate(accept, format_)
    frame = await _query(request, "positions", at_ns=epoch_ns("at", at))
    bounded(frame, request, "positions", "the store holds more than one answer may carry")
    return formats.render(frame, fmt, {})
