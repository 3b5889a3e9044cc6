"""Which positions a worker owns and which quotes each of its pricing groups depends on.

A pricing group is the unit of repricing: the swaps on one projection curve, the FX positions
on one pair, the credit positions on one index, the equity options on one underlying. Its quote
dependencies come from the market's static definitions (the dependency map quote → group →
positions), so a tick reprices only the groups that read that quote. Conversion to USD is kept
apart: an FX spot tick re-converts every position of the currencies it touches, which is a
multiplication, not a repricing.

The partition is a pure function of the book and the market definitions, so the supervisor
(which marks a dead worker's rows stale) and the worker compute the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench._types import IntArray
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.model import MarketSnapshot


@dataclass(frozen=True)
class GroupSpec:
    """One pricing group: ``key`` like ``fx:EURUSD``, its book rows and quote indices."""

    asset_class: str
    key: str
    underlying: str
    rows: IntArray
    quotes: IntArray


def _curve_quotes(market: MarketSnapshot, curve_id: str) -> list[str]:
    spec = market.curve(curve_id)
    ids = [i.quote for i in spec.instruments]
    if spec.kind == "term" and spec.discount_curve:
        ids += _curve_quotes(market, spec.discount_curve)
    return ids


def _ccy_quotes(market: MarketSnapshot, currency: str) -> list[str]:
    return _curve_quotes(market, market.discount_curve_id(currency))


def _dependencies(market: MarketSnapshot, asset_class: str, underlying: str) -> list[str]:
    if asset_class == "rates":
        return _curve_quotes(market, underlying)
    if asset_class == "fx":
        pair = next(p for p in market.fx_pairs if p.pair == underlying)
        surface = next(s for s in market.fx_vol_surfaces if s.pair == underlying)
        vols = [q for row in surface.quotes for q in row]
        return [
            pair.spot_quote,
            *vols,
            *_ccy_quotes(market, pair.base_ccy),
            *_ccy_quotes(market, pair.quote_ccy),
        ]
    if asset_class == "credit":
        index = next(c for c in market.credit_indices if c.id == underlying)
        return [index.spread_quote, index.correlation_quote, *_ccy_quotes(market, index.currency)]
    if asset_class == "equity":
        spec = next(e for e in market.equities if e.id == underlying)
        vols = [q for row in spec.vol_quotes for q in row]
        return [spec.spot_quote, *vols, *_ccy_quotes(market, spec.currency)]
    raise ValueError(f"unknown asset class {asset_class!r}")


def pricing_groups(book: Book, market: MarketSnapshot, asset_class: str) -> list[GroupSpec]:
    """Every pricing group of one asset class, sorted by key."""
    products = [p for p in book.product.labels if ASSET_CLASS.get(p) == asset_class]
    codes = [book.product.labels.index(p) for p in products]
    in_class = np.isin(book.product.codes, codes)
    out: list[GroupSpec] = []
    for code in np.unique(book.underlying.codes[in_class]):
        underlying = book.underlying.labels[int(code)]
        rows = np.flatnonzero(in_class & (book.underlying.codes == code)).astype(np.int64)
        deps = dict.fromkeys(_dependencies(market, asset_class, underlying))
        quotes = np.array(sorted(market.quote_index[q] for q in deps), dtype=np.int64)
        out.append(GroupSpec(asset_class, f"{asset_class}:{underlying}", underlying, rows, quotes))
    return sorted(out, key=lambda g: g.key)


def worker_groups(
    book: Book, market: MarketSnapshot, asset_class: str, slot: int, n_slots: int
) -> list[GroupSpec]:
    """The groups of worker ``slot`` of ``n_slots`` (balanced greedily by position count)."""
    groups = pricing_groups(book, market, asset_class)
    load = [0] * n_slots
    owner: list[int] = []
    for g in sorted(groups, key=lambda g: (-g.rows.size, g.key)):
        s = min(range(n_slots), key=lambda i: (load[i], i))
        load[s] += g.rows.size
        owner.append(s)
    ordered = sorted(groups, key=lambda g: (-g.rows.size, g.key))
    return sorted(
        (g for g, s in zip(ordered, owner, strict=True) if s == slot), key=lambda g: g.key
    )


def worker_rows(
    book: Book, market: MarketSnapshot, asset_class: str, slot: int, n_slots: int
) -> IntArray:
    """Book rows owned by worker ``slot`` of ``n_slots`` of ``asset_class``, ascending."""
    groups = worker_groups(book, market, asset_class, slot, n_slots)
    if not groups:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate([g.rows for g in groups]))


def conversion_quotes(market: MarketSnapshot) -> IntArray:
    """Indices of the FX spot quotes that USD conversion reads."""
    return np.array(sorted(market.quote_index[p.spot_quote] for p in market.fx_pairs), np.int64)
