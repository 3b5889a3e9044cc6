"""PnL explain: a position's PnL between two markets against what its Greeks predict.

For each position (USD; docs/var.md, "PnL explain"):

* **actual** = PV at the second market − PV at the first, both by full revaluation, each
  converted at its own market's FX;
* **rates** = Σ key-rate DV01 × the quote's move in bp, plus for swaps ½·gamma·(mean move of
  their currency's rate quotes in bp)²;
* **fx** = for FX products delta·r + ½·gamma·r² with r the pair's spot move in %; plus, for every
  position not in USD, the translation of its first PV at the new FX rate
  (pv_ccy · (fx₁ − fx₀));
* **equity** = delta·r + ½·gamma·r² with r the equity's spot move in %;
* **vol** = vega × the mean move, in vol points, of the underlying's vol quotes (FX and
  equity options);
* **credit** = CS01·Δs + ½·gamma·Δs² (Δs the index spread's move in bp) + corr01 × the
  correlation's move in points (tranches);
* **carry** = theta × calendar days between the two markets' dates;
* **unexplained** = actual − the sum of the above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from workbench._types import FloatArray, IntArray
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.model import MarketSnapshot

COMPONENTS = ("rates", "fx", "equity", "vol", "credit", "carry")
"""The parts of a PnL the Greeks predict, in the order reported."""

_BP = 1e-4


@dataclass(frozen=True)
class Greeks:
    """A book's Greeks at the first market (USD, docs/greeks.md): per position ``pv``,
    ``pv_ccy`` (own currency), ``delta``, ``gamma``, ``vega``, ``theta``; key-rate DV01s in
    long form (``kr_rows``, ``kr_quotes`` index the book and the market's quotes, ``kr_values``
    USD per 1bp)."""

    pv: FloatArray
    pv_ccy: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    kr_rows: IntArray
    kr_quotes: IntArray
    kr_values: FloatArray


def _quote_moves(m0: MarketSnapshot, m1: MarketSnapshot) -> FloatArray:
    if tuple(m0.quote_ids) != tuple(m1.quote_ids):
        raise ValueError("PnL explain: the two markets have different quotes")
    out: FloatArray = np.asarray(m1.quotes, np.float64) - np.asarray(m0.quotes, np.float64)
    return out


def explain_positions(
    book: Book,
    m0: MarketSnapshot,
    m1: MarketSnapshot,
    greeks: Greeks,
    pv1: FloatArray,
    fx0: FloatArray,
    fx1: FloatArray,
) -> pl.DataFrame:
    """Per position: ``actual`` and each of :data:`COMPONENTS` and ``unexplained`` (USD).

    ``pv1``: PVs at ``m1`` in USD; ``fx0``, ``fx1``: each position's USD per unit of its
    currency at either market.
    """
    n = len(book)
    move = _quote_moves(m0, m1)
    at = m0.quote_index
    q0 = np.asarray(m0.quotes, np.float64)
    parts = {c: np.zeros(n) for c in COMPONENTS}
    # rates: key rates, and the swaps' parallel gamma on their currency's mean move
    np.add.at(parts["rates"], greeks.kr_rows, greeks.kr_values * move[greeks.kr_quotes] / _BP)
    by_ccy: dict[str, list[float]] = {}
    for c in m0.curves:
        by_ccy.setdefault(c.currency, []).extend(move[at[i.quote]] for i in c.instruments)
    mean_bp = {c: float(np.mean(m)) / _BP for c, m in by_ccy.items()}
    product = np.array(book.product.values())
    cls = np.array([ASSET_CLASS[p] for p in product])
    under = np.array(book.underlying.values())
    ccy = np.array(book.currency.values())
    swaps = product == "IRS"
    dbp = np.array([mean_bp.get(c, 0.0) for c in ccy[swaps]])
    parts["rates"][swaps] += 0.5 * greeks.gamma[swaps] * dbp**2
    # spots: FX pairs and equities, 1% delta and gamma
    for kind, prefix in (("fx", "FX."), ("equity", "EQ.")):
        rows = np.flatnonzero(cls == kind)
        k = np.array([at[prefix + u] for u in under[rows]], dtype=np.int64)
        r = move[k] / q0[k] * 100.0
        parts[kind][rows] += greeks.delta[rows] * r + 0.5 * greeks.gamma[rows] * r**2
    # vols: the mean move of the underlying's vol quotes, in points
    vol_moves = _vol_moves(m0, move)
    for rows in (np.flatnonzero(product == "FX_OPTION"), np.flatnonzero(product == "EQ_OPTION")):
        pts = np.array([vol_moves[u] for u in under[rows]])
        parts["vol"][rows] += greeks.vega[rows] * pts
    # credit: CS01 and gamma on the index spread, corr01 on its correlation
    index = {ix.id: ix for ix in m0.credit_indices}
    rows = np.flatnonzero(cls == "credit")
    ds = np.array([move[at[index[u].spread_quote]] for u in under[rows]]) / _BP
    dr = np.array([move[at[index[u].correlation_quote]] for u in under[rows]]) / 0.01
    parts["credit"][rows] += greeks.delta[rows] * ds + 0.5 * greeks.gamma[rows] * ds**2
    tranche = product[rows] == "CDX_TRANCHE"
    parts["credit"][rows[tranche]] += greeks.vega[rows[tranche]] * dr[tranche]
    # FX translation of what is not in USD; carry
    parts["fx"] += greeks.pv_ccy * (fx1 - fx0)
    parts["carry"] += greeks.theta * (m1.as_of - m0.as_of).days
    actual = pv1 - greeks.pv
    explained = sum(parts.values())
    return pl.DataFrame(
        {
            "position_id": list(book.position_id),
            "desk": book.desk.values(),
            "actual": actual,
            **parts,
            "unexplained": actual - explained,
        }
    )


def _vol_moves(m0: MarketSnapshot, move: FloatArray) -> dict[str, float]:
    """Per FX pair and equity: the mean move of its vol quotes, in vol points (0.01)."""
    at = m0.quote_index
    out: dict[str, float] = {}
    for surf in m0.fx_vol_surfaces:
        out[surf.pair] = float(np.mean([move[at[q]] for row in surf.quotes for q in row])) / 0.01
    for eq in m0.equities:
        out[eq.id] = float(np.mean([move[at[q]] for row in eq.vol_quotes for q in row])) / 0.01
    return out


def explain_by(frame: pl.DataFrame, by: str = "desk") -> pl.DataFrame:
    """:func:`explain_positions` summed by ``by`` (a column of it), then the firm's total."""
    cols = ["actual", *COMPONENTS, "unexplained"]
    grouped = frame.group_by(by).agg(pl.col(c).sum() for c in cols).sort(by)
    firm = frame.select(pl.lit("Firm").alias(by), *(pl.col(c).sum() for c in cols))
    return pl.concat([grouped, firm])


__all__ = ["COMPONENTS", "Greeks", "explain_by", "explain_positions"]
