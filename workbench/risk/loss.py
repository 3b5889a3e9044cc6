"""Loss measures from scenario PnL: value at risk, expected shortfall and their allocation.

Conventions (docs/var.md): a loss is −PnL (USD). Of N equally weighted scenarios, the tail at
level α is the k = ⌈N(1 − α)⌉ worst losses (ties broken by scenario order); **VaR** is the
k-th worst loss, **ES** the mean of the k worst (FRTB's 97.5% ES: with N = 500, the 13 worst).
So ES ≥ VaR always. **Component ES** of a group is the mean of its losses over the firm's k
worst scenarios: the components sum to the firm's ES (Euler allocation for historical ES).
**Incremental VaR** of a group is the firm's VaR less the VaR of the firm without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from workbench._types import FloatArray, IntArray

LEVELS = (0.99, 0.975)
"""VaR levels reported by default; ES is reported at :data:`ES_LEVEL`."""
ES_LEVEL = 0.975


def tail_size(n_scenarios: int, level: float) -> int:
    """k = ⌈N(1 − level)⌉, at least 1: how many worst scenarios form the tail."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a VaR level is in (0, 1), got {level}")
    if n_scenarios < 1:
        raise ValueError("no scenarios")
    return max(1, math.ceil(round(n_scenarios * (1.0 - level), 9)))


def tail(pnl: FloatArray, level: float) -> IntArray:
    """The scenarios of the tail of ``pnl`` (one PnL per scenario), worst first."""
    k = tail_size(pnl.size, level)
    order: IntArray = np.argsort(pnl, kind="stable")[:k]  # most negative PnL first
    return order


def var(pnl: FloatArray, level: float) -> float:
    """VaR at ``level`` of one PnL vector (USD, a loss: positive when the tail loses)."""
    return float(-pnl[tail(pnl, level)[-1]])


def expected_shortfall(pnl: FloatArray, level: float) -> float:
    """ES at ``level`` of one PnL vector (USD, a loss)."""
    return float(-pnl[tail(pnl, level)].mean())


def group_pnl(pnl: FloatArray, codes: IntArray, n_groups: int) -> FloatArray:
    """Per-scenario PnL of each group (scenarios × groups) from per-position PnL (scenarios ×
    positions) and each position's group code."""
    out = np.zeros((pnl.shape[0], n_groups))
    for g in range(n_groups):
        hit = codes == g
        if hit.any():
            out[:, g] = pnl[:, hit].sum(axis=1)
    return out


def measures(
    pnl_by_group: FloatArray,
    groups: Sequence[str],
    *,
    levels: Sequence[float] = LEVELS,
    es_level: float = ES_LEVEL,
) -> pl.DataFrame:
    """VaR at each of ``levels`` and ES at ``es_level`` of every group and of the firm (the
    groups' sum), with each group's component ES and incremental VaR at the first level.

    Columns: ``group`` (the firm as ``"Firm"``), ``var_<level%>``…, ``es_<level%>``,
    ``component_es`` (sums to the firm's ES over the groups), ``incremental_var`` (USD).
    """
    firm = pnl_by_group.sum(axis=1)
    worst = tail(firm, es_level)
    first = levels[0]
    rows = []
    for g, name in enumerate(groups):
        col = pnl_by_group[:, g]
        rest = firm - col
        row: dict[str, str | float] = {"group": name}
        row.update({_var_name(lv): var(col, lv) for lv in levels})
        row[_es_name(es_level)] = expected_shortfall(col, es_level)
        row["component_es"] = float(-col[worst].mean())
        row["incremental_var"] = var(firm, first) - var(rest, first)
        rows.append(row)
    total: dict[str, str | float] = {"group": "Firm"}
    total.update({_var_name(lv): var(firm, lv) for lv in levels})
    total[_es_name(es_level)] = expected_shortfall(firm, es_level)
    total["component_es"] = float(-firm[worst].mean())
    total["incremental_var"] = var(firm, first)
    return pl.DataFrame([*rows, total])


def worst_scenarios(pnl: FloatArray, names: Sequence[str], n: int = 10) -> pl.DataFrame:
    """The ``n`` worst scenarios of one PnL vector: ``rank``, ``scenario``, ``pnl`` (USD)."""
    order = np.argsort(pnl, kind="stable")[:n]
    return pl.DataFrame(
        {
            "rank": np.arange(1, order.size + 1),
            "scenario": [names[i] for i in order],
            "pnl": pnl[order],
        }
    )


def _var_name(level: float) -> str:
    return f"var_{level * 100:g}"


def _es_name(level: float) -> str:
    return f"es_{level * 100:g}"


__all__ = [
    "ES_LEVEL",
    "LEVELS",
    "expected_shortfall",
    "group_pnl",
    "measures",
    "tail",
    "tail_size",
    "var",
    "worst_scenarios",
]
