"""What every request passes: size bounds, bearer tokens, and errors as 4xx/503 messages.

No answer carries a traceback: a refused request gets ``{"error": "<what was wrong>"}`` with
its status code, and anything unforeseen a 500 with a one-line message (the traceback goes to
the server's log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbench.api.formats import FormatError
from workbench.api.live import ServiceLink, ServiceUnavailableError
from workbench.api.settings import ApiSettings
from workbench.api.tokens import Scope as TokenScope
from workbench.api.tokens import grants
from workbench.client import ServiceError

log = logging.getLogger("workbench.api")
_bearer = HTTPBearer(auto_error=False, description="A token made by `workbench api token`.")


def settings(request: Request) -> ApiSettings:
    """The server's settings."""
    found: ApiSettings = request.app.state.settings
    return found


def link(request: Request) -> ServiceLink:
    """The server's link to its service."""
    found: ServiceLink = request.app.state.link
    return found


def require(scope: TokenScope) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with a token of ``scope`` (or above);
    every request passes when the server has no tokens."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(_bearer),  # noqa: B008
    ) -> None:
        book = settings(request).tokens
        if book is None:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                401, "a bearer token is required (Authorization: Bearer <token>)", challenge
            )
        held = book.scope_of(credentials.credentials)
        if held is None:
            raise HTTPException(401, "the bearer token is not known to this server", challenge)
        if not grants(held, scope):
            raise HTTPException(403, f"this token's scope is {held}; this needs {scope}")

    return check


async def known_parameters(request: Request) -> None:
    """Refuse (400) a query parameter the endpoint does not take (a misspelt filter would
    otherwise be ignored and answer everything)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names.update(p.alias for p in sub.query_params)
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        takes = ", ".join(sorted(names)) or "no query parameter"
        raise HTTPException(
            400, f"query parameter {unknown[0][:40]!r} is not known here; takes {takes}"
        )


def refused(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] in ("query", "path", "header"):
        return f"{loc[0]} parameter {loc[1]!r}"
    if loc and loc[0] == "body":
        return "body" + "".join(f"[{p!r}]" for p in loc[1:])
    return ".".join(map(str, loc)) or "request"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        value = err.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" = {str(value)[:80]!r}"
        parts.append(f"{_where(tuple(err.get('loc', ())))}{shown}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def service_failure(exc: ServiceError) -> HTTPException:
    """A failed service request: 503 when the service did not answer, 422 when it refused
    (its message either way)."""
    text = str(exc)
    unanswered = ("not reachable" in text, "no reply to" in text, "did not answer" in text)
    return HTTPException(503 if any(unanswered) else 422, text)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as ``{"error": ...}`` with a 4xx or 503 status."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return refused(400, _validation_message(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return refused(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def on_away(request: Request, exc: Exception) -> JSONResponse:
        return refused(503, str(exc) or "the service is away", {"Retry-After": "1"})

    async def on_format(request: Request, exc: Exception) -> JSONResponse:
        return refused(400, str(exc))

    async def on_other(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return refused(500, f"internal error ({type(exc).__name__}); see the server's log")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(ServiceUnavailableError, on_away)
    app.add_exception_handler(FormatError, on_format)
    app.add_exception_handler(Exception, on_other)


class Bounds:
    """ASGI middleware refusing a query string over ``max_query_bytes`` (414) and a body over
    ``max_body_bytes`` (413), before any route sees the request."""

    def __init__(self, app: ASGIApp, *, max_query_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = len(scope.get("query_string", b""))
        if query > self.max_query_bytes:
            msg = f"query string of {query} bytes; at most {self.max_query_bytes}"
            await refused(414, msg)(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            msg = f"content-length {declared.decode(errors='replace')[:20]}: at most "
            await refused(413, msg + f"{self.max_body_bytes} bytes")(scope, receive, send)
            return
        body, more = b"", True
        messages: list[Message] = []
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                msg = f"request body over {self.max_body_bytes} bytes"
                await refused(413, msg)(scope, receive, send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
