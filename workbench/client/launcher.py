"""Services on this machine: start one in the background, find the running ones, attach to
one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import msgspec

from workbench.client.asynchronous import AsyncClient
from workbench.client.client import Client
from workbench.client.errors import ServiceError
from workbench.client.session import Session, log_tail
from workbench.engine.protocol.config import (
    ConflationConfig,
    Descriptor,
    FeedConfig,
    PollSourceConfig,
    RemoteConfig,
    ServiceConfig,
    check_sources,
    default_run_root,
    encode_config,
)
from workbench.engine.transport.gateway import RemoteConfigError, check_remote
from workbench.engine.transport.shm import pid_alive
from workbench.risk.limits import LimitConfig


def running(run_root: str | Path | None = None) -> list[Descriptor]:
    """Descriptors of the services running on this machine (under ``run_root``)."""
    root = Path(run_root) if run_root else default_run_root()
    out: list[Descriptor] = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/service.json")):
        try:
            d = msgspec.json.decode(path.read_bytes(), type=Descriptor)
        except (msgspec.DecodeError, OSError):
            continue
        if pid_alive(d.pid):
            out.append(d)
    return out


@overload
def connect(
    name: str | None = None,
    *,
    run_root: str | Path | None = None,
    asynchronous: Literal[False] = False,
) -> Client: ...
@overload
def connect(
    name: str | None = None, *, run_root: str | Path | None = None, asynchronous: Literal[True]
) -> AsyncClient: ...
def connect(
    name: str | None = None, *, run_root: str | Path | None = None, asynchronous: bool = False
) -> Client | AsyncClient:
    """Attach to a running service (the only one, or the one called ``name``); with
    ``asynchronous=True`` as an :class:`AsyncClient` whose methods are awaited."""
    found = running(run_root)
    if name is not None:
        found = [d for d in found if d.name == name]
    if not found:
        where = run_root or default_run_root()
        raise ServiceError(f"no running workbench service{f' {name!r}' if name else ''} in {where}")
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise ServiceError(f"several services are running ({names}): pass name=")
    return AsyncClient(Session(found[0])) if asynchronous else Client(found[0])


def _refused_line(run_dir: Path) -> str:
    """The supervisor's one line on a configuration it refused (exit 2)."""
    for line in reversed(log_tail(run_dir, 200).splitlines()):
        if line.startswith("workbench: refused: "):
            return line.removeprefix("workbench: ")
    return ""


def _feed_config(feed: str | FeedConfig, rate: float) -> FeedConfig:
    if isinstance(feed, FeedConfig):
        return feed
    if feed in ("synthetic", "none"):
        return FeedConfig(mode=feed, rate=rate)
    if feed.startswith(("tcp://", "ipc://")):
        return FeedConfig(mode="external", address=feed)
    return FeedConfig(mode="replay", path=str(Path(feed).resolve()))


def _check_remote(remote: object) -> None:
    """Refuse a remote listener without its keys before anything starts."""
    if remote is None:
        return
    if not isinstance(remote, RemoteConfig):
        raise ServiceError(f"remote must be a RemoteConfig, not {type(remote).__name__}")
    try:
        check_remote(remote)
    except RemoteConfigError as exc:
        raise ServiceError(str(exc)) from None


def start(
    book: str | Path,
    market: str | Path,
    *,
    name: str | None = None,
    feed: str | FeedConfig = "synthetic",
    rate: float = 5_000.0,
    workers: dict[str, int] | None = None,
    limits: Sequence[LimitConfig] = (),
    conflation: ConflationConfig | None = None,
    n_paths: int = 50_000,
    run_root: str | Path | None = None,
    wait: bool = True,
    timeout_s: float = 300.0,
    sources: Sequence[PollSourceConfig] = (),
    **options: Any,
) -> Client:
    """Launch a service in the background and return a client.

    ``feed``: ``"synthetic"`` (``rate`` ticks/s), ``"none"``, a replay file path (``.parquet``),
    an external publisher address (``tcp://…``), or a :class:`FeedConfig`; ``sources``: HTTP
    polling sources, the fallbacks of the quotes they list (docs/ticks.md). ``timeout_s``:
    seconds to wait for it to be ready (``wait``). The service outlives the calling process (a
    notebook can close); stop it with :meth:`Client.stop`. Other keyword options are fields of
    :class:`ServiceConfig` (e.g. ``rolling_restart_s``, or ``remote=RemoteConfig(...)`` for
    CurveZMQ listeners for other machines, docs/service.md). :meth:`Client.asynchronous` gives
    the client's coroutine twin.
    """
    _check_remote(options.get("remote"))
    feed_config = _feed_config(feed, rate)
    if sources:
        feed_config = msgspec.structs.replace(feed_config, sources=tuple(sources))
    try:
        check_sources(feed_config.sources)
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    name = name or f"wb{os.getpid()}"
    if not name.isascii() or not name.isalnum():
        raise ServiceError(f"service name {name!r}: use letters and digits only")
    root = Path(run_root) if run_root else default_run_root()
    run_dir = root / name
    if any(d.name == name for d in running(root)):
        raise ServiceError(f"a service called {name!r} is already running")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = ServiceConfig(
        name=name,
        run_dir=str(run_dir),
        book=str(Path(book).resolve()),
        market=str(Path(market).resolve()),
        feed=feed_config,
        conflation=conflation or ConflationConfig(),
        workers=dict(workers or {}),
        limits=tuple(limits),
        n_paths=n_paths,
        **options,
    )
    cfg_path = run_dir / "config.json"
    cfg_path.write_text(encode_config(config))
    descriptor_path = run_dir / "service.json"
    descriptor_path.unlink(missing_ok=True)
    log = (run_dir / "service.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.engine.processes.supervise", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # closing the notebook does not stop the service
    )
    log.close()
    deadline = time.monotonic() + timeout_s
    while not descriptor_path.exists():
        if proc.poll() is not None:
            if proc.returncode == 2:  # refused before anything started: say why, in one line
                raise ServiceError(_refused_line(run_dir) or f"service {name} refused to start")
            raise ServiceError(f"service {name} failed to start:\n{log_tail(run_dir)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise ServiceError(f"service {name} wrote no descriptor in {timeout_s:.0f} s")
        time.sleep(0.05)
    descriptor = msgspec.json.decode(descriptor_path.read_bytes(), type=Descriptor)
    client = Client(descriptor, process=proc)
    if wait:
        try:
            client.wait_ready(max(deadline - time.monotonic(), 1.0))
        except ServiceError:
            client.stop(timeout_s=10.0)
            raise
    return client
