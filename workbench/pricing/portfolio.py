"""Price a whole book against a market: PV, Greeks and key-rate DV01s per position, in USD.

This is the pure "price these positions against this market" call that the batch job and the
service's workers share: no I/O, no clock (intervals are timed with ``time.perf_counter``, a
monotonic clock, for reporting only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import numpy as np

from workbench._types import FloatArray, KeyRateMethod
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.model import Interpolation, MarketSnapshot
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.credit_book import CreditPricer
from workbench.pricing.curves import CurveSet
from workbench.pricing.equity_book import EquityPricer
from workbench.pricing.fx_book import FxPricer
from workbench.pricing.rates_book import RatesPricer
from workbench.pricing.risk import ClassPricer, KeyRates, forget_kept
from workbench.pricing.splines import SplineCache

ASSET_CLASSES: tuple[str, ...] = ("rates", "fx", "credit", "equity")


@dataclass(frozen=True)
class BookRisk:
    """Risk of every position, in book row order.

    ``pv`` and every Greek are in USD (the market's base currency); ``pv_ccy`` is in the
    position's own currency. ``theta`` is the PV change for rolling the valuation date one
    calendar day with quotes unchanged. ``timings`` are seconds per stage.
    """

    pv: FloatArray
    pv_ccy: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    key_rates: KeyRates
    timings: dict[str, float] = field(default_factory=dict)


class PortfolioPricer:
    """Everything needed to re-risk one book many times.

    Building it does the quote-independent work once (schedules, cash-flow matrices, the credit
    simulations' random numbers); :meth:`risk` then prices against any market with the same
    static definitions.

    Parameters
    ----------
    book
        The positions.
    market
        The market the static structures are built for (its as-of date and definitions).
    interpolation
        Override every curve's interpolation (``None`` keeps each curve's own).
    n_paths
        Monte Carlo paths per credit index for tranches.
    tranche_method
        ``"mc"`` (shared Gaussian-copula simulation) or ``"recursion"`` (semi-analytic).
    spline_cache
        The vol-surface spline cache to use (a new one by default).
    key_rates
        How key-rate DV01s are computed: ``"bump"`` (central ±1bp of each quote, curves
        re-bootstrapped) or ``"jacobian"`` (exact first derivative × 1bp); docs/greeks.md.
    """

    def __init__(
        self,
        book: Book,
        market: MarketSnapshot,
        *,
        interpolation: Interpolation | None = None,
        n_paths: int = 50_000,
        tranche_method: Literal["mc", "recursion"] = "recursion",
        spline_cache: SplineCache | None = None,
        key_rates: KeyRateMethod = "bump",
    ) -> None:
        started = time.perf_counter()
        self.book = book
        self.spline_cache = spline_cache if spline_cache is not None else SplineCache()
        self._interpolation = interpolation
        self.curves = CurveSet(market, interpolation=interpolation)
        self._curves_next: CurveSet | None = None
        by_class = _rows_by_class(book)
        self.pricers: dict[str, ClassPricer] = {}
        if by_class["rates"].size:
            self.pricers["rates"] = RatesPricer(book, by_class["rates"], market)
        if by_class["fx"].size:
            self.pricers["fx"] = FxPricer(book, by_class["fx"], market, cache=self.spline_cache)
        if by_class["credit"].size:
            self.pricers["credit"] = CreditPricer(
                book, by_class["credit"], market, n_paths=n_paths, method=tranche_method
            )
        if by_class["equity"].size:
            self.pricers["equity"] = EquityPricer(
                book, by_class["equity"], market, cache=self.spline_cache
            )
        for pricer in self.pricers.values():
            if hasattr(pricer, "key_rate_method"):
                pricer.key_rate_method = key_rates
        self.setup_seconds = time.perf_counter() - started

    def restart(self, market: MarketSnapshot) -> None:
        """Price from now on as a pricer set up on ``market`` (the same market with other
        quote values) would, to the last bit: its curves solved afresh from ``market``'s
        quotes, the results kept for unchanged quotes dropped; the positions' set-up
        (schedules, cash-flow layouts) kept."""
        self.curves = CurveSet(market, interpolation=self._interpolation)
        self._curves_next = None
        self.forget_results()
        for pricer in self.pricers.values():  # curve sets of their own, warm-started
            restart = getattr(pricer, "restart", None)
            if restart is not None:
                restart()

    def forget_results(self) -> None:
        """Drop the results the class pricers keep for unchanged quotes (tranche losses, smile
        solutions); the spline cache stays (it has its own switch)."""
        forget_kept(self.pricers.values())

    def pv(
        self, market: MarketSnapshot, *, between: Callable[[str], None] | None = None
    ) -> FloatArray:
        """Every position's PV in the base currency (USD) against ``market``, PV only: no
        Greeks, no theta. The pricer's curves are re-solved on it (warm-started from their last
        solution). ``between(stage)`` as in :meth:`risk`."""
        if between is not None:
            between("curves")
        self.curves.rebuild(market)
        return self._pv_on(market, self.curves, between)

    def scenario_pv(self, market: MarketSnapshot) -> FloatArray:
        """:meth:`pv` on a scenario's market, its curves solved from the pricer's current ones
        (today's, after :meth:`pv` of today's market) and the pricer's own left as they were: a
        scenario's PVs depend on today's curves and its own quotes only, never on which
        scenarios were priced before it (in this process or another)."""
        return self._pv_on(market, self.curves.shocked(market, self.curves.ids()))

    def _pv_on(
        self,
        market: MarketSnapshot,
        curves: CurveSet,
        between: Callable[[str], None] | None = None,
    ) -> FloatArray:
        pv_ccy = np.full(len(self.book), np.nan)
        for name, pricer in self.pricers.items():
            if between is not None:
                between(name)
            pv_ccy[pricer.rows_for(None)] = pricer.pv(market, curves)
        if between is not None:
            between("")
        fx = base_rate_column(market, self.book.currency.codes, self.book.currency.labels)
        out: FloatArray = pv_ccy * fx
        return out

    def risk(
        self, market: MarketSnapshot, *, between: Callable[[str], None] | None = None
    ) -> BookRisk:
        """PV, Greeks and key rates of every position against ``market``, in USD.
        ``between(stage)`` is called before each stage (``"curves"``, then each asset class)
        and with ``""`` after the last, e.g. to wait between them."""
        n = len(self.book)
        timings: dict[str, float] = {}
        if between is not None:
            between("curves")
        t0 = time.perf_counter()
        self.curves.rebuild(market)
        timings["curves"] = time.perf_counter() - t0

        next_market = market.with_as_of(market.as_of + timedelta(days=1))
        t0 = time.perf_counter()
        if self._curves_next is None:
            self._curves_next = CurveSet(next_market, interpolation=self._interpolation)
        else:
            self._curves_next.rebuild(next_market)
        timings["curves_theta"] = time.perf_counter() - t0

        pv_ccy = np.full(n, np.nan)
        delta = np.full(n, np.nan)
        gamma = np.full(n, np.nan)
        vega = np.full(n, np.nan)
        theta = np.full(n, np.nan)
        key_parts: list[KeyRates] = []
        for name, pricer in self.pricers.items():
            if between is not None:
                between(name)
            t0 = time.perf_counter()
            res = pricer.risk(market, self.curves)
            pv_next = pricer.pv(next_market, self._curves_next)
            timings[name] = time.perf_counter() - t0
            pv_ccy[res.rows] = res.pv
            delta[res.rows] = res.delta
            gamma[res.rows] = res.gamma
            vega[res.rows] = res.vega
            theta[res.rows] = pv_next - res.pv
            key_parts.append(res.key_rates)
        if between is not None:
            between("")

        t0 = time.perf_counter()
        fx = base_rate_column(market, self.book.currency.codes, self.book.currency.labels)
        kr = KeyRates.concat(key_parts)
        key_rates = KeyRates(kr.rows, kr.quotes, kr.values * fx[kr.rows])
        timings["conversion"] = time.perf_counter() - t0
        return BookRisk(
            pv=pv_ccy * fx,
            pv_ccy=pv_ccy,
            delta=delta * fx,
            gamma=gamma * fx,
            vega=vega * fx,
            theta=theta * fx,
            key_rates=key_rates,
            timings=timings,
        )


def _rows_by_class(book: Book) -> dict[str, np.ndarray]:
    codes = book.product.codes
    out: dict[str, list[np.ndarray]] = {c: [] for c in ASSET_CLASSES}
    for code, product in enumerate(book.product.labels):
        out[ASSET_CLASS[product]].append(np.flatnonzero(codes == code))
    return {
        c: (np.sort(np.concatenate(v)).astype(np.int64) if v else np.empty(0, np.int64))
        for c, v in out.items()
    }


def price_book(
    book: Book,
    market: MarketSnapshot,
    *,
    interpolation: Interpolation | None = None,
    n_paths: int = 50_000,
    tranche_method: Literal["mc", "recursion"] = "recursion",
    key_rates: KeyRateMethod = "bump",
) -> BookRisk:
    """Build a :class:`PortfolioPricer` and re-risk once (set-up time in ``timings["setup"]``)."""
    pricer = PortfolioPricer(
        book,
        market,
        interpolation=interpolation,
        n_paths=n_paths,
        tranche_method=tranche_method,
        key_rates=key_rates,
    )
    result = pricer.risk(market)
    result.timings["setup"] = pricer.setup_seconds
    return result
