"""Non-blocking receive and send on ZeroMQ sockets: nothing in the service waits on a peer."""

from __future__ import annotations

import msgspec
import zmq

from workbench.engine.protocol.messages import (
    SCHEMA_VERSION,
    NoticeMessage,
    Reply,
    encode,
    notice_decoder,
)


class Drained:
    """Counts of what :func:`drain` refused: undecodable bytes and other schema versions."""

    def __init__(self) -> None:
        self.bad = 0
        self.version = 0


DRAINED = Drained()
"""This process's counts (one process, one set of counters; exported in its heartbeat)."""


def drain(sock: zmq.Socket[bytes]) -> list[NoticeMessage]:
    """Every notice already queued on ``sock``, decoded, without waiting. A message that is not
    a notice, or is of another schema version, is skipped and counted in :data:`DRAINED`."""
    out: list[NoticeMessage] = []
    while True:
        try:
            raw = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return out
        try:
            notice = notice_decoder.decode(raw)
        except msgspec.DecodeError:
            DRAINED.bad += 1
            continue
        if notice.v != SCHEMA_VERSION:
            DRAINED.version += 1
            continue
        out.append(notice)


def send_reply(sock: zmq.Socket[bytes], envelope: list[bytes], reply: Reply) -> bool:
    """Answer on a ROUTER with the request's envelope echoed back, never waiting: False when
    the requester is gone or its queue is full (the answer is dropped; count it)."""
    try:
        sock.send_multipart([*envelope, encode(reply)], zmq.NOBLOCK)
    except zmq.ZMQError:  # Again, or EHOSTUNREACH under ROUTER_MANDATORY
        return False
    return True
