"""The one door to a running service: start or find it, read its risk, ask it questions.

Widgets, reports and the command line use only the names here (and :mod:`workbench.risk`'s
types); the service's internals stay behind it.

- :mod:`~workbench.client.launcher`: :func:`start`, :func:`running`, :func:`connect`
- :mod:`~workbench.client.remote`: :func:`connect_remote` (CurveZMQ)
- :mod:`~workbench.client.client`: :class:`Client`, blocking calls
- :mod:`~workbench.client.asynchronous`: :class:`AsyncClient`, the same calls awaited
- :mod:`~workbench.client.calls`: what each call asks and how its answer is read (no I/O)
- :mod:`~workbench.client.views`: the answers as typed views and Polars frames
- :mod:`~workbench.client.stored`: the risk store's queries (docs/store.md)
- :func:`generate_keys` (a CurveZMQ key pair) and :func:`reap` (shared memory of dead services)
"""

from workbench.client.asynchronous import AsyncClient
from workbench.client.client import Client
from workbench.client.errors import ServiceError
from workbench.client.launcher import connect, running, start
from workbench.client.remote import connect_remote
from workbench.client.session import STATUS_TIMEOUT_S, log_tail
from workbench.client.views import MarketView, SnapshotView
from workbench.engine.protocol.config import (
    BackoffConfig,
    ConflationConfig,
    FeedConfig,
    LossConfig,
    PollSourceConfig,
    RemoteConfig,
    StoreConfig,
    load_sources,
)
from workbench.engine.telemetry.histograms import BUCKETS_MS, quantile_ms
from workbench.engine.transport.gateway import generate_keys
from workbench.engine.transport.shm import reap
from workbench.risk.breaches import Breach
from workbench.risk.limits import LimitConfig
from workbench.risk.shocks import (
    AnyShock,
    CorrelationShock,
    ParallelShock,
    QuoteShock,
    SpotShock,
    SpreadShock,
    TwistShock,
    VolShock,
)

__all__ = [
    "BUCKETS_MS",
    "STATUS_TIMEOUT_S",
    "AnyShock",
    "AsyncClient",
    "BackoffConfig",
    "Breach",
    "Client",
    "ConflationConfig",
    "CorrelationShock",
    "FeedConfig",
    "LimitConfig",
    "LossConfig",
    "MarketView",
    "ParallelShock",
    "PollSourceConfig",
    "QuoteShock",
    "RemoteConfig",
    "ServiceError",
    "SnapshotView",
    "SpotShock",
    "SpreadShock",
    "StoreConfig",
    "TwistShock",
    "VolShock",
    "connect",
    "connect_remote",
    "generate_keys",
    "load_sources",
    "log_tail",
    "quantile_ms",
    "reap",
    "running",
    "start",
]
