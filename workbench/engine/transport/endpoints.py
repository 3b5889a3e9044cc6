"""The addresses a service binds: Unix sockets in its run dir, a loopback port for metrics."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from workbench.engine.protocol.config import Endpoints


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
