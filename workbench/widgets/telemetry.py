"""Telemetry: the service's own counters every second — latency, queues, rates, restarts.

Rates (ticks and rejects per second) are differences of the ingest counters between two
status replies on the monotonic clock; with polling sources, a table of each source's rates and
errors and the quotes on their fallback. Latency histograms per process boundary come from the
processes' heartbeats (the ones Prometheus exports, see
:mod:`workbench.engine.telemetry.histograms`):
a table of counts and percentiles, and the distribution of the boundary picked in the menu.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from typing import Any, Final

import bqplot as bq  # type: ignore[import-untyped]
import ipywidgets as w  # type: ignore[import-untyped]
import numpy as np

from workbench.client import BUCKETS_MS, Client, quantile_ms
from workbench.widgets._live import LiveWidget
from workbench.widgets.history import NUMBER_TICKS, chart_hz

ROW_STATS: Final[tuple[str, ...]] = (
    "latency_p50_us",
    "latency_p99_us",
    "queue_depth",
    "queue_depth_max",
    "conflation_ratio",
    "last_reprice_ms",
    "flush_to_publish_p99_ms",
    "cache_hits",
    "cache_misses",
    "dropped",
    "notices_dropped",
    "dropped_notices",
)


def rates(prev: dict[str, Any] | None, cur: dict[str, Any], dt_s: float) -> dict[str, float]:
    """Ticks accepted and rejected per second between two status replies."""
    out = {"ticks_per_s": math.nan, "rejects_per_s": math.nan}
    if prev is None or dt_s <= 0:
        return out

    a, b = _ingest_stats(prev), _ingest_stats(cur)
    if "accepted" in a and "accepted" in b:
        out["ticks_per_s"] = max(b["accepted"] - a["accepted"], 0.0) / dt_s
        out["rejects_per_s"] = max(b.get("rejected", 0.0) - a.get("rejected", 0.0), 0.0) / dt_s
    return out


def _ingest_stats(status: dict[str, Any]) -> dict[str, float]:
    for p in status.get("processes", []):
        if p.get("name") == "ingest":
            return dict(p.get("stats") or {})
    return {}


def source_names(stats: dict[str, float]) -> list[str]:
    """The sources the ingest counters name (``source.<name>.offered``), the feed first."""
    names = {k[7:-8] for k in stats if k.startswith("source.") and k.endswith(".offered")}
    return sorted(names, key=lambda n: (n != "feed", n))


def on_fallback(stats: dict[str, float]) -> dict[str, str]:
    """Quote id → the polling source it is on, for the quotes not on the feed now."""
    polls = source_names(stats)[1:]
    out: dict[str, str] = {}
    for key, value in stats.items():
        k = int(value)
        if key.startswith("fallback.") and 1 <= k <= len(polls):
            out[key.removeprefix("fallback.")] = polls[k - 1]
    return out


def sources_html(cur: dict[str, Any], prev: dict[str, Any] | None, dt_s: float) -> str:
    """One row per market-data source: values accepted, rejected and failed polls per second
    between two status replies, totals, quotes on it as a fallback; then the quotes on their
    fallback. Empty without polling sources."""
    a, b = _ingest_stats(prev or {}), _ingest_stats(cur)
    names = source_names(b)
    if len(names) < 2:
        return ""

    def per_s(key: str) -> str:
        if prev is None or dt_s <= 0 or key not in a or key not in b:
            return ""
        return f"{max(b[key] - a[key], 0.0) / dt_s:,.1f}"

    head = ("source", "accepted/s", "rejected/s", "errors/s", "accepted", "rejected",
            "errors", "on fallback")  # fmt: skip
    out = ['<table style="font:12px monospace;text-align:right"><tr>']
    out += [f"<th>{h}</th>" for h in head] + ["</tr>"]
    for name in names:
        p = f"source.{name}"
        errors = b.get(f"{p}.errors")
        why = ", ".join(
            f"{k.removeprefix(p + '.errors.')} {v:,.0f}"
            for k, v in sorted(b.items())
            if k.startswith(f"{p}.errors.") and v > 0
        )
        cells = [
            html.escape(name),
            per_s(f"{p}.accepted"),
            per_s(f"{p}.rejected"),
            per_s(f"{p}.errors"),
            f"{b.get(f'{p}.accepted', 0.0):,.0f}",
            f"{b.get(f'{p}.rejected', 0.0):,.0f}",
            "" if errors is None else f'<span title="{html.escape(why)}">{errors:,.0f}</span>',
            "" if name == "feed" else f"{b.get(f'{p}.on_fallback', 0.0):,.0f}",
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    fallback = on_fallback(b)
    listed = ", ".join(f"{html.escape(q)} ({html.escape(s)})" for q, s in sorted(fallback.items()))
    out.append(f"<div>on fallback: {listed or 'none'} · flips {b.get('flips', 0.0):,.0f}</div>")
    return "".join(out)


BOUNDARIES: Final[tuple[str, ...]] = (
    "feed_to_ingest",
    "ingest_to_worker",
    "reprice",
    "worker_to_aggregator",
    "flush_to_publish",
)
BUCKET_LABELS: Final[tuple[str, ...]] = (*(f"≤{b:g}" for b in BUCKETS_MS), "more")
"""Bucket names of the distribution chart (upper bounds in ms)."""


def boundary_counts(status: dict[str, Any]) -> dict[str, list[float]]:
    """Each boundary's histogram (wire form: counts then sum), summed over the processes that
    count it (e.g. every worker's ``ingest_to_worker``)."""
    out: dict[str, list[float]] = {}
    for p in status.get("processes", []):
        for boundary, wire in (p.get("histograms") or {}).items():
            have = out.get(boundary)
            out[boundary] = (
                list(wire) if have is None else [a + b for a, b in zip(have, wire, strict=True)]
            )
    return out


def latency_table_html(status: dict[str, Any]) -> str:
    """One row per boundary: latencies counted, p50 and p99 (ms, bucket upper bounds)."""
    counts = boundary_counts(status)
    out = ['<table style="font:12px monospace;text-align:right"><tr>']
    out += [f"<th>{h}</th>" for h in ("boundary", "count", "p50 ms", "p99 ms", "mean ms")]
    out.append("</tr>")
    for boundary in (*BOUNDARIES, *sorted(set(counts) - set(BOUNDARIES))):
        wire = counts.get(boundary)
        if wire is None:
            continue
        n = sum(wire[:-1])
        mean = wire[-1] / n if n else math.nan
        cells = [html.escape(boundary), f"{n:,.0f}", f"{quantile_ms(wire, 0.5):,.4g}",
                 f"{quantile_ms(wire, 0.99):,.4g}", f"{mean:,.3g}"]  # fmt: skip
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def status_table_html(status: dict[str, Any]) -> str:
    """One row per process: state, restarts, heartbeat age and its key counters."""
    head = ["process", "state", "restarts", "hb age s", *ROW_STATS]
    out = ['<table style="font:12px monospace;text-align:right"><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr>")
    for p in sorted(status.get("processes", []), key=lambda r: str(r.get("name"))):
        stats = p.get("stats") or {}
        state = str(p.get("state"))
        colour = "#1a7f37" if state == "ready" else "#cf222e"
        cells = [
            html.escape(str(p.get("name"))),
            f'<span style="color:{colour}">{html.escape(state)}</span>',
            str(p.get("restarts", 0)),
            f"{float(p.get('heartbeat_age_s', math.nan)):.2f}",
        ]
        for s in ROW_STATS:
            v = stats.get(s)
            cells.append("" if v is None else f"{float(v):,.4g}")
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


class Telemetry(LiveWidget):
    """Process table and rate charts from the service's status, refreshed every ``period_s``
    seconds (at least 0.2 s: :data:`workbench.widgets.history.MAX_CHART_HZ`); the latest
    ``window`` refreshes charted."""

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        period_s: float = 1.0,
        window: int = 600,
        run_root: str | None = None,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive: {period_s}")
        chart_hz(1.0 / period_s)
        super().__init__(service, run_root=run_root)
        self.period_s = period_s
        self.window = window
        self.refreshes = 0
        self.last: dict[str, Any] | None = None
        self.rates: dict[str, float] = {}
        self.summary = w.HTML()
        self.table = w.HTML()
        self.t = np.empty(0)
        self.series = {k: np.empty(0) for k in ("ticks_per_s", "rejects_per_s", "latency_p99_ms")}
        self._t0 = time.monotonic()
        self.charts: dict[str, bq.Lines] = {}
        figs = []
        for key, title in (
            ("ticks_per_s", "ticks accepted / s"),
            ("rejects_per_s", "ticks rejected / s"),
            ("latency_p99_ms", "feed→ingest p99 latency (ms)"),
        ):
            x, y = bq.LinearScale(), bq.LinearScale(min=0.0)
            line = bq.Lines(x=[], y=[], scales={"x": x, "y": y})
            self.charts[key] = line
            figs.append(
                bq.Figure(
                    marks=[line],
                    axes=[
                        bq.Axis(scale=x, label="s", tick_format=NUMBER_TICKS),
                        bq.Axis(scale=y, orientation="vertical", tick_format=NUMBER_TICKS),
                    ],
                    title=title,
                    layout=w.Layout(width="330px", height="200px"),
                    fig_margin={"top": 30, "bottom": 35, "left": 50, "right": 10},
                )
            )
        self.boundary = w.Dropdown(
            options=list(BOUNDARIES), value="flush_to_publish", description="latency"
        )
        self.boundary.observe(lambda _: self._draw_histogram(), names="value")
        bx, by = bq.OrdinalScale(), bq.LinearScale(min=0.0)
        self.histogram = bq.Bars(x=list(BUCKET_LABELS), y=[0.0] * len(BUCKET_LABELS),
                                 scales={"x": bx, "y": by})  # fmt: skip
        hist_fig = bq.Figure(
            marks=[self.histogram],
            axes=[
                bq.Axis(scale=bx, label="ms (bucket upper bound)", tick_rotate=-45),
                bq.Axis(scale=by, orientation="vertical", label="% of count", tick_format=".0f"),
            ],
            title="latency distribution since start",
            layout=w.Layout(width="520px", height="240px"),
            fig_margin={"top": 30, "bottom": 60, "left": 55, "right": 10},
        )
        self.latency_table = w.HTML()
        self.sources = w.HTML()
        self.widget = w.VBox(
            [
                self.status,
                self.summary,
                self.sources,
                w.HBox(figs),
                w.HBox([w.VBox([self.boundary, hist_fig]), self.latency_table]),
                self.table,
            ]
        )
        self._spawn(self._loop())

    async def _loop(self) -> None:
        prev: dict[str, Any] | None = None
        prev_t = 0.0
        while True:
            await self._turn()  # the browser took the last redraw (or shows none: paused)
            st = await self.conn.call(lambda c: c.aping(timeout_s=3.0))
            now = time.monotonic()
            if prev is not None and prev.get("pid") != st.get("pid"):
                prev = None  # a new service: counters restarted
            self.update(st, prev, now - prev_t)
            self._stamp()
            prev, prev_t = st, now
            await asyncio.sleep(self.period_s)

    def update(self, st: dict[str, Any], prev: dict[str, Any] | None, dt_s: float) -> None:
        """Redraw from a status reply (``prev`` the one before, ``dt_s`` seconds earlier)."""
        self.last = st
        self.refreshes += 1
        r = rates(prev, st, dt_s)
        procs: list[dict[str, Any]] = list(st.get("processes", []))
        ingest: dict[str, Any] = next((p for p in procs if p.get("name") == "ingest"), {})
        stats: dict[str, Any] = ingest.get("stats") or {}
        r["latency_p99_ms"] = float(stats.get("latency_p99_us", math.nan)) / 1e3
        r["conflation_ratio"] = float(stats.get("conflation_ratio", math.nan))
        r["restarts"] = float(sum(int(p.get("restarts", 0)) for p in st.get("processes", [])))
        self.rates = r
        self.t = np.append(self.t, time.monotonic() - self._t0)[-self.window :]
        for k in self.series:
            self.series[k] = np.append(self.series[k], r[k])[-self.window :]
        for k, line in self.charts.items():
            ok = np.isfinite(self.series[k])
            x, y = self.t[ok], self.series[k][ok]
            with line.hold_sync():
                line.x = x
                line.y = y
        self.summary.value = (
            f"<b>{r['ticks_per_s']:,.0f}</b> ticks/s · "
            f"<b>{r['rejects_per_s']:,.1f}</b> rejects/s · "
            f"conflation ×{r['conflation_ratio']:.2f} · restarts {r['restarts']:.0f} · "
            f"positions {st.get('positions', '?')} · up {float(st.get('uptime_s', 0)):,.0f} s · "
            f"metrics {html.escape(str(st.get('metrics', '')))}"
        )
        self.sources.value = sources_html(st, prev, dt_s)
        self.table.value = status_table_html(st)
        self.latency_table.value = latency_table_html(st)
        self._draw_histogram()

    def _draw_histogram(self) -> None:
        """The picked boundary's distribution, as percentages of its count."""
        wire = boundary_counts(self.last or {}).get(str(self.boundary.value))
        counts = np.asarray(wire[:-1] if wire else [0.0] * len(BUCKET_LABELS), dtype=np.float64)
        total = counts.sum()
        self.histogram.y = 100.0 * counts / total if total > 0 else counts
