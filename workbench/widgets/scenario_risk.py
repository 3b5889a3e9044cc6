"""ScenarioRisk: the service's live VaR/ES, stresses and intraday PnL explain (docs/var.md,
"Live"), from its loss process through the client, redrawn every ``period_s`` seconds.

VaR and ES by desk (bars), the firm's PnL distribution over the historical days (histogram,
VaR and ES marked), the worst days with their dates, the desk × stress table coloured like the
GreekGrid, the Greeks' estimate against full revaluation (per day of the firm, beside the
diagonal, and the largest gaps by desk), a progress bar while a run computes, the result's
age; the PnL explain since the day's start by desk and risk factor. Every amount is in USD.
"""

from __future__ import annotations

import asyncio
import html
import time
from datetime import UTC, datetime
from typing import Final

import bqplot as bq  # type: ignore[import-untyped]
import ipywidgets as w  # type: ignore[import-untyped]
import numpy as np
import polars as pl

from workbench.client import Client, ServiceError
from workbench.client.views import ExplainView, LossResult
from workbench.widgets._live import LiveWidget
from workbench.widgets.greek_table import STYLE, shade
from workbench.widgets.history import NUMBER_TICKS

BINS: Final = 30
"""Bins of the firm's PnL histogram."""
FIRM: Final = "Firm"


def money(value: float) -> str:
    """An amount in whole USD with thousands separators (``-1,234,567``)."""
    return f"{value:,.0f}" if np.isfinite(value) else "n/a"


def firm_measures(result: LossResult) -> tuple[str, str, float, float]:
    """The firm's first VaR column and ES column names and values (USD, a loss)."""
    assert result.measures is not None
    table = result.measures
    var_col = next(c for c in table.columns if c.startswith("var_"))
    es_col = next(c for c in table.columns if c.startswith("es_"))
    row = table.filter(pl.col("group") == FIRM).row(0, named=True)
    return var_col, es_col, float(row[var_col]), float(row[es_col])


def summary_html(result: LossResult) -> str:
    """The firm's VaR and ES, the result's age, quote generation and run time."""
    if not result.ready:
        state = f"computing {result.computing} {result.done}/{result.total}" if result.total \
            else "waiting for the first run"  # fmt: skip
        return f"<i>{html.escape(state)}</i>"
    var_col, es_col, var, es = firm_measures(result)
    err = f' · <span style="color:#cf222e">{html.escape(result.error)}</span>' \
        if result.error else ""  # fmt: skip
    return (
        f'<span class="wb-var">Firm {var_col.replace("_", " ")}%: <b>{money(var)}</b></span> · '
        f'<span class="wb-es">{es_col.replace("_", " ")}%: <b>{money(es)}</b></span> · '
        f"{result.scenarios} days · age <b>{result.age_s:,.0f} s</b> · quote generation "
        f"{result.generation:,} · run {result.seconds:,.1f} s · every {result.every_s:g} s{err}"
    )


def worst_html(worst: pl.DataFrame) -> str:
    """The firm's worst scenarios: rank, date (or name), PnL."""
    out = ['<table class="wbg"><thead><tr><th>#</th><th class="l">day</th><th>PnL</th></tr>'
           "</thead><tbody>"]  # fmt: skip
    for r in worst.iter_rows(named=True):
        out.append(f"<tr><td>{r['rank']}</td><th>{html.escape(str(r['scenario']))}</th>"
                   f'<td class="{shade(r["pnl"], 1.0)}">{money(r["pnl"])}</td></tr>')  # fmt: skip
    return "".join(out) + "</tbody></table>"


def cross_html(frame: pl.DataFrame, rows: str, cols: str, value: str) -> str:
    """A ``rows`` × ``cols`` table of ``value`` (long ``frame``), each cell coloured by sign and
    size against its column's largest magnitude, as the GreekGrid colours."""
    if frame.height == 0:
        return ""
    wide = frame.pivot(on=cols, index=rows, values=value, aggregate_function="sum")
    names = [c for c in wide.columns if c != rows]
    scale = {c: float(np.abs(wide[c].to_numpy()).max()) for c in names}
    out = [f'<table class="wbg"><thead><tr><th class="l">{html.escape(rows)}</th>']
    out += [f"<th>{html.escape(c)}</th>" for c in names] + ["</tr></thead><tbody>"]
    for r in wide.iter_rows(named=True):
        cells = "".join(f'<td class="{shade(float(r[c]), scale[c])}">{money(float(r[c]))}</td>'
                        for c in names)  # fmt: skip
        out.append(f"<tr><th>{html.escape(str(r[rows]))}</th>{cells}</tr>")
    return "".join(out) + "</tbody></table>"


def explain_html(view: ExplainView) -> str:
    """PnL explain by desk: actual, each risk factor's part, the unexplained rest."""
    cols = ["actual", *view.components, "unexplained"]
    long = view.by_desk.unpivot(index="desk", on=cols, variable_name="part", value_name="usd")
    table = cross_html(long, "desk", "part", "usd")
    base = datetime.fromtimestamp(view.base_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<div>since the quotes of {base} · age {view.age_s:,.1f} s</div>{table}"


def gap_html(result: LossResult) -> str:
    """Per desk: the largest |full − Greeks| over the scenarios and the firm's VaR both ways."""
    if result.greeks is None:
        return ""
    by = result.greeks.by_desk
    top = (by.group_by("desk").agg(pl.col("gap").abs().max().alias("largest_gap"))
           .sort("largest_gap", descending=True))  # fmt: skip
    rows = "".join(f"<tr><th>{html.escape(str(r['desk']))}</th><td>{money(r['largest_gap'])}"
                   "</td></tr>" for r in top.head(8).iter_rows(named=True))  # fmt: skip
    return ('<table class="wbg"><thead><tr><th class="l">desk</th><th>largest |full − Greeks|'
            f"</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip


class ScenarioRisk(LiveWidget):
    """Live VaR/ES, stresses and PnL explain of a service, every ``period_s`` seconds.

    ``explain_every_s``: seconds between two explains (each prices the book in the service's
    loss process); ``dask_dashboard``: the address of a Dask dashboard to link (when the
    scenarios run on a cluster; the service's own loss process runs in one process and has
    none).
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        period_s: float = 2.0,
        explain_every_s: float = 10.0,
        run_root: str | None = None,
        dask_dashboard: str | None = None,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive: {period_s}")
        super().__init__(service, run_root=run_root)
        self.period_s = period_s
        self.explain_every_s = explain_every_s
        self.var: LossResult | None = None
        self.stress: LossResult | None = None
        self.explained: ExplainView | None = None
        self.summary = w.HTML()
        self.progress = w.IntProgress(value=0, min=0, max=1, description="run",
                                      layout=w.Layout(visibility="hidden"))  # fmt: skip
        self.worst = w.HTML()
        self.stresses = w.HTML()
        self.gap = w.HTML()
        self.explain = w.HTML()
        link = f'<a href="{html.escape(dask_dashboard or "")}" target="_blank">Dask dashboard</a>'
        self.dask = w.HTML(value=link if dask_dashboard else "")
        self.bars, self.es_bars = self._bars()
        self.histogram, self.marks = self._histogram()
        self.scatter = self._scatter()
        self.widget = w.VBox([
            self.status, w.HTML(value=STYLE), w.HBox([self.summary, self.progress, self.dask]),
            w.HBox([self.bars_figure, self.histogram_figure]),
            w.HBox([w.VBox([w.HTML(value="<b>worst days (firm)</b>"), self.worst]),
                    w.VBox([w.HTML(value="<b>Greeks against full revaluation</b>"),
                            self.gap_figure, self.gap])]),
            w.HTML(value="<b>stresses (PnL by desk)</b>"), self.stresses,
            w.HTML(value="<b>PnL explain since the day's start</b>"), self.explain,
        ])  # fmt: skip
        self._spawn(self._loop())

    @staticmethod
    def _figure(marks: list[bq.Mark], x: bq.Scale, y: bq.Scale, title: str, xlabel: str,
                width: str = "420px", **xaxis: object) -> bq.Figure:  # fmt: skip
        return bq.Figure(
            marks=marks,
            axes=[bq.Axis(scale=x, label=xlabel, **xaxis),
                  bq.Axis(scale=y, orientation="vertical", tick_format=NUMBER_TICKS)],
            title=title, layout=w.Layout(width=width, height="260px"),
            fig_margin={"top": 30, "bottom": 70, "left": 60, "right": 10},
        )  # fmt: skip

    def _bars(self) -> tuple[bq.Bars, bq.Bars]:
        """ES (wide, behind) and VaR (narrow, in front) by desk, one bar each."""
        x, y = bq.OrdinalScale(), bq.LinearScale(min=0.0)
        scales = {"x": x, "y": y}
        es = bq.Bars(x=[], y=[], scales=scales, colors=["#8c1c13"], padding=0.1)
        var = bq.Bars(x=[], y=[], scales=scales, colors=["#f0ad4e"], padding=0.5)
        title = "VaR and ES by desk (USD; VaR the narrow bar)"
        self.bars_figure = self._figure([es, var], x, y, title, "", width="520px", tick_rotate=-35)
        return var, es

    def _histogram(self) -> tuple[bq.Bars, bq.Lines]:
        x, y = bq.LinearScale(), bq.LinearScale(min=0.0)
        bars = bq.Bars(x=[], y=[], scales={"x": x, "y": y}, colors=["#57606a"])
        lines = bq.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=["#d9534f", "#8c1c13"])
        title = "firm PnL over the days (lines: −VaR, −ES)"
        self.histogram_figure = self._figure(
            [bars, lines], x, y, title, "PnL (USD)", tick_format=NUMBER_TICKS
        )
        return bars, lines

    def _scatter(self) -> bq.Lines:
        """The Greeks' estimate of the firm's PnL against full revaluation, days sorted by
        the full PnL, and the diagonal (a perfect estimate)."""
        x, y = bq.LinearScale(), bq.LinearScale()
        lines = bq.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=["#0550ae", "#8c959f"])
        title = "firm PnL: Greeks against full (grey: equal)"
        self.gap_figure = self._figure(
            [lines], x, y, title, "full revaluation (USD)", width="360px",
            tick_format=NUMBER_TICKS,
        )  # fmt: skip
        return lines

    async def _loop(self) -> None:
        client = await self.conn.client()
        if client.local and not client.descriptor.config.loss.enabled:
            self.summary.value = "<i>the service runs without its loss process</i>"
            return
        asked = 0.0
        while True:
            await self._turn()
            try:
                var = await self.conn.call(lambda c: c.avar(wait_s=0))
            except ServiceError as exc:  # a remote service without one: its gateway says so
                if "without its loss process" not in str(exc):
                    raise
                self.summary.value = "<i>the service runs without its loss process</i>"
                return
            stress = await self.conn.call(lambda c: c.astress(wait_s=0))
            explained = self.explained
            now = time.monotonic()
            if explained is None or now - asked >= self.explain_every_s:
                asked = now
                try:
                    explained = await self.conn.call(lambda c: c.aexplain(wait_s=0))
                except ServiceError:  # no copy of the quotes yet
                    explained = None
            self.update(var, stress, explained)
            self._stamp()
            await asyncio.sleep(self.period_s)

    def update(self, var: LossResult, stress: LossResult, explained: ExplainView | None) -> None:
        """Redraw from the loss process's answers (charts only when the result changed)."""
        new = self.var is None or self.var.made_ns != var.made_ns
        self.var, self.stress, self.explained = var, stress, explained
        self.summary.value = summary_html(var)
        running = bool(var.computing) and var.total > 0
        self.progress.layout.visibility = "visible" if running else "hidden"
        if running:
            self.progress.max, self.progress.value = var.total, var.done
            self.progress.description = var.computing
        if var.ready and new:
            self._draw(var)
        if stress.ready:
            self.stresses.value = cross_html(stress.pnl, "desk", "scenario", "pnl")
        if explained is not None:
            self.explain.value = explain_html(explained)

    def _draw(self, var: LossResult) -> None:
        assert var.measures is not None
        var_col, es_col, firm_var, firm_es = firm_measures(var)
        desks = var.measures.filter(pl.col("group") != FIRM)
        for bars, col in ((self.bars, var_col), (self.es_bars, es_col)):
            with bars.hold_sync():
                bars.x = desks["group"].to_list()
                bars.y = desks[col].to_numpy()
        pnl = var.pnl.filter(pl.col("desk") == FIRM)["pnl"].to_numpy()
        counts, edges = np.histogram(pnl, bins=BINS)
        top = float(counts.max())
        with self.histogram.hold_sync():
            self.histogram.x = 0.5 * (edges[:-1] + edges[1:])
            self.histogram.y = counts.astype(np.float64)
        with self.marks.hold_sync():
            self.marks.x = np.array([[-firm_var, -firm_var], [-firm_es, -firm_es]])
            self.marks.y = np.array([[0.0, top], [0.0, top]])
        self.worst.value = worst_html(var.worst)
        if var.greeks is not None:
            firm = var.greeks.by_desk.filter(pl.col("desk") == FIRM).sort("full")
            full = firm["full"].to_numpy()
            with self.scatter.hold_sync():
                self.scatter.x = np.vstack([full, full])
                self.scatter.y = np.vstack([firm["greeks"].to_numpy(), full])
            self.gap.value = gap_html(var)


__all__ = ["ScenarioRisk", "cross_html", "explain_html", "summary_html", "worst_html"]
