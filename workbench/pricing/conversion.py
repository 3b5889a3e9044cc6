"""Currency conversion at the snapshot's FX spots.

Greeks are reported in the base currency (USD); conversion uses today's spot quotes (the rates
of :func:`workbench.market.crosses.base_per_unit`), the same quotes for both legs of a theta
roll, so theta carries no FX move.
"""

from __future__ import annotations

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.market.crosses import base_per_unit
from workbench.market.model import MarketError, MarketSnapshot


def base_rate_column(
    market: MarketSnapshot, codes: IntArray, labels: tuple[str, ...]
) -> FloatArray:
    """Base currency per unit of each row's currency, as a float64 column.

    Raises
    ------
    MarketError
        If a currency has no path of FX pairs to the base currency.
    """
    rates = base_per_unit(market)
    missing = [c for c in labels if c not in rates]
    if missing:
        raise MarketError(
            f"no FX pair connects {', '.join(missing)} to the base currency {market.base_currency}"
        )
    by_code = np.array([rates[c] for c in labels], dtype=np.float64)
    return by_code[codes]


__all__ = ["base_per_unit", "base_rate_column"]
