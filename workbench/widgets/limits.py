"""LimitsPanel: limit usage and the breaches in force — which desk, which measure, by how much,
since when (the breach's start on the monotonic clock, shown as an age and a wall-clock time).
The VaR/ES limits come from the service's loss process (docs/var.md, "Live"), read every
``loss_every_s`` seconds beside the snapshots.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Sequence
from datetime import datetime

import ipywidgets as w  # type: ignore[import-untyped]
import polars as pl

from workbench.client import Client, ServiceError, SnapshotView
from workbench.risk.breaches import Breach
from workbench.widgets._live import Latest, LiveWidget
from workbench.widgets.grid import compact


def breaches_html(breaches: Sequence[Breach], now_ns: int) -> str:
    """The breaches in force as an HTML table (USD; ``since`` from the monotonic clock)."""
    if not breaches:
        return '<span style="color:#1a7f37">no limit breached</span>'
    out = [
        '<table style="font:12px monospace;text-align:right"><tr><th>desk</th><th>measure</th>'
        "<th>value</th><th>limit</th><th>over by</th><th>over %</th><th>since</th></tr>"
    ]
    wall_now = time.time()
    for b in sorted(breaches, key=lambda x: -(x.value / x.limit if x.limit else 0.0)):
        age_s = max(now_ns - b.since_ns, 0) / 1e9
        since = datetime.fromtimestamp(wall_now - age_s).strftime("%H:%M:%S")
        desk = "firm" if b.scope == "firm" else b.scope.removeprefix("desk:")
        over = b.value - b.limit
        pct = over / b.limit * 100.0 if b.limit else float("nan")
        out.append(
            f'<tr style="color:#cf222e"><td>{html.escape(desk)}</td>'
            f"<td>{html.escape(b.measure)}</td><td>{compact(b.value)}</td>"
            f"<td>{compact(b.limit)}</td><td>{compact(over)}</td><td>{pct:.1f}%</td>"
            f"<td>{since} ({age_s:,.0f} s)</td></tr>"
        )
    return "".join(out) + "</table>"


def usage_html(usage: pl.DataFrame) -> str:
    """Every configured limit with its utilisation."""
    if usage.height == 0:
        return "<i>no limits configured</i>"
    out = [
        '<table style="font:12px monospace;text-align:right"><tr><th>scope</th><th>measure</th>'
        "<th>|value|</th><th>limit</th><th>used</th></tr>"
    ]
    for r in usage.iter_rows(named=True):
        colour = "#cf222e" if r["breached"] else "#24292f"
        out.append(
            f'<tr style="color:{colour}"><td>{html.escape(str(r["scope"]))}</td>'
            f"<td>{html.escape(str(r['measure']))}</td><td>{compact(float(r['value']))}</td>"
            f"<td>{compact(float(r['limit']))}</td><td>{float(r['utilisation']):.0%}</td></tr>"
        )
    return "".join(out) + "</table>"


class LimitsPanel(LiveWidget):
    """Breaches in force and limit usage, from every published snapshot (≤ ``max_hz``)."""

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        max_hz: float = 2.0,
        run_root: str | None = None,
        loss_every_s: float = 5.0,
    ) -> None:
        super().__init__(service, run_root=run_root)
        self.loss_usage = pl.DataFrame()
        self.loss_breaches: tuple[Breach, ...] = ()
        self.breaches = w.HTML()
        self.usage = w.HTML()
        self.last: SnapshotView | None = None
        self.widget = w.VBox(
            [
                self.status,
                w.HTML(value="<b>breaches</b>"),
                self.breaches,
                w.HTML(value="<b>usage</b>"),
                self.usage,
            ]
        )
        self._box: Latest[SnapshotView] = Latest()
        self._spawn(self._feed())
        self._spawn(self._paced(self._box, self.update, max_hz=max_hz))
        self._spawn(self._loss_feed(loss_every_s))

    async def _feed(self) -> None:
        async for snap in self.conn.snapshots():
            self._box.put(snap)

    async def _loss_feed(self, every_s: float) -> None:
        """The VaR/ES limits of the loss process's last result, every ``every_s`` seconds
        (none when the service runs without it)."""
        client = await self.conn.client()
        if client.local and not client.descriptor.config.loss.enabled:
            return
        while True:
            try:
                got = await self.conn.call(lambda c: c.avar(wait_s=0))
            except ServiceError as exc:
                if "without its loss process" in str(exc):  # a remote service says so
                    return
                got = None
            if got is not None and got.ready:
                self.loss_usage, self.loss_breaches = got.limits, got.breaches
            await asyncio.sleep(every_s)

    def update(self, snap: SnapshotView) -> None:
        """Redraw from one snapshot."""
        self.last = snap
        breaches = (*snap.breaches, *self.loss_breaches)
        self.breaches.value = breaches_html(breaches, time.monotonic_ns())
        usage = snap.tables["limits"] if "limits" in snap.tables else pl.DataFrame()
        if self.loss_usage.height:
            usage = pl.concat([usage, self.loss_usage], how="vertical_relaxed") \
                if usage.height else self.loss_usage  # fmt: skip
        if usage.height or "limits" in snap.tables:
            self.usage.value = usage_html(usage)
