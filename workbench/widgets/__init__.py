"""Live notebook views of a running service (ipywidgets + bqplot), talking only to its client.

>>> from workbench.widgets import GreekGrid          # doctest: +SKIP
>>> grid = GreekGrid("desk")                         # doctest: +SKIP
>>> grid                                             # doctest: +SKIP

Every widget runs asyncio tasks on the kernel's loop (the kernel stays free for the next cell),
shows its connection state, reconnects by itself when the service restarts, and stops with
``.close()``.
"""

from workbench.widgets._live import Connection, Latest, LiveWidget, run_for, throttled
from workbench.widgets.grid import GreekGrid, GridModel
from workbench.widgets.history import GreekHistory
from workbench.widgets.limits import LimitsPanel
from workbench.widgets.profiler import Profiler
from workbench.widgets.shocks import CurveShock
from workbench.widgets.telemetry import Telemetry

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
    "Telemetry",
    "run_for",
    "throttled",
]
