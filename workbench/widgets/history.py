"""GreekHistory: bqplot time series of chosen aggregates over the day.

One small chart per measure (their scales differ by orders of magnitude), x in seconds from the
moment the widget opened (monotonic clock): the day so far (UTC), read from the service's risk
store when the widget connects, lies before 0; the snapshots published since are appended as
they arrive, a snapshot already read from the store never twice. The widget subscribes before
it reads the store, and the snapshots the store writer still held in memory then (up to one
store interval, between the store's last file and the first live point) are read from the
store once written, so the line has no hole where the store ends and the live part begins.
The arrays go to the browser as binary float64 buffers (finite values only); redraws are
throttled (latest value wins, at most :data:`MAX_CHART_HZ`).

Every linear axis of the chart widgets names its tick format: without one, bqplot picks a format
from the ticks of the domain the axis first rendered with and keeps it, and a domain with no
ticks then (a single point, all values equal) leaves it formatting every later tick as
``.undefinedg``, which throws on each update and leaves the chart empty.

No chart changes anything but its marks' data after it is built (no scale bound, no tick
format): a bound changed while the browser is still rendering a line's view (a page opening, a
notebook re-run, a slow browser) throws inside bqplot's ``update_line_xy`` and is logged as
"Error setting state". A chart's domain follows its own data only (a flat series is drawn
across the middle, with one tick).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Final

import bqplot as bq  # type: ignore[import-untyped]
import ipywidgets as w  # type: ignore[import-untyped]
import numpy as np
import polars as pl

from workbench.client import Client, ServiceError, SnapshotView
from workbench.widgets._live import Latest, LiveWidget
from workbench.widgets.grid import COLUMNS, HEADERS

MAX_CHART_HZ: Final = 5.0
"""Most redraws a second of a chart widget (the charts' share of the traffic budget)."""

NUMBER_TICKS: Final = ",.4~r"
"""Tick format of plain-number axes (seconds, rates, bp): 4 significant digits, no exponent."""

VALUE_TICKS: Final = ".12~s"
"""Tick format of USD value axes: SI prefix, trailing zeros trimmed, up to 12 significant digits
(ticks are round numbers: ``178.1M``, ``-3.18M``, ``250k``), so ticks of any span read apart with
one format that never changes."""


def chart_hz(max_hz: float) -> float:
    """``max_hz`` checked against :data:`MAX_CHART_HZ` (redraws a second)."""
    if not 0.0 < max_hz <= MAX_CHART_HZ:
        raise ValueError(f"max_hz must be in (0, {MAX_CHART_HZ:g}] redraws a second: {max_hz}")
    return max_hz


def scope_value(snap: SnapshotView, scope: str, measure: str) -> float:
    """``measure`` of ``scope`` (``firm``, ``desk:<name>`` or ``asset_class:<name>``), USD."""
    if scope == "firm":
        return float(snap.tables["firm"][measure][0])
    kind, _, name = scope.partition(":")
    table = snap.tables[kind]
    hit = table.filter(pl.col(kind).cast(pl.String) == name)
    return float(hit[measure][0]) if hit.height else float("nan")


STORE_GROUPINGS: Final = {"firm": "firm", "desk": "desk", "asset_class": "asset_class"}
"""The store's grouping of each scope kind (``desk:<name>`` → ``desk``); a scope of another
kind (``currency:USD``) shows the live snapshots only."""
SAME_SNAPSHOT_S: Final = 2.0
"""A live snapshot is the stored one of its seq when their times are this close (seconds): a
service restarted during the day numbers its snapshots from 1 again."""
GAP_WAIT_S: Final = 60.0
"""Longest wait (seconds) for the store to hold the snapshots before the first live point."""
GAP_POLL_S: Final = 0.5
"""Seconds between two reads of the store while waiting for those snapshots."""


def day_start(now_ns: int) -> int:
    """UTC midnight (ns since the epoch) of the day of ``now_ns``.

    Examples
    --------
    >>> day_start(86_400 * 10**9 + 5)
    86400000000000
    """
    return now_ns - now_ns % (86_400 * 10**9)


def stored_points(
    frame: pl.DataFrame,
    scope: str,
    measures: Sequence[str],
    opened_ns: int,
    max_points: int,
    *,
    before_seq: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The points of a stored history (:meth:`Client.history` of ``scope``'s grouping) before
    ``opened_ns`` (UTC ns): seconds from ``opened_ns`` (negative), seqs and values per measure,
    evenly thinned to at most ``max_points``. With ``before_seq``: the points of seqs below
    it instead, whenever made (seconds from ``opened_ns``, of either sign)."""
    kind, _, name = scope.partition(":")
    if kind != "firm":
        frame = frame.filter(pl.col(kind) == name)
    early = pl.col("made_ns") < opened_ns if before_seq is None else pl.col("seq") < before_seq
    frame = frame.filter(early).sort("made_ns")
    if frame.height > max_points:
        step = math.ceil(frame.height / max_points)
        frame = frame.gather_every(step, offset=(frame.height - 1) % step)
    t = ((frame["made_ns"] - opened_ns) / 1e9).to_numpy().astype(np.float64)
    seqs = frame["seq"].to_numpy().astype(np.int64)
    values = {m: frame[m].to_numpy().astype(np.float64) for m in measures}
    return t, seqs, values


class GreekHistory(LiveWidget):
    """Time series of ``measures`` of one ``scope``: the day so far from the service's risk
    store, then every snapshot since the widget opened.

    Parameters
    ----------
    service
        A client, a service name or None.
    measures
        Measures to plot (columns of the aggregates, USD).
    scope
        ``"firm"``, ``"desk:<desk>"`` or ``"asset_class:<class>"``.
    max_points
        Older points are thinned (every other one dropped) beyond this many; the stored day is
        read thinned evenly to ``max_points - 100``.
    max_hz
        Most redraws a second (at most :data:`MAX_CHART_HZ`).
    day
        Open with the day so far from the store (False: the snapshots since the widget opened
        only).

    Attributes
    ----------
    t
        Seconds from :attr:`t0_ns` of each point (monotonic clock; negative for the points of
        the day read from the store).
    values
        Measure → value of each point (USD).
    seqs
        Sequence number of the snapshot of each point.
    stored
        Points read from the store when the widget connected (0 without a store).
    filled
        Points read from the store afterwards: the snapshots published between the store's
        last file and the first live point.
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        measures: Sequence[str] = ("pv", "dv01", "vega"),
        scope: str = "firm",
        max_points: int = 4000,
        max_hz: float = 2.0,
        day: bool = True,
        run_root: str | None = None,
    ) -> None:
        chart_hz(max_hz)
        super().__init__(service, run_root=run_root)
        self.day = day
        unknown = [m for m in measures if m not in COLUMNS]
        if unknown:
            raise ValueError(f"unknown measure {unknown[0]!r} (one of {COLUMNS})")
        self.measures = tuple(measures)
        self.scope = scope
        self.max_points = max_points
        self.t0_ns = time.monotonic_ns()
        self.opened_ns = time.time_ns()  # the same moment on the UTC clock of the store
        self.stored = 0
        self.filled = 0
        self._stored_at: dict[int, float] = {}  # seq → t of the points read from the store
        self._stored_until = day_start(self.opened_ns)  # UTC ns of the last point read
        self._first_live: SnapshotView | None = None  # the first snapshot recorded live
        self.t = np.empty(0)
        self.seqs = np.empty(0, dtype=np.int64)
        self.values: dict[str, np.ndarray] = {m: np.empty(0) for m in self.measures}
        self.lines: dict[str, bq.Lines] = {}
        self.value_axes: dict[str, bq.Axis] = {}
        figures = []
        for m in self.measures:
            x, y = bq.LinearScale(), bq.LinearScale()
            line = bq.Lines(x=[], y=[], scales={"x": x, "y": y}, colors=["#0969da"])
            self.lines[m] = line
            ax_x = bq.Axis(scale=x, label="s from opening", num_ticks=5, tick_format=NUMBER_TICKS)
            ax_y = bq.Axis(scale=y, orientation="vertical", tick_format=VALUE_TICKS, num_ticks=4)
            self.value_axes[m] = ax_y
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
        self._spawn(self._paced(self._box, self._draw, max_hz=max_hz))

    def preload(self, frame: pl.DataFrame) -> None:
        """Put the stored day before the points recorded so far (``frame``: the store's
        history of this scope's grouping, ``made_ns`` in UTC ns)."""
        t, seqs, values = stored_points(
            frame, self.scope, self.measures, self.opened_ns, max(self.max_points - 100, 1)
        )
        self._stored_at = dict(zip(seqs.tolist(), t.tolist(), strict=True))
        self.stored = t.size
        before = frame.filter(pl.col("made_ns") < self.opened_ns)["made_ns"]
        if before.len():
            self._stored_until = int(before.max())  # type: ignore[arg-type]
        self._insert(t, seqs, values)

    def fill(self, frame: pl.DataFrame) -> bool:
        """Put the stored snapshots published before the first live point (``frame``: the
        store's history of this scope's grouping from the last point read on) in their place.

        Returns
        -------
        bool
            Whether the store already holds the first live snapshot, hence every one before
            it (False: nothing is inserted; read the store again later).
        """
        first = self._first_live
        if first is None:
            return False
        first_ns = self.opened_ns + first.made_ns - self.t0_ns  # on the store's UTC clock
        near = frame.filter(
            (pl.col("seq") == first.seq)
            & ((pl.col("made_ns") - first_ns).abs() < SAME_SNAPSHOT_S * 1e9)
        )
        if near.is_empty():
            return False
        frame = frame.filter(pl.col("made_ns") > self._stored_until)
        t, seqs, values = stored_points(
            frame, self.scope, self.measures, self.opened_ns, self.max_points, before_seq=first.seq
        )
        self._stored_at.update(zip(seqs.tolist(), t.tolist(), strict=True))
        self.filled += t.size
        self._insert(t, seqs, values)
        return True

    def _insert(self, t: np.ndarray, seqs: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Insert points earlier than every live point where they belong in time."""
        at = int(np.searchsorted(self.t, t[0])) if t.size else 0
        self.t = np.r_[self.t[:at], t, self.t[at:]]
        self.seqs = np.r_[self.seqs[:at], seqs, self.seqs[at:]]
        self.values = {m: np.r_[v[:at], values[m], v[at:]] for m, v in self.values.items()}

    def record(self, snap: SnapshotView) -> None:
        """Append one snapshot's values (seconds from :attr:`t0_ns` on the monotonic clock),
        unless it is a snapshot read from the store."""
        t = (snap.made_ns - self.t0_ns) / 1e9
        stored_t = self._stored_at.get(snap.seq)
        if stored_t is not None and abs(stored_t - t) < SAME_SNAPSHOT_S:
            return
        if self._first_live is None:
            self._first_live = snap
        self.t = np.append(self.t, t)
        for m in self.measures:
            self.values[m] = np.append(self.values[m], scope_value(snap, self.scope, m))
        self.seqs = np.append(self.seqs, np.int64(snap.seq))
        if self.t.size > self.max_points:
            keep = np.r_[
                np.arange(0, self.t.size - 100, 2), np.arange(self.t.size - 100, self.t.size)
            ]
            self.t = self.t[keep]
            self.seqs = self.seqs[keep]
            self.values = {m: v[keep] for m, v in self.values.items()}

    async def _load_day(self) -> None:
        """The day so far from the store (nothing when the service keeps none), then the
        snapshots up to the first live point once the store holds them."""
        kind = self.scope.partition(":")[0]
        grouping = STORE_GROUPINGS.get(kind)
        if grouping is None or not self.day:
            return
        start = day_start(self.opened_ns)
        try:
            client = await self.conn.client()
            frame = await client.ahistory(start, grouping=grouping, measures=self.measures)
            self.preload(frame)
            self._box.put(True)
            deadline = time.monotonic() + GAP_WAIT_S
            while time.monotonic() < deadline:
                await asyncio.sleep(GAP_POLL_S)
                if self._first_live is None:
                    continue
                since = await client.ahistory(
                    self._stored_until + 1, grouping=grouping, measures=self.measures
                )
                if self.fill(since):
                    self._box.put(True)
                    return
        except (ServiceError, OSError, ValueError):
            return  # a remote service, an unreadable store: live points only

    async def _feed(self) -> None:
        day = self._spawn(self._load_day())  # while the subscription below records
        try:
            async for snap in self.conn.snapshots():
                self.record(snap)
                self._box.put(True)
        finally:
            day.cancel()

    def _draw(self, _flag: bool) -> None:
        for m, line in self.lines.items():
            ok = np.isfinite(self.t) & np.isfinite(self.values[m])
            x, y = self.t[ok], self.values[m][ok]
            with line.hold_sync():
                line.x = x
                line.y = y
