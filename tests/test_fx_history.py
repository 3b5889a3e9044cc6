"""An FX option's price depends on the quotes only, never on the quotes that came before.

Where a smile is steep, σ = s(Φ(d1(σ))) has several solutions for a far strike (at T = 4.24,
F = 137.79, K = 179.05 on USDJPY after the vol move below: 0.048, 0.107 and 0.165). A solve
that started from the previous tick's answer stayed on the branch it was on, while a cold one
(the batch pricer, the end-of-day report, a restarted worker) took another: PVs of −845,159 and
−154,402 USD for one option on the same quotes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.engine.processes.repricing import Repricer
from workbench.market.reference import generate_reference_market

MOVES = Path(__file__).parent / "data" / "fx_vol_moves.json"
"""USDJPY and EURCHF vol quotes after a minute of the synthetic feed (quote id → value)."""


def test_an_incremental_reprice_equals_a_cold_one_on_the_same_quotes(tmp_path: Path) -> None:
    market = generate_reference_market()
    frame = generate_reference_book(market, positions=40_000, seed=1).filter(
        pl.col("product").str.starts_with("FX") & pl.col("underlying").is_in(["USDJPY", "EURCHF"])
    )
    frame.write_parquet(tmp_path / "book.parquet")
    book = load_book(tmp_path / "book.parquet", market=market)
    moves: dict[str, float] = json.loads(MOVES.read_text())
    ids = list(market.quote_ids)
    values = np.asarray(market.quotes, dtype=np.float64).copy()
    changed = np.array([ids.index(q) for q in moves], dtype=np.int64)
    values[changed] = list(moves.values())
    live = Repricer(book, market, "fx")
    live.full(market)  # priced on the start-of-day quotes first, as a worker is
    live.update(values, changed)
    moved = market.with_quote_values(values)
    cold = Repricer(book, moved, "fx")
    cold.full(moved)
    for col in ("pv_ccy", "delta", "gamma", "vega", "theta"):
        np.testing.assert_allclose(live.local[col], cold.local[col], rtol=1e-9, atol=1e-6)
