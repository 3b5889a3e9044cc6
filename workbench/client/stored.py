"""The risk store as the client's users read it: its queries, and where a service keeps it
(docs/store.md). Reports and notebooks read a store here, whether its service runs or not."""

from __future__ import annotations

from pathlib import Path

from workbench.engine.protocol.config import default_run_root
from workbench.store.query import Moment, as_utc_ns, breaches, history, positions, store_root

__all__ = [
    "Moment",
    "as_utc_ns",
    "breaches",
    "history",
    "positions",
    "service_store",
    "store_root",
]


def service_store(name: str, *, run_root: str | Path | None = None) -> Path:
    """The store folder of the service called ``name`` (running or not): from its run dir
    ``<run root>/<name>`` (``run_root`` None: ``$WORKBENCH_RUN_DIR`` or
    ``~/.workbench/run``)."""
    root = Path(run_root) if run_root else default_run_root()
    return store_root(root / name)
