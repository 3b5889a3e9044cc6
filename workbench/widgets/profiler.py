"""Profiler: profile one worker for N seconds of live work and show where its time goes.

Three views of one profile: an icicle (flame) chart of the call tree — one row per call depth,
each box as wide as the seconds spent on that call path (callees included) within its parent,
coloured by source file, details in its tooltip — a bar per function of its cumulative time (the
heaviest first) and a table of the top functions. cProfile keeps caller → callee totals, not
whole stacks, so the icicle's first two rows are exact and deeper ones split a function's time
among its callers in proportion (see :mod:`workbench.engine.telemetry.profiling`). The worker's
waits on
its sockets (idle time, :data:`IDLE_FUNCTIONS`) are left out of both charts, which show where
the work goes, and reported beside them. Beside the bars: the
worker's stage timings, its spline-cache counters and a switch for the vol-spline cache
(``set_option(worker, "spline_cache", …)``).
"""

from __future__ import annotations

import html
import time
import zlib
from typing import Any, Final

import bqplot as bq  # type: ignore[import-untyped]
import ipywidgets as w  # type: ignore[import-untyped]
import polars as pl

from workbench.client import Client
from workbench.widgets._live import LiveWidget
from workbench.widgets.history import NUMBER_TICKS

WORKERS: Final[tuple[str, ...]] = ("rates-0", "fx-0", "credit-0", "equity-0")


def functions_html(functions: pl.DataFrame, *, top: int = 15) -> str:
    """The ``top`` functions by cumulative time as an HTML table (seconds)."""
    if functions.height == 0:
        return "<i>no samples</i>"
    rows = functions.sort("cumtime_s", descending=True).head(top)
    out = [
        '<table style="font:12px monospace"><tr><th>function</th><th>where</th>'
        "<th>calls</th><th>own s</th><th>cum s</th></tr>"
    ]
    for r in rows.iter_rows(named=True):
        where = f"{r.get('file', '')}:{r.get('line', '')}"
        out.append(
            f"<tr><td>{html.escape(str(r['function']))[:60]}</td><td>{html.escape(where)}</td>"
            f"<td>{r['calls']}</td><td>{r['tottime_s']:.3f}</td><td>{r['cumtime_s']:.3f}</td></tr>"
        )
    return "".join(out) + "</table>"


ICICLE_PALETTE: Final[tuple[str, ...]] = (
    "#f6c48a", "#a6d5f7", "#b8e0a8", "#f4a6a6", "#d3bdf0",
    "#f7e08a", "#9fded3", "#f2b8d8", "#c9c9a3", "#b3c7e6",
)  # fmt: skip
"""Box colours of the icicle, picked per source file by a stable hash (built-ins grey)."""

_BUILTIN_COLOUR: Final = "#d9d9d9"
_CHAR_PX: Final = 6.6  # width of one character of the 11px monospace font, px


def file_colour(file: str) -> str:
    """The icicle colour of a source file (the same in every kernel: CRC-32, not ``hash``)."""
    if file in ("", "~"):
        return _BUILTIN_COLOUR
    return ICICLE_PALETTE[zlib.crc32(file.encode()) % len(ICICLE_PALETTE)]


def _fit(text: str, width_px: float) -> str:
    """``text`` cut (with an ellipsis) to what fits in ``width_px`` of the icicle's font."""
    room = int((width_px - 4.0) / _CHAR_PX)
    if room < 2:
        return ""
    return text if len(text) <= room else text[: room - 1] + "…"


IDLE_FUNCTIONS: Final[frozenset[tuple[str, str]]] = frozenset({("poll", "poll.py")})
"""(function, file) of the waits of a worker's loop on its sockets (ZeroMQ ``Poller.poll``): idle
time, left out of the charts and reported beside them."""


def _idle(function: pl.Expr, file: pl.Expr) -> pl.Expr:
    return pl.any_horizontal([(function == f) & (file == m) for f, m in IDLE_FUNCTIONS])


def busy_tree(tree: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    """The call tree without the idle roots (:data:`IDLE_FUNCTIONS`) and everything under them,
    the remaining roots laid side by side again from 0; and the idle seconds removed.

    Examples
    --------
    >>> tree = pl.DataFrame({"id": [0, 1, 2, 3], "parent": [-1, 0, -1, 2],
    ...     "function": ["poll", "x", "poll_quotes", "update"],
    ...     "file": ["poll.py", "poll.py", "worker.py", "repricing.py"], "line": [1, 2, 3, 4],
    ...     "depth": [0, 1, 0, 1], "start_s": [0.0, 0.0, 0.8, 0.8],
    ...     "cum_s": [0.8, 0.1, 0.2, 0.15], "own_s": [0.7, 0.1, 0.05, 0.15]})
    >>> busy, idle = busy_tree(tree)
    >>> busy["function"].to_list(), busy["start_s"].to_list(), idle
    (['poll_quotes', 'update'], [0.0, 0.0], 0.8)
    """
    if tree.height == 0 or "depth" not in tree.columns:
        return tree, 0.0
    idle_roots = tree.filter((pl.col("depth") == 0) & _idle(pl.col("function"), pl.col("file")))
    if idle_roots.height == 0:
        return tree, 0.0
    parent = dict(zip(tree["id"].to_list(), tree["parent"].to_list(), strict=True))
    root_of: dict[int, int] = {}
    for node in tree["id"].to_list():
        top = node
        while parent.get(top, -1) >= 0:
            top = parent[top]
        root_of[node] = top
    dropped = set(idle_roots["id"].to_list())
    roots = tree.filter((pl.col("depth") == 0) & ~pl.col("id").is_in(list(dropped)))
    shift: dict[int, float] = {}
    at = 0.0
    for r in roots.sort("start_s").iter_rows(named=True):
        shift[int(r["id"])] = at - float(r["start_s"])
        at += float(r["cum_s"])
    kept = [root_of[i] not in dropped for i in tree["id"].to_list()]
    busy = tree.filter(pl.Series(kept))
    moved = [shift[root_of[i]] for i in busy["id"].to_list()]
    busy = busy.with_columns((pl.col("start_s") + pl.Series(moved)).alias("start_s"))
    return busy, float(idle_roots["cum_s"].sum())


def icicle_html(tree: pl.DataFrame, *, width_px: int = 900, row_px: int = 18) -> str:
    """The call tree of a profile reply as an icicle: one absolutely placed ``div`` per node.

    ``tree`` has the columns of :func:`workbench.engine.telemetry.profiling.tree_from_stats`
    (``depth``,
    ``start_s``, ``cum_s``, ``own_s``, ``function``, ``file``, ``line``). A node's box starts at
    ``start_s / total`` of ``width_px`` and is ``cum_s / total`` of it wide, on row ``depth``
    (``row_px`` high), where total is the roots' summed ``cum_s``; its tooltip reads
    ``function file:line — cum s (share of total), own s``. Every node ``div`` has the class
    ``wb-icicle-node``; text is HTML-escaped.

    Examples
    --------
    >>> tree = pl.DataFrame({"id": [0, 1], "parent": [-1, 0], "function": ["main", "<lambda>"],
    ...     "file": ["m.py", "m.py"], "line": [1, 5], "depth": [0, 1], "start_s": [0.0, 0.0],
    ...     "cum_s": [2.0, 1.5], "own_s": [0.5, 1.5]})
    >>> out = icicle_html(tree)
    >>> out.count('class="wb-icicle-node"'), "&lt;lambda&gt;" in out
    (2, True)
    """
    if tree.height == 0 or "depth" not in tree.columns:
        return "<i>no samples</i>"
    total = float(tree.filter(pl.col("depth") == 0)["cum_s"].sum())
    if total <= 0.0:
        return "<i>no samples</i>"
    rows = int(tree["depth"].max() or 0) + 1  # type: ignore[arg-type]
    scale = width_px / total
    out = [
        "<style>.wb-icicle-node{position:absolute;overflow:hidden;white-space:nowrap;"
        "box-sizing:border-box;border-right:1px solid #fff;padding-left:2px;color:#222}</style>"
        f'<div class="wb-icicle" style="position:relative;width:{width_px}px;'
        f'height:{rows * row_px}px;font:11px monospace;line-height:{row_px - 1}px">'
    ]
    for r in tree.iter_rows(named=True):
        left, width = float(r["start_s"]) * scale, float(r["cum_s"]) * scale
        cum, own = float(r["cum_s"]), float(r["own_s"])
        name, file = str(r["function"]), str(r["file"])
        tip = f"{name} {file}:{r['line']} — {cum:.3f} s ({cum / total:.1%}), own {own:.3f} s"
        out.append(
            f'<div class="wb-icicle-node" title="{html.escape(tip)}" style="left:{left:.1f}px;'
            f"top:{int(r['depth']) * row_px}px;width:{width:.1f}px;height:{row_px - 1}px;"
            f'background:{file_colour(file)}">{html.escape(_fit(name, width))}</div>'
        )
    return "".join(out) + "</div>"


def cache_html(data: dict[str, Any]) -> str:
    """Stage timings and spline-cache counters of a profile reply."""
    parts = ["<b>stage totals (ms)</b><br>"]
    for stage, ms in (data.get("stage_ms") or {}).items():
        parts.append(f"{html.escape(str(stage))}: {float(ms):,.1f}<br>")
    cache = data.get("spline_cache") or {}
    if cache:
        hits, misses = float(cache.get("hits", 0)), float(cache.get("misses", 0))
        rate = hits / (hits + misses) if hits + misses else 0.0
        parts.append(
            f"<b>spline cache</b> ({'on' if data.get('spline_cache_enabled') else 'off'}): "
            f"hit rate {rate:.1%} ({hits:,.0f} hits, {misses:,.0f} misses), "
            f"build {float(cache.get('build_ms', 0)):,.1f} ms, "
            f"lookup {float(cache.get('lookup_ms', 0)):,.1f} ms, "
            f"{float(cache.get('entries', 0)):.0f} entries<br>"
        )
    if "last_reprice_ms" in data:
        parts.append(f"last reprice {float(data['last_reprice_ms']):,.1f} ms<br>")
    return "".join(parts)


class Profiler(LiveWidget):
    """Pick a worker, profile it for N seconds, see its call tree, top functions and caches.

    ``runs`` keeps every profile taken (worker, seconds, cache on/off, reprices, reprice time)
    so a notebook can plot cache on vs off.
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        worker: str = "fx-0",
        seconds: float = 2.0,
        run_root: str | None = None,
    ) -> None:
        super().__init__(service, run_root=run_root)
        self.worker = w.Dropdown(options=list(WORKERS), value=worker, description="worker")
        self.seconds = w.FloatSlider(
            value=seconds, min=0.5, max=30.0, step=0.5, description="seconds"
        )
        self.run_button = w.Button(description="profile", button_style="primary")
        self.cache = w.ToggleButton(value=True, description="spline cache on", icon="bolt")
        self.table = w.HTML()
        self.icicle = w.HTML(value="<i>not profiled yet</i>")
        self.caches = w.HTML()
        self.last: dict[str, Any] | None = None
        self.runs: list[dict[str, Any]] = []
        xs, ys = bq.OrdinalScale(), bq.LinearScale()
        self.bars = bq.Bars(
            x=[], y=[], scales={"x": xs, "y": ys}, orientation="horizontal", colors=["#bf8700"]
        )
        self.fig = bq.Figure(
            marks=[self.bars],
            axes=[
                bq.Axis(scale=xs, orientation="vertical", tick_style={"font-size": "9px"}),
                bq.Axis(scale=ys, label="cumulative s", tick_format=NUMBER_TICKS),
            ],
            title="cumulative time per function",
            layout=w.Layout(width="620px", height="380px"),
            fig_margin={"top": 30, "bottom": 40, "left": 220, "right": 10},
        )
        self.widget = w.VBox(
            [
                w.HBox([self.worker, self.seconds, self.run_button, self.cache, self.status]),
                w.HBox([self.fig, self.caches]),
                w.VBox(
                    [w.HTML("<b>call tree (icicle)</b>"), self.icicle],
                    layout=w.Layout(border="1px solid #ddd", padding="4px", width="920px"),
                ),
                self.table,
            ]
        )
        self.run_button.on_click(lambda _b: self._spawn(self.profile()))
        self.cache.observe(self._toggle, names="value")

    def _toggle(self, change: dict[str, Any]) -> None:
        self.cache.description = f"spline cache {'on' if change['new'] else 'off'}"
        self._spawn(self.set_cache(bool(change["new"])))

    async def set_cache(self, on: bool) -> dict[str, Any]:
        """Turn the worker's vol-spline cache on or off."""
        worker = str(self.worker.value)
        data = await self.conn.call(lambda c: c.aset_option(worker, "spline_cache", on))
        if self.cache.value != on:
            self.cache.value = on
        return data

    async def profile(self, seconds: float | None = None) -> dict[str, Any]:
        """Profile the chosen worker and show the result (also returned)."""
        worker = str(self.worker.value)
        secs = float(seconds if seconds is not None else self.seconds.value)
        self.run_button.disabled = True
        self.run_button.description = f"profiling {secs:g} s…"
        t0 = time.monotonic()
        try:
            data = await self.conn.call(lambda c: c.aprofile(worker, secs))
        finally:
            self.run_button.disabled = False
            self.run_button.description = "profile"
        self.last = data
        functions: pl.DataFrame = data["functions"]
        if functions.height:  # the charts show where the work goes; the waits are reported
            working = functions.filter(~_idle(pl.col("function"), pl.col("file")))
            top = working.sort("cumtime_s", descending=True).head(15)
        else:
            top = functions
        with self.bars.hold_sync():
            self.bars.x = [f"{f[:34]}" for f in top["function"].to_list()] if top.height else []
            self.bars.y = top["cumtime_s"].to_numpy() if top.height else []
        self.table.value = functions_html(functions)
        tree = data.get("tree")
        busy, idle_s = busy_tree(tree if isinstance(tree, pl.DataFrame) else pl.DataFrame())
        self.icicle.value = icicle_html(busy)
        self.caches.value = cache_html(data) + (
            f"idle, waiting for work: {idle_s:.2f} s of {float(data.get('profiled_s', 0)):.2f} s"
            " (left out of the charts)<br>"
        )
        self.runs.append(
            {
                "worker": worker,
                "seconds": secs,
                "spline_cache": bool(data.get("spline_cache_enabled", self.cache.value)),
                "reprices": float(data.get("reprices", 0)),
                "last_reprice_ms": float(data.get("last_reprice_ms", float("nan"))),
                "stage_ms": dict(data.get("stage_ms") or {}),
                "wall_s": time.monotonic() - t0,
            }
        )
        return data
