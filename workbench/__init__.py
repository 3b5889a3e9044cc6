"""workbench — a Jupyter-native real-time risk workbench.

The pricing library (``workbench.pricing``) is pure: float64 columns in, float64 columns out,
the valuation date passed in, no clock and no global state.
"""

__version__ = "0.1.0"

from workbench.engine.client import Client, ServiceError, connect, connect_remote, running, start
from workbench.engine.config import RemoteConfig

__all__ = [
    "Client",
    "RemoteConfig",
    "ServiceError",
    "__version__",
    "connect",
    "connect_remote",
    "running",
    "start",
]
