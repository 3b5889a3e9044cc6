"""FX conversion rates to the base currency, read from the snapshot's FX spot quotes."""

from __future__ import annotations

from collections import deque

from workbench.market.model import MarketSnapshot


def base_per_unit(market: MarketSnapshot) -> dict[str, float]:
    """Units of the base currency per one unit of each reachable currency.

    Walks the graph of FX pairs from the base currency, so a currency needs only one path of
    pairs to the base (EURUSD, USDJPY, …).

    Examples
    --------
    With EURUSD = 1.08 and USDJPY = 150, ``{"USD": 1.0, "EUR": 1.08, "JPY": 1/150}``.
    """
    edges: dict[str, list[tuple[str, float]]] = {}
    for pair in market.fx_pairs:
        spot = market.quote(pair.spot_quote)
        # one base_ccy buys `spot` quote_ccy
        edges.setdefault(pair.quote_ccy, []).append((pair.base_ccy, spot))
        edges.setdefault(pair.base_ccy, []).append((pair.quote_ccy, 1.0 / spot))
    rates = {market.base_currency: 1.0}
    todo = deque([market.base_currency])
    while todo:
        ccy = todo.popleft()
        for other, other_in_ccy in edges.get(ccy, []):
            if other not in rates:
                rates[other] = rates[ccy] * other_in_ccy
                todo.append(other)
    return rates


__all__ = ["base_per_unit"]
