"""Service configuration and the descriptor a running service leaves for clients.

The whole configuration is a msgspec struct: it goes to each child process as JSON text (the
only argument of a process entry point) and is written, with the live endpoints and segment
names, to ``<run_dir>/service.json`` where :func:`workbench.connect` finds it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Literal

import msgspec

ASSET_CLASSES = ("rates", "fx", "credit", "equity")


class FeedConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where ticks come from.

    ``mode``: ``synthetic`` (a feed process of the service publishes ``rate`` ticks/s),
    ``replay`` (a feed process replays the Parquet ``path`` at ``speed``× recorded time),
    ``external`` (ingestion connects to ``address``; no feed process) or ``none``.
    """

    mode: str = "synthetic"
    rate: float = 5_000.0
    seed: int = 7
    anomaly_rate: float = 0.001  # share of duplicate / out-of-order ticks (synthetic)
    path: str | None = None
    speed: float = 1.0
    address: str | None = None


class ConflationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Conflation windows in milliseconds per quote class (see :mod:`engine.conflation`)."""

    fx_spot_ms: float = 200.0
    fx_vol_ms: float = 500.0
    rates_ms: float = 250.0
    equity_ms: float = 250.0
    credit_ms: float = 2_000.0
    credit_phases: int = 4
    """Credit indices close their windows at this many evenly spaced phases of the credit grid
    (an index's spread and correlation quotes share one), so the tranche repricing of the
    indices is spread over the window instead of all at once; 1: every index together."""


class LimitConfig(msgspec.Struct, frozen=True, kw_only=True):
    """An absolute limit on a measure (USD) for the firm (``desk`` None) or one desk."""

    measure: str
    limit: float
    desk: str | None = None


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """ZeroMQ addresses, bound on loopback by the named process."""

    feed: str  # PUB, the synthetic/replay feed (ingestion connects; or an external address)
    notices: str  # PUB, ingestion → workers: QuotesDirty
    risk: str  # PULL, workers → aggregator: RiskUpdated
    heartbeats: str  # PULL, every child → supervisor: Heartbeat
    control: str  # ROUTER, clients → aggregator: ControlRequest
    snapshots: str  # PUB, aggregator → clients: Snapshot
    supervisor: str  # ROUTER, clients and aggregator → supervisor: status/restart/stop/reload
    workers: dict[str, str]  # ROUTER per worker, aggregator → worker: WorkerRequest
    metrics: str  # HTTP host:port of the Prometheus exporter
    remote_control: str = ""  # ROUTER (CurveZMQ), remote clients → control, if remote access
    remote_snapshots: str = ""  # XPUB (CurveZMQ), snapshots → remote clients
    server_public_key: str = ""  # Z85 CurveZMQ public key of the remote listeners


class RemoteConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Listeners for clients on other machines (see :mod:`engine.gateway`): CurveZMQ only."""

    host: str  # address to listen on, e.g. a LAN address or "0.0.0.0"
    server_key: str  # the server's secret certificate file (``workbench keys`` → *.key_secret)
    authorized_keys: str  # folder of the public certificates (*.key) of admitted clients
    control_port: int = 0  # 0: any free port (the descriptor records it)
    snapshots_port: int = 0


class ServiceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a service and each of its processes needs to start."""

    name: str
    run_dir: str
    book: str
    market: str
    feed: FeedConfig = FeedConfig()
    conflation: ConflationConfig = ConflationConfig()
    workers: dict[str, int] = msgspec.field(default_factory=lambda: dict.fromkeys(ASSET_CLASSES, 1))
    limits: tuple[LimitConfig, ...] = ()
    n_paths: int = 50_000
    tranche_method: Literal["mc", "recursion"] = "recursion"
    snapshot_hz: float = 10.0
    heartbeat_s: float = 0.5
    heartbeat_timeout_s: float = 5.0
    startup_timeout_s: float = 300.0
    restart_backoff_s: float = 0.5
    rolling_restart_s: float = 0.0  # 0 = off; workers keep the cyclic GC on unless this is on
    recon_s: float = 60.0
    numba_threads: int = 1
    worker_nice: int = 5  # pricing workers yield the CPU to ingestion and aggregation (0: off)
    service_nice: int = 5  # the whole service yields to notebook kernels and JupyterLab (0: off)
    remote: RemoteConfig | None = None  # None: nothing listens beyond 127.0.0.1
    standby: bool = True
    """A warm standby process ready to take a dead worker's slot at once (docs/service.md)."""
    fail_reprice: tuple[str, ...] = ()
    """Fault injection: glob patterns over pricing-group keys (``fx:EURUSD``, ``rates:*``)
    whose reprices fail as a pricer exception would (docs/service.md, "Fault injection")."""
    endpoints: Endpoints | None = None
    segments: dict[str, str] = {}
    frozen_book: str = ""  # the copy of the booking file every process prices (set at start)
    frozen_market: str = ""  # the copy of the market file every process starts from
    book_id: str = ""  # digest of the frozen book's bytes: the identity of the book priced
    book_generation: int = 0  # 0 at start, +1 at each explicit reload of the book


class Descriptor(msgspec.Struct, frozen=True, kw_only=True):
    """What ``service.json`` holds: how to reach a running service."""

    name: str
    pid: int
    started_ns: int
    config: ServiceConfig
    n_positions: int
    n_quotes: int


def default_run_root() -> Path:
    """``$WORKBENCH_RUN_DIR`` or ``~/.workbench/run``: one folder per service name."""
    env = os.environ.get("WORKBENCH_RUN_DIR")
    return Path(env) if env else Path.home() / ".workbench" / "run"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_IPC_PATH_MAX = 100
"""Unix socket paths longer than ~107 bytes cannot be bound; keep a margin."""


def socket_folder(run_dir: str | Path) -> Path:
    """Where a service's ipc sockets live: ``<run dir>/sockets``, or a short folder in the
    temp directory when that path would be too long for a Unix socket."""
    folder = Path(run_dir) / "sockets"
    if len(str(folder)) + len("/worker-equity-99.ipc") > _IPC_PATH_MAX:
        folder = Path(tempfile.mkdtemp(prefix="wb-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def local_endpoints(worker_names: list[str], folder: str | Path) -> Endpoints:
    """ipc (Unix socket) endpoints in ``folder`` for every socket of a service.

    Not TCP ports: a port picked as free can be taken before it is bound, and a socket that
    keeps reconnecting to an unbound port of the ephemeral range can end up connected to itself
    and hold that port. Unix sockets have neither problem (and are faster); only the metrics
    exporter, which Prometheus scrapes over HTTP, takes a loopback TCP port.
    """
    base = Path(folder)

    def ipc(name: str) -> str:
        return f"ipc://{base / name}.ipc"

    return Endpoints(
        feed=ipc("feed"),
        notices=ipc("notices"),
        risk=ipc("risk"),
        heartbeats=ipc("heartbeats"),
        control=ipc("control"),
        snapshots=ipc("snapshots"),
        supervisor=ipc("supervisor"),
        workers={w: ipc(f"worker-{w}") for w in worker_names},
        metrics=f"127.0.0.1:{free_port()}",
    )


def loopback_endpoints(worker_names: list[str]) -> Endpoints:
    """Fresh loopback TCP endpoints (for tests of one process pair; a service uses
    :func:`local_endpoints`, see there why)."""

    def tcp() -> str:
        return f"tcp://127.0.0.1:{free_port()}"

    return Endpoints(
        feed=tcp(),
        notices=tcp(),
        risk=tcp(),
        heartbeats=tcp(),
        control=tcp(),
        snapshots=tcp(),
        supervisor=tcp(),
        workers={w: tcp() for w in worker_names},
        metrics=f"127.0.0.1:{free_port()}",
    )


def encode_config(config: ServiceConfig) -> str:
    """JSON text of a configuration (what a child process receives)."""
    return msgspec.json.encode(config).decode()


def decode_config(text: str) -> ServiceConfig:
    """The inverse of :func:`encode_config`."""
    return msgspec.json.decode(text, type=ServiceConfig)
