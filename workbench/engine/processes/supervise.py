"""The service's entry point: ``python -m workbench.engine.processes.supervise CONFIG.json``.

Runs a :class:`~workbench.engine.processes.supervisor.Supervisor` on the configuration (JSON of
:class:`~workbench.engine.protocol.config.ServiceConfig`) until a signal or a stop request.
A configuration, book or market that cannot run exits 2 with one line on stderr, before any
child starts.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from workbench.engine.processes.children import ConfigRefusedError
from workbench.engine.processes.lifetime import yield_to_interactive
from workbench.engine.processes.supervisor import Signals, Supervisor
from workbench.engine.protocol.config import decode_config
from workbench.engine.telemetry import logs
from workbench.engine.transport.gateway import RemoteConfigError
from workbench.market.model import MarketError

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    if len(lines) <= 1:
        return text
    return f"{lines[0]} (+{len(lines) - 1} more lines in the service log)"


def main(argv: list[str] | None = None) -> int:
    """Run a service from a configuration file (JSON of :class:`ServiceConfig`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workbench.engine.processes.supervise CONFIG.json", file=sys.stderr)
        return 2
    config = decode_config(Path(args[0]).read_text())
    logs.setup(config.name, "supervisor")
    if yield_to_interactive(config.service_nice):
        nice = config.service_nice
        logs.event(log, "priority", f"service CPU share lowered (autogroup nice {nice})", nice=nice)
    signals = Signals()
    signal.signal(signal.SIGTERM, signals)
    signal.signal(signal.SIGINT, signals)
    try:
        sup = Supervisor(config)
    except (RemoteConfigError, ConfigRefusedError, MarketError, OSError) as exc:
        logs.event(log, "refused", str(exc), level=logging.ERROR)
        print(f"workbench: refused: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        sup.start()
        sup.serve(signals)
    finally:
        sup.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
