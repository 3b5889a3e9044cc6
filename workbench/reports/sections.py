"""The computations and figures of the end-of-day report, so the notebook stays a thin layout.

Every function takes the frames of a :class:`~workbench.reports.snapshot.Snapshot` and returns
a Polars frame, a matplotlib figure or plain data; nothing here reads the clock or a service.
Amounts are in USD with the units of ``docs/greeks.md``.
"""

from __future__ import annotations

import fnmatch
import html
import io
import json
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from workbench.reports.close import take_service
from workbench.reports.snapshot import (
    Snapshot,
    SnapshotInputError,
    is_snapshot,
    load_snapshot,
    read_limits,
    take_batch,
)
from workbench.risk.aggregation import rollup, totals
from workbench.risk.limits import LimitConfig, LimitMonitor

if TYPE_CHECKING:
    from IPython.display import Image
    from matplotlib.figure import Figure

RESULTS_FILE: Final = "results.json"
"""What the notebook leaves for the runner: totals, breaches and counts (``summary.json``)."""

SUMMARY_MEASURES: Final[tuple[str, ...]] = (
    "positions",
    "pv",
    "dv01",
    "cs01",
    "fx_delta",
    "eq_delta",
    "vega",
    "corr01",
    "theta",
)
"""The columns the report's group tables show (USD; ``positions`` a count)."""

MOVER_MEASURES: Final[tuple[str, ...]] = ("pv", "dv01", "cs01", "fx_delta", "eq_delta", "vega")


# --- snapshot in, filtered -------------------------------------------------------------------


def obtain(
    *,
    snapshot_dir: str,
    source: str,
    as_of: str,
    book_path: str,
    market_path: str,
    output_dir: str,
    n_paths: int,
    stale_after_s: float,
) -> Snapshot:
    """The report's snapshot: read from ``snapshot_dir`` if it holds one, else taken now.

    Taking it (the notebook run by hand): ``source`` is ``"batch"`` (re-risk ``book_path``
    against ``market_path``) or a service name; it is then saved into ``output_dir``.
    """
    if snapshot_dir and is_snapshot(Path(snapshot_dir)):
        snap = load_snapshot(Path(snapshot_dir))
        if snap.identity.get("as_of") != as_of:
            raise SnapshotInputError(
                f"snapshot in {snapshot_dir} is as of {snap.identity.get('as_of')}, "
                f"the report is as of {as_of}"
            )
        return snap
    day = date.fromisoformat(as_of)
    if source == "batch":
        if not (book_path and market_path):
            raise SnapshotInputError("batch source: book_path and market_path are required")
        snap = take_batch(
            book_path=Path(book_path), market_path=Path(market_path), as_of=day, n_paths=n_paths
        )
    else:
        snap = take_service(source or None, as_of=day, stale_after_s=stale_after_s)
    snap.save(Path(output_dir))
    return snap


def matches(frame: pl.DataFrame, patterns: str) -> pl.Series:
    """Rows whose desk or book matches one of the comma-separated glob ``patterns`` (all if
    ``patterns`` is empty)."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        return pl.Series("match", [True] * frame.height, dtype=pl.Boolean)
    labels = set(frame["desk"].unique().to_list()) | set(frame["book"].unique().to_list())
    hits = sorted(lab for lab in labels if any(fnmatch.fnmatchcase(lab, p) for p in wanted))
    return frame.select(pl.col("desk").is_in(hits) | pl.col("book").is_in(hits)).to_series()


def apply_filter(frame: pl.DataFrame, patterns: str) -> pl.DataFrame:
    """Positions whose desk or book matches ``patterns`` (see :func:`matches`).

    Raises
    ------
    ValueError
        The filter keeps no position.
    """
    out = frame.filter(matches(frame, patterns))
    if out.height == 0:
        raise ValueError(f"book filter {patterns!r} matches no desk or book")
    return out


def limits_in_force(snap: Snapshot, limits_path: str) -> list[dict[str, Any]]:
    """The limits file's limits if one is given, else those recorded with the snapshot."""
    return read_limits(Path(limits_path)) if limits_path else list(snap.limits)


# --- tables ------------------------------------------------------------------------------------


def group_table(frame: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """PV and the summable Greeks per group (USD), with a firm total as the last row."""
    cols = [*by, *SUMMARY_MEASURES]
    body = rollup(frame, by).select(cols)
    total = totals(frame).with_columns(
        [pl.lit("Total").alias(by[0])] + [pl.lit("").alias(c) for c in by[1:]]
    )
    return pl.concat([body.with_columns(pl.col(by).cast(pl.String)), total.select(cols)])


def key_rate_ladder(key_rates: pl.DataFrame, position_ids: pl.Series) -> pl.DataFrame:
    """Key-rate DV01 per tenor (rows, shortest first) and currency (columns), USD per 1bp.

    All curves of a currency (OIS and term) are summed per tenor; the ``Total`` row sums each
    currency's ladder.
    """
    kr = key_rates.filter(pl.col("position_id").is_in(position_ids.implode()))
    if kr.height == 0:
        return pl.DataFrame({"tenor": ["Total"]})
    long = kr.group_by("currency", "tenor").agg(pl.col("kr_dv01").sum(), pl.col("years").first())
    wide = long.pivot(on="currency", index=["tenor", "years"], values="kr_dv01").sort("years")
    currencies = sorted(c for c in wide.columns if c not in ("tenor", "years"))
    wide = wide.select("tenor", *currencies).fill_null(0.0)
    total = wide.select(pl.lit("Total").alias("tenor"), *[pl.col(c).sum() for c in currencies])
    return pl.concat([wide, total])


def cs01_by_index(frame: pl.DataFrame) -> pl.DataFrame:
    """Credit positions per index: CS01 (USD per 1bp), its gamma, correlation vega and PV."""
    credit = frame.filter(pl.col("asset_class") == "credit")
    return (
        credit.group_by(pl.col("underlying").alias("index"))
        .agg(
            pl.len().alias("positions"),
            pl.col("cs01").fill_nan(None).sum(),
            pl.col("cs01").fill_nan(None).abs().sum().alias("cs01_gross"),
            pl.col("credit_gamma").fill_nan(None).sum(),
            pl.col("corr01").fill_nan(None).sum(),
            pl.col("pv").fill_nan(None).sum(),
        )
        .sort("index")
    )


def vega_by_surface(frame: pl.DataFrame) -> pl.DataFrame:
    """Option vega per vol surface (FX pair or equity), USD per vol point, largest |vega| first."""
    options = frame.filter(pl.col("asset_class").is_in(["fx", "equity"]) & (pl.col("vega") != 0))
    return (
        options.group_by(pl.col("asset_class"), pl.col("underlying").alias("surface"))
        .agg(
            pl.len().alias("options"),
            pl.col("vega").fill_nan(None).sum(),
            pl.col("vega").fill_nan(None).abs().sum().alias("vega_gross"),
        )
        .sort(pl.col("vega").abs(), descending=True)
    )


def limit_usage(frame: pl.DataFrame, limits: list[dict[str, Any]]) -> pl.DataFrame:
    """Usage of each limit on ``frame`` (value = |net measure|, USD) and whether it is breached."""
    configs = [
        LimitConfig(measure=x["measure"], limit=float(x["limit"]), desk=x.get("desk"))
        for x in limits
    ]
    monitor = LimitMonitor(configs, desks=frame["desk"].unique().to_list())
    return monitor.evaluate(frame, 0).usage


def top_movers(
    frame: pl.DataFrame, previous: pl.DataFrame | None, n: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Changes against the previous report's snapshot: per desk, and the ``n`` largest positions.

    Positions are matched on ``position_id``; a position new today counts its whole value, one
    gone since counts minus its previous value. Returns ``(by_desk, positions)``, each with
    ``d_<measure>`` (today − previous, USD) for :data:`MOVER_MEASURES`, largest |ΔPV| first.
    """
    if n < 1:
        raise ValueError(f"top_n must be at least 1, got {n}")
    if previous is None:
        empty = pl.DataFrame({"desk": [], "d_pv": []}, schema={"desk": pl.String, "d_pv": float})
        return empty, empty
    keep = ["position_id", "desk", "book", "product", *MOVER_MEASURES]
    now = frame.select(keep)
    before = previous.select(keep)
    joined = now.join(before, on="position_id", how="full", coalesce=True, suffix="_prev")
    deltas = [
        (
            pl.col(m).fill_nan(0.0).fill_null(0.0)
            - pl.col(f"{m}_prev").fill_nan(0.0).fill_null(0.0)
        ).alias(f"d_{m}")
        for m in MOVER_MEASURES
    ]
    moved = joined.with_columns(
        pl.coalesce("desk", "desk_prev").alias("desk"),
        pl.coalesce("book", "book_prev").alias("book"),
        pl.coalesce("product", "product_prev").alias("product"),
        *deltas,
    )
    d_cols = [f"d_{m}" for m in MOVER_MEASURES]
    by_desk = (
        moved.group_by("desk").agg(pl.col(d_cols).sum()).sort(pl.col("d_pv").abs(), descending=True)
    )
    positions = (
        moved.select("position_id", "desk", "book", "product", "pv_prev", "pv", *d_cols)
        .sort(pl.col("d_pv").abs(), descending=True)
        .head(n)
    )
    return by_desk, positions


def staleness(frame: pl.DataFrame) -> pl.DataFrame:
    """Stale and unpriced counts and the age of the Greeks (seconds) at the snapshot."""
    age = frame["age_s"].filter(frame["age_s"].is_finite())
    return pl.DataFrame(
        {
            "positions": [frame.height],
            "stale": [int(frame["stale"].sum())],
            "unpriced": [int(frame["pv"].is_nan().sum())],
            "age_p50_s": [float(age.quantile(0.5) or 0.0) if age.len() else math.nan],
            "age_p99_s": [float(age.quantile(0.99) or 0.0) if age.len() else math.nan],
            "age_max_s": [float(age.max()) if age.len() else math.nan],  # type: ignore[arg-type]
        }
    )


def engine_processes(engine: dict[str, Any]) -> pl.DataFrame:
    """Service mode: one row per process (state, restarts, heartbeat age, reprice times in ms)."""
    rows = []
    for p in engine.get("processes", []):
        stats = p.get("stats", {})
        rows.append(
            {
                "process": p["name"],
                "state": p["state"],
                "restarts": int(p["restarts"]),
                "heartbeat_age_s": float(p["heartbeat_age_s"]),
                "uptime_s": float(p.get("uptime_s", math.nan)),
                "reprices": float(stats.get("reprices", math.nan)),
                "full_reprice_ms": float(stats.get("full_reprice_ms", math.nan)),
                "last_reprice_ms": float(stats.get("last_reprice_ms", math.nan)),
            }
        )
    return pl.DataFrame(rows).sort("process") if rows else pl.DataFrame({"process": []})


def engine_latency(engine: dict[str, Any]) -> pl.DataFrame:
    """Service mode: the aggregator's flush→publish latency, worst age and stale count."""
    for p in engine.get("processes", []):
        if p.get("role") == "aggregator" or p.get("name") == "aggregator":
            s = p.get("stats", {})
            keys = ("flush_to_publish_p50_ms", "flush_to_publish_p99_ms", "max_age_s", "stale")
            return pl.DataFrame({k: [float(s.get(k, math.nan))] for k in keys})
    return pl.DataFrame()


def batch_timings(engine: dict[str, Any]) -> pl.DataFrame:
    """Batch mode: seconds spent loading, setting up and pricing, per stage."""
    rows = [
        (k, float(v)) for k, v in engine.items() if k.endswith("_s") and not isinstance(v, dict)
    ]
    rows += [(f"price: {k}", float(v)) for k, v in engine.get("stages_s", {}).items()]
    return pl.DataFrame(rows, schema={"stage": pl.String, "seconds": pl.Float64}, orient="row")


# --- presentation ------------------------------------------------------------------------------


def html_table(frame: pl.DataFrame, *, digits: int = 0, caption: str = "") -> str:
    """A compact HTML table: thousands separators, ``digits`` decimals, negatives in red."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, bool) or v is None:
                cells.append(f"<td>{'' if v is None else v}</td>")
            elif isinstance(v, float):
                text = "" if math.isnan(v) else f"{v:,.{digits}f}"
                style = ' style="color:#b00"' if v < 0 else ""
                cells.append(f'<td align="right"{style}>{text}</td>')
            elif isinstance(v, int):
                cells.append(f'<td align="right">{v:,}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<table class="eod">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def png(fig: Figure) -> Image:
    """The figure as a PNG for ``display`` (static in the executed notebook and the HTML)."""
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return Image(data=buffer.getvalue(), format="png")  # type: ignore[no-untyped-call]


def _figure(width: float = 9.0, height: float = 3.6) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    return fig, fig.add_subplot()


def plot_bars(table: pl.DataFrame, label: str, value: str, title: str) -> Figure:
    """Horizontal bars of ``value`` per ``label`` (rows in the table's order)."""
    fig, ax = _figure(9.0, max(2.5, 0.25 * table.height + 1.0))
    labels = [str(x) for x in table[label].to_list()][::-1]
    values = [float(x or 0.0) for x in table[value].to_list()][::-1]
    ax.barh(labels, values, color=["#3a7" if v >= 0 else "#c44" for v in values])
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.tick_params(labelsize=8)
    return fig


def plot_ladder(ladder: pl.DataFrame) -> Figure:
    """One line per currency: key-rate DV01 (USD per 1bp) against tenor."""
    fig, ax = _figure()
    rows = ladder.filter(pl.col("tenor") != "Total")
    tenors = rows["tenor"].to_list()
    for ccy in ladder.columns[1:]:
        ax.plot(range(len(tenors)), rows[ccy].to_list(), marker="o", markersize=3, label=ccy)
    ax.set_xticks(range(len(tenors)), tenors, rotation=90, fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("USD per 1bp")
    ax.set_title("Key-rate DV01 by tenor")
    ax.legend(fontsize=7, ncol=4)
    return fig


def plot_curves(curves: pl.DataFrame) -> Figure:
    """Zero rates (percent, continuously compounded) of the OIS and term curves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8), dpi=90, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, ("ois", "term"), strict=True):
        sub = curves.filter(pl.col("kind") == kind)
        for curve in sub["curve"].unique(maintain_order=True).to_list():
            part = sub.filter(pl.col("curve") == curve)
            ax.plot(part["years"].to_numpy(), 100.0 * part["zero_rate"].to_numpy(), label=curve)
        ax.set_title(f"{kind.upper() if kind == 'ois' else 'Term'} curves: zero rates")
        ax.set_xlabel("years")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("percent")
    return fig


# --- results for the runner ------------------------------------------------------------------


def results(
    snap: Snapshot, frame: pl.DataFrame, usage: pl.DataFrame, *, book_filter: str
) -> dict[str, Any]:
    """The machine-readable part of ``summary.json``: totals, breaches, the snapshot's id."""
    firm = totals(frame).row(0, named=True)
    breaches = usage.filter(pl.col("breached")).to_dicts()
    return {
        "as_of": snap.identity["as_of"],
        "source": snap.identity["source"],
        "snapshot_id": snap.identity["snapshot_id"],
        "snapshot": snap.identity,
        "book_filter": book_filter,
        "totals": {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in firm.items()
        },
        "limits": usage.to_dicts(),
        "breaches": breaches,
    }


def write_results(output_dir: str, data: dict[str, Any]) -> Path:
    """Write :data:`RESULTS_FILE` into ``output_dir``."""
    path = Path(output_dir) / RESULTS_FILE
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
