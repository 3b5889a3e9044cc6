"""The requests a pricing worker answers: what-if, market view, profile, full reprice,
options (spline cache, fault injection) and stats — decoded, answered on its ROUTER, never
waiting on the requester. Mixed into :class:`~.worker.WorkerProcess`."""

from __future__ import annotations

import cProfile
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import polars as pl
import zmq

from workbench.engine.processes.market_view import market_view
from workbench.engine.processes.repricing import Repricer, Update
from workbench.engine.protocol import messages as msg
from workbench.engine.telemetry.profiling import call_tree, profile_rows
from workbench.engine.transport import sockets
from workbench.engine.transport.shm import QuoteTable
from workbench.market.model import MarketError
from workbench.risk.whatif import apply_shocks


@dataclass
class _Profiling:
    envelope: list[bytes]
    until_ns: int
    profiler: cProfile.Profile
    started_ns: int


class WorkerRequests:
    """Request handling of a worker (what :class:`~.worker.WorkerProcess` mixes in)."""

    name: str
    asset_class: str
    repricer: Repricer
    quotes: QuoteTable
    router: zmq.Socket[bytes]
    profiling: _Profiling | None
    priced_gen: int
    broken: str
    tally: Any

    if TYPE_CHECKING:  # what the worker provides

        def _write(self, update: Update, flushed_ns: int, quote_gen: int) -> None: ...
        def _fail_all(self, exc: Exception) -> None: ...
        def _failed_now(self) -> dict[str, str]: ...

    def _reply(self, envelope: list[bytes], reply: msg.Reply) -> None:
        """Answer with the request's envelope (routing id, request id …) echoed back; never
        waits (a requester gone or not reading loses its answer, counted)."""
        if not sockets.send_reply(self.router, envelope, reply):
            self.tally.reply_dropped += 1

    def _stats_data(self) -> dict[str, Any]:
        s = self.tally
        return {
            "worker": self.name,
            "asset_class": self.asset_class,
            "positions": int(self.repricer.rows.size),
            "groups": len(self.repricer.groups),
            "reprices": s.reprices,
            "repriced_positions": s.repriced_positions,
            "last_reprice_ms": s.last_reprice_ns / 1e6,
            "total_reprice_ms": s.total_reprice_ns / 1e6,
            "stage_ms": {k: v / 1e6 for k, v in s.stage_ns.items()},
            "spline_cache": self.repricer.cache.stats(),
            "spline_cache_enabled": self.repricer.cache.enabled,
            "fail_reprice": ",".join(self.repricer.fail_patterns),
            "failed": self._failed_now(),
            "pid": os.getpid(),
        }

    def handle_request(self) -> None:
        """Answer one request from the router socket."""
        parts = self.router.recv_multipart()
        envelope, payload = parts[:-1], parts[-1]
        try:
            msg.check_size(payload)
            req = msg.worker_request_decoder.decode(payload)
            msg.check_version(req)
        except msgspec.DecodeError as exc:
            self.tally.bad_requests += 1
            self._reply(envelope, msg.error_reply(f"bad request: {exc}"))
            return
        except msg.VersionError as exc:
            self.tally.version_refused += 1
            self._reply(envelope, msg.error_reply(str(exc)))
            return
        try:
            if isinstance(req, msg.WorkerWhatIf):
                shocked = apply_shocks(self.repricer.market, req.shocks)
                rows, base, new = self.repricer.whatif(shocked)
                moved = new != base  # the rest: PnL exactly 0, the aggregator fills them in
                frame = pl.DataFrame({"row": rows[moved], "pv": base[moved],
                                      "pv_shocked": new[moved]})  # fmt: skip
                self._reply(
                    envelope,
                    msg.Reply(ok=True, tables={"pnl": msg.frame_to_bytes(frame)}),
                )
            elif isinstance(req, msg.WorkerMarket):  # every quote of one generation
                values, _, gen = self.quotes.snapshot()  # (the repricer's market holds only
                market = self.repricer.market.with_quote_values(values)  # the ones it reads)
                tables, data = market_view(market, req.curves, req.shocks, req.years)
                data["generation"] = gen
                self._reply(envelope, msg.Reply(ok=True, data=data, tables=tables))
            elif isinstance(req, msg.WorkerProfile):
                if self.profiling is not None:
                    self._reply(envelope, msg.error_reply(f"{self.name} is already profiling"))
                    return
                seconds = min(max(req.seconds, 0.1), 60.0)
                prof = cProfile.Profile()
                now = time.monotonic_ns()
                self.profiling = _Profiling(envelope, now + int(seconds * 1e9), prof, now)
                prof.enable()
            elif isinstance(req, msg.WorkerReprice):
                self.repricer.forget()  # cold: as if every quote had moved
                t0 = time.monotonic_ns()
                try:
                    update = self.repricer.full(self.repricer.market)
                except Exception as exc:
                    self._fail_all(exc)
                    self._reply(envelope, msg.error_reply(f"{self.name}: {self.broken}"))
                    return
                self.broken = ""
                self._write(update, t0, self.priced_gen)
                spent = time.monotonic_ns() - t0
                self.tally.full_reprice_ns = spent
                self._reply(
                    envelope,
                    msg.Reply(
                        ok=True, data={"positions": int(update.rows.size), "ms": spent / 1e6}
                    ),
                )
            elif isinstance(req, msg.WorkerSetOption):
                if req.option == "spline_cache":
                    self.repricer.cache.enabled = bool(req.value)
                    self.repricer.cache.clear()
                    self._reply(envelope, msg.Reply(ok=True, data=self._stats_data()))
                elif req.option == "fail_reprice":  # fault injection (docs/service.md)
                    text = str(req.value)
                    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
                    self.repricer.fail_patterns = patterns
                    self.last_try_ns = 0  # retry (or fail) at the next look
                    self._reply(envelope, msg.Reply(ok=True, data=self._stats_data()))
                else:
                    self._reply(envelope, msg.error_reply(f"unknown option {req.option!r}"))
            else:
                self._reply(envelope, msg.Reply(ok=True, data=self._stats_data()))
        except (MarketError, ValueError) as exc:
            self._reply(envelope, msg.error_reply(str(exc)))
        except Exception as exc:  # a request this worker cannot serve never ends its loop
            self._reply(envelope, msg.error_reply(f"{self.name}: {type(exc).__name__}: {exc}"))

    def finish_profile(self, *, force: bool = False) -> None:
        """Answer a profile request whose time is up."""
        p = self.profiling
        if p is None or (not force and time.monotonic_ns() < p.until_ns):
            return
        p.profiler.disable()
        self.profiling = None
        data = self._stats_data()
        data["profiled_s"] = (time.monotonic_ns() - p.started_ns) / 1e9
        data["functions"] = profile_rows(p.profiler)
        data["tree"] = call_tree(p.profiler)
        self._reply(p.envelope, msg.Reply(ok=True, data=data))
