"""The client's side of the sockets: CurveZMQ keys, reply decoding, the errors of a request
that went unanswered. Shared by the synchronous and the asynchronous client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import zmq

from workbench.client.errors import ServiceError
from workbench.engine.protocol import messages as msg


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ keys of a remote client (Z85): its own pair and the server's public key."""

    public: bytes
    secret: bytes
    server: bytes


def secure(sock: zmq.Socket[Any], curve: CurveKeys | None) -> None:
    """Make ``sock`` a CurveZMQ client of the server when ``curve`` is given (before connect)."""
    if curve is not None:
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
        sock.curve_serverkey = curve.server


def subscribe(sock: zmq.Socket[Any], *, latest_only: bool) -> None:
    """Subscribe ``sock`` (SUB) to every snapshot; ``latest_only`` keeps only the newest
    unread one, so a slow reader skips instead of queueing."""
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.LINGER, 0)
    if latest_only:
        sock.setsockopt(zmq.RCVHWM, 2)
        sock.setsockopt(zmq.CONFLATE, 1)


def read_reply(name: str, raw: bytes) -> msg.Reply:
    """Decode a reply of service ``name``; a refusal or an unreadable reply raises
    :class:`ServiceError` with the service's message."""
    try:
        reply = msg.reply_decoder.decode(raw)
        msg.check_version(reply)
    except (msgspec.DecodeError, msg.VersionError) as exc:
        raise ServiceError(f"service {name}: unreadable reply: {exc}") from None
    if not reply.ok:
        raise ServiceError(f"service {name}: {reply.error}")
    return reply


def unreachable(name: str, *, supervisor: bool) -> ServiceError:
    """Nobody is connected to take a request (the send would have blocked)."""
    who = "supervisor " if supervisor else ""
    return ServiceError(f"service {name}: {who}not reachable")


def unanswered(
    name: str, req: msg.Request | msg.LossRequest, wait_s: float, *, supervisor: bool
) -> ServiceError:
    """No reply to ``req`` within ``wait_s`` seconds."""
    what = type(req).__name__
    if supervisor:
        return ServiceError(
            f"service {name}: the supervisor did not answer {what} within {wait_s:g} s"
        )
    return ServiceError(f"service {name}: no reply to {what} within {wait_s:g} s")


def no_snapshot(name: str, timeout_s: float) -> ServiceError:
    """No snapshot published within ``timeout_s`` seconds."""
    return ServiceError(f"service {name}: no snapshot within {timeout_s:g} s")
