"""GreekHistory: bqplot time series of chosen aggregates since the widget opened.

One small chart per measure (their scales differ by orders of magnitude), x in seconds since
the widget opened (monotonic clock). The arrays go to the browser as binary buffers; redraws are
throttled (latest value wins).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import bqplot as bq  # type: ignore[import-untyped]
import ipywidgets as w  # type: ignore[import-untyped]
import numpy as np
import polars as pl

from workbench.client import Client, SnapshotView
from workbench.widgets._live import Latest, LiveWidget, throttled
from workbench.widgets.grid import COLUMNS, HEADERS


def scope_value(snap: SnapshotView, scope: str, measure: str) -> float:
    """``measure`` of ``scope`` (``firm``, ``desk:<name>`` or ``asset_class:<name>``), USD."""
    if scope == "firm":
        return float(snap.tables["firm"][measure][0])
    kind, _, name = scope.partition(":")
    table = snap.tables[kind]
    hit = table.filter(pl.col(kind).cast(pl.String) == name)
    return float(hit[measure][0]) if hit.height else float("nan")


class GreekHistory(LiveWidget):
    """Time series of ``measures`` of one ``scope`` since the widget opened.

    Parameters
    ----------
    service
        A client, a service name or None.
    measures
        Measures to plot (columns of the aggregates, USD).
    scope
        ``"firm"``, ``"desk:<desk>"`` or ``"asset_class:<class>"``.
    max_points
        Older points are thinned (every other one dropped) beyond this many.
    max_hz
        Most redraws a second.
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        measures: Sequence[str] = ("pv", "dv01", "vega"),
        scope: str = "firm",
        max_points: int = 4000,
        max_hz: float = 2.0,
        run_root: str | None = None,
    ) -> None:
        super().__init__(service, run_root=run_root)
        unknown = [m for m in measures if m not in COLUMNS]
        if unknown:
            raise ValueError(f"unknown measure {unknown[0]!r} (one of {COLUMNS})")
        self.measures = tuple(measures)
        self.scope = scope
        self.max_points = max_points
        self.t0_ns = time.monotonic_ns()
        self.t = np.empty(0)
        self.values: dict[str, np.ndarray] = {m: np.empty(0) for m in self.measures}
        self.lines: dict[str, bq.Lines] = {}
        figures = []
        for m in self.measures:
            x, y = bq.LinearScale(), bq.LinearScale()
            line = bq.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=["#0969da"])
            self.lines[m] = line
            ax_x = bq.Axis(scale=x, label="s since opened", num_ticks=5)
            ax_y = bq.Axis(scale=y, orientation="vertical", tick_format=".3s", num_ticks=4)
            figures.append(
                bq.Figure(
                    marks=[line],
                    axes=[ax_x, ax_y],
                    title=f"{HEADERS[m]} ({scope}, USD)",
                    layout=w.Layout(width="420px", height="220px"),
                    fig_margin={"top": 30, "bottom": 35, "left": 60, "right": 10},
                )
            )
        self._box: Latest[bool] = Latest()
        self.widget = w.VBox([self.status, w.HBox(figures, layout={"flex_flow": "row wrap"})])
        self._spawn(self._feed())
        self._spawn(throttled(self._box, self._draw, max_hz=max_hz))

    def record(self, snap: SnapshotView) -> None:
        """Append one snapshot's values (seconds from :attr:`t0_ns` on the monotonic clock)."""
        self.t = np.append(self.t, (snap.made_ns - self.t0_ns) / 1e9)
        for m in self.measures:
            self.values[m] = np.append(self.values[m], scope_value(snap, self.scope, m))
        if self.t.size > self.max_points:
            keep = np.r_[
                np.arange(0, self.t.size - 100, 2), np.arange(self.t.size - 100, self.t.size)
            ]
            self.t = self.t[keep]
            self.values = {m: v[keep] for m, v in self.values.items()}

    async def _feed(self) -> None:
        async for snap in self.conn.snapshots():
            self.record(snap)
            self._box.put(True)

    def _draw(self, _flag: bool) -> None:
        for m, line in self.lines.items():
            with line.hold_sync():
                line.x = self.t
                line.y = self.values[m]
