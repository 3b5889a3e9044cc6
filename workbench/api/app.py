"""The API as an ASGI application: its routers, its guards, and the link to its service that
lives as long as it does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from workbench.api import history, loss, risk, service, stream
from workbench.api.guards import Bounds, install_error_handlers
from workbench.api.live import ServiceLink
from workbench.api.settings import ApiSettings

DESCRIPTION = """Live and stored risk of one workbench service over HTTP.

Tables answer in JSON (default), Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream`)
or CSV (`Accept: text/csv` or `?format=csv`). Every endpoint but `/v1/health` and `/v1/ready`
needs a bearer token when the server has a tokens file (`read` scope; `control` for
`POST /v1/whatif` and `GET /v1/explain`, which make the service price). Measures are in
USD. See docs/api.md.
"""


def create_app(config: ApiSettings) -> FastAPI:
    """The API following service ``config.service`` (see :class:`ApiSettings`); OpenAPI at
    ``/docs`` and ``/openapi.json``. The Swagger UI page loads its script, style and icon from
    this server (the ``fastapi-offline`` package's copy of ``swagger-ui-dist``), never from a
    CDN: it works without internet."""
    live = ServiceLink(config.service, run_root=config.run_root, silence_s=config.silence_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(live.run(), name="service-link")
        try:
            yield
        finally:
            live.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPIOffline(
        title="workbench risk API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = config
    app.state.link = live
    install_error_handlers(app)
    for module in (risk, history, loss, service, stream):
        app.include_router(module.router)
    app.include_router(risk.control)
    app.include_router(loss.control)
    app.add_middleware(
        Bounds, max_query_bytes=config.max_query_bytes, max_body_bytes=config.max_body_bytes
    )
    return app
