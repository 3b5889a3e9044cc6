"""workbench — a Jupyter-native real-time risk workbench.

The pricing library (``workbench.pricing``) is pure: float64 columns in, float64 columns out,
the valuation date passed in, no clock and no global state. ``import workbench.pricing`` (or
``workbench.market``, ``workbench.book``) loads none of the service: the client names below
load on first use.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from workbench.client import (
        AsyncClient,
        Client,
        ServiceError,
        connect,
        connect_remote,
        running,
        start,
    )
    from workbench.engine.protocol.config import RemoteConfig

_WHERE = {
    "AsyncClient": "workbench.client",
    "Client": "workbench.client",
    "ServiceError": "workbench.client",
    "connect": "workbench.client",
    "connect_remote": "workbench.client",
    "running": "workbench.client",
    "start": "workbench.client",
    "RemoteConfig": "workbench.engine.protocol.config",
}

__all__ = [
    "AsyncClient",
    "Client",
    "RemoteConfig",
    "ServiceError",
    "__version__",
    "connect",
    "connect_remote",
    "running",
    "start",
]


def __getattr__(name: str) -> Any:
    """The client (ZeroMQ, msgspec, Polars) loads when first used."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    return getattr(import_module(module), name)
