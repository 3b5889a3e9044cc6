"""Running the API: one uvicorn process on the asyncio loop, loopback unless tokens guard it."""

from __future__ import annotations

import ipaddress
import socket
from typing import Final

import uvicorn

from workbench.api.app import create_app
from workbench.api.settings import ApiSettings

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
_MAX_CONNECTIONS: Final = 1_000
"""Open connections uvicorn accepts before it answers 503."""
_MAX_HEADER_BYTES: Final = 16 * 1024
"""Largest request head (request line and headers, bytes)."""


class ApiConfigError(ValueError):
    """A configuration the API refuses to start with (the message says why)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def check(config: ApiSettings, host: str) -> None:
    """Refuse a bind beyond loopback without tokens.

    Raises
    ------
    ApiConfigError
        ``host`` is not loopback and ``config`` has no tokens.
    """
    if config.tokens is None and not is_loopback(host):
        raise ApiConfigError(
            f"--host {host} is reachable from other machines: pass --tokens FILE "
            "(workbench api token --scope read --tokens FILE makes one)"
        )


def serve(config: ApiSettings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the API for ``config.service`` on ``host``:``port`` until SIGINT or SIGTERM.

    Raises
    ------
    ApiConfigError
        See :func:`check`.
    """
    check(config, host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            loop="asyncio",
            http="h11",
            workers=1,
            access_log=False,
            log_level="warning",
            limit_concurrency=_MAX_CONNECTIONS,
            h11_max_incomplete_event_size=_MAX_HEADER_BYTES,
            timeout_graceful_shutdown=2,
            server_header=False,
        )
    )
    server.run()
