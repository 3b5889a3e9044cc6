"""Structured logs: one JSON object per line in ``<run dir>/service.log``, from every process.

Each record carries ``ts`` (UTC, ISO 8601 with milliseconds, the wall clock: it can step
back or forward), ``mono_ns`` (``time.monotonic_ns()``, CLOCK_MONOTONIC: the order of events
across the service's processes, whatever the wall clock did), ``level``, ``service``, ``role``
(``supervisor``, ``feed``, ``ingest``, ``worker:rates-0``, ``aggregator``), ``pid``, ``event``
(a short fixed name to filter on) and ``msg`` (the sentence for a human), plus the fields of the
event (``exit_code``, ``ms`` …). Select with ``jq``, e.g. every restart of a service::

    jq -c 'select(.event == "child_exited")' ~/.workbench/run/desk/service.log

Anything else a process writes to its stdout or stderr (a crash's traceback) lands in the same
file as plain lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Final

_FIELDS: Final = "fields"


class JsonFormatter(logging.Formatter):
    """A record as one JSON line with the process's service name and role."""

    def __init__(self, service: str, role: str) -> None:
        super().__init__()
        self.service = service
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "mono_ns": time.monotonic_ns(),
            "level": record.levelname.lower(),
            "service": self.service,
            "role": self.role,
            "pid": record.process or os.getpid(),
            "event": getattr(record, "event", record.name.rsplit(".", 1)[-1]),
            "msg": record.getMessage(),
        }
        out.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(service: str, role: str, *, level: int = logging.INFO) -> logging.Logger:
    """Send this process's log records to stderr as JSON lines; return the ``workbench`` logger.

    Called once at the start of every service process (stderr is the service log file).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return logging.getLogger("workbench")


def event(
    logger: logging.Logger, name: str, message: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log ``message`` as event ``name`` with extra JSON ``fields``."""
    logger.log(level, message, extra={"event": name, _FIELDS: fields})


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON records of a service log (plain lines, e.g. tracebacks, are skipped)."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return out
