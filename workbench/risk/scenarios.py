"""Scenarios as data: an (n_scenarios × n_quotes) table of quote moves applied to today's market.

Historical scenarios are the 1-day changes of a market history over a window
(:func:`historical_scenarios`), applied to today's quotes per class: absolute for rates and
correlations, relative (log) for spots, vols and spreads by default (:data:`DEFAULT_KINDS`,
configurable). Stress scenarios are named lists of what-if shocks and per-quote moves, read
from JSON (:func:`load_stresses`; the library :data:`STRESS_LIBRARY` ships with the package);
each becomes the absolute change it makes to today's market.

Applied values are kept usable: vols ≥ 1e-4, spreads ≥ 1e-6, correlations in [0, 0.99].
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import polars as pl

from workbench._types import FloatArray
from workbench.market.history import MarketHistory
from workbench.market.model import MarketError, MarketSnapshot
from workbench.risk.shocks import AnyShock
from workbench.risk.whatif import CORRELATION_MAX, apply_shocks

Kind = Literal["absolute", "relative"]
QuoteClass = Literal["rates", "fx", "equity", "fx_vol", "equity_vol", "spread", "correlation"]

DEFAULT_KINDS: Mapping[QuoteClass, Kind] = {
    "rates": "absolute",
    "correlation": "absolute",
    "fx": "relative",
    "equity": "relative",
    "fx_vol": "relative",
    "equity_vol": "relative",
    "spread": "relative",
}
"""How a historical change applies to today's quote, per class: ``absolute`` today + (v_t −
v_{t−1}); ``relative`` today · v_t / v_{t−1}."""

DEFAULT_WINDOW = 500
"""Historical scenarios: the number of 1-day changes (the latest ones of the history)."""

STRESS_LIBRARY = Path(__file__).with_name("stresses.json")
"""The named stresses that ship with the workbench (docs/scenarios.md)."""

_FLOOR = {"fx_vol": 1e-4, "equity_vol": 1e-4, "spread": 1e-6}


def quote_classes(market: MarketSnapshot) -> list[QuoteClass]:
    """The class of each of ``market``'s quotes, in its order."""
    out: list[QuoteClass] = ["rates"] * len(market.quote_ids)
    at = market.quote_index
    for pair in market.fx_pairs:
        out[at[pair.spot_quote]] = "fx"
    for surf in market.fx_vol_surfaces:
        for row in surf.quotes:
            for q in row:
                out[at[q]] = "fx_vol"
    for eq in market.equities:
        out[at[eq.spot_quote]] = "equity"
        for row in eq.vol_quotes:
            for q in row:
                out[at[q]] = "equity_vol"
    for ix in market.credit_indices:
        out[at[ix.spread_quote]] = "spread"
        out[at[ix.correlation_quote]] = "correlation"
    return out


@dataclass(frozen=True)
class Scenarios:
    """Named moves of every quote of a market.

    ``names``: one per scenario (a history's day, ISO, or a stress's name); ``quote_ids``: the
    market's quotes in its order; ``shifts`` (scenarios × quotes): the move of each quote, in
    its units (absolute) or as a log ratio (relative); ``relative``: per quote, whether its
    move is relative; ``descriptions``: a line per scenario (stresses).
    """

    names: tuple[str, ...]
    quote_ids: tuple[str, ...]
    shifts: FloatArray
    relative: np.ndarray
    descriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.shifts.shape != (len(self.names), len(self.quote_ids)):
            raise ValueError(
                f"shifts are {self.shifts.shape}, expected "
                f"({len(self.names)}, {len(self.quote_ids)}) scenarios × quotes"
            )

    def __len__(self) -> int:
        return len(self.names)

    def values(self, market: MarketSnapshot) -> FloatArray:
        """Every scenario's quote values (scenarios × quotes) on ``market``'s quotes."""
        if tuple(market.quote_ids) != self.quote_ids:
            raise MarketError("scenarios: made for a market with other quotes")
        today = np.asarray(market.quotes, dtype=np.float64)
        out = np.where(
            self.relative, today * np.exp(self.shifts), today + self.shifts
        )  # fmt: skip
        classes = np.array(quote_classes(market))
        for cls, floor in _FLOOR.items():
            hit = classes == cls
            out[:, hit] = np.maximum(out[:, hit], floor)
        corr = classes == "correlation"
        out[:, corr] = np.clip(out[:, corr], 0.0, CORRELATION_MAX)
        result: FloatArray = out
        return result

    def frame(self) -> pl.DataFrame:
        """The shifts, long format: ``scenario``, ``quote_id``, ``shift``, ``relative``."""
        n_s, n_q = self.shifts.shape
        return pl.DataFrame(
            {
                "scenario": np.repeat(np.array(self.names, dtype=object), n_q),
                "quote_id": np.tile(np.array(self.quote_ids, dtype=object), n_s),
                "shift": self.shifts.ravel(),
                "relative": np.tile(self.relative, n_s),
            },
            schema={
                "scenario": pl.String,
                "quote_id": pl.String,
                "shift": pl.Float64,
                "relative": pl.Boolean,
            },
        )


def historical_scenarios(
    history: MarketHistory,
    market: MarketSnapshot,
    *,
    window: int = DEFAULT_WINDOW,
    kinds: Mapping[QuoteClass, Kind] | None = None,
) -> Scenarios:
    """The latest ``window`` 1-day changes of ``history`` as scenarios on ``market`` (each named
    by the day the change ends on).

    Raises
    ------
    MarketError
        If the history holds fewer than ``window`` + 1 days, was made for other quotes, or a
        relative change meets a value ≤ 0.
    """
    if tuple(history.quote_ids) != tuple(market.quote_ids):
        raise MarketError("historical scenarios: the history is of a market with other quotes")
    n_days = history.values.shape[0]
    if window < 1 or n_days < window + 1:
        raise MarketError(
            f"historical scenarios: a window of {window} changes needs {window + 1} days; "
            f"the history has {n_days}"
        )
    wanted = {**DEFAULT_KINDS, **(kinds or {})}
    unknown = set(wanted) - set(DEFAULT_KINDS)
    if unknown:
        raise MarketError(f"historical scenarios: unknown quote class {sorted(unknown)[0]!r}")
    relative = np.array([wanted[c] == "relative" for c in quote_classes(market)])
    v = history.values[-(window + 1) :]
    if np.any(v[:, relative] <= 0.0):
        t, k = np.argwhere(v[:, relative] <= 0.0)[0]
        q = np.array(market.quote_ids)[relative][k]
        day = history.dates[n_days - window - 1 + t]
        raise MarketError(f"historical scenarios: {q} is {v[t, relative][k]} on {day}: a "
                          "relative change needs values > 0")  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        shifts = np.where(relative, np.log(v[1:] / v[:-1]), v[1:] - v[:-1])
    names = tuple(str(d) for d in history.dates[-window:])
    return Scenarios(names, tuple(market.quote_ids), shifts, relative)


class _Stress(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str = ""
    shocks: list[AnyShock] = []
    quotes: dict[str, dict[str, float]] = {}


class _StressFile(msgspec.Struct, forbid_unknown_fields=True):
    scenarios: list[_Stress]


_MOVES = {"bp": 1e-4, "pct": None, "points": 1e-2, "value": None}


def _quote_move(today: float, move: Mapping[str, float], where: str) -> float:
    if len(move) != 1 or next(iter(move)) not in _MOVES:
        raise MarketError(f"{where}: give exactly one of {', '.join(_MOVES)}, got {dict(move)}")
    kind, x = next(iter(move.items()))
    if kind == "value":
        return x
    if kind == "pct":
        return today * (1.0 + x / 100.0)
    return today + x * float(_MOVES[kind] or 0.0)


def stress_scenarios(
    market: MarketSnapshot, path: str | Path = STRESS_LIBRARY
) -> Scenarios:  # fmt: skip
    """The named stresses of JSON file ``path`` (docs/scenarios.md) on ``market``: each the
    absolute change its shocks, then its per-quote moves, make to today's quotes.

    Raises
    ------
    MarketError
        Naming the file, the scenario and what is wrong: bad JSON, an unknown field or shock
        kind, a quote the market does not have, a shock that matches nothing, a name twice.
    """
    p = Path(path)
    try:
        spec = msgspec.json.decode(p.read_bytes(), type=_StressFile)
    except OSError as exc:
        raise MarketError(f"{p}: cannot read ({exc.strerror})") from None
    except msgspec.ValidationError as exc:
        raise MarketError(f"{p}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MarketError(f"{p}: not JSON ({exc})") from None
    today = np.asarray(market.quotes, dtype=np.float64)
    rows, names, notes = [], [], []
    for i, s in enumerate(spec.scenarios):
        where = f"{p}: scenarios[{i}] ({s.name!r})"
        if s.name in names:
            raise MarketError(f"{where}: the name is given twice")
        try:
            shocked = apply_shocks(market, s.shocks) if s.shocks else market
        except MarketError as exc:
            raise MarketError(f"{where}: {exc}") from None
        values = np.asarray(shocked.quotes, dtype=np.float64).copy()
        for q, move in s.quotes.items():
            k = market.quote_index.get(q)
            if k is None:
                raise MarketError(f"{where}: quotes.{q}: not a quote of the market")
            values[k] = _quote_move(values[k], move, f"{where}: quotes.{q}")
        rows.append(values - today)
        names.append(s.name)
        notes.append(s.description)
    shifts = np.array(rows).reshape(len(rows), len(today))
    return Scenarios(tuple(names), tuple(market.quote_ids), shifts,
                     np.zeros(len(today), dtype=bool), tuple(notes))  # fmt: skip


def stress_library() -> list[dict[str, Any]]:
    """The shipped stresses as plain data (name, description, shocks, quotes)."""
    out: list[dict[str, Any]] = json.loads(STRESS_LIBRARY.read_text())["scenarios"]
    return out


__all__ = [
    "DEFAULT_KINDS",
    "DEFAULT_WINDOW",
    "STRESS_LIBRARY",
    "Scenarios",
    "historical_scenarios",
    "quote_classes",
    "stress_library",
    "stress_scenarios",
]
