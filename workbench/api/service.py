"""The service's state: status (read scope), and health and readiness for probes (no token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from workbench.api import formats
from workbench.api.guards import known_parameters, link, require
from workbench.api.risk import AcceptHeader, FormatParam
from workbench.client.views import processes_table

router = APIRouter(prefix="/v1", tags=["service"], dependencies=[Depends(known_parameters)])


@router.get("/health", summary="The API answers (liveness; no token)")
async def health(request: Request) -> dict[str, Any]:
    """Always 200 while the API runs; ``state`` says whether its service is ``up``."""
    return {"ok": True, **link(request).facts()}


@router.get("/ready", summary="The API can answer risk (readiness; no token)")
async def ready(request: Request) -> JSONResponse:
    """200 when the service is up and publishing, else 503 with the reason."""
    facts = link(request).facts()
    up = facts["state"] == "up"
    return JSONResponse({"ok": up, **facts}, status_code=200 if up else 503)


@router.get(
    "/status",
    summary="Processes and facts of the service (read)",
    dependencies=[Depends(require("read")), Depends(known_parameters)],
)
async def status(
    request: Request,
    format_: FormatParam = None,
    accept: AcceptHeader = None,
) -> Response:
    """The service's status (``service``, as ``workbench status`` shows it, asked at most
    once a second) and the API's own (``api``); in Arrow or CSV the processes table."""
    fmt = formats.negotiate(accept, format_)
    live = link(request)
    answer = await live.status()
    if fmt == "json":
        return Response(
            formats.json_bytes({"api": live.facts(), "service": answer}),
            media_type=formats.MEDIA_TYPES["json"],
        )
    return formats.render(processes_table(answer), fmt, {"service": live.name})
