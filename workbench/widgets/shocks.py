"""CurveShock: shock one curve (or every curve of a currency) and see the curves and the PnL.

The shock is a basis-point move per curve quote (pillar):

* ``parallel`` on every pillar;
* ``twist``: −twist/2 up to 2Y, +twist/2 from 10Y, linear in tenor between;
* ``butterfly``: +fly at the 6Y belly, −fly at 2Y and shorter and 10Y and longer, linear between;
* one key-rate slider per pillar tenor (on every selected curve with that tenor).

It is sent as :class:`~workbench.client.QuoteShock` s to the service's what-if, which reprices a
shocked copy of the live market (the live book is never touched). The curves drawn, base and
shocked, come from the service too (:meth:`~workbench.client.Client.market`): the widget holds
no pricing code and works on a remote service as on a local one.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Sequence
from typing import Any, Final

import bqplot as bq  # type: ignore[import-untyped]
import ipywidgets as w  # type: ignore[import-untyped]
import numpy as np
import polars as pl

from workbench.client import Client, MarketView, QuoteShock
from workbench.widgets._live import Latest, LiveWidget, throttled
from workbench.widgets.grid import GROUPINGS, compact
from workbench.widgets.history import MAX_CHART_HZ, NUMBER_TICKS

LADDER_BP: Final[tuple[float, ...]] = (-100.0, -75.0, -50.0, -25.0, 0.0, 25.0, 50.0, 75.0, 100.0)
GRID_T: Final = np.linspace(0.25, 30.0, 120)


def shape_bp(
    years: np.ndarray, *, parallel: float = 0.0, twist: float = 0.0, butterfly: float = 0.0
) -> np.ndarray:
    """Basis points per pillar of the parallel, twist and butterfly components."""
    w = np.clip((np.asarray(years, dtype=np.float64) - 2.0) / 8.0, 0.0, 1.0)
    return parallel + twist * (w - 0.5) + butterfly * (1.0 - 2.0 * np.abs(2.0 * w - 1.0))


def pillar_shocks(
    pillars: pl.DataFrame,
    *,
    parallel: float = 0.0,
    twist: float = 0.0,
    butterfly: float = 0.0,
    key_rates: dict[str, float] | None = None,
) -> dict[str, float]:
    """Quote id → bp for the pillars of the chosen curves (rows of
    :attr:`workbench.client.MarketView.pillars`); quotes with a zero move are left out."""
    kr = key_rates or {}
    bp = shape_bp(pillars["years"].to_numpy(), parallel=parallel, twist=twist, butterfly=butterfly)
    out: dict[str, float] = {}
    for quote, tenor, b in zip(pillars["quote_id"], pillars["tenor"], bp, strict=True):
        total = float(b) + kr.get(tenor, 0.0)
        if total != 0.0:
            out[quote] = total
    return out


def to_shocks(moves: dict[str, float]) -> tuple[QuoteShock, ...]:
    """Quote moves as what-if shocks."""
    return tuple(QuoteShock(quote_id=q, bp=bp) for q, bp in moves.items())


class CurveShock(LiveWidget):
    """Sliders for a curve shock, the base and shocked curves, and the what-if PnL.

    Parameters
    ----------
    service
        A client, a service name or None.
    curve
        A curve id (``USD.SOFR``) or ``all USD`` for every curve of a currency.
    grouping
        A key of :data:`workbench.widgets.grid.GROUPINGS` for the PnL table.
    debounce_s
        Wait after the last slider move before asking for a what-if, seconds.
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        curve: str = "all USD",
        grouping: str = "desk × currency",
        debounce_s: float = 0.3,
        run_root: str | None = None,
    ) -> None:
        super().__init__(service, run_root=run_root)
        self.market: MarketView | None = None
        self.pnl: pl.DataFrame | None = None
        self.ladder_frame: pl.DataFrame | None = None
        self.requests = 0
        self.curve = w.Dropdown(description="curve", options=[curve], value=curve)
        self.grouping = w.Dropdown(description="PnL by", options=list(GROUPINGS), value=grouping)
        slider = dict(min=-200.0, max=200.0, step=1.0, value=0.0, continuous_update=True)
        self.parallel = w.FloatSlider(description="parallel bp", **slider)
        self.twist = w.FloatSlider(description="twist bp", **slider)
        self.butterfly = w.FloatSlider(description="butterfly bp", **slider)
        self.key_rates: dict[str, w.FloatSlider] = {}
        self.kr_box = w.GridBox([], layout={"grid_template_columns": "repeat(4, 260px)"})
        self.reset_button = w.Button(description="reset")
        self.refresh_button = w.Button(description="refresh base", tooltip="re-read live quotes")
        self.ladder_button = w.Button(description="ladder −100…+100 bp")
        self.total = w.HTML()
        self.table = w.HTML()
        # curves chart
        xs, ys = bq.LinearScale(), bq.LinearScale()
        self.curve_lines = bq.Lines(
            x=GRID_T,
            y=np.zeros((4, GRID_T.size)),
            scales={"x": xs, "y": ys},
            colors=["#0969da", "#cf222e", "#54aeff", "#ff8182"],
            line_style="solid",
            labels=["zero", "zero shocked", "3M fwd", "3M fwd shocked"],
            display_legend=True,
        )
        self.curve_fig = bq.Figure(
            marks=[self.curve_lines],
            axes=[
                bq.Axis(scale=xs, label="years", tick_format=NUMBER_TICKS),
                bq.Axis(scale=ys, orientation="vertical", label="%", tick_format=NUMBER_TICKS),
            ],
            title="curves",
            layout=w.Layout(width="520px", height="320px"),
        )
        # PnL by desk
        bx, by_ = bq.OrdinalScale(), bq.LinearScale()
        self.bars = bq.Bars(x=[], y=[], scales={"x": bx, "y": by_}, colors=["#0969da"])
        self.bar_fig = bq.Figure(
            marks=[self.bars],
            axes=[
                bq.Axis(scale=bx, tick_rotate=-40, tick_style={"font-size": "9px"}),
                bq.Axis(scale=by_, orientation="vertical", tick_format=".3s", label="PnL USD"),
            ],
            title="PnL by desk (USD)",
            layout=w.Layout(width="520px", height="320px"),
            fig_margin={"top": 30, "bottom": 110, "left": 70, "right": 10},
        )
        lx, ly = bq.LinearScale(), bq.LinearScale()
        self.ladder_line = bq.Lines(x=[], y=[], scales={"x": lx, "y": ly}, marker="circle")
        self.ladder_fig = bq.Figure(
            marks=[self.ladder_line],
            axes=[
                bq.Axis(scale=lx, label="parallel shift bp", tick_format=NUMBER_TICKS),
                bq.Axis(scale=ly, orientation="vertical", tick_format=".3s", label="PnL USD"),
            ],
            title="ladder",
            layout=w.Layout(width="520px", height="300px"),
        )
        self.widget = w.VBox(
            [
                w.HBox([self.curve, self.grouping, self.status]),
                w.HBox([self.parallel, self.twist, self.butterfly]),
                w.HTML(value="<b>key rates (bp)</b>"),
                self.kr_box,
                w.HBox([self.reset_button, self.refresh_button, self.ladder_button, self.total]),
                w.HBox([self.curve_fig, self.bar_fig]),
                w.HBox([self.table, self.ladder_fig]),
            ]
        )
        self._box: Latest[bool] = Latest()
        for control in (self.parallel, self.twist, self.butterfly, self.grouping):
            control.observe(self._changed, names="value")
        self.curve.observe(self._curve_changed, names="value")
        self.reset_button.on_click(lambda _b: self.reset())
        self.refresh_button.on_click(lambda _b: self._spawn(self.refresh()))
        self.ladder_button.on_click(lambda _b: self._spawn(self.ladder()))
        self._ready = asyncio.Event()
        self._spawn(self.refresh())
        self._spawn(throttled(self._box, self._whatif, max_hz=MAX_CHART_HZ, debounce_s=debounce_s))

    # --- state -------------------------------------------------------------------------------

    def pillars(self) -> pl.DataFrame:
        """The pillars of the curves the shock applies to (rows of ``MarketView.pillars``)."""
        assert self.market is not None
        choice = str(self.curve.value)
        p = self.market.pillars
        if choice.startswith("all "):
            return p.filter(pl.col("currency") == choice[4:])
        return p.filter(pl.col("curve") == choice)

    def moves(self) -> dict[str, float]:
        """Quote id → bp of the current slider settings."""
        return pillar_shocks(
            self.pillars(),
            parallel=self.parallel.value,
            twist=self.twist.value,
            butterfly=self.butterfly.value,
            key_rates={t: s.value for t, s in self.key_rates.items() if s.value},
        )

    def _build_key_rates(self) -> None:
        tenors = self.pillars().group_by("tenor").agg(pl.col("years").first()).sort("years")
        self.key_rates = {}
        for t in tenors["tenor"]:
            s = w.FloatSlider(
                description=t, min=-100.0, max=100.0, step=1.0, value=0.0, layout={"width": "250px"}
            )
            s.observe(self._changed, names="value")
            self.key_rates[t] = s
        self.kr_box.children = list(self.key_rates.values())

    def _changed(self, _change: Any) -> None:
        self._box.put(True)

    def _curve_changed(self, _change: Any) -> None:
        if self.market is not None:
            self._build_key_rates()
        self._box.put(True)

    def reset(self) -> None:
        """Every slider back to zero."""
        for s in (self.parallel, self.twist, self.butterfly, *self.key_rates.values()):
            s.value = 0.0

    async def refresh(self) -> None:
        """Re-read the live quotes and the curve pillars from the service."""
        market = await self.conn.call(lambda c: c.amarket())
        first = self.market is None
        self.market = market
        if first:
            curves = market.pillars.unique("curve", maintain_order=True)
            currencies = sorted(set(curves["currency"]))
            options = [f"all {c}" for c in currencies] + list(curves["curve"])
            current = self.curve.value if self.curve.value in options else options[0]
            # not under hold_trait_notifications: a new options list resets the value to the
            # first option when notifications are released, after ours
            self.curve.options = options
            self.curve.value = current
            self._build_key_rates()
        self._ready.set()
        self._box.put(True)

    # --- drawing and what-if -----------------------------------------------------------------

    async def _curve_rows(self, moves: dict[str, float]) -> tuple[str, np.ndarray]:
        """Base and shocked zero and 3M forward rates (%) of the first chosen curve."""
        curve_id = str(self.pillars()["curve"][0])
        shocks = to_shocks(moves)
        view = await self.conn.call(lambda c: c.amarket((curve_id,), shocks, GRID_T.tolist()))
        c = view.curves
        cols = ("zero_pct", "zero_shocked_pct", "fwd3m_pct", "fwd3m_shocked_pct")
        return curve_id, np.vstack([c[k].to_numpy() for k in cols])

    async def _whatif(self, _flag: bool) -> None:
        await self._ready.wait()
        moves = self.moves()
        curve_id, rows = await self._curve_rows(moves)
        with self.curve_lines.hold_sync():
            self.curve_lines.y = rows
        self.curve_fig.title = f"{curve_id}: zero and 3M forward (%)"
        by = GROUPINGS[self.grouping.value]
        shocks = to_shocks(moves)
        if shocks:
            self.requests += 1
            by_desk = await self.conn.call(lambda c: c.awhatif(shocks, ("desk",)))
            table = (
                by_desk
                if by == ("desk",)
                else await self.conn.call(lambda c: c.awhatif(shocks, by))
            )
        else:
            by_desk = table = pl.DataFrame({"desk": [], "pnl": []})
        self.pnl = table
        with self.bars.hold_sync():
            self.bars.x = by_desk["desk"].cast(pl.String).to_list()
            self.bars.y = by_desk["pnl"].to_numpy()
            self.bars.colors = ["#0969da"]
        total = float(by_desk["pnl"].sum()) if by_desk.height else 0.0
        # the firm total nets desks of both signs; the gross (sum of |desk PnL|) says how much
        # moves across the desks, which the net can hide
        gross = float(by_desk["pnl"].abs().sum()) if by_desk.height else 0.0
        self.total.value = (
            f"<b>PnL {compact(total) or '0'} USD</b> · gross {compact(gross) or '0'} · "
            f"{len(moves)} quotes moved"
        )
        self.table.value = pnl_html(table, by)

    async def run(self) -> pl.DataFrame:
        """Apply the current slider settings now (no debounce) and return the PnL table."""
        await self._whatif(True)
        assert self.pnl is not None
        return self.pnl

    async def whatif(self, shocks: Sequence[QuoteShock], by: Sequence[str]) -> pl.DataFrame:
        """The service's what-if PnL (USD) of ``shocks`` grouped ``by``."""
        self.requests += 1
        return await self.conn.call(lambda c: c.awhatif(shocks, by))

    async def ladder(self, shifts: Sequence[float] = LADDER_BP) -> pl.DataFrame:
        """PnL (USD, whole book) against a parallel shift of the chosen curves, also drawn."""
        await self._ready.wait()
        pillars = self.pillars()
        out = []
        self.ladder_fig.title = "ladder: running…"
        for bp in shifts:
            shocks = to_shocks(pillar_shocks(pillars, parallel=bp))
            if shocks:
                pnl = await self.whatif(shocks, ("desk",))
                out.append(float(pnl["pnl"].sum()))
            else:
                out.append(0.0)
        frame = pl.DataFrame({"shift_bp": list(shifts), "pnl": out})
        self.ladder_frame = frame
        with self.ladder_line.hold_sync():
            self.ladder_line.x = frame["shift_bp"].to_numpy()
            self.ladder_line.y = frame["pnl"].to_numpy()
        self.ladder_fig.title = f"ladder: {self.curve.value}, parallel (USD)"
        return frame


def pnl_html(table: pl.DataFrame, by: Sequence[str]) -> str:
    """A what-if PnL table (group columns, positions, PnL in USD) as HTML."""
    if table.height == 0:
        return "<i>no shock</i>"
    keep = [c for c in (*by, "positions", "pnl") if c in table.columns]
    rows = table.select(keep).sort(pl.col("pnl").abs(), descending=True)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in keep)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(compact(v) if isinstance(v, float) else str(v))}</td>" for v in rec
        )
        + "</tr>"
        for rec in rows.iter_rows()
    )
    return f'<table style="font:12px monospace;text-align:right"><tr>{head}</tr>{body}</table>'
