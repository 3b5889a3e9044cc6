"""The report's intraday section: the day's high, low and close of the firm's and each desk's
measures, and the day's breaches as a timeline, from the service's risk store (docs/store.md).

The day is the UTC day the report's snapshot was taken, up to that moment (``taken_at_utc``);
a snapshot without that moment (a batch re-risk) has no intraday section. Amounts in USD.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from workbench.client.stored import breaches, history, service_store
from workbench.reports.sections import SUMMARY_MEASURES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INTRADAY_MEASURES: Final[tuple[str, ...]] = tuple(m for m in SUMMARY_MEASURES if m != "positions")
"""The measures whose high, low and close the section shows (USD): the report's group tables'."""
_SAME_START_NS: Final = 1_000_000_000
"""Starts of a scope's measure breached this close (ns) are one breach."""


@dataclass(frozen=True)
class Intraday:
    """The section's tables: ``firm`` and ``desks`` (:func:`high_low_close`), ``timeline``
    (:func:`breach_timeline`), from ``snapshots`` stored snapshots ``start``–``end`` (UTC)."""

    store: Path
    start: dt.datetime
    end: dt.datetime
    snapshots: int
    firm: pl.DataFrame
    desks: pl.DataFrame
    timeline: pl.DataFrame


def store_of(identity: dict[str, Any], store_dir: str = "") -> Path | None:
    """The store a report reads: ``store_dir`` if given, else the one its snapshot's identity
    names, else its service's (by name, running or not); None for a batch snapshot."""
    if store_dir:
        return Path(store_dir)
    if identity.get("store"):
        return Path(str(identity["store"]))
    if identity.get("source") == "service" and identity.get("service"):
        return service_store(str(identity["service"]))
    return None


def day_of(identity: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    """``[UTC midnight, taken_at_utc]`` of a snapshot's identity; None without the moment."""
    taken = identity.get("taken_at_utc")
    if not taken:
        return None
    end = dt.datetime.fromisoformat(str(taken))
    end = end.replace(tzinfo=dt.UTC) if end.tzinfo is None else end.astimezone(dt.UTC)
    start = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, end


def high_low_close(
    frame: pl.DataFrame, keys: Sequence[str], measures: Sequence[str] = INTRADAY_MEASURES
) -> pl.DataFrame:
    """Per group of ``keys`` and measure: the day's ``high``, ``low`` and ``close`` (the last
    stored value) of a stored history (:func:`workbench.client.stored.history`), USD.

    Examples
    --------
    >>> h = pl.DataFrame({"made_ns": [1, 2, 3], "seq": [1, 2, 3], "pv": [5.0, 9.0, 7.0]})
    >>> high_low_close(h, (), ["pv"]).rows()
    [('pv', 9.0, 5.0, 7.0)]
    """
    group = list(keys)
    long = frame.sort("made_ns").unpivot(
        index=["made_ns", *group], on=list(measures), variable_name="measure"
    )
    by = [*group, "measure"]
    stats = [
        pl.col("value").max().alias("high"),
        pl.col("value").min().alias("low"),
        pl.col("value").last().alias("close"),
    ]
    return (
        long.group_by(by, maintain_order=True).agg(stats).sort(group)
        if group
        else (long.group_by(by, maintain_order=True).agg(stats))
    )


def breach_timeline(found: pl.DataFrame) -> pl.DataFrame:
    """One row per breach of the day (a scope's measure over its limit from ``since_ns``):
    ``scope``, ``measure``, ``start`` and ``last_seen`` (UTC), ``snapshots`` (how many carried
    it), ``worst`` (the value furthest from zero, USD) and ``limit`` (USD), by start."""
    if found.height == 0:
        return pl.DataFrame(
            schema={"scope": pl.String, "measure": pl.String,
                    "start": pl.Datetime("ns", "UTC"), "last_seen": pl.Datetime("ns", "UTC"),
                    "snapshots": pl.Int64, "worst": pl.Float64, "limit": pl.Float64}
        )  # fmt: skip
    utc = pl.Datetime("ns", "UTC")
    # one breach: its start as each snapshot stated it, within a second (the store's UTC
    # stamps of one monotonic start differ by the clocks' offset read by each writer)
    starts = found.sort("scope", "measure", "since_ns").with_columns(
        (pl.col("since_ns").diff().over("scope", "measure").fill_null(_SAME_START_NS + 1)
         > _SAME_START_NS).cum_sum().alias("breach")
    )  # fmt: skip
    return (
        starts.group_by("breach")
        .agg(
            pl.col("scope").first(),
            pl.col("measure").first(),
            pl.col("since_ns").min(),
            pl.col("made_ns").max().alias("last_ns"),
            pl.len().cast(pl.Int64).alias("snapshots"),
            pl.col("value").get(pl.col("value").abs().arg_max()).alias("worst"),
            pl.col("limit").last(),
        )
        .sort("since_ns", "scope", "measure")
        .select(
            "scope",
            "measure",
            pl.col("since_ns").cast(utc).alias("start"),
            pl.col("last_ns").cast(utc).alias("last_seen"),
            "snapshots",
            "worst",
            "limit",
        )
    )


def read_day(identity: dict[str, Any], store_dir: str = "") -> Intraday | None:
    """The intraday section of a report's snapshot; None when there is no store, no moment
    or no stored snapshot that day."""
    store = store_of(identity, store_dir)
    day = day_of(identity)
    if store is None or day is None:
        return None
    start, end = day
    lo = round(start.timestamp()) * 10**9
    hi = (round(end.timestamp()) + 1) * 10**9  # the second taken (its stamp has no fraction)
    firm = history(store, start_ns=lo, end_ns=hi, measures=INTRADAY_MEASURES)
    if firm.height == 0:
        return None
    desks = history(store, start_ns=lo, end_ns=hi, grouping="desk", measures=INTRADAY_MEASURES)
    return Intraday(
        store=store,
        start=start,
        end=end,
        snapshots=firm.height,
        firm=high_low_close(firm, ()),
        desks=high_low_close(desks, ("desk",)),
        timeline=breach_timeline(breaches(store, start_ns=lo, end_ns=hi)),
    )


def timeline_text(timeline: pl.DataFrame) -> pl.DataFrame:
    """:func:`breach_timeline` with its times as ``HH:MM:SS`` UTC text (for a table)."""
    return timeline.with_columns(
        pl.col("start").dt.strftime("%H:%M:%S"), pl.col("last_seen").dt.strftime("%H:%M:%S")
    )


def plot_timeline(timeline: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> Figure:
    """One bar per breach from its start to the last snapshot that carried it, a row per
    scope and measure, over the day ``start``–``end`` (UTC hours)."""
    from matplotlib.figure import Figure

    rows = timeline.select(pl.concat_str("scope", pl.lit(" "), "measure").alias("row")).to_series()
    names = list(dict.fromkeys(rows.to_list()))
    fig = Figure(figsize=(9.0, max(2.0, 0.35 * len(names) + 1.2)), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    t0 = start.timestamp()

    def hours(t: dt.datetime) -> float:
        return (t.timestamp() - t0) / 3600.0

    for name, first, last in zip(rows, timeline["start"], timeline["last_seen"], strict=True):
        lo = max(hours(first), 0.0)
        width = max(hours(last) - lo, 1.0 / 60.0)  # a minute at least, to be seen
        ax.broken_barh([(lo, width)], (names.index(name) - 0.4, 0.8), color="#c44")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlim(0.0, max(hours(end), 1.0 / 60.0))
    ax.set_xlabel(f"hours (UTC) since {start:%Y-%m-%d} 00:00")
    ax.set_title("Limit breaches of the day")
    return fig
