"""What a worker tells of the market it prices: its quotes, the curves' pillars, and curve
rates on a grid, base and shocked — so that a client draws curves without pricing code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from workbench.engine.protocol.messages import frame_to_bytes
from workbench.market.model import MarketSnapshot
from workbench.market.schedules import tenor_years
from workbench.pricing.curves import CurveSet
from workbench.risk.shocks import AnyShock
from workbench.risk.whatif import apply_shocks

DEFAULT_YEARS = tuple(float(t) for t in np.linspace(0.25, 30.0, 120))
"""The grid of the curve rates when a request gives none (years from the as-of date)."""

FORWARD_YEARS = 0.25
"""The forward rates' period: 3M simple forwards on ACT/365F curve time."""


def pillar_frame(market: MarketSnapshot) -> pl.DataFrame:
    """One row per curve instrument: ``curve``, ``currency``, ``kind`` (ois or term),
    ``tenor``, ``years`` (the tenor in years) and ``quote_id``, in the market's order."""
    rows = [
        (spec.id, spec.currency, spec.kind, inst.tenor, tenor_years(inst.tenor), inst.quote)
        for spec in market.curves
        for inst in spec.instruments
    ]
    schema = {"curve": pl.String, "currency": pl.String, "kind": pl.String,
              "tenor": pl.String, "years": pl.Float64, "quote_id": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


def curve_rates(
    market: MarketSnapshot,
    curves: Sequence[str],
    shocks: Sequence[AnyShock],
    years: Sequence[float],
) -> pl.DataFrame:
    """Per curve and point: ``zero_pct`` and ``fwd3m_pct`` (continuously compounded zero and
    3M simple forward, %) on ``market`` and, ``*_shocked_pct``, on it with ``shocks``."""
    t = np.asarray(years or DEFAULT_YEARS, dtype=np.float64)
    base = CurveSet(market)
    shocked = CurveSet(apply_shocks(market, shocks)) if shocks else base
    accrual = np.full(t.size, FORWARD_YEARS)
    parts = []
    for cid in curves:
        b, s = base[cid], shocked[cid]
        parts.append(
            pl.DataFrame(
                {
                    "curve": [cid] * t.size,
                    "years": t,
                    "zero_pct": b.zero_rate(t) * 100.0,
                    "zero_shocked_pct": s.zero_rate(t) * 100.0,
                    "fwd3m_pct": b.forward(t, t + FORWARD_YEARS, accrual) * 100.0,
                    "fwd3m_shocked_pct": s.forward(t, t + FORWARD_YEARS, accrual) * 100.0,
                }
            )
        )
    return pl.concat(parts) if parts else pl.DataFrame()


def market_view(
    market: MarketSnapshot,
    curves: Sequence[str],
    shocks: Sequence[AnyShock],
    years: Sequence[float],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The tables (Arrow IPC) and facts of a market reply: ``quotes`` (``quote_id``,
    ``value``), ``pillars`` (:func:`pillar_frame`) and, when ``curves`` are asked,
    ``curves`` (:func:`curve_rates`); ``as_of`` (ISO date)."""
    known = {s.id for s in market.curves}
    unknown = [c for c in curves if c not in known]
    if unknown:
        raise ValueError(f"unknown curve {unknown[0]!r} (known: {', '.join(sorted(known))})")
    quotes = pl.DataFrame({"quote_id": list(market.quote_ids), "value": market.quotes})
    tables = {"quotes": frame_to_bytes(quotes), "pillars": frame_to_bytes(pillar_frame(market))}
    if curves:
        tables["curves"] = frame_to_bytes(curve_rates(market, curves, shocks, years))
    return tables, {"as_of": market.as_of.isoformat()}
