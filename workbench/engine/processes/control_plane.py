"""The supervisor's control plane: the requests it answers itself (status, restart, stop, a
new book), decoded, admitted and answered on its ROUTER without waiting on any peer."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import zmq

from workbench.book.schema import Book
from workbench.engine.processes.book_reload import Reload, accept_book
from workbench.engine.processes.children import ConfigRefusedError, Live, process_rows
from workbench.engine.processes.restarts import RestartPolicy
from workbench.engine.processes.standby_keeper import StandbyKeeper
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.admission import Refused, take
from workbench.engine.protocol.config import ServiceConfig
from workbench.engine.telemetry import logs
from workbench.engine.transport import sockets
from workbench.engine.transport.gateway import Gateway
from workbench.market.model import MarketSnapshot

log = logging.getLogger(__name__)

REPLY_GRACE_NS: Final = 300_000_000
"""After a stop or reload request, how long the supervisor keeps serving before it stops the
children (the aggregator relays the answer meanwhile)."""


class ControlPlane:
    """Requests answered by the supervisor (the :class:`Supervisor` mixes this in)."""

    config: ServiceConfig
    book: Book
    market: MarketSnapshot
    run_dir: Path
    live: dict[str, Live]
    policy: RestartPolicy
    standby: StandbyKeeper
    gateway: Gateway | None
    rep: zmq.Socket[bytes]
    requests: dict[str, int]
    started_ns: int
    stop_at_ns: int
    reaped: list[str]
    reload: Reload | None

    def status(self) -> dict[str, Any]:
        """Every child: pid, state, restarts, last heartbeat age and its counters."""
        now = time.monotonic_ns()
        procs = process_rows(self.live, self.policy, now)
        agg = self.live.get("aggregator")
        return {
            "name": self.config.name,
            "pid": os.getpid(),
            "answered_by": "supervisor",
            "uptime_s": (now - self.started_ns) / 1e9,
            "positions": len(self.book),
            "book": self.config.book,
            "book_id": self.config.book_id,
            "book_generation": self.config.book_generation,
            "aggregator": dict(agg.last_hb.stats) if agg and agg.last_hb else {},
            "requests": dict(self.requests),
            "standby": self.standby.status(),
            "quotes": len(self.market.quote_ids),
            "reaped_at_start": self.reaped,
            "ready": all(self.policy.children[n].ready for n in self.live),
            "processes": procs,
            "remote": {
                "control": self.config.endpoints.remote_control,
                "snapshots": self.config.endpoints.remote_snapshots,
                "server_public_key": self.config.endpoints.server_public_key,
                "relay": dict(self.gateway.relay.counts) if self.gateway else {},
            }
            if self.config.endpoints and self.config.endpoints.remote_control
            else None,
            "metrics": f"http://{self.config.endpoints.metrics}/metrics"
            if self.config.endpoints
            else "",
        }

    def _answer(self) -> None:
        parts = self.rep.recv_multipart()
        envelope, payload = parts[:-1], parts[-1]
        got = take(payload, self.config.endpoints.workers if self.config.endpoints else {})
        if isinstance(got, Refused):
            self.requests["version_refused" if got.counter == "version" else "bad"] += 1
            reply = got.reply
        else:
            try:  # a request that fails is an error reply, never the end of the service
                reply = self._serve(got)
            except Exception as exc:
                logs.event(log, "request_failed",
                           f"{type(got).__name__} failed: {type(exc).__name__}: {exc}",
                           level=logging.WARNING)  # fmt: skip
                reply = msg.error_reply(f"{type(exc).__name__}: {exc}")
        self.requests["answered"] += 1
        if not sockets.send_reply(self.rep, envelope, reply):
            self.requests["reply_dropped"] += 1

    def _serve(self, req: msg.ControlRequest) -> msg.Reply:
        if isinstance(req, msg.StatusRequest):
            return msg.Reply(ok=True, data=self.status())
        if isinstance(req, msg.RestartRequest):
            if req.worker not in self.live:
                known = ", ".join(sorted(self.live))
                return msg.error_reply(f"unknown process {req.worker!r} (known: {known})")
            self.restart(req.worker)
            return msg.Reply(ok=True, data={"restarting": req.worker})
        if isinstance(req, msg.StopRequest):
            # keep serving a moment so the aggregator can relay this reply to the client
            self.stop_at_ns = time.monotonic_ns() + REPLY_GRACE_NS
            return msg.Reply(ok=True, data={"stopping": self.config.name})
        if isinstance(req, msg.ReloadBookRequest):
            try:
                return msg.Reply(ok=True, data=self.reload_book(req.path))
            except ConfigRefusedError as exc:
                logs.event(log, "reload_refused", str(exc), level=logging.WARNING)
                return msg.error_reply(f"book not reloaded: {exc}")
        return msg.error_reply(f"the supervisor does not answer {type(req).__name__}")

    def restart(self, name: str) -> None:
        """Stop ``name`` now; the policy starts it again at once (a planned restart)."""
        live = self.live[name]
        live.planned_exit = True
        live.process.terminate()

    def reload_book(self, path: str) -> dict[str, Any]:
        """Take the booking file at ``path`` (empty: the configured one) as the new book.

        The file's bytes are frozen and validated now: a book that does not load, or does not
        fit the configured workers, is refused (:class:`ConfigRefusedError`) and the running book
        stays. The swap follows a moment later (:meth:`swap_book`), once this answer has been
        relayed. Returns the new book's generation, id and size.
        """
        if self.reload is not None:
            raise ConfigRefusedError("a reload of the book is already under way")
        self.reload = accept_book(path or self.config.book, self.config, self.run_dir,
                                  self.market, time.monotonic_ns() + REPLY_GRACE_NS)  # fmt: skip
        r = self.reload
        return {"book_generation": r.generation, "book_id": r.book_id, "positions": len(r.book),
                "book": r.source}  # fmt: skip
