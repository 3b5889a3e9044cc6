"""How a swap's key rates add up to its DV01, on the 40,000-position reference book (seed 1).

The DV01 (``delta``) is the central difference of a parallel ±1bp move of every quote of the
swap's currency; a key rate the central difference (``"bump"``) or the exact derivative × 1bp
(``"jacobian"``) of one quote. To first order in the bump both are the gradient of the PV
along the quotes, so the key rates sum to the DV01 up to terms of higher order in 1bp; how
small those terms are is what docs/greeks.md ("Sums") states and these tests hold it to.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workbench._types import BP
from workbench.book.io import frame_to_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.curves import CurveSet
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.rates_book import RatesPricer
from workbench.pricing.risk import ClassRisk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def frame(market: MarketSnapshot) -> pl.DataFrame:
    return generate_reference_book(market, positions=40_000, seed=1)


@pytest.fixture(scope="module")
def book(frame: pl.DataFrame) -> Book:
    return frame_to_book(frame)


def _risk(book: Book, market: MarketSnapshot, method: str, interpolation: str) -> ClassRisk:
    pricer = RatesPricer(book, book.rows("IRS"), market)
    pricer.key_rate_method = method  # type: ignore[assignment]
    return pricer.risk(market, CurveSet(market, interpolation=interpolation))  # type: ignore[arg-type]


def _gap(risk: ClassRisk) -> np.ndarray:
    """|Σ key rates − DV01| / |DV01| per swap (``risk.rows`` order)."""
    kr = risk.key_rates
    sums = np.bincount(kr.rows, weights=kr.values, minlength=int(risk.rows.max()) + 1)
    out: np.ndarray = np.abs(sums[risk.rows] - risk.delta) / np.abs(risk.delta)
    return out


@pytest.mark.parametrize(
    ("method", "interpolation"),
    [
        ("jacobian", "monotone_convex"),
        ("jacobian", "log_linear"),
        ("bump", "log_linear"),
    ],
)
def test_key_rates_sum_to_the_dv01_where_the_curve_is_smooth_at_1bp(
    book: Book, market: MarketSnapshot, method: str, interpolation: str
) -> None:
    """The exact derivative always, the ±1bp bumps under log-linear: within 1e-5 of the DV01
    on every swap (what is left are third-order terms of the central differences)."""
    risk = _risk(book, market, method, interpolation)
    gap = _gap(risk)
    assert risk.rows.size == 22_000
    worst = int(np.argmax(gap))
    assert gap[worst] <= 1e-5, (book.position_id[int(risk.rows[worst])], gap[worst])


def test_bump_key_rates_under_monotone_convex_sum_to_the_dv01_as_documented(
    book: Book, market: MarketSnapshot
) -> None:
    """The default: a 1bp move of one quote can switch the Hagan–West formula of the intervals
    next to its pillar where the parallel move switches none, so the sum of the one-quote
    bumps is the DV01 to first order only: within 1e-4 for half the swaps, 6% for nine in
    ten, 28% for every one (docs/greeks.md quotes the measured 6e-5, 5.4% and 27.5%)."""
    gap = _gap(_risk(book, market, "bump", "monotone_convex"))
    assert np.median(gap) <= 1e-4
    assert np.quantile(gap, 0.9) <= 0.06
    assert gap.max() <= 0.28
    # not a rounding matter: a tenth of the swaps are more than 1% off
    assert np.quantile(gap, 0.9) > 0.01


@pytest.mark.parametrize("product", ["FX_FWD", "FX_OPTION", "EQ_OPTION"])
def test_bump_key_rates_of_fx_and_equity_positions_are_one_quote_repriced(
    frame: pl.DataFrame, market: MarketSnapshot, product: str
) -> None:
    """FX and equity positions: the bumped, re-solved curves' move of log P at the position's
    dates times its exact ∂PV/∂log P, against the whole pricer on the market with that quote
    moved ±1bp; they agree to the omitted second-order term. An equity option's vol is read
    at K/S, which a rate does not move; an FX option's vol moves with its forward on the
    smile, sticky in delta, in the key rate as in the reprice (the reference market's smiles,
    not flat ones). Measured: within 1e-4 of the largest repriced change among the positions,
    for the four quotes that move them most."""
    sub = frame_to_book(frame.filter(pl.col("product") == product).head(300))
    pricer = PortfolioPricer(sub, market, key_rates="bump")
    kr = pricer.risk(market).key_rates
    gross = np.bincount(kr.quotes, weights=np.abs(kr.values), minlength=len(market.quote_ids))
    for q in np.argsort(gross)[::-1][:4]:
        qid = market.quote_ids[int(q)]
        pv = [
            pricer.pv(market.with_quotes({qid: market.quote(qid) + sign * BP}))
            for sign in (1.0, -1.0)
        ]
        repriced = (pv[0] - pv[1]) / 2.0
        ours = np.zeros(len(sub))
        np.add.at(ours, kr.rows[kr.quotes == q], kr.values[kr.quotes == q])
        scale = np.abs(repriced).max()
        assert scale > 0.0, qid
        err = np.abs(ours - repriced)
        worst = int(np.argmax(err))
        assert err[worst] <= 2e-4 * scale, (
            qid,
            sub.position_id[worst],
            ours[worst],
            repriced[worst],
        )
