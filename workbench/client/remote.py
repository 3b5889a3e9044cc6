"""A service on another machine: attaching through its CurveZMQ listeners (docs/service.md,
"Remote access")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

import zmq.auth

from workbench.client.asynchronous import AsyncClient
from workbench.client.client import Client
from workbench.client.errors import ServiceError
from workbench.client.session import Session
from workbench.client.wire import CurveKeys
from workbench.engine.protocol.config import Descriptor, Endpoints, ServiceConfig

_Z85_KEY_CHARS = 40
"""Length of a CurveZMQ public key in Z85 text (characters)."""


def _client_keys(client_key: str | Path, server_key: str | Path) -> CurveKeys:
    path = Path(client_key)
    if not path.is_file():
        raise ServiceError(f"client key file {path} does not exist")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ServiceError(f"{path} holds no secret key (pass the *.key_secret file)")
    server = Path(server_key) if not str(server_key).startswith("tcp") else None
    if server is not None and server.is_file():
        server_public, _ = zmq.auth.load_certificate(server)
    else:
        server_public = str(server_key).encode()
    if len(server_public) != _Z85_KEY_CHARS:
        raise ServiceError(f"server key {server_key!s}: not a Z85 public key or a *.key file")
    return CurveKeys(public, secret, server_public)


@overload
def connect_remote(
    control: str,
    snapshots: str,
    *,
    server_key: str | Path,
    client_key: str | Path,
    name: str = "remote",
    timeout_s: float = 60.0,
    asynchronous: Literal[False] = False,
) -> Client: ...
@overload
def connect_remote(
    control: str,
    snapshots: str,
    *,
    server_key: str | Path,
    client_key: str | Path,
    name: str = "remote",
    timeout_s: float = 60.0,
    asynchronous: Literal[True],
) -> AsyncClient: ...
def connect_remote(
    control: str,
    snapshots: str,
    *,
    server_key: str | Path,
    client_key: str | Path,
    name: str = "remote",
    timeout_s: float = 60.0,
    asynchronous: bool = False,
) -> Client | AsyncClient:
    """Attach to a service on another machine through its CurveZMQ listeners.

    Parameters
    ----------
    control, snapshots
        The service's ``remote_control`` and ``remote_snapshots`` addresses (its descriptor
        and ``workbench status --json`` show them), e.g. ``tcp://risk-host:7001``.
    server_key
        The service's public key: the Z85 text, or the server's ``*.key`` file.
    client_key
        This client's ``*.key_secret`` file; its public half must be in the service's
        authorized keys folder.
    timeout_s
        Default wait for a reply (seconds).
    asynchronous
        Return an :class:`AsyncClient` (methods awaited) instead of a :class:`Client`.
    """
    curve = _client_keys(client_key, server_key)
    endpoints = Endpoints(
        feed="", notices="", risk="", heartbeats="", supervisor="", workers={}, metrics="",
        control=control, snapshots=snapshots,
    )  # fmt: skip
    config = ServiceConfig(name=name, run_dir="", book="", market="", endpoints=endpoints)
    descriptor = Descriptor(
        name=name, pid=0, started_ns=0, config=config, n_positions=0, n_quotes=0
    )
    if asynchronous:
        return AsyncClient(Session(descriptor, timeout_s=timeout_s, curve=curve))
    return Client(descriptor, timeout_s=timeout_s, curve=curve)
