"""What a client and its asynchronous twin share: the service's descriptor, the keys, the
process this client started, its own latency histogram — and what the run directory and
``/proc`` tell without asking any process of the service."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import msgspec

from workbench.client.errors import ServiceError
from workbench.client.views import SnapshotView, snapshot_view
from workbench.client.wire import CurveKeys
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import Descriptor, Endpoints
from workbench.engine.telemetry.histograms import LatencyHistogram
from workbench.engine.transport.shm import pid_alive

STATUS_TIMEOUT_S: Final = 1.0
"""How long :meth:`Client.status` waits for the supervisor before it answers from the run
directory and ``/proc`` instead (seconds)."""


def log_tail(run_dir: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a service's log (empty if it has none)."""
    try:
        text = (run_dir / "service.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def proc_state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP: it runs no code) or ``dead``, from ``/proc``."""
    if not pid_alive(pid):
        return "dead"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "running"
    return "stopped" if state in ("T", "t") else "running"


class Session:
    """The state of one attachment to a service, shared by a :class:`Client` and the
    :class:`AsyncClient` it gives (a reload seen by one is seen by the other)."""

    def __init__(
        self,
        descriptor: Descriptor,
        *,
        timeout_s: float = 60.0,
        process: subprocess.Popen[bytes] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        if descriptor.config.endpoints is None:
            raise ServiceError(f"service {descriptor.name}: descriptor has no endpoints")
        self.descriptor = descriptor
        self.endpoints: Endpoints = descriptor.config.endpoints
        self.timeout_s = timeout_s
        """Default wait for a reply (seconds)."""
        self.process = process
        self.curve = curve
        self.to_client = LatencyHistogram()
        """Aggregator → this client, for every snapshot it has read (ms)."""

    @property
    def name(self) -> str:
        """The service's name."""
        return self.descriptor.name

    @property
    def local(self) -> bool:
        """True when the service runs on this machine (its supervisor can be asked directly)."""
        return self.curve is None and bool(self.endpoints.supervisor)

    def pids(self) -> dict[str, int]:
        """Process name → pid, as the supervisor last recorded them in its run directory."""
        run_dir = self.descriptor.config.run_dir
        if not run_dir:
            return {}
        try:
            raw = (Path(run_dir) / "processes.json").read_bytes()
            return msgspec.json.decode(raw, type=dict[str, int])
        except (OSError, msgspec.DecodeError):
            return {"supervisor": self.descriptor.pid}

    def status_from_processes(self, why: str) -> dict[str, Any]:
        """The status as far as the run directory and ``/proc`` tell (see
        :meth:`Client.status_from_processes`)."""
        procs = [
            {"name": name, "pid": pid, "state": proc_state(pid), "restarts": 0,
             "stats": {}, "histograms": {}}
            for name, pid in sorted(self.pids().items())
            if name != "supervisor"
        ]  # fmt: skip
        return {
            "name": self.name,
            "pid": self.descriptor.pid,
            "answered_by": "client",
            "error": why,
            "supervisor": proc_state(self.descriptor.pid),
            "ready": False,
            "positions": self.descriptor.n_positions,
            "quotes": self.descriptor.n_quotes,
            "processes": procs,
            "aggregator": {},
        }

    def exited(self) -> bool:
        """Whether the supervisor this client started has exited (False when it did not
        start one)."""
        return self.process is not None and self.process.poll() is not None

    def gone(self) -> bool:
        """Whether the supervisor no longer runs."""
        if self.process is not None:
            return self.process.poll() is not None
        return not pid_alive(self.descriptor.pid)

    def reread_descriptor(self) -> None:
        """Take the descriptor the supervisor rewrote (after a book reload)."""
        path = Path(self.descriptor.config.run_dir) / "service.json"
        with contextlib.suppress(OSError, msgspec.DecodeError):
            self.descriptor = msgspec.json.decode(path.read_bytes(), type=Descriptor)

    def received(self, raw: bytes) -> SnapshotView:
        """Decode a published snapshot and count its transit in :attr:`to_client`."""
        now = time.monotonic_ns()
        snap = msg.snapshot_decoder.decode(raw)
        msg.check_version(snap)
        view = snapshot_view(snap, now)
        self.to_client.observe_ms(view.transit_ms)
        return view


class Attached:
    """What both clients show of their :class:`Session`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __repr__(self) -> str:
        return f"<workbench service {self.name!r} pid {self.descriptor.pid}>"

    @property
    def descriptor(self) -> Descriptor:
        """The service's descriptor (endpoints, pid, book), re-read after a book reload."""
        return self._session.descriptor

    @property
    def name(self) -> str:
        """The service's name."""
        return self._session.name

    @property
    def endpoints(self) -> Endpoints:
        """The service's socket addresses."""
        return self._session.endpoints

    @property
    def timeout_s(self) -> float:
        """Default wait for a reply (seconds)."""
        return self._session.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._session.timeout_s = value

    @property
    def to_client(self) -> LatencyHistogram:
        """Aggregator → this client, for every snapshot it has read (ms)."""
        return self._session.to_client

    @property
    def local(self) -> bool:
        """True when the service runs on this machine (its supervisor can be asked directly)."""
        return self._session.local

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The supervisor's process when this client started the service, else None."""
        return self._session.process

    _process = process
