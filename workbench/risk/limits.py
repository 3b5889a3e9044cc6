"""Limit monitoring: a state machine fed risk frames, returning usage, breaches and events.

No I/O and no clock: the caller passes ``now_ns`` (``time.monotonic_ns``) with each frame. A
limit is on the absolute value of a net measure of :mod:`risk.aggregation` (USD), for the
whole firm or one desk. A breach starts when the value goes over the limit; it keeps its
``since_ns`` while it lasts and clears when the value is back at or below
``limit * (1 - hysteresis)``.

A limit on a loss measure (:data:`LOSS_MEASURES`: VaR and ES, USD, a loss) is kept by the
monitor of the process that computes it (the service's loss process, docs/var.md "Live"): a
monitor evaluates the limits of its own ``measures`` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
import polars as pl

from workbench.risk.aggregation import MEASURES, rollups
from workbench.risk.breaches import Breach
from workbench.risk.loss import ES_LEVEL, LEVELS


class LimitConfig(msgspec.Struct, frozen=True, kw_only=True):
    """An absolute limit on a measure (USD) for the firm (``desk`` None) or one desk."""

    measure: str
    limit: float
    desk: str | None = None


LOSS_MEASURES: tuple[str, ...] = (
    *(f"var_{lv * 100:g}" for lv in LEVELS),
    f"es_{ES_LEVEL * 100:g}",
)
"""Historical VaR and ES at the reported levels (``var_99``, ``var_97.5``, ``es_97.5``; USD,
a loss): the columns of :func:`workbench.risk.loss.measures` a limit may be on."""

FIRM = "firm"
"""The scope of a firm-wide limit; a desk's is ``desk:<name>``."""

USAGE_SCHEMA: dict[str, pl.DataType] = {
    "scope": pl.String(),
    "measure": pl.String(),
    "value": pl.Float64(),
    "limit": pl.Float64(),
    "utilisation": pl.Float64(),
    "breached": pl.Boolean(),
}


def scope_of(limit: LimitConfig) -> str:
    """``"firm"`` or ``"desk:<name>"``."""
    return FIRM if limit.desk is None else f"desk:{limit.desk}"


@dataclass(frozen=True)
class LimitReport:
    """The result of one evaluation.

    Attributes
    ----------
    usage
        One row per configured limit, in configuration order: ``scope``, ``measure``,
        ``value`` (|net measure|, USD), ``limit`` (USD), ``utilisation`` (value / limit, 1.0 =
        at the limit) and ``breached``.
    breaches
        Every breach in force, in configuration order; ``since_ns`` is when it started.
    new
        Breaches that started at this evaluation.
    cleared
        Breaches that ended at this evaluation: ``value`` is the value now, ``since_ns`` when
        the breach had started.
    """

    usage: pl.DataFrame
    breaches: tuple[Breach, ...]
    new: tuple[Breach, ...]
    cleared: tuple[Breach, ...]


class LimitMonitor:
    """Evaluates configured limits against successive risk frames and tracks breaches.

    Parameters
    ----------
    limits
        The limits; each ``measure`` one of :data:`risk.aggregation.MEASURES`, ``limit`` a
        positive finite amount in USD, at most one limit per (scope, measure).
    desks
        The book's desks. When given, a limit on any other desk is refused here; otherwise it is
        refused at the first :meth:`evaluate` whose frame does not have that desk.
    hysteresis
        Fraction of the limit a breached value must fall below to clear (0 = at the limit).
    measures
        The measures this monitor evaluates (the risk roll-ups' by default,
        :data:`LOSS_MEASURES` for the loss process's); a limit on another known measure is
        left to the other monitor.

    Raises
    ------
    ValueError
        An unknown measure or desk, a non-positive or non-finite limit, a repeated limit.
    """

    def __init__(
        self,
        limits: Sequence[LimitConfig],
        *,
        desks: Iterable[str] | None = None,
        hysteresis: float = 0.0,
        measures: Sequence[str] = MEASURES,
    ) -> None:
        if not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"hysteresis {hysteresis!r}: expected a fraction in [0, 1)")
        known = None if desks is None else set(desks)
        seen: set[tuple[str, str]] = set()
        for lim in limits:
            if lim.measure not in MEASURES and lim.measure not in LOSS_MEASURES:
                raise ValueError(
                    f"limit on unknown measure {lim.measure!r} (expected one of "
                    f"{(*MEASURES, *LOSS_MEASURES)})"
                )
            if known is not None and lim.desk is not None and lim.desk not in known:
                raise ValueError(f"limit on unknown desk {lim.desk!r}")
            if not (math.isfinite(lim.limit) and lim.limit > 0.0):
                raise ValueError(
                    f"{scope_of(lim)} {lim.measure}: limit {lim.limit!r} must be positive, finite"
                )
            key = (scope_of(lim), lim.measure)
            if key in seen:
                raise ValueError(f"{key[0]} {key[1]}: more than one limit")
            seen.add(key)
        self.limits: tuple[LimitConfig, ...] = tuple(x for x in limits if x.measure in measures)
        self.hysteresis = hysteresis
        self._desks_checked = known is not None
        self._since: dict[tuple[str, str], int] = {}

    @property
    def active(self) -> dict[tuple[str, str], int]:
        """``(scope, measure) → since_ns`` of every breach in force."""
        return dict(self._since)

    def _values(self, firm: pl.DataFrame, desk: pl.DataFrame) -> list[float]:
        """|net| of each limit's measure over its scope, in USD, from the firm-wide and per-desk
        roll-ups."""
        if not self.limits:
            return []
        measures = sorted({lim.measure for lim in self.limits})
        for table in (firm, desk):
            missing = [m for m in measures if m not in table.columns]
            if missing:
                raise ValueError(f"roll-up: missing column {missing[0]!r} (use rollups)")
        totals = firm.row(0, named=True) if firm.height else {}
        desk_names = {lim.desk for lim in self.limits if lim.desk is not None}
        per_desk: dict[str, dict[str, float]] = {}
        if desk_names:
            if "desk" not in desk.columns:
                raise ValueError("roll-up: missing column 'desk' (use rollups)")
            names = desk["desk"].cast(pl.String).to_list()
            present = set(names)
            if isinstance(desk.schema["desk"], pl.Enum):
                present |= set(desk.schema["desk"].categories.to_list())
            unknown = sorted(desk_names - present)
            if unknown and not self._desks_checked:
                raise ValueError(f"limit on unknown desk {unknown[0]!r}")
            self._desks_checked = True
            per_desk = dict(zip(names, desk.select(measures).iter_rows(named=True), strict=True))
        out: list[float] = []
        for lim in self.limits:
            if lim.desk is None:
                out.append(abs(float(totals.get(lim.measure, 0.0))))
            else:
                out.append(abs(float(per_desk.get(lim.desk, {}).get(lim.measure, 0.0))))
        return out

    def evaluate(self, frame: pl.DataFrame, now_ns: int) -> LimitReport:
        """Usage of every limit on ``frame`` (a risk frame) at ``now_ns``, and breach events.

        Parameters
        ----------
        frame
            :func:`risk.aggregation.risk_frame` of the live risk.
        now_ns
            ``time.monotonic_ns()`` of this evaluation; a new breach's ``since_ns``.
        """
        if "desk" not in frame.columns:
            raise ValueError("frame: missing column 'desk' (use risk_frame)")
        firm, desk = rollups(frame, [(), ("desk",)])
        return self.evaluate_rollups(firm, desk, now_ns)

    def evaluate_rollups(self, firm: pl.DataFrame, desk: pl.DataFrame, now_ns: int) -> LimitReport:
        """:meth:`evaluate` from the firm-wide and per-desk roll-ups of the risk (as
        :func:`risk.aggregation.rollups` makes them), which the aggregator has anyway."""
        values = self._values(firm, desk)
        breaches: list[Breach] = []
        new: list[Breach] = []
        cleared: list[Breach] = []
        flags: list[bool] = []
        for lim, value in zip(self.limits, values, strict=True):
            key = (scope_of(lim), lim.measure)
            since = self._since.get(key)
            threshold = lim.limit if since is None else lim.limit * (1.0 - self.hysteresis)
            on = value > threshold
            flags.append(on)
            if on:
                start = now_ns if since is None else since
                breach = Breach(
                    scope=key[0], measure=lim.measure, value=value, limit=lim.limit, since_ns=start
                )
                breaches.append(breach)
                if since is None:
                    self._since[key] = now_ns
                    new.append(breach)
            elif since is not None:
                del self._since[key]
                cleared.append(
                    Breach(
                        scope=key[0],
                        measure=lim.measure,
                        value=value,
                        limit=lim.limit,
                        since_ns=since,
                    )
                )
        usage = pl.DataFrame(
            {
                "scope": [scope_of(lim) for lim in self.limits],
                "measure": [lim.measure for lim in self.limits],
                "value": values,
                "limit": [lim.limit for lim in self.limits],
                "utilisation": [v / lim.limit for v, lim in zip(values, self.limits, strict=True)],
                "breached": flags,
            },
            schema=USAGE_SCHEMA,
        )
        return LimitReport(usage, tuple(breaches), tuple(new), tuple(cleared))
