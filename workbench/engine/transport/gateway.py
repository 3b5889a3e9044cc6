"""Remote access: CurveZMQ listeners that relay to the service's loopback sockets.

Every socket of a service binds 127.0.0.1. To let clients on other machines in, the supervisor
starts a gateway (a relay thread and the authenticator's thread, in its own process) listening
on ``RemoteConfig.host``:

- a ROUTER for control requests, relayed to the aggregator's control socket, to the
  supervisor's for status, or to the live loss process's for VaR/ES, stress and explain (each
  client's envelope kept, so replies find their way back);
- an XPUB for snapshots, fed by an XSUB subscribed to the aggregator's snapshot PUB.

The relay (:mod:`workbench.engine.transport.relay`) never waits on a peer: what a stalled peer
cannot take is answered with an error or dropped, and counted.

Both are CurveZMQ servers: traffic is encrypted with the server's key pair, and a ZAP
authenticator admits only clients whose public key is in the ``authorized_keys`` folder
(certificate files as written by ``workbench keys``). There is no remote listener without them:
:func:`check_remote` refuses a configuration that lacks a readable server secret key or an
authorized key, before anything binds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import Endpoints, RemoteConfig
from workbench.engine.transport.relay import Relay


class RemoteConfigError(ValueError):
    """A remote listener was asked for without the keys it needs."""


def check_remote(remote: RemoteConfig) -> tuple[bytes, bytes]:
    """The server's public and secret keys, after checking every file the gateway needs."""
    key = Path(remote.server_key)
    if not key.is_file():
        raise RemoteConfigError(f"remote access: server key file {key} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(key)
    except (OSError, ValueError) as exc:
        raise RemoteConfigError(f"remote access: cannot read server key {key}: {exc}") from None
    if secret is None:
        raise RemoteConfigError(
            f"remote access: {key} holds no secret key (use the *.key_secret file that "
            "`workbench keys` writes for the server)"
        )
    allowed = Path(remote.authorized_keys)
    if not allowed.is_dir() or not any(allowed.glob("*.key")):
        raise RemoteConfigError(
            f"remote access: authorized keys folder {allowed} has no client public key (*.key)"
        )
    return public, secret


def generate_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """A new CurveZMQ key pair: ``<name>.key`` (public, give it out) and ``<name>.key_secret``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(out, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


class Gateway:
    """The remote listeners of one service and the thread relaying them."""

    def __init__(self, remote: RemoteConfig, endpoints: Endpoints, *, loss: bool = True) -> None:
        public, secret = check_remote(remote)
        self.public_key = public.decode()
        self.ctx = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(remote.authorized_keys))
        front = self._server(zmq.ROUTER, public, secret)
        front.setsockopt(zmq.MAXMSGSIZE, msg.MAX_WIRE_BYTES)
        self.control = _bind(front, remote.host, remote.control_port)
        pub = self._server(zmq.XPUB, public, secret)
        pub.setsockopt(zmq.SNDHWM, 10)  # a slow remote reader drops snapshots, never blocks
        self.snapshots = _bind(pub, remote.host, remote.snapshots_port)
        self.relay = Relay(self.ctx, front, pub, endpoints, loss=loss)

    def _server(self, kind: int, public: bytes, secret: bytes) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_server = True
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        return sock

    def close(self) -> None:
        """Stop relaying, close the listeners and the authenticator."""
        self.relay.close()
        self.auth.stop()
        self.ctx.term()


def _bind(sock: zmq.Socket[Any], host: str, port: int) -> str:
    """Bind ``tcp://host:port`` (port 0: any free one) and return the address bound."""
    if port:
        address = f"tcp://{host}:{port}"
        sock.bind(address)
        return address
    sock.bind(f"tcp://{host}:*")
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
