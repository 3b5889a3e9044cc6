"""The live risk: aggregates of the latest snapshot by grouping, positions, limits, breaches,
and what-if PnL (the one request that costs the service work: ``control`` scope)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec
import polars as pl
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response

from workbench.api import formats
from workbench.api.guards import known_parameters, link, require, service_failure, settings
from workbench.api.live import PositionsCopy
from workbench.client import AnyShock, ServiceError, SnapshotView
from workbench.risk.aggregation import GROUP_COLUMNS

router = APIRouter(
    prefix="/v1", tags=["risk"], dependencies=[Depends(require("read")), Depends(known_parameters)]
)
control = APIRouter(
    prefix="/v1",
    tags=["control"],
    dependencies=[Depends(require("control")), Depends(known_parameters)],
)

FormatParam = Annotated[
    str | None,
    Query(alias="format", description="json, arrow or csv (overrides the Accept header)"),
]
AcceptHeader = Annotated[str | None, Header(include_in_schema=False)]
_MAX_SHOCKS: Final = 64
_MAX_VALUES: Final = 500
"""Most values a repeated filter parameter may hold."""


def grouping_name(view: SnapshotView, grouping: str) -> str:
    """The snapshot table of ``grouping`` (``firm``, ``desk``, ``desk,currency``, …).

    Raises
    ------
    HTTPException
        400 naming the groupings the snapshot carries.
    """
    names = [",".join(by) if by else "firm" for by in view.groupings]
    if grouping not in names:
        raise HTTPException(400, f"grouping={grouping[:60]!r}: expected one of {' | '.join(names)}")
    return grouping


def pick(frame: pl.DataFrame, measures: list[str] | None, keep: tuple[str, ...]) -> pl.DataFrame:
    """``frame`` with the ``keep`` columns it has and the ``measures`` asked (all if None).

    Raises
    ------
    HTTPException
        400 naming a measure that is not a column.
    """
    if not measures:
        return frame
    asked = [m for value in measures for m in value.split(",") if m]
    unknown = [m for m in asked if m not in frame.columns]
    if unknown:
        shown = ", ".join(c for c in frame.columns if c not in keep)
        raise HTTPException(400, f"measures={unknown[0][:60]!r}: not a column; one of {shown}")
    head = [c for c in frame.columns if c in keep and c not in asked]
    return frame.select([*head, *asked])


def _values(raw: list[str] | None, name: str) -> list[str]:
    out = [v for value in raw or () for v in value.split(",") if v]
    if len(out) > _MAX_VALUES:
        raise HTTPException(400, f"{name}: {len(out)} values; at most {_MAX_VALUES}")
    return out


def at_most(frame: pl.DataFrame, limit: int, what: str, hint: str) -> None:
    """Refuse (413) an answer of more than ``limit`` rows, naming ``what`` and a ``hint``."""
    if frame.height > limit:
        raise HTTPException(
            413, f"{what}: {frame.height} rows, more than this server's {limit}; {hint}"
        )


def bounded(frame: pl.DataFrame, request: Request, what: str, hint: str) -> None:
    """Refuse (413) an answer of more than the server's ``max_rows`` rows."""
    at_most(frame, settings(request).max_rows, what, hint)


def of_latest(
    request: Request,
    fmt: formats.Format,
    key: tuple[Any, ...],
    table: Callable[[SnapshotView], pl.DataFrame],
    extra: dict[str, Any] | None = None,
) -> Response:
    """``table`` of the latest snapshot in ``fmt``, rendered once per snapshot for every reader
    asking the same ``key``; the snapshot's seq and ``made_ns`` (and ``extra``) beside it."""
    live = link(request)
    _, view = live.require()
    meta = {"snapshot_seq": view.seq, "made_ns": view.made_ns, **(extra or {})}
    body = live.rendered(view.seq, (*key, fmt), lambda: formats.table_bytes(table(view), fmt, meta))
    return formats.table_response(body, fmt, meta)


@router.get("/groupings", summary="The groupings the latest snapshot carries")
async def groupings(request: Request) -> dict[str, Any]:
    """The names ``/v1/latest?grouping=`` accepts and the latest snapshot's seq."""
    _, view = link(request).require()
    names = [",".join(by) if by else "firm" for by in view.groupings]
    return {"snapshot_seq": view.seq, "groupings": names}


@router.get("/latest", summary="Aggregates of the latest snapshot by grouping (USD)")
async def latest(
    request: Request,
    grouping: Annotated[str, Query(max_length=100, description="firm, desk, …")] = "firm",
    measures: Annotated[list[str] | None, Query(description="columns to keep")] = None,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """One row per group of the latest published snapshot: the group columns, ``positions``,
    ``stale``, ``unpriced``, ``max_age_s`` (s) and each measure (USD, with ``_gross`` sums).
    Every reader of one snapshot gets the same bytes: the API subscribes once."""
    fmt = formats.negotiate(accept, format_)
    _, view = link(request).require()
    name = grouping_name(view, grouping)
    keep = (*name.split(","), "positions", "stale", "unpriced", "max_age_s")
    pick(view.tables[name], measures, keep)  # a bad measure fails before anything is cached
    return of_latest(
        request,
        fmt,
        ("latest", name, tuple(measures or ())),
        lambda v: pick(v.tables[name], measures, keep),
        {"grouping": name},
    )


def positions_body(
    copy: PositionsCopy,
    filters: tuple[tuple[str, tuple[str, ...]], ...],
    ids: tuple[str, ...],
    measures: list[str] | None,
    fmt: formats.Format,
    max_rows: int,
) -> bytes:
    """The body of a positions answer: ``copy`` filtered (``filters``: column and the values
    kept; ``ids``: position ids), with the ``measures`` asked, in ``fmt``.

    Raises
    ------
    HTTPException
        400 for an unknown desk, asset class or measure; 413 beyond ``max_rows`` rows.
    """
    frame = copy.frame
    for column, wanted in filters:
        if not wanted:
            continue
        text = pl.col(column).cast(pl.String)
        known = set(frame.select(text.unique())[column].to_list())
        unknown = [w for w in wanted if w not in known]
        if unknown:
            listed = ", ".join(sorted(known))
            raise HTTPException(400, f"{column}={unknown[0][:60]!r}: none such; one of {listed}")
        frame = frame.filter(text.is_in(wanted))
    if ids:
        frame = frame.filter(pl.col("position_id").is_in(ids))
    frame = pick(frame, measures, ("row", "position_id", *GROUP_COLUMNS))
    at_most(frame, max_rows, "positions", "filter by desk, asset_class or id")
    return formats.table_bytes(frame, fmt, identity(copy))


def identity(copy: PositionsCopy) -> dict[str, Any]:
    """What identifies a positions answer: the snapshot seq and the risk table's counters."""
    return {
        "snapshot_seq": copy.seq,
        "generation": copy.meta.get("generation", 0),
        "book_generation": copy.meta.get("book_generation", 0),
    }


@router.get("/positions", summary="Per-position risk (USD), filtered")
async def positions(
    request: Request,
    desk: Annotated[list[str] | None, Query(description="desks (repeat or comma-separate)")] = None,
    asset_class: Annotated[list[str] | None, Query(description="rates, fx, credit, equity")] = None,
    ids: Annotated[list[str] | None, Query(alias="id", description="position ids")] = None,
    measures: Annotated[list[str] | None, Query(description="columns to keep")] = None,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The per-position risk of the service as of the latest snapshot (read from the service
    at most once a second, whatever the number of readers; readers asking the same question
    of one copy share one rendered answer). More rows than the server's bound give 413:
    filter by desk, asset class or id."""
    fmt = formats.negotiate(accept, format_)
    filters = (
        ("desk", tuple(_values(desk, "desk"))),
        ("asset_class", tuple(_values(asset_class, "asset_class"))),
    )
    wanted = tuple(_values(ids, "id"))
    live = link(request)
    copy = await live.positions()
    body = await live.renders.get(
        copy.number,
        (filters, wanted, tuple(measures or ()), fmt),
        lambda: positions_body(copy, filters, wanted, measures, fmt, settings(request).max_rows),
        threaded=True,
    )
    return formats.table_response(body, fmt, identity(copy))


@router.get("/limits", summary="Usage of every configured limit (USD)")
async def limits(
    request: Request,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The limit usage the latest snapshot carries (the ``limits`` table)."""
    fmt = formats.negotiate(accept, format_)
    return of_latest(request, fmt, ("limits",), lambda v: v.tables["limits"])


_BREACH_SCHEMA: Final = {
    "scope": pl.String,
    "measure": pl.String,
    "value": pl.Float64,
    "limit": pl.Float64,
    "since_ns": pl.Int64,
    "detail": pl.String,
}


def breach_frame(view: SnapshotView) -> pl.DataFrame:
    """The snapshot's breaches, one row each (``value`` and ``limit`` in USD, ``since_ns`` on
    the service's monotonic clock)."""
    rows = [msgspec.structs.asdict(b) for b in view.breaches]
    return pl.DataFrame(rows, schema=_BREACH_SCHEMA)


@router.get("/breaches", summary="Limits breached as of the latest snapshot")
async def breaches(
    request: Request,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """Every breach the latest snapshot carries (limits and a failed recon)."""
    fmt = formats.negotiate(accept, format_)
    return of_latest(request, fmt, ("breaches",), breach_frame)


class WhatIfBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A what-if: ``shocks`` (each with its ``kind``: parallel, twist, quote, spot, vol,
    spread, correlation) and the grouping ``by``."""

    shocks: tuple[AnyShock, ...]
    by: tuple[str, ...] = ("desk",)


@control.post("/whatif", summary="PnL of a shocked copy of the live market (USD)")
async def whatif(
    request: Request,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """Body: ``{"shocks": [{"kind": "parallel", "bp": 10}], "by": ["desk"]}``. The workers
    reprice the shocked market; the answer is the PnL per group (USD)."""
    fmt = formats.negotiate(accept, format_)
    try:
        body = msgspec.json.decode(await request.body(), type=WhatIfBody)
    except msgspec.ValidationError as exc:
        raise HTTPException(400, f"body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"body: not JSON ({exc})") from None
    if not body.shocks or len(body.shocks) > _MAX_SHOCKS:
        raise HTTPException(400, f"body.shocks: {len(body.shocks)} shocks; 1 to {_MAX_SHOCKS}")
    bad = [b for b in body.by if b not in GROUP_COLUMNS]
    if bad or len(set(body.by)) != len(body.by):
        what = bad[0][:60] if bad else "a repeated column"
        raise HTTPException(400, f"body.by: {what!r}; any of {', '.join(GROUP_COLUMNS)} once")
    client, view = link(request).require()
    try:
        table = await client.whatif(body.shocks, body.by)
    except ServiceError as exc:
        raise service_failure(exc) from None
    return formats.render(table, fmt, {"snapshot_seq": view.seq})
