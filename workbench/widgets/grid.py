"""GreekGrid: the live aggregated Greeks, pivoted by a grouping the user picks.

The whole grid is one :class:`ipywidgets.HTML` (a table: the header with units, the firm row,
one row per group and a footer naming the snapshot), so an update is one comm message; the model
re-renders only the rows whose displayed text changed and the rest is re-used as it was. Values
show three significant digits (noise below that changes nothing). Cells are coloured by sign and
by magnitude relative to the column's largest value, cells whose shown value changed are
underlined in orange until the next redraw (no animation: a redraw is one paint), breached
measures are outlined, and rows older than ``stale_after_s`` (or with stale positions) are
greyed. A grouping by two columns shows both in
full on every row (a two-level index: the repeated desk in grey, the currency indented); the
label columns take the width of their longest label, so no label is cut.

Updates are paced by the browser (:mod:`workbench.widgets.delivery`): once a browser has shown
the grid, the next update waits until the browser took the previous one, and a closed tab gets
nothing.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import ipywidgets as w  # type: ignore[import-untyped]
import polars as pl

from workbench.client import Client, SnapshotView
from workbench.widgets._live import Latest, LiveWidget, paced, status_html, throttled
from workbench.widgets.delivery import PAUSE_AFTER_S, Delivery
from workbench.widgets.greek_table import (
    COLUMNS,
    FIRM,
    HEADERS,
    STYLE,
    UNITS,
    GridModel,
    age_text,
    breached_cells,
    compact,
    header_html,
    label,
    shade,
)

__all__ = [
    "COLUMNS",
    "FIRM",
    "GROUPINGS",
    "HEADERS",
    "STYLE",
    "UNITS",
    "GreekGrid",
    "GridModel",
    "age_text",
    "breached_cells",
    "compact",
    "header_html",
    "label",
    "positions_html",
    "shade",
]

GROUPINGS: Final[dict[str, tuple[str, ...]]] = {
    "desk × currency": ("desk", "currency"),
    "desk": ("desk",),
    "book": ("book",),
    "asset class": ("asset_class",),
    "currency": ("currency",),
    "desk × asset class": ("desk", "asset_class"),
    "product": ("product",),
    "underlying": ("underlying",),
}
"""Dropdown label → group columns (every one comes with every snapshot)."""


class GreekGrid(LiveWidget):
    """Live aggregated Greeks by a chosen grouping, with firm totals and drill-down.

    Parameters
    ----------
    service
        A :class:`~workbench.client.Client`, a service name or None (the only one).
    grouping
        A key of :data:`GROUPINGS` (default ``"desk × currency"``).
    max_hz
        Most updates a second sent to the browser (latest value wins).
    stale_after_s
        Rows older than this many seconds are greyed.
    pause_after_s
        Seconds an update may wait for the browser to take it before the grid pauses
        (:class:`~workbench.widgets.delivery.Delivery`).

    Attributes
    ----------
    updates
        Snapshots rendered.
    sent
        Updates sent to the browser (one comm message each).
    rows_sent
        Rows re-rendered in the updates sent (the others were sent as they were).
    delivery
        The pacing by the browser's receipts (:class:`~workbench.widgets.delivery.Delivery`).
    last_snapshot
        The newest snapshot received; :attr:`shown` is the one the table shows.
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        grouping: str = "desk × currency",
        max_hz: float = 10.0,
        stale_after_s: float = 10.0,
        pause_after_s: float = PAUSE_AFTER_S,
        run_root: str | None = None,
    ) -> None:
        self._state_text = "connecting…"
        super().__init__(service, run_root=run_root)
        self.model = GridModel(stale_after_s=stale_after_s)
        self.max_hz = max_hz
        self.updates = 0
        self.sent = 0
        self.rows_sent = 0
        self.last_update_s = math.nan
        self.last_snapshot: SnapshotView | None = None
        self.shown: SnapshotView | None = None
        self.grouping = w.Dropdown(
            options=list(GROUPINGS),
            value=grouping,
            description="group by",
            layout={"width": "300px"},
        )
        self.style = w.HTML(value=STYLE)
        self.body = w.HTML(layout={"max_height": "600px", "overflow": "auto"})
        self.delivery = Delivery(self.body, pause_after_s=pause_after_s, on_change=self._paused)
        self.pick = w.Dropdown(
            options=[("—", None)], description="positions of", layout={"width": "420px"}
        )
        self.drill = w.HTML()
        self.drill_title = w.HTML()
        self._picks: tuple[tuple[str, ...], ...] = ()
        self._box: Latest[SnapshotView] = Latest()
        self._drill_box: Latest[tuple[str, ...]] = Latest()
        self._drawn = asyncio.Event()
        self.widget = w.VBox(
            [
                w.HBox([self.grouping, self.status]),
                self.style,
                self.body,
                self.pick,
                self.drill_title,
                self.drill,
            ]
        )
        self.grouping.observe(self._regroup, names="value")
        self.pick.observe(self._picked, names="value")
        self._spawn(self._feed())
        gate = self.delivery.turn if paced() else None
        self._spawn(throttled(self._box, self._update, max_hz=max_hz, gate=gate))
        self._spawn(throttled(self._drill_box, self._drill, max_hz=2.0))

    @property
    def by(self) -> tuple[str, ...]:
        """The current group columns."""
        return GROUPINGS[self.grouping.value]

    def _regroup(self, _change: Any) -> None:
        self.model.reset()
        if self.last_snapshot is not None:
            self._box.put(self.last_snapshot)

    def _picked(self, change: Any) -> None:
        if change["new"] is not None:
            self._drill_box.put(change["new"])

    def _paused(self) -> None:
        if self.delivery.paused:
            self.status.value = status_html("paused", self.delivery.describe())
        else:
            self._on_state(self.conn.state, self._state_text)

    def _on_state(self, state: str, text: str) -> None:
        self._state_text = text
        super()._on_state(state, text)

    async def _feed(self) -> None:
        async for snap in self.conn.snapshots():
            self.last_snapshot = snap
            self._box.put(snap)

    async def _table(self, snap: SnapshotView) -> pl.DataFrame:
        # every grouping of GROUPINGS comes with the snapshot: no request to the service
        return snap.grouped(self.by)

    async def _update(self, snap: SnapshotView) -> None:
        t0 = time.perf_counter()
        by = self.by
        table = await self._table(snap)
        if by != self.by:  # the grouping changed while the request ran
            return
        changed = self.model.render(table, by, snap.tables.get("firm"), snap.breaches)
        self.updates += 1
        if changed:
            self.shown = snap
            self.apply(changed)
        self.last_update_s = time.perf_counter() - t0

    def footer(self, snap: SnapshotView, changed: int) -> str:
        """The line under the table: the snapshot shown, rows, what changed and was skipped."""
        return (
            f"snapshot {snap.seq} · {len(self.model.rows) - (FIRM in self.model.rows)} rows · "
            f"{changed} changed · {snap.stats.get('positions', 0):.0f} positions · "
            f"{self._box.skipped} skipped (latest wins) · USD, units under each measure"
        )

    def apply(self, changed: Mapping[tuple[str, ...], str]) -> None:
        """Send the table with the ``changed`` rows flashing: one message (its number rides
        along in the body's ``placeholder``, for the browser's receipt)."""
        by = self.by
        if self.shown is not None:
            markup = self.model.table_html(by, self.footer(self.shown, len(changed)))
        else:
            markup = self.model.table_html(by)
        with self.body.hold_sync():
            self.body.value = markup
            self.body.placeholder = self.delivery.stamp()
        self.sent += 1
        self.rows_sent += len(changed)
        if tuple(self.model.rows) != self._picks:
            self._picks = tuple(self.model.rows)
            with self.pick.hold_sync():
                self.pick.options = [("—", None)] + [(label(k), k) for k in self._picks]
        self._drawn.set()

    async def until_drawn(self, timeout_s: float = 30.0) -> bool:
        """Wait until the grid has sent its first table (at most ``timeout_s`` seconds);
        whether it has."""
        try:
            await asyncio.wait_for(self._drawn.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def summary(self) -> str:
        """What the grid shows, in one line (for a notebook's print)."""
        snap = self.shown
        if snap is None:
            return f"grid: nothing shown yet, state {self.state} ({self._state_text})"
        firm = snap.tables.get("firm")
        pv = compact(float(firm["pv"][0])) if firm is not None and firm.height else "n/a"
        grouping = self.grouping.value
        rows = len(self.model.rows) - (FIRM in self.model.rows)
        paused = f" ({self.delivery.describe()})" if self.delivery.paused else ""
        return (
            f"grid: {rows} rows by {grouping}, snapshot {snap.seq}, state {self.state}{paused}; "
            f"firm PV {pv or '0'} USD; it redraws by itself while the kernel is idle, at most "
            f"{self.max_hz:g} times a second, and waits once a second until the browser has "
            f"drawn the table"
        )

    def drill_down(self, key: tuple[str, ...]) -> None:
        """Show the positions of the row ``key`` (group values, or :data:`FIRM`)."""
        self._drill_box.put(key)

    async def _drill(self, key: tuple[str, ...]) -> None:
        by = self.by
        frame = await self.conn.call(lambda c: c.apositions())
        if key != FIRM:
            for col, value in zip(by, key, strict=True):
                frame = frame.filter(pl.col(col).cast(pl.String) == value)
        self.drilled = frame
        self.drill_title.value = f"<b>{html.escape(label(key))}</b>: {frame.height} positions"
        self.drill.value = positions_html(frame)

    def close(self) -> None:
        """Cancel the grid's tasks, close its sockets and its receipt (the views stay)."""
        super().close()
        self.delivery.close()


_DRILL_COLS: Final = (
    "position_id",
    "book",
    "product",
    "underlying",
    "currency",
    "notional",
    "pv",
    "dv01",
    "cs01",
    "fx_delta",
    "eq_delta",
    "vega",
    "theta",
    "age_s",
)


def positions_html(frame: pl.DataFrame, *, top: int = 25) -> str:
    """The ``top`` positions by |PV| as an HTML table (stale ones greyed)."""
    if frame.height == 0:
        return "<i>no positions</i>"
    cols = [c for c in _DRILL_COLS if c in frame.columns]
    rows = frame.sort(pl.col("pv").abs(), descending=True, nulls_last=True).head(top)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for rec in rows.iter_rows(named=True):
        tds = []
        for c in cols:
            v = rec[c]
            text = compact(float(v)) if isinstance(v, float) and c != "age_s" else str(v)
            if c == "age_s":
                text = f"{float(v):.1f}s"
            tds.append(f"<td>{html.escape(text)}</td>")
        style = ' style="opacity:.45"' if rec.get("stale") else ""
        body.append(f"<tr{style}>{''.join(tds)}</tr>")
    more = f"<div><i>… {frame.height - top} more</i></div>" if frame.height > top else ""
    return (
        '<table style="font:12px monospace;text-align:right">'
        f"<tr>{head}</tr>{''.join(body)}</table>{more}"
    )
