"""What-if shocks applied to a copy of a market snapshot (the live one is never touched).

Units: ``bp`` basis points (1e-4 on rate and spread quotes, which are decimals), ``pct`` percent
of spot (a relative move), ``points`` vol or correlation points (0.01 on vol and correlation
quotes, which are decimals).
Patterns are shell-style (``fnmatch``) on the part of the quote id after the prefix, e.g.
``SpotShock(pct=-10, pattern="EUR*")`` moves ``FX.EURUSD``, ``FX.EURGBP``, ….
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

import numpy as np

from workbench.market.model import MarketError, MarketSnapshot
from workbench.market.schedules import tenor_years
from workbench.risk.shocks import (
    AnyShock,
    CorrelationShock,
    ParallelShock,
    QuoteShock,
    SpotShock,
    SpreadShock,
    TwistShock,
    VolShock,
)

CORRELATION_MAX = 0.99
"""Largest correlation a shock or scenario leaves (the copula needs ρ < 1)."""


def _rate_quotes(market: MarketSnapshot, currency: str | None) -> list[tuple[int, float]]:
    """(quote index, tenor in years) of every curve instrument (of ``currency``)."""
    out = []
    for spec in market.curves:
        if currency is not None and spec.currency != currency:
            continue
        for inst in spec.instruments:
            out.append((market.quote_index[inst.quote], tenor_years(inst.tenor)))
    return out


def _matching(market: MarketSnapshot, prefixes: tuple[str, ...], pattern: str) -> list[int]:
    out = []
    for i, qid in enumerate(market.quote_ids):
        for prefix in prefixes:
            if qid.startswith(prefix) and fnmatchcase(qid[len(prefix) :], pattern):
                out.append(i)
                break
    return out


def apply_shocks(market: MarketSnapshot, shocks: Sequence[AnyShock]) -> MarketSnapshot:
    """A new snapshot with every shock applied in order.

    Raises
    ------
    MarketError
        For an unknown currency or quote id, or a shock that matches no quote.
    """
    values = np.array(market.quotes, dtype=np.float64, copy=True)
    currencies = set(market.currencies())
    for shock in shocks:
        if isinstance(shock, ParallelShock | TwistShock):
            if shock.currency is not None and shock.currency not in currencies:
                raise MarketError(f"{type(shock).__name__}: unknown currency {shock.currency!r}")
            nodes = _rate_quotes(market, shock.currency)
            for i, years in nodes:
                if isinstance(shock, ParallelShock):
                    bp = shock.bp
                else:
                    span = max(shock.long_years - shock.short_years, 1e-9)
                    w = min(max((years - shock.short_years) / span, 0.0), 1.0)
                    bp = shock.short_bp + w * (shock.long_bp - shock.short_bp)
                values[i] += bp * 1e-4
        elif isinstance(shock, QuoteShock):
            at = market.quote_index.get(shock.quote_id)
            if at is None:
                raise MarketError(f"QuoteShock: unknown quote id {shock.quote_id!r}")
            if shock.value is not None and shock.bp is None:
                values[at] = shock.value
            elif shock.bp is not None and shock.value is None:
                values[at] += shock.bp * 1e-4
            else:
                raise MarketError(f"QuoteShock {shock.quote_id}: give exactly one of bp, value")
        elif isinstance(shock, CorrelationShock):
            hits = [
                market.quote_index[ix.correlation_quote]
                for ix in market.credit_indices
                if fnmatchcase(ix.id, shock.pattern)
            ]
            if not hits:
                raise MarketError(f"CorrelationShock: pattern {shock.pattern!r} matches no index")
            idx = np.asarray(hits, dtype=np.int64)
            values[idx] = np.clip(values[idx] + shock.points * 0.01, 0.0, CORRELATION_MAX)
        else:
            prefixes: tuple[str, ...] = {
                SpotShock: ("FX.", "EQ."),
                VolShock: ("FXVOL.", "EQVOL."),
                SpreadShock: ("CDX.", "ITRAXX."),
            }[type(shock)]
            asset = getattr(shock, "asset", None)
            if asset is not None:
                prefixes = prefixes[:1] if asset == "fx" else prefixes[1:]
            hits = _matching(market, prefixes, shock.pattern)
            if isinstance(shock, SpreadShock):
                hits = [i for i in hits if not market.quote_ids[i].endswith(".CORR")]
            if not hits:
                raise MarketError(
                    f"{type(shock).__name__}: pattern {shock.pattern!r} matches no quote"
                )
            idx = np.asarray(hits, dtype=np.int64)
            if isinstance(shock, SpotShock):
                values[idx] *= 1.0 + shock.pct / 100.0
            elif isinstance(shock, VolShock):
                values[idx] = np.maximum(values[idx] + shock.points * 0.01, 1e-4)
            else:
                values[idx] = np.maximum(values[idx] + shock.bp * 1e-4, 1e-6)
    return market.with_quote_values(values)
