"""The one door to a running service: start or find it, read its risk, ask it questions.

Widgets, reports and the command line use only the names here (and :mod:`workbench.risk`'s
types); the service's internals stay behind it.
"""

from workbench.client.service import (
    Client,
    MarketView,
    ServiceError,
    SnapshotView,
    connect,
    connect_remote,
    log_tail,
    running,
    start,
)
from workbench.engine.protocol.config import ConflationConfig, FeedConfig, RemoteConfig
from workbench.engine.telemetry.histograms import BUCKETS_MS, quantile_ms
from workbench.risk.breaches import Breach
from workbench.risk.limits import LimitConfig
from workbench.risk.shocks import (
    AnyShock,
    ParallelShock,
    QuoteShock,
    SpotShock,
    SpreadShock,
    TwistShock,
    VolShock,
)

__all__ = [
    "BUCKETS_MS",
    "AnyShock",
    "Breach",
    "Client",
    "ConflationConfig",
    "FeedConfig",
    "LimitConfig",
    "MarketView",
    "ParallelShock",
    "QuoteShock",
    "RemoteConfig",
    "ServiceError",
    "SnapshotView",
    "SpotShock",
    "SpreadShock",
    "TwistShock",
    "VolShock",
    "connect",
    "connect_remote",
    "log_tail",
    "quantile_ms",
    "running",
    "start",
]
