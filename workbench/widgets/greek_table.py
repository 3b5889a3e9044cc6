"""The Greek grid as markup: one table row per group, re-rendered only where its text changed.

:class:`GridModel` turns a roll-up (a Polars frame of USD measures per group) into table rows;
no widgets, no service. Values show three significant digits with a k/M/B suffix, cells are
coloured by sign and by size relative to their column's largest value, a changed cell is wrapped
in ``<b>`` (underlined until the next redraw), breached measures are outlined, stale rows greyed
and the age of a group priced off fallback quotes marked ``⇄n``. A grouping by two columns shows
both on every row: the first in grey where it repeats the row above, the second indented; label
cells never wrap or clip (the table sizes its label columns to the longest label).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from workbench.risk.aggregation import MEASURES
from workbench.risk.breaches import Breach

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

UNITS: Final[dict[str, str]] = {
    "pv": "USD",
    "dv01": "USD/bp",
    "cs01": "USD/bp",
    "fx_delta": "USD",
    "eq_delta": "USD",
    "rates_gamma": "USD/bp²",
    "credit_gamma": "USD/bp²",
    "fx_gamma": "USD/1%",
    "eq_gamma": "USD/1%",
    "vega": "USD/vol pt",
    "corr01": "USD/1% ρ",
    "theta": "USD/day",
}
"""The unit under each header (``docs/greeks.md``): per 1bp, per 1% spot move, per vol point,
per 1% correlation, per calendar day; gammas are the change of the delta for one more step."""

FIRM: Final = ("Firm",)

STYLE: Final[str] = """<style>
.wbg{border-collapse:collapse;font:12px/22px monospace}
.wbg th,.wbg td{padding:0 6px;white-space:nowrap;font-weight:normal}
.wbg th{text-align:left}.wbg tbody th+th,.wbg thead .l+.l{padding-left:18px}
.wbg td{text-align:right;font-variant-numeric:tabular-nums;min-width:6ch}
.wbg th+td{color:#57606a}
.wbg thead th{position:sticky;top:0;z-index:1;text-align:right;vertical-align:bottom;
 line-height:15px;font-weight:bold;background:var(--jp-layout-color1,#fff);
 border-bottom:1px solid #999}
.wbg thead th.l{text-align:left}
.wbg small{font-weight:normal;color:#57606a}
.wbg .r{color:#8c959f}
.wbg2 tbody tr:has(>th:first-child:not(.r))>*{border-top:1px solid #d0d7de}
.wbg .p1{background:#eaf5ea}.wbg .p2{background:#c9e8c9}.wbg .p3{background:#97d197}
.wbg .p4{background:#5cb85c;color:#fff}
.wbg .n1{background:#fbeaea}.wbg .n2{background:#f4c7c7}.wbg .n3{background:#ea9696}
.wbg .n4{background:#d9534f;color:#fff}
.wbg b{font-weight:inherit;box-shadow:inset 0 -2px #f0ad4e}
.wbg .x{box-shadow:inset 0 0 0 2px #d00;font-weight:bold}
.wbg-s{opacity:.45;filter:grayscale(1)}
.wbg .fb{color:#0550ae;font-style:italic}
.wbg .wbg-t>*{font-weight:bold;border-bottom:1px solid #999}
.wbg-f{position:sticky;bottom:0;left:0;font:85% sans-serif;color:#57606a;
 background:var(--jp-layout-color1,#fff)}
</style>"""
"""The grid's CSS, sent once (its own HTML widget)."""


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


def age_text(age_s: float, stale: int, *, fallback: int = 0) -> str:
    """The age cell: the group's worst age in seconds, its stale count if any, and (``⇄n``)
    how many of its positions are priced off a fallback quote (a polling source's)."""
    text = "–" if not math.isfinite(age_s) else f"{age_s:.1f}s"
    text = f"{text} ⚠{stale}" if stale else text
    return f"{text} ⇄{fallback}" if fallback else text


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


def label(key: tuple[str, ...]) -> str:
    """A row's name in words (``"EUR FX Options · USD"``; ``"Firm"``)."""
    return " · ".join(key)


def label_cells(key: tuple[str, ...], width: int, *, repeated: bool) -> str:
    """The ``width`` label cells of row ``key``: every level in full; the first in grey when it
    repeats the row above (``repeated``)."""
    cells = [html.escape(part) for part in key] + [""] * (width - len(key))
    first = f"<th class=r>{cells[0]}" if repeated else f"<th>{cells[0]}"
    return first + "".join(f"<th>{c}" for c in cells[1:])


def header_html(by: Sequence[str] = ("desk", "currency")) -> str:
    """The column header row: the group columns, ``age`` (s) and each measure with its unit."""
    names = [f"<th class=l>{html.escape(c.replace('_', ' '))}" for c in by]
    units = [
        f"<th>{html.escape(HEADERS[c])}<br><small>{html.escape(UNITS[c])}</small>" for c in COLUMNS
    ]
    return f'<tr class="wbg-r wbg-h">{"".join(names)}<th>age<br><small>s</small>{"".join(units)}'


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
    flashes: dict[tuple[str, ...], str] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget the previous render (a new grouping)."""
        self.texts.clear()
        self.rows.clear()
        self.flashes.clear()

    def _row(
        self,
        key: tuple[str, ...],
        rec: Mapping[str, Any],
        scales: Mapping[str, float],
        hot: set[str],
        *,
        width: int,
        repeated: bool = False,
    ) -> str:
        total = key == FIRM
        stale = int(rec.get("stale") or 0)
        raw_age = rec.get("max_age_s")
        age = math.nan if raw_age is None else float(raw_age)
        fallback = int(rec.get("fallback") or 0)
        texts = [age_text(age, stale, fallback=fallback)]
        age_cell = "<td class=fb>" if fallback else "<td>"
        cells = [label_cells(key, width, repeated=repeated), age_cell + html.escape(texts[0])]
        before = self.texts.get(key)
        for j, col in enumerate(COLUMNS, start=1):
            value = float(rec.get(col) or 0.0)
            text = compact(value)
            texts.append(text)
            cls = shade(value, scales[col]) if not total else ""
            if col in hot:
                cls = f"{cls} x".strip()
            attr = f' class="{cls}"' if " " in cls else (f" class={cls}" if cls else "")
            shown = f"<b>{text}" if before is not None and before[j] != text else text
            cells.append(f"<td{attr}>{shown}")
        self.texts[key] = tuple(texts)
        greyed = stale > 0 or (math.isfinite(age) and age > self.stale_after_s)
        cls = ("wbg-r wbg-t " if total else "") + ("wbg-s" if greyed else "")
        opening = (
            f'<tr class="{cls.strip()}">' if total else "<tr class=wbg-s>" if greyed else "<tr>"
        )
        return opening + "".join(cells)

    def render(
        self,
        table: pl.DataFrame,
        by: Sequence[str],
        firm: pl.DataFrame | None = None,
        breaches: Sequence[Breach] = (),
    ) -> dict[tuple[str, ...], str]:
        """Markup of every row (keys: group values; :data:`FIRM` for the totals row).

        Returns only the rows whose content changed since the previous call (changed cells
        wrapped in ``<b>``, marked as changed). Afterwards :attr:`rows` holds every row without
        those marks in display order (the firm row first, then the groups sorted by their
        values) and :attr:`flashes` the changed rows with them.
        """
        by = list(by)
        records = table.with_columns(pl.col(c).cast(pl.String) for c in by).sort(by).to_dicts()
        scales = {
            c: max((abs(float(r.get(c) or 0.0)) for r in records), default=0.0) for c in COLUMNS
        }
        width = len(by)
        fresh: dict[tuple[str, ...], str] = {}
        if firm is not None and firm.height:
            rec = firm.row(0, named=True)
            fresh[FIRM] = self._row(
                FIRM, rec, scales, breached_cells(breaches, by, FIRM), width=width
            )
        previous: tuple[str, ...] = ()
        for rec in records:
            key = tuple(str(rec[c]) for c in by)
            repeated = width > 1 and previous[:1] == key[:1]
            hot = breached_cells(breaches, by, key)
            fresh[key] = self._row(key, rec, scales, hot, width=width, repeated=repeated)
            previous = key
        # a row is re-sent when its content changed, not when only its flash marks did
        plain = {k: v.replace("<b>", "") for k, v in fresh.items()}
        changed = {k: fresh[k] for k, v in plain.items() if self.rows.get(k) != v}
        self.rows = plain
        self.flashes = changed
        for gone in set(self.texts) - set(fresh):
            del self.texts[gone]
        return changed

    def table_html(self, by: Sequence[str], footer: str = "") -> str:
        """The whole grid as one table (changed cells flashing), ``footer`` under it."""
        body = "".join(self.flashes.get(k, v) for k, v in self.rows.items())
        levels = " wbg2" if len(by) > 1 else ""
        foot = f"<div class=wbg-f>{footer}</div>" if footer else ""
        return (
            f'<table class="wbg{levels}"><thead>{header_html(by)}</thead>'
            f"<tbody>{body}</tbody></table>{foot}"
        )
