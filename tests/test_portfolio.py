"""The whole book priced together: every Greek checked against a re-pricing with a bumped market.

These tests re-price through the public entry point only (market in, columns out), so they check
the units written in docs/greeks.md end to end, including the conversion to USD.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest

from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.portfolio import BookRisk, PortfolioPricer


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def book(market: MarketSnapshot, tmp_path_factory: pytest.TempPathFactory) -> Book:
    frame = generate_reference_book(market, positions=400, seed=3)
    path = tmp_path_factory.mktemp("book") / "book.parquet"
    save_book(frame, path)
    return load_book(path, market=market)


@pytest.fixture(scope="module")
def pricer(book: Book, market: MarketSnapshot) -> PortfolioPricer:
    return PortfolioPricer(book, market, n_paths=4096, tranche_method="recursion")


@pytest.fixture(scope="module")
def base(pricer: PortfolioPricer, market: MarketSnapshot) -> BookRisk:
    return pricer.risk(market)


def _rows(book: Book, product: str, underlying: str | None = None) -> np.ndarray:
    rows = book.rows(product)
    if underlying is not None:
        code = book.underlying.labels.index(underlying)
        rows = rows[book.underlying.codes[rows] == code]
    return rows


def test_every_position_has_finite_risk(book: Book, base: BookRisk) -> None:
    assert len(base.pv) == len(book)
    for name in ("pv", "pv_ccy", "delta", "gamma", "vega", "theta"):
        col = getattr(base, name)
        bad = np.flatnonzero(~np.isfinite(col))
        assert bad.size == 0, f"{name} not finite for {[book.position_id[i] for i in bad[:5]]}"


def test_every_product_is_present(book: Book) -> None:
    for product in ("IRS", "FX_FWD", "FX_OPTION", "CDX_INDEX", "CDX_TRANCHE", "EQ_OPTION"):
        assert book.rows(product).size > 0, product


def test_fx_delta_and_gamma_are_one_percent_spot_bumps(
    pricer: PortfolioPricer, market: MarketSnapshot, book: Book, base: BookRisk
) -> None:
    pair = market.fx_pairs[0]
    spot = market.quote(pair.spot_quote)
    up = pricer.risk(market.with_quotes({pair.spot_quote: spot * 1.01}))
    down = pricer.risk(market.with_quotes({pair.spot_quote: spot * 0.99}))
    rows = np.concatenate([_rows(book, "FX_OPTION", pair.pair), _rows(book, "FX_FWD", pair.pair)])
    assert rows.size > 0
    # PV in the position's currency: the USD conversion itself moves with a USD pair's spot.
    fx = base_rate_column(market, book.currency.codes, book.currency.labels)[rows]
    fd_delta = (up.pv_ccy[rows] - down.pv_ccy[rows]) / 2
    fd_gamma = up.pv_ccy[rows] - 2 * base.pv_ccy[rows] + down.pv_ccy[rows]
    noise = np.abs(book.notional[rows]) * 1e-9  # rounding of PVs of this size
    np.testing.assert_allclose(base.delta[rows] / fx, fd_delta, rtol=1e-9, atol=noise.max())
    np.testing.assert_allclose(base.gamma[rows] / fx, fd_gamma, rtol=1e-7, atol=noise.max())


def test_equity_vega_is_one_vol_point(
    pricer: PortfolioPricer, market: MarketSnapshot, book: Book, base: BookRisk
) -> None:
    spec = next(e for e in market.equities if _rows(book, "EQ_OPTION", e.id).size)
    rows = _rows(book, "EQ_OPTION", spec.id)
    quotes = [q for row in spec.vol_quotes for q in row]
    up = pricer.risk(market.with_quotes({q: market.quote(q) + 0.01 for q in quotes}))
    down = pricer.risk(market.with_quotes({q: market.quote(q) - 0.01 for q in quotes}))
    # a parallel ±1 point on the surface moves each option's vol by exactly ±1 point; the central
    # difference cancels the volga term, leaving O(1 point^2) of the analytic (sticky-strike) vega
    fd = (up.pv[rows] - down.pv[rows]) / 2
    np.testing.assert_allclose(base.vega[rows], fd, rtol=1e-3, atol=1e-6 * np.abs(fd).max())


def test_swap_delta_is_dv01_of_all_its_curves(
    pricer: PortfolioPricer, market: MarketSnapshot, book: Book, base: BookRisk
) -> None:
    rows = book.rows("IRS")
    ccy = "USD"
    rows = rows[np.asarray(book.currency.values(), dtype=object)[rows] == ccy]
    assert rows.size > 0
    quotes = [i.quote for c in market.curves if c.currency == ccy for i in c.instruments]
    up = pricer.risk(market.with_quotes({q: market.quote(q) + 1e-4 for q in quotes}))
    down = pricer.risk(market.with_quotes({q: market.quote(q) - 1e-4 for q in quotes}))
    np.testing.assert_allclose(
        base.delta[rows], (up.pv[rows] - down.pv[rows]) / 2, rtol=1e-6, atol=1e-3
    )


@pytest.mark.parametrize(
    ("key_rates", "interpolation"),
    [("jacobian", None), ("jacobian", "log_linear"), ("bump", "log_linear")],
)
def test_swap_key_rates_sum_to_dv01(
    book: Book, market: MarketSnapshot, key_rates: str, interpolation: str | None
) -> None:
    """The Jacobian's key rates sum to the DV01 on any curve; the ±1bp bumps where the curves
    are smooth at the 1bp scale (log-linear). Under monotone convex the bumps do not add up
    (docs/greeks.md): test_quantlib_key_rates shows QuantLib's do not either."""
    base = PortfolioPricer(
        book,
        market,
        n_paths=512,
        interpolation=interpolation,  # type: ignore[arg-type]
        key_rates=key_rates,  # type: ignore[arg-type]
    ).risk(market)
    rows = book.rows("IRS")
    sums = np.bincount(base.key_rates.rows, weights=base.key_rates.values, minlength=len(book))
    # key rates are first order, the DV01 a central difference: they differ by O(1bp^2) terms
    err = np.abs(sums[rows] - base.delta[rows])
    tol = 1e-3 * np.abs(base.delta[rows]) + 1e-2 * np.abs(base.gamma[rows]) + 1.0
    worst = int(np.argmax(err / tol))
    assert np.all(err <= tol), (
        book.position_id[rows[worst]],
        sums[rows[worst]],
        base.delta[rows[worst]],
        base.gamma[rows[worst]],
    )


def test_theta_is_one_calendar_day_roll(
    pricer: PortfolioPricer, market: MarketSnapshot, base: BookRisk
) -> None:
    rolled = market.with_as_of(market.as_of + timedelta(days=1))
    again = PortfolioPricer(pricer.book, rolled, n_paths=4096, tranche_method="recursion")
    pv_next = again.risk(rolled).pv
    np.testing.assert_allclose(base.theta, pv_next - base.pv, rtol=1e-9, atol=1e-6)


def test_credit_cs01_is_one_bp_on_the_index_spread(
    pricer: PortfolioPricer, market: MarketSnapshot, book: Book, base: BookRisk
) -> None:
    index = market.credit_indices[0]
    rows = np.concatenate(
        [_rows(book, "CDX_INDEX", index.id), _rows(book, "CDX_TRANCHE", index.id)]
    )
    s = market.quote(index.spread_quote)
    up = pricer.risk(market.with_quotes({index.spread_quote: s + 1e-4}))
    down = pricer.risk(market.with_quotes({index.spread_quote: s - 1e-4}))
    np.testing.assert_allclose(
        base.delta[rows], (up.pv[rows] - down.pv[rows]) / 2, rtol=1e-6, atol=1e-3
    )


def test_repricing_the_same_market_is_identical(
    pricer: PortfolioPricer, market: MarketSnapshot, base: BookRisk
) -> None:
    again = pricer.risk(market)
    # curves are re-solved from a warm start to 1e-13 per unit notional, not bit for bit
    np.testing.assert_allclose(again.pv, base.pv, rtol=1e-9, atol=1e-4)
    np.testing.assert_allclose(again.delta, base.delta, rtol=1e-6, atol=1e-4)


def test_a_market_with_its_quotes_in_another_order_prices_the_same(
    pricer: PortfolioPricer, market: MarketSnapshot, base: BookRisk
) -> None:
    """The pricers read vol grids by quote row, looked up once per quote layout: the same
    quotes in another order (another file's layout) must give the same Greeks, not the vols of
    whatever quotes now sit at the old rows."""
    order = np.arange(len(market.quote_ids))[::-1]
    shuffled = dataclasses.replace(
        market,
        quote_ids=tuple(market.quote_ids[i] for i in order),
        quotes=market.quotes[order],
    )
    again = pricer.risk(shuffled)
    for name in ("pv", "delta", "gamma", "vega", "theta"):
        np.testing.assert_allclose(
            getattr(again, name), getattr(base, name), rtol=1e-9, atol=1e-4, err_msg=name
        )
