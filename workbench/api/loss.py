"""The live loss measures over HTTP: the loss process's last VaR/ES and stress results (``read``
scope) and an intraday PnL explain (``control`` scope: it prices the book), as the client's
:meth:`~workbench.client.Client.var`, :meth:`~workbench.client.Client.stress` and
:meth:`~workbench.client.Client.explain` give them (docs/var.md, "Live"; docs/api.md).

A result is one table of the run (``?table=``) with the run's facts beside it: the quote
``generation`` and ``made_ns`` (UTC ns) of the copy it ran on, ``age_s``, ``seconds``,
``scenarios``. Before a first result: 503 with the run's progress and ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from workbench.api import formats
from workbench.api.guards import known_parameters, link, require, service_failure
from workbench.api.history import TimeParam, epoch_ns
from workbench.api.risk import AcceptHeader, FormatParam, bounded
from workbench.client import ServiceError
from workbench.client.views import LossResult

router = APIRouter(
    prefix="/v1", tags=["loss"], dependencies=[Depends(require("read")), Depends(known_parameters)]
)
control = APIRouter(
    prefix="/v1",
    tags=["control"],
    dependencies=[Depends(require("control")), Depends(known_parameters)],
)

VAR_TABLES: Final = ("measures", "pnl", "worst", "limits", "greeks_by_desk", "greeks_worst")
STRESS_TABLES: Final = ("pnl", "worst")
EXPLAIN_TABLES: Final = ("by_desk", "positions")


def _table(result: LossResult, name: str) -> pl.DataFrame:
    """Table ``name`` of a VaR or stress result (empty when the run kept none)."""
    if name in ("greeks_by_desk", "greeks_worst"):
        if result.greeks is None:
            return pl.DataFrame()
        return result.greeks.by_desk if name == "greeks_by_desk" else result.greeks.worst
    if name == "measures":
        return result.measures if result.measures is not None else pl.DataFrame()
    frame: pl.DataFrame = getattr(result, name)
    return frame


def _facts(result: LossResult, what: str, table: str) -> dict[str, Any]:
    return {"measure": what, "table": table, "generation": result.generation,
            "made_ns": result.made_ns, "age_s": round(result.age_s, 3),
            "seconds": round(result.seconds, 3), "scenarios": result.scenarios,
            "computing": result.computing, "every_s": result.every_s}  # fmt: skip


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise HTTPException(400, f"table={value[:60]!r}: expected one of {' | '.join(allowed)}")
    return value


async def _result(request: Request, what: str) -> LossResult:
    """The loss process's last ``what`` result, asked without waiting.

    Raises
    ------
    HTTPException
        503 (with ``Retry-After``) before a first result; 422 when the service runs without
        its loss process or on another machine.
    """
    client, _ = link(request).require()
    try:
        result = await (client.var(wait_s=0) if what == "var" else client.stress(wait_s=0))
    except ServiceError as exc:
        raise service_failure(exc) from None
    if not result.ready:
        doing = f"computing {result.computing} {result.done}/{result.total}" if (
            result.computing) else "waiting for its first run"  # fmt: skip
        why = f"; the last run failed: {result.error}" if result.error else ""
        raise HTTPException(503, f"no {what} result yet ({doing}{why})", {"Retry-After": "5"})
    return result


async def _answer(request: Request, what: str, table: str, fmt: formats.Format) -> Response:
    result = await _result(request, what)
    frame = _table(result, table)
    bounded(frame, request, f"{what} {table}", "ask for measures or worst")
    return formats.render(frame, fmt, _facts(result, what, table))


@router.get("/var", summary="The live historical VaR/ES and its scenario PnL (USD)")
async def var(
    request: Request,
    table: Annotated[str, Query(description=" | ".join(VAR_TABLES))] = "measures",
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The loss process's last VaR run on the live quotes (every ``loss.every_s`` seconds):
    ``measures`` (VaR 99%, 97.5% and ES 97.5% by desk and the firm, USD, losses positive),
    ``pnl`` (PnL per scenario and desk), ``worst`` (the firm's worst days), ``limits`` (the
    VaR/ES limits' usage), ``greeks_by_desk`` and ``greeks_worst`` (the Greeks' estimate
    beside full revaluation). The copy's quote ``generation``, ``made_ns`` and ``age_s`` ride
    with it."""
    fmt = formats.negotiate(accept, format_)
    return await _answer(request, "var", _choice(table, VAR_TABLES), fmt)


@router.get("/stress", summary="The book's PnL under the stress scenarios, live (USD)")
async def stress(
    request: Request,
    table: Annotated[str, Query(description=" | ".join(STRESS_TABLES))] = "pnl",
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The loss process's last stress run: ``pnl`` (PnL per stress and desk, the firm as
    ``Firm``) or ``worst`` (the stresses by the firm's PnL)."""
    fmt = formats.negotiate(accept, format_)
    return await _answer(request, "stress", _choice(table, STRESS_TABLES), fmt)


@control.get("/explain", summary="Intraday PnL explain by desk and risk factor (USD)")
async def explain(
    request: Request,
    since: TimeParam = None,
    table: Annotated[str, Query(description=" | ".join(EXPLAIN_TABLES))] = "by_desk",
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """PnL from the quotes at ``since`` (the latest copy kept at or before it, one a minute)
    to the live ones: ``actual`` by full revaluation, one column per risk-factor class from
    the Greeks at the base, ``unexplained``; ``by_desk`` (the firm as ``Firm``) or
    ``positions``. The loss process prices the book for it: ``control`` scope."""
    fmt = formats.negotiate(accept, format_)
    name = _choice(table, EXPLAIN_TABLES)
    at = epoch_ns("since", since)  # None: the day's start
    client, _ = link(request).require()
    try:
        view = await client.explain(at, wait_s=10.0)
    except ServiceError as exc:
        raise service_failure(exc) from None
    frame = view.by_desk if name == "by_desk" else view.positions
    bounded(frame, request, f"explain {name}", "ask for by_desk")
    facts = {"measure": "explain", "table": name, "base_ns": view.base_ns,
             "made_ns": view.made_ns, "base_generation": view.base_generation,
             "generation": view.generation, "age_s": round(view.age_s, 3)}  # fmt: skip
    return formats.render(frame, fmt, facts)


__all__ = ["EXPLAIN_TABLES", "STRESS_TABLES", "VAR_TABLES", "control", "router"]
