"""Service configuration and the descriptor a running service leaves for clients.

The whole configuration is a msgspec struct: it goes to each child process as JSON text (the
only argument of a process entry point) and is written, with the live endpoints and segment
names, to ``<run_dir>/service.json`` where :func:`workbench.connect` finds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from workbench.book.schema import ASSET_CLASSES
from workbench.risk.limits import LimitConfig


class BackoffConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Delay before the next poll after a failed one: ``initial_s`` after the first failure,
    doubled at each further one up to ``max_s`` (seconds); a good poll returns to ``poll_s``."""

    initial_s: float = 1.0
    max_s: float = 30.0


class PollSourceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """An HTTP polling source of quotes, the fallback of the feed for ``quotes``
    (docs/ticks.md, "Polling sources").

    ``quotes``: quote ids or glob patterns (``CDX.*``, ``EQVOL.SAP.*``) this source answers
    for; ``poll_s``: seconds between two polls; ``timeout_s``: the whole request's limit;
    ``stale_after_s``: how long the sources before it (the feed, then earlier polling sources
    of the same quote) may leave a quote without an update before this source's values are
    taken.
    """

    name: str
    url: str
    quotes: tuple[str, ...]
    poll_s: float = 1.0
    timeout_s: float = 0.5
    stale_after_s: float = 5.0
    backoff: BackoffConfig = BackoffConfig()


class FeedConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where ticks come from.

    ``mode``: ``synthetic`` (a feed process of the service publishes ``rate`` ticks/s),
    ``replay`` (a feed process replays the Parquet ``path`` at ``speed``× recorded time),
    ``external`` (ingestion connects to ``address``; no feed process) or ``none``.
    ``sources``: HTTP polling sources, in priority order after the feed (the fallbacks of the
    quotes they list).
    """

    mode: str = "synthetic"
    rate: float = 5_000.0
    seed: int = 7
    anomaly_rate: float = 0.001  # share of duplicate / out-of-order ticks (synthetic)
    path: str | None = None
    speed: float = 1.0
    address: str | None = None
    sources: tuple[PollSourceConfig, ...] = ()


def load_sources(path: str | os.PathLike[str]) -> tuple[PollSourceConfig, ...]:
    """The polling sources of a JSON file: a list of :class:`PollSourceConfig` objects.

    Raises
    ------
    ValueError
        If the file is not such a list (the message names the file and the field), or two
        sources share a name.
    """
    try:
        sources = msgspec.json.decode(Path(path).read_bytes(), type=tuple[PollSourceConfig, ...])
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    check_sources(sources)
    return sources


def check_sources(sources: tuple[PollSourceConfig, ...]) -> None:
    """Refuse polling sources that cannot run: a shared or reserved name, a URL that is not
    http(s), no quotes, or a non-positive interval.

    Raises
    ------
    ValueError
        Naming the source and the field.
    """
    seen: set[str] = {"feed"}
    for s in sources:
        if not s.name or s.name in seen or not s.name.replace("_", "").isalnum():
            raise ValueError(f"polling source name {s.name!r}: empty, reserved or repeated")
        seen.add(s.name)
        if not s.url.startswith(("http://", "https://")):
            raise ValueError(f"polling source {s.name}: url must be http(s), got {s.url!r}")
        if not s.quotes:
            raise ValueError(f"polling source {s.name}: no quotes")
        for field in ("poll_s", "timeout_s", "stale_after_s"):
            value = getattr(s, field)
            if not 0.0 < value < float("inf"):
                raise ValueError(f"polling source {s.name}: {field} must be > 0, got {value!r}")
        if not 0.0 < s.backoff.initial_s <= s.backoff.max_s < float("inf"):
            raise ValueError(f"polling source {s.name}: backoff needs 0 < initial_s <= max_s")


class ConflationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Conflation windows in milliseconds per quote class (see
    :mod:`engine.processes.conflation`)."""

    fx_spot_ms: float = 200.0
    fx_vol_ms: float = 500.0
    rates_ms: float = 250.0
    equity_ms: float = 250.0
    credit_ms: float = 2_000.0
    credit_phases: int = 4
    """Credit indices close their windows at this many evenly spaced phases of the credit grid
    (an index's spread and correlation quotes share one), so the tranche repricing of the
    indices is spread over the window instead of all at once; 1: every index together."""


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
    """Listeners for clients on other machines (see :mod:`engine.transport.gateway`): CurveZMQ
    only."""

    host: str  # address to listen on, e.g. a LAN address or "0.0.0.0"
    server_key: str  # the server's secret certificate file (``workbench keys`` → *.key_secret)
    authorized_keys: str  # folder of the public certificates (*.key) of admitted clients
    control_port: int = 0  # 0: any free port (the descriptor records it)
    snapshots_port: int = 0


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The risk store: the service's snapshots kept as Parquet files (docs/store.md).

    ``interval_s``: seconds between two files of buffered rows (a ``kill -9`` loses at most
    this much); ``position_interval_s``: seconds between two stored copies of the per-position
    risk; ``retention_days``: days kept, today included (0: every day); ``root``: the store's
    folder (empty: ``<run dir>/store``; a relative folder is under the run dir).
    """

    enabled: bool = True
    interval_s: float = 5.0
    position_interval_s: float = 60.0
    retention_days: int = 7
    root: str = ""
    merge_files: int = 120
    """A run of this many files of one dataset and date is merged into one (at 5 s, every 10
    minutes: a day is read from ~150 files, not 17,280)."""


class LossConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The live loss process: historical VaR/ES, the stresses and the intraday PnL explain of
    the book on the live quotes (docs/var.md, "Live").

    ``every_s``: seconds from the end of one run to the start of the next; ``window``: 1-day
    changes of the history used; ``history``: a market history file (None: a reference history
    generated for the service's market, docs/history.md); ``stresses``: a stress file (None:
    the library); ``greeks``: also the Greeks' estimate of every historical day; ``nice``:
    added to the process's nice value; ``between_flushes``: revalue only in the hot path's
    gaps, between a flush's snapshot and the next conflation instant (a run takes longer, the
    snapshots are not delayed; False: as fast as the process's priority lets it).
    """

    enabled: bool = True
    every_s: float = 60.0
    window: int = 500
    history: str | None = None
    stresses: str | None = None
    greeks: bool = True
    nice: int = 10
    between_flushes: bool = True


def loss_endpoint(endpoints: Endpoints) -> str:
    """The live loss process's ROUTER: ``loss.ipc`` beside the control socket."""
    head, sep, _ = endpoints.control.rpartition("/")
    if not endpoints.control.startswith("ipc://") or not sep:
        raise ValueError(f"the loss process listens beside an ipc control socket, not "
                         f"{endpoints.control!r}")  # fmt: skip
    return f"{head}/loss.ipc"


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
    takeover_threads: int = 2
    """Numba threads of a standby while it reprices a dead worker's slot (then
    ``numba_threads``): a takeover is a burst that both cores finish sooner."""
    worker_nice: int = 5  # pricing workers yield the CPU to ingestion and aggregation (0: off)
    service_nice: int = 0
    """Nice value of the service's session against the desk's (JupyterLab, kernels, browser): 0
    shares the cores evenly; 5 made flush → publish p99 with the desk attached 218–237 ms
    against 98–147 ms at 0, with the kernel answering in ≤ 16 ms either way
    (docs/benchmarks.md)."""
    remote: RemoteConfig | None = None  # None: nothing listens beyond 127.0.0.1
    standby: bool = True
    """A warm standby process ready to take a dead worker's slot at once (docs/service.md)."""
    store: StoreConfig = StoreConfig()
    """The risk store's writer process and its files (docs/store.md)."""
    loss: LossConfig = LossConfig()
    """The live VaR/ES, stress and PnL explain process (docs/var.md, "Live")."""
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


def encode_config(config: ServiceConfig) -> str:
    """JSON text of a configuration (what a child process receives)."""
    return msgspec.json.encode(config).decode()


def decode_config(text: str) -> ServiceConfig:
    """The inverse of :func:`encode_config`."""
    return msgspec.json.decode(text, type=ServiceConfig)
