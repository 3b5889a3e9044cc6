"""GreekGrid: the live aggregated Greeks, pivoted by a grouping the user picks.

One :class:`ipywidgets.HTML` per row (a row's cells as compact markup) and one button per row
label (click to drill down). An update re-renders every row but sends only the rows whose text
changed, each under ``hold_sync()``; values show three significant digits, so noise below that
costs nothing on the wire. Cells are coloured by sign and by magnitude relative to the column's
largest value, changed cells flash once (a CSS animation that plays when the cell is redrawn),
breached measures are outlined, and rows older than ``stale_after_s`` (or with stale positions)
are greyed.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import ipywidgets as w  # type: ignore[import-untyped]
import polars as pl

from workbench.client import Client, SnapshotView
from workbench.risk.aggregation import MEASURES
from workbench.risk.breaches import Breach
from workbench.widgets._live import Latest, LiveWidget, throttled

COLUMNS: Final[tuple[str, ...]] = MEASURES
"""Measures shown, in USD (units in ``docs/greeks.md``)."""

HEADERS: Final[dict[str, str]] = {
    "pv": "PV",
    "dv01": "DV01",
    "cs01": "CS01",
    "fx_delta": "FX Δ 1%",
    "eq_delta": "EQ Δ 1%",
    "rates_gamma": "IR Γ",
    "credit_gamma": "CR Γ",
    "fx_gamma": "FX Γ",
    "eq_gamma": "EQ Γ",
    "vega": "Vega",
    "corr01": "Corr01",
    "theta": "Theta",
}

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
"""Dropdown label → group columns (desk and asset class come with every snapshot)."""

FIRM: Final = ("Firm",)

STYLE: Final[str] = """<style>
.wbg-r{display:grid;grid-template-columns:64px repeat(12,84px);font:12px monospace;
 text-align:right;line-height:22px}
.wbg-r>*{padding:0 4px;font-style:normal;font-weight:normal;text-decoration:none}
.wbg-h{font-weight:bold;border-bottom:1px solid #999}
.wbg-r .p1{background:#eaf5ea}.wbg-r .p2{background:#c9e8c9}.wbg-r .p3{background:#97d197}
.wbg-r .p4{background:#5cb85c;color:#fff}
.wbg-r .n1{background:#fbeaea}.wbg-r .n2{background:#f4c7c7}.wbg-r .n3{background:#ea9696}
.wbg-r .n4{background:#d9534f;color:#fff}
.wbg-r b{animation:wbg-flash .6s ease-out}
@keyframes wbg-flash{0%{outline:2px solid #f0ad4e}100%{outline:2px solid transparent}}
.wbg-r .x{box-shadow:inset 0 0 0 2px #d00;font-weight:bold}
.wbg-s{opacity:.45;filter:grayscale(1)}
.wbg-t{font-weight:bold;border-top:1px solid #999}
</style>"""


def compact(value: float) -> str:
    """A number in three significant digits with a k/M/B suffix (``-1.23M``); ``""`` for 0."""
    if value == 0.0:
        return ""
    if not math.isfinite(value):
        return "n/a"
    mag = abs(value)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if mag >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def shade(value: float, scale: float) -> str:
    """Colour class by sign and magnitude relative to ``scale`` (the column's largest |v|)."""
    if value == 0.0 or not math.isfinite(value) or scale <= 0.0:
        return ""
    frac = abs(value) / scale
    level = 4 if frac > 0.5 else 3 if frac > 0.2 else 2 if frac > 0.05 else 1
    return f"{'p' if value > 0 else 'n'}{level}"


def age_text(age_s: float, stale: int) -> str:
    """The age cell: the group's worst age in seconds, and its stale count if any."""
    text = "–" if not math.isfinite(age_s) else f"{age_s:.1f}s"
    return f"{text} ⚠{stale}" if stale else text


def breached_cells(breaches: Sequence[Breach], by: Sequence[str], key: tuple[str, ...]) -> set[str]:
    """Measures of the row ``key`` (grouped ``by``) that a breach names."""
    out: set[str] = set()
    for b in breaches:
        if (b.scope == "firm" and key == FIRM) or (
            b.scope.startswith("desk:")
            and "desk" in by
            and key != FIRM
            and key[list(by).index("desk")] == b.scope[5:]
        ):
            out.add(b.measure)
    return out


@dataclass
class GridModel:
    """Rows of the grid as markup, and which rows changed since the last render (no widgets).

    Parameters
    ----------
    stale_after_s
        Rows whose worst age exceeds this (seconds), or with stale positions, are greyed.
    """

    stale_after_s: float = 10.0
    texts: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    rows: dict[tuple[str, ...], str] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget the previous render (a new grouping)."""
        self.texts.clear()
        self.rows.clear()

    def _row(
        self,
        key: tuple[str, ...],
        rec: Mapping[str, Any],
        scales: Mapping[str, float],
        hot: set[str],
        *,
        total: bool,
    ) -> str:
        stale = int(rec.get("stale") or 0)
        raw_age = rec.get("max_age_s")
        age = math.nan if raw_age is None else float(raw_age)
        texts = [age_text(age, stale)]
        cells = [f"<i>{html.escape(texts[0])}</i>"]
        before = self.texts.get(key)
        for j, col in enumerate(COLUMNS, start=1):
            value = float(rec.get(col) or 0.0)
            text = compact(value)
            texts.append(text)
            tag = "b" if before is not None and before[j] != text else "i"
            cls = shade(value, scales[col]) if not total else ""
            if col in hot:
                cls = f"{cls} x".strip()
            attr = f' class="{cls}"' if " " in cls else (f" class={cls}" if cls else "")
            cells.append(f"<{tag}{attr}>{text}</{tag}>")
        self.texts[key] = tuple(texts)
        greyed = stale > 0 or (math.isfinite(age) and age > self.stale_after_s)
        cls = "wbg-r" + (" wbg-t" if total else "") + (" wbg-s" if greyed else "")
        return f'<div class="{cls}">{"".join(cells)}</div>'

    def render(
        self,
        table: pl.DataFrame,
        by: Sequence[str],
        firm: pl.DataFrame | None = None,
        breaches: Sequence[Breach] = (),
    ) -> dict[tuple[str, ...], str]:
        """Markup of every row (keys: group values; :data:`FIRM` for the totals row).

        Returns only the rows whose content changed since the previous call (changed cells as
        ``<b>``, which flash); :attr:`rows` holds every row afterwards (without flash marks),
        in display order.
        """
        records = table.with_columns(pl.col(c).cast(pl.String) for c in by).to_dicts()
        scales = {
            c: max((abs(float(r.get(c) or 0.0)) for r in records), default=0.0) for c in COLUMNS
        }
        fresh: dict[tuple[str, ...], str] = {}
        for rec in records:
            key = tuple(str(rec[c]) for c in by)
            fresh[key] = self._row(key, rec, scales, breached_cells(breaches, by, key), total=False)
        if firm is not None and firm.height:
            rec = firm.row(0, named=True)
            fresh[FIRM] = self._row(
                FIRM, rec, scales, breached_cells(breaches, by, FIRM), total=True
            )
        # a row is re-sent when its content changed, not when only its flash marks did
        plain = {k: v.replace("<b", "<i").replace("</b>", "</i>") for k, v in fresh.items()}
        changed = {k: fresh[k] for k, v in plain.items() if self.rows.get(k) != v}
        self.rows = plain
        for gone in set(self.texts) - set(fresh):
            del self.texts[gone]
        return changed


def header_html() -> str:
    """The column header row."""
    cells = "".join(f"<span>{html.escape(HEADERS[c])}</span>" for c in COLUMNS)
    return f'{STYLE}<div class="wbg-r wbg-h"><span>age</span>{cells}</div>'


_LABEL = w.Layout(width="260px", height="22px", margin="0", padding="0 4px")


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
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        grouping: str = "desk × currency",
        max_hz: float = 10.0,
        stale_after_s: float = 10.0,
        run_root: str | None = None,
    ) -> None:
        super().__init__(service, run_root=run_root)
        self.model = GridModel(stale_after_s=stale_after_s)
        self.max_hz = max_hz
        self.updates = 0
        self.rows_sent = 0
        self.last_update_s = math.nan
        self.last_snapshot: SnapshotView | None = None
        self.grouping = w.Dropdown(
            options=list(GROUPINGS),
            value=grouping,
            description="group by",
            layout={"width": "300px"},
        )
        self.info = w.HTML()
        self.header = w.HTML(value=header_html())
        self.body = w.VBox([], layout={"overflow": "auto", "max_height": "560px"})
        self.drill = w.HTML()
        self.drill_title = w.HTML()
        self._rows: dict[tuple[str, ...], tuple[w.Button, w.HTML, w.HBox]] = {}
        self._box: Latest[SnapshotView] = Latest()
        self._drill_box: Latest[tuple[str, ...]] = Latest()
        self.widget = w.VBox(
            [
                w.HBox([self.grouping, self.status]),
                w.HBox([w.HTML(value="<b>group</b>", layout=_LABEL), self.header]),
                self.body,
                self.info,
                self.drill_title,
                self.drill,
            ]
        )
        self.grouping.observe(self._regroup, names="value")
        self._spawn(self._feed())
        self._spawn(throttled(self._box, self._update, max_hz=max_hz))
        self._spawn(throttled(self._drill_box, self._drill, max_hz=2.0))

    @property
    def by(self) -> tuple[str, ...]:
        """The current group columns."""
        return GROUPINGS[self.grouping.value]

    def _regroup(self, _change: Any) -> None:
        self.model.reset()
        if self.last_snapshot is not None:
            self._box.put(self.last_snapshot)

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
        self.apply(changed)
        self.updates += 1
        self.last_update_s = time.perf_counter() - t0
        self.info.value = (
            f'<span style="font-size:85%;color:#57606a">snapshot {snap.seq} · '
            f"{len(self.model.rows) - 1} rows · {len(changed)} changed · "
            f"{snap.stats.get('positions', 0):.0f} positions · "
            f"{self._box.skipped} skipped (latest wins)</span>"
        )

    def apply(self, changed: Mapping[tuple[str, ...], str]) -> None:
        """Send the changed rows to the browser; add or remove row widgets as needed."""
        order = list(self.model.rows)
        if set(order) != set(self._rows):
            for key in set(self._rows) - set(order):
                button, cells, row = self._rows.pop(key)
                row.close()
                cells.close()
                button.close()
            for key in order:
                if key not in self._rows:
                    label = "Firm" if key == FIRM else " · ".join(key)
                    button = w.Button(description=label, layout=_LABEL, tooltip="drill down")
                    button.on_click(lambda _b, k=key: self._drill_box.put(k))
                    cells = w.HTML(value=self.model.rows[key])
                    row = w.HBox([button, cells], layout=w.Layout(flex="0 0 auto"))
                    self._rows[key] = (button, cells, row)  # rows keep their height, body scrolls
            with self.body.hold_sync():
                self.body.children = [self._rows[k][2] for k in order]
        for key, markup in changed.items():
            cells = self._rows[key][1]
            if cells.value != markup:
                with cells.hold_sync():
                    cells.value = markup
                self.rows_sent += 1

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
        title = "Firm" if key == FIRM else " · ".join(key)
        self.drill_title.value = f"<b>{html.escape(title)}</b>: {frame.height} positions"
        self.drill.value = positions_html(frame)


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
