"""What the service's replies become on the client: typed views and Polars frames.

Pure decoding, no sockets: the synchronous and the asynchronous client share every function
here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import polars as pl

from workbench.engine.protocol import messages as msg
from workbench.engine.telemetry.histograms import BUCKETS_MS, quantile_ms
from workbench.engine.telemetry.profiling import TREE_COLUMNS
from workbench.risk.breaches import Breach

_BUCKET_SCHEMA: Final = {
    "process": pl.String,
    "boundary": pl.String,
    "le_ms": pl.Float64,
    "count": pl.Int64,
}
_SUMMARY_SCHEMA: Final = {
    "process": pl.String,
    "boundary": pl.String,
    "count": pl.Int64,
    "p50_ms": pl.Float64,
    "p99_ms": pl.Float64,
}
_POLARS_TYPES: Final = {int: pl.Int64, float: pl.Float64, str: pl.String}
_TREE_SCHEMA: Final = {k: _POLARS_TYPES[t] for k, t in TREE_COLUMNS.items()}


class SnapshotTables(Mapping[str, pl.DataFrame]):
    """A snapshot's tables by name as Polars frames, each decoded from its Arrow IPC bytes the
    first time it is read (a reader pays only for the tables it reads).

    Parameters
    ----------
    raw
        Table name → Arrow IPC bytes, as a :class:`~workbench.engine.protocol.messages.Snapshot`
        carries them.
    """

    def __init__(self, raw: Mapping[str, bytes]) -> None:
        self._raw = dict(raw)
        self._frames: dict[str, pl.DataFrame] = {}

    def __getitem__(self, name: str) -> pl.DataFrame:
        frame = self._frames.get(name)
        if frame is None:
            frame = msg.bytes_to_frame(self._raw[name])
            self._frames[name] = frame
        return frame

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"SnapshotTables({sorted(self._raw)})"


@dataclass(frozen=True)
class SnapshotView:
    """A decoded aggregated snapshot: tables as Polars frames (USD measures).

    ``tables`` holds ``"limits"`` (the limit usage) and the roll-up of every grouping of
    :data:`~workbench.engine.protocol.messages.SNAPSHOT_GROUPINGS` (the columns of
    :func:`workbench.risk.aggregation.rollup`) under its name: ``"firm"``, ``"desk"``,
    ``"asset_class"``, ``"desk,currency"``, ``"book"``, ``"currency"``,
    ``"desk,asset_class"``, ``"product"``, ``"underlying"`` (read them with :meth:`grouped`).
    """

    seq: int
    made_ns: int
    tables: Mapping[str, pl.DataFrame]
    breaches: tuple[Breach, ...]
    stats: dict[str, float]
    received_ns: int = 0
    """When this client read it (monotonic clock, shared with the service's processes, ns)."""

    @property
    def transit_ms(self) -> float:
        """Aggregator → client: from the snapshot made to this client reading it (ms)."""
        return (self.received_ns - self.made_ns) / 1e6

    @property
    def groupings(self) -> tuple[tuple[str, ...], ...]:
        """The groupings whose roll-up this snapshot carries (``()``: the firm)."""
        return tuple(by for by in msg.SNAPSHOT_GROUPINGS if msg.table_name(by) in self.tables)

    def grouped(self, by: Sequence[str]) -> pl.DataFrame:
        """The roll-up grouped ``by`` as of this snapshot, without a request.

        Parameters
        ----------
        by
            One of :attr:`groupings`, in its order (``("desk", "currency")``; ``()`` for the
            firm-wide row).

        Returns
        -------
        pl.DataFrame
            One row per group present, sorted by ``by``: the group columns, ``positions``,
            ``stale``, ``unpriced``, ``max_age_s`` (seconds), every measure with its gross sum
            (USD) and, grouped by ``currency``, ``pv_ccy`` (in that currency) — as
            :meth:`Client.aggregate` answers.

        Raises
        ------
        KeyError
            A grouping the snapshot does not carry (:meth:`Client.aggregate` computes any).
        """
        name = msg.table_name(by)
        if name not in self.tables or name == "limits":
            carried = ", ".join(msg.table_name(g) for g in self.groupings)
            raise KeyError(
                f"no roll-up by {list(by)} in this snapshot (it carries {carried}); "
                "Client.aggregate(by) computes any grouping"
            )
        return self.tables[name]


@dataclass(frozen=True)
class MarketView:
    """The market the service prices at, as one worker last priced it (one quote generation).

    ``quotes``: ``quote_id``, ``value`` (the market file's units: rates and spreads as
    decimals, vols as decimals, spots in quote currency). ``pillars``: one row per curve
    instrument — ``curve``, ``currency``, ``kind``, ``tenor``, ``years``, ``quote_id``.
    ``curves``: for the curves asked, per point ``years`` — ``zero_pct``, ``fwd3m_pct`` and
    their ``*_shocked_pct`` twins (%, continuously compounded zero, 3M simple forward).
    """

    generation: int
    as_of: str
    quotes: pl.DataFrame
    pillars: pl.DataFrame
    curves: pl.DataFrame


def market_view(reply: msg.Reply) -> MarketView:
    """A market reply as a :class:`MarketView`."""
    t = reply.tables
    curves = msg.bytes_to_frame(t["curves"]) if "curves" in t else pl.DataFrame()
    return MarketView(
        int(reply.data["generation"]),
        str(reply.data["as_of"]),
        msg.bytes_to_frame(t["quotes"]),
        msg.bytes_to_frame(t["pillars"]),
        curves,
    )


def snapshot_view(snap: msg.Snapshot, received_ns: int) -> SnapshotView:
    """A published snapshot as a :class:`SnapshotView` read at ``received_ns`` (monotonic)."""
    return SnapshotView(
        snap.seq,
        snap.made_ns,
        SnapshotTables(snap.tables),
        snap.breaches,
        dict(snap.stats),
        received_ns,
    )


def table(reply: msg.Reply, name: str) -> pl.DataFrame:
    """The reply's table ``name`` as a Polars frame."""
    return msg.bytes_to_frame(reply.tables[name])


def profile_frames(data: dict[str, Any]) -> dict[str, Any]:
    """A profile reply's ``functions`` and ``tree`` as Polars frames (the tree keeps its
    columns when empty; a worker that sends no tree gives an empty one)."""
    out = dict(data)
    out["functions"] = pl.DataFrame(data.get("functions", []))
    out["tree"] = pl.DataFrame(data.get("tree") or [], schema=_TREE_SCHEMA, orient="row")
    return out


def reprice_table(reply: msg.Reply) -> pl.DataFrame:
    """A re-risk reply: one row per worker, ``positions`` repriced and ``ms`` taken."""
    workers = reply.data["workers"]
    return pl.DataFrame(
        [{"worker": k, "positions": v["positions"], "ms": v["ms"]} for k, v in workers.items()]
    )


def processes_table(status: dict[str, Any]) -> pl.DataFrame:
    """A status answer's processes, one row each (without their stats and histograms)."""
    skip = ("stats", "histograms")
    rows = [{k: v for k, v in r.items() if k not in skip} for r in status["processes"]]
    return pl.DataFrame(rows).sort("name")


def latency_buckets(status: dict[str, Any], to_client: list[float]) -> pl.DataFrame:
    """Every process boundary's histogram in long form: ``process``, ``boundary``, ``le_ms``
    (bucket upper bound, ms; inf for the last), ``count`` — from a status answer, plus
    ``to_client`` (this client's own aggregator → client histogram, wire form)."""
    rows: list[dict[str, Any]] = []
    bounds = [*BUCKETS_MS, float("inf")]
    found: list[tuple[str, str, Sequence[float]]] = [
        (p["name"], boundary, wire)
        for p in status["processes"]
        for boundary, wire in (p.get("histograms") or {}).items()
    ]
    found.append(("client", "aggregator_to_client", to_client))
    for process, boundary, wire in found:
        rows.extend(
            {"process": process, "boundary": boundary, "le_ms": le, "count": int(c)}
            for le, c in zip(bounds, wire[:-1], strict=True)
        )
    return pl.DataFrame(rows, schema=_BUCKET_SCHEMA)


def latency_summary(buckets: pl.DataFrame) -> pl.DataFrame:
    """Per boundary of :func:`latency_buckets`: ``count``, ``p50_ms``, ``p99_ms`` (bucket upper
    bounds: an overestimate by at most one bucket)."""
    rows = []
    for (process, boundary), part in buckets.group_by(["process", "boundary"], maintain_order=True):
        wire = [*map(float, part["count"]), 0.0]
        rows.append(
            {
                "process": process,
                "boundary": boundary,
                "count": int(part["count"].sum()),
                "p50_ms": quantile_ms(wire, 0.5),
                "p99_ms": quantile_ms(wire, 0.99),
            }
        )
    return pl.DataFrame(rows, schema=_SUMMARY_SCHEMA)


@dataclass(frozen=True)
class LossResult:
    """The live loss process's last result (docs/var.md, "Live"), the batch
    :class:`~workbench.scenario_risk.ScenarioRisk`'s shape plus where it stands.

    ``pnl``: PnL per scenario and desk, long (``scenario``, ``desk``, ``pnl`` USD; the firm as
    desk ``"Firm"``); ``measures``: VaR/ES by desk and firm (historical runs; None for
    stresses); ``worst``: the firm's worst scenarios (``rank``, ``scenario`` — a historical
    day, ISO — ``pnl``); ``seconds``: the run's wall time; ``scenarios``: how many;
    ``greeks``: the Greeks' estimate beside full revaluation (``by_desk``: ``scenario``,
    ``desk``, ``full``, ``greeks``, ``gap``; ``worst``: the positions it explains worst) or
    None; ``quotes``: the quote values it ran on (``quote_id``, ``value``); ``generation``:
    the quote table's generation of that copy; ``made_ns``: when the copy was taken (UTC ns);
    ``age_s``: seconds from then to the answer; ``ready``: False until a first run has ended
    (every frame then empty); ``computing``: ``"var"`` or ``"stress"`` while a run is under
    way, with ``done`` of ``total`` scenarios; ``error``: why the last run failed, if it did;
    ``every_s``: the timer (s); ``limits``: the VaR/ES limits' usage (as
    :meth:`~workbench.client.Client.limits`' rows) and ``breaches`` those in force.
    """

    pnl: pl.DataFrame
    measures: pl.DataFrame | None
    worst: pl.DataFrame
    seconds: float
    scenarios: int
    greeks: GreeksGapView | None
    quotes: pl.DataFrame
    generation: int
    made_ns: int
    age_s: float
    ready: bool
    computing: str
    done: int
    total: int
    error: str
    every_s: float
    limits: pl.DataFrame
    breaches: tuple[Breach, ...]


@dataclass(frozen=True)
class GreeksGapView:
    """The Greeks' estimate of every historical scenario beside its full revaluation (USD):
    ``by_desk`` and ``worst``, as :class:`~workbench.scenario_risk.GreeksGap`."""

    by_desk: pl.DataFrame
    worst: pl.DataFrame


@dataclass(frozen=True)
class ExplainView:
    """Intraday PnL explain (docs/var.md, "Live"): ``by_desk`` (``desk``, then the firm as
    ``"Firm"``; ``actual`` by full revaluation, one column per risk-factor class of
    ``components`` from the Greeks at the base, ``unexplained``; USD) and ``positions`` (the
    same per position); ``base_ns``, ``made_ns``: when the base and the latest copies of the
    quotes were taken (UTC ns), ``base_generation``, ``generation`` their quote generations;
    ``age_s``: seconds from the latest copy to the answer."""

    by_desk: pl.DataFrame
    positions: pl.DataFrame
    components: tuple[str, ...]
    base_ns: int
    made_ns: int
    base_generation: int
    generation: int
    age_s: float


def _frame(reply: msg.Reply, name: str) -> pl.DataFrame:
    raw = reply.tables.get(name)
    return msg.bytes_to_frame(raw) if raw is not None else pl.DataFrame()


def loss_result(reply: msg.Reply) -> LossResult:
    """A :class:`LossResult` from the loss process's reply."""
    d = reply.data
    ready = bool(d.get("ready"))
    made_ns = int(d.get("made_ns", 0))
    greeks = None
    if "greeks_by_desk" in reply.tables:
        greeks = GreeksGapView(_frame(reply, "greeks_by_desk"), _frame(reply, "greeks_worst"))
    return LossResult(
        pnl=_frame(reply, "pnl"),
        measures=_frame(reply, "measures") if "measures" in reply.tables else None,
        worst=_frame(reply, "worst"),
        seconds=float(d.get("seconds", 0.0)),
        scenarios=int(d.get("scenarios", 0)),
        greeks=greeks,
        quotes=_frame(reply, "quotes"),
        generation=int(d.get("generation", 0)),
        made_ns=made_ns,
        age_s=(int(d["now_ns"]) - made_ns) / 1e9 if ready else 0.0,
        ready=ready,
        computing=str(d.get("computing", "")),
        done=int(d.get("done", 0)),
        total=int(d.get("total", 0)),
        error=str(d.get("error", "")),
        every_s=float(d.get("every_s", 0.0)),
        limits=_frame(reply, "limits"),
        breaches=tuple(msgspec.convert(b, Breach) for b in d.get("breaches", ())),
    )


def explain_view(reply: msg.Reply) -> ExplainView:
    """An :class:`ExplainView` from the loss process's reply."""
    d = reply.data
    return ExplainView(
        by_desk=_frame(reply, "by_desk"),
        positions=_frame(reply, "positions"),
        components=tuple(d.get("components", ())),
        base_ns=int(d["base_ns"]),
        made_ns=int(d["made_ns"]),
        base_generation=int(d["base_generation"]),
        generation=int(d["generation"]),
        age_s=(int(d["now_ns"]) - int(d["made_ns"])) / 1e9,
    )
