"""The remote gateway's relay: one thread moving messages between the CurveZMQ listeners and
the service's loopback sockets, never waiting on a peer.

- Control: a request from a remote client (front ROUTER) goes to the supervisor when it asks for
  status (so status answers with the aggregator dead or hung), to the live loss process when it
  is a :class:`~.messages.LossRequest` (VaR/ES, stress, explain), and to the aggregator's
  control socket otherwise, each through a DEALER that keeps the client's envelope; the answers
  come back the same way. A loss request to a service without its loss process is answered at
  once with an error saying so.
- Snapshots: the aggregator's PUB (through an XSUB) to the remote XPUB; subscriptions the other
  way.

Every send is non-blocking. A request that does not fit the queue to its target (a stalled
aggregator: the DEALER's high-water mark reached) is answered at once with an error reply and
counted; a reply or snapshot that cannot be delivered is dropped and counted. The counts are
in :attr:`Relay.counts` (the supervisor's status shows them under ``remote``).
"""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import zmq

from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import Endpoints, loss_endpoint

_BATCH = 64
"""Messages moved per socket per turn of the loop (a flood on one socket starves no other)."""
_QUEUE = 1_000
"""High-water mark of each loopback DEALER: requests queued for a target that is not reading."""


class _Op(msgspec.Struct):
    op: str = ""


_op_decoder = msgspec.msgpack.Decoder(_Op)


def _op(payload: bytes) -> str:
    """The ``op`` of a request: ``"loss"`` for a :class:`~.messages.LossRequest` (it has no
    ``op``), "" when it is not a readable request."""
    try:
        msg.loss_request_decoder.decode(payload)
    except msgspec.DecodeError:  # ValidationError included: not a loss request
        pass
    else:
        return "loss"
    try:
        return _op_decoder.decode(payload).op
    except msgspec.DecodeError:
        return ""


class Relay:
    """The relay thread of one gateway (see the module docstring).

    Parameters
    ----------
    ctx
        The gateway's ZeroMQ context.
    front, pub
        The remote listeners: a ROUTER for control, an XPUB for snapshots (bound).
    endpoints
        The service's loopback endpoints (control, supervisor, snapshots; the loss process's
        socket beside control).
    loss
        Whether the service runs its live loss process.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        front: zmq.Socket[Any],
        pub: zmq.Socket[Any],
        endpoints: Endpoints,
        *,
        loss: bool = True,
    ) -> None:
        self.ctx = ctx
        self.front = front
        self.front.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply to a gone client is counted
        self.pub = pub
        self.aggregator = self._dealer(endpoints.control)
        self.supervisor = self._dealer(endpoints.supervisor)
        self.loss = self._dealer(loss_endpoint(endpoints)) if loss else None
        self._backs = [s for s in (self.aggregator, self.supervisor, self.loss) if s is not None]
        self.sub = ctx.socket(zmq.XSUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(endpoints.snapshots)
        self.counts = {"requests": 0, "request_dropped": 0, "reply_dropped": 0,
                       "snapshots": 0, "snapshot_dropped": 0}  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-relay", daemon=True)
        self._thread.start()

    def _dealer(self, address: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _QUEUE)
        sock.connect(address)
        return sock

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.front, *self._backs, self.sub, self.pub):
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if self.front in events:
                    self._requests()
                for back in self._backs:
                    if back in events:
                        self._move(back, self.front, "reply_dropped")
                if self.sub in events:
                    self._move(self.sub, self.pub, "snapshot_dropped", counted="snapshots")
                if self.pub in events:  # subscriptions, towards the aggregator's PUB
                    self._move(self.pub, self.sub, "")
        finally:
            for sock in (self.front, *self._backs, self.sub, self.pub):
                sock.close(linger=0)

    def _requests(self) -> None:
        for _ in range(_BATCH):
            try:
                parts = self.front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.counts["requests"] += 1
            op = _op(parts[-1])
            target = {"status": self.supervisor, "loss": self.loss}.get(op, self.aggregator)
            if target is None:
                self.counts["request_dropped"] += 1
                none = msg.error_reply("the service runs without its loss process (loss.enabled)")
                self._send(self.front, [*parts[:-1], msg.encode(none)], "reply_dropped")
                continue
            try:
                target.send_multipart(parts, zmq.NOBLOCK)
            except zmq.Again:  # the target does not read: answer now, never wait
                self.counts["request_dropped"] += 1
                busy = msg.error_reply("the service is not reading requests: dropped, retry")
                self._send(self.front, [*parts[:-1], msg.encode(busy)], "reply_dropped")

    def _move(
        self, src: zmq.Socket[Any], dst: zmq.Socket[Any], dropped: str, *, counted: str = ""
    ) -> None:
        for _ in range(_BATCH):
            try:
                parts = src.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if counted:
                self.counts[counted] += 1
            self._send(dst, parts, dropped)

    def _send(self, dst: zmq.Socket[Any], parts: list[bytes], dropped: str) -> None:
        try:
            dst.send_multipart(parts, zmq.NOBLOCK)
        except zmq.ZMQError:  # Again, or EHOSTUNREACH under ROUTER_MANDATORY
            if dropped:
                self.counts[dropped] += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (within ``timeout_s``); it closes its sockets."""
        self._stop.set()
        self._thread.join(timeout_s)
