"""PnL explain: a position's PnL between two markets against what its Greeks predict.

For each position (USD; docs/var.md, "PnL explain"):

* **actual** = PV at the second market − PV at the first, both by full revaluation, each
  converted at its own market's FX;
* **rates** = Σ key-rate DV01 × the quote's move in bp, plus for swaps ½·gamma·(mean move of
  their currency's rate quotes in bp)²; the key rates are to be the exact first derivative
  (``key_rates="jacobian"``, CDX indices and tranches included): this is a Taylor expansion,
  and the ±1bp bumped ones leave a first-order residual (docs/greeks.md);
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

import copy
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

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


class GreekMap:
    """What a book's Greeks at ``m0`` predict for moves of its quotes, per position and
    component (:data:`COMPONENTS`, USD; the rules of the module docstring), for many moves at
    once: the quote-independent parts (which quote moves which position, the key-rate matrix,
    the averaging of curve and vol quotes) are laid out once."""

    def __init__(self, book: Book, m0: MarketSnapshot, greeks: Greeks) -> None:
        n, n_q = len(book), len(m0.quote_ids)
        at = m0.quote_index
        self._quote_ids = m0.quote_ids
        self._set(m0, greeks, n)
        product = np.array(book.product.values())
        cls = np.array([ASSET_CLASS[p] for p in product])
        under = np.array(book.underlying.values())
        # swaps' gamma on the mean move (bp) of their currency's curve quotes
        by_ccy: dict[str, list[int]] = {}
        for c in m0.curves:
            by_ccy.setdefault(c.currency, []).extend(at[i.quote] for i in c.instruments)
        self._swaps = np.flatnonzero(product == "IRS")
        ccy = np.array(book.currency.values())[self._swaps]
        self._swap_mean = _mean_rows([by_ccy.get(c, []) for c in ccy], n_q, _BP)
        # 1% spot delta and gamma of FX products and equities
        self._spot_rows: dict[str, tuple[IntArray, IntArray]] = {}
        for kind, prefix in (("fx", "FX."), ("equity", "EQ.")):
            rows = np.flatnonzero(cls == kind)
            k = np.array([at[prefix + u] for u in under[rows]], dtype=np.int64)
            self._spot_rows[kind] = (rows, k)
        # vega × the mean move (points) of the underlying's vol quotes
        vol_quotes = {s.pair: [at[q] for r in s.quotes for q in r] for s in m0.fx_vol_surfaces}
        vol_quotes.update({e.id: [at[q] for r in e.vol_quotes for q in r] for e in m0.equities})
        self._options = np.flatnonzero((product == "FX_OPTION") | (product == "EQ_OPTION"))
        self._vol_mean = _mean_rows([vol_quotes[u] for u in under[self._options]], n_q, 0.01)
        # CS01 and gamma on the index spread (bp), corr01 on its correlation (points)
        index = {ix.id: ix for ix in m0.credit_indices}
        self._credit = np.flatnonzero(cls == "credit")
        on = under[self._credit]
        self._spread_q = np.array([at[index[u].spread_quote] for u in on], dtype=np.int64)
        self._corr_q = np.array([at[index[u].correlation_quote] for u in on], dtype=np.int64)
        self._tranche = product[self._credit] == "CDX_TRANCHE"

    def _set(self, m0: MarketSnapshot, greeks: Greeks, n: int) -> None:
        """The parts that depend on the quotes and the Greeks."""
        self.greeks = greeks
        self._q0 = np.asarray(m0.quotes, np.float64)
        self._kr = sp.csr_matrix(
            (greeks.kr_values / _BP, (greeks.kr_rows, greeks.kr_quotes)),
            shape=(n, len(m0.quote_ids)),
        )

    def at(self, m0: MarketSnapshot, greeks: Greeks) -> GreekMap:
        """The map of the same book's ``greeks`` at ``m0``, a market with the same quotes as
        this map's (other values): the quote-independent layout shared, not made again.

        Raises
        ------
        ValueError
            If ``m0`` has other quotes than this map's market.
        """
        if m0.quote_ids != self._quote_ids:
            raise ValueError("GreekMap.at: a market with other quotes than the map's")
        out = copy.copy(self)
        out._set(m0, greeks, greeks.pv.size)
        return out

    def parts(self, moves: FloatArray, fx_change: FloatArray, days: float) -> dict[str, FloatArray]:
        """Each component (S × positions, USD) for quote moves ``moves`` (S × quotes), each
        position's change of USD per unit of its currency ``fx_change`` (S × positions) and
        ``days`` calendar days of carry."""
        g = self.greeks
        n_s, n = moves.shape[0], g.pv.size
        parts = {c: np.zeros((n_s, n)) for c in COMPONENTS}
        parts["rates"] += np.asarray(self._kr @ moves.T).T
        dbp = np.asarray(self._swap_mean @ moves.T).T
        parts["rates"][:, self._swaps] += 0.5 * g.gamma[self._swaps] * dbp**2
        for kind, (rows, k) in self._spot_rows.items():
            r = moves[:, k] / self._q0[k] * 100.0
            parts[kind][:, rows] += g.delta[rows] * r + 0.5 * g.gamma[rows] * r**2
        pts = np.asarray(self._vol_mean @ moves.T).T
        parts["vol"][:, self._options] += g.vega[self._options] * pts
        rows = self._credit
        ds = moves[:, self._spread_q] / _BP
        dr = moves[:, self._corr_q] / 0.01
        parts["credit"][:, rows] += g.delta[rows] * ds + 0.5 * g.gamma[rows] * ds**2
        tr = rows[self._tranche]
        parts["credit"][:, tr] += g.vega[tr] * dr[:, self._tranche]
        parts["fx"] += g.pv_ccy * fx_change
        parts["carry"] += g.theta * days
        return parts

    def predicted(self, moves: FloatArray, fx_change: FloatArray, days: float) -> FloatArray:
        """The sum of :meth:`parts`: the Greeks' PnL per scenario and position (S × positions)."""
        out: FloatArray = sum(self.parts(moves, fx_change, days).values())  # type: ignore[assignment]
        return out


def _mean_rows(members: list[list[int]], n_quotes: int, unit: float) -> sp.csr_matrix:
    """A (rows × quotes) matrix whose row ``i`` averages the quotes ``members[i]`` (repeats
    counted), in ``unit``s."""
    rows = np.repeat(np.arange(len(members)), [len(m) for m in members])
    cols = np.array([q for m in members for q in m], dtype=np.int64)
    weights = np.array([1.0 / (len(m) * unit) for m in members for _ in m], dtype=np.float64)
    return sp.csr_matrix((weights, (rows, cols)), shape=(len(members), n_quotes))


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
    move = _quote_moves(m0, m1)
    days = float((m1.as_of - m0.as_of).days)
    parts = {
        c: v[0]
        for c, v in GreekMap(book, m0, greeks).parts(move[None], (fx1 - fx0)[None], days).items()
    }
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


def explain_by(frame: pl.DataFrame, by: str = "desk") -> pl.DataFrame:
    """:func:`explain_positions` summed by ``by`` (a column of it), then the firm's total."""
    cols = ["actual", *COMPONENTS, "unexplained"]
    grouped = frame.group_by(by).agg(pl.col(c).sum() for c in cols).sort(by)
    firm = frame.select(pl.lit("Firm").alias(by), *(pl.col(c).sum() for c in cols))
    return pl.concat([grouped, firm])


__all__ = ["COMPONENTS", "GreekMap", "Greeks", "explain_by", "explain_positions"]
