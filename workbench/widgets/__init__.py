"""Live notebook views of a running service (ipywidgets + bqplot), talking only to its client.

>>> from workbench.widgets import GreekGrid          # doctest: +SKIP
>>> grid = GreekGrid("desk")                         # doctest: +SKIP
>>> grid                                             # doctest: +SKIP

Every widget runs asyncio tasks on the kernel's loop (the kernel stays free for the next cell),
shows its connection state, reconnects by itself when the service restarts, and stops with
``.close()``.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.widgets._live import Connection, Latest, LiveWidget, run_for, throttled
    from workbench.widgets.grid import GreekGrid, GridModel
    from workbench.widgets.history import GreekHistory
    from workbench.widgets.limits import LimitsPanel
    from workbench.widgets.profiler import Profiler
    from workbench.widgets.scenario_risk import ScenarioRisk
    from workbench.widgets.shocks import CurveShock
    from workbench.widgets.telemetry import Telemetry

_WHERE = {
    "Connection": "_live",
    "Latest": "_live",
    "LiveWidget": "_live",
    "run_for": "_live",
    "throttled": "_live",
    "GreekGrid": "grid",
    "GridModel": "grid",
    "GreekHistory": "history",
    "LimitsPanel": "limits",
    "Profiler": "profiler",
    "ScenarioRisk": "scenario_risk",
    "CurveShock": "shocks",
    "Telemetry": "telemetry",
}


def __getattr__(name: str) -> Any:
    """The widgets load (ipywidgets, bqplot) when first used, not when a command line that
    only needs :mod:`workbench.widgets.dashboard` imports the package."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = [
    "Connection",
    "CurveShock",
    "GreekGrid",
    "GreekHistory",
    "GridModel",
    "Latest",
    "LimitsPanel",
    "LiveWidget",
    "Profiler",
    "ScenarioRisk",
    "Telemetry",
    "run_for",
    "throttled",
]
