"""The HTTP API of a running service, for what is not a notebook: FastAPI on uvicorn.

- :mod:`~workbench.api.server`: :func:`serve` (``workbench api --service NAME``)
- :mod:`~workbench.api.app`: :func:`create_app`, the routers and the service link
- :mod:`~workbench.api.live`: the one snapshot subscription, fanned out
- :mod:`~workbench.api.risk`, :mod:`~workbench.api.history`, :mod:`~workbench.api.service`,
  :mod:`~workbench.api.stream`: the endpoints (``/v1/...``)
- :mod:`~workbench.api.tokens`: bearer tokens, stored hashed, with a scope
- :mod:`~workbench.api.formats`: JSON, Arrow IPC stream, CSV
- :mod:`~workbench.api.command`: the ``workbench api`` command line

It reaches the service only through :mod:`workbench.client` (docs/api.md). The names below load
FastAPI and uvicorn when first used, so ``import workbench.api`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ApiConfigError": "workbench.api.server",
    "serve": "workbench.api.server",
    "create_app": "workbench.api.app",
    "ApiSettings": "workbench.api.settings",
    "TokenBook": "workbench.api.tokens",
    "TokenFileError": "workbench.api.tokens",
    "add_token": "workbench.api.tokens",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'workbench.api' has no attribute {name!r}")
