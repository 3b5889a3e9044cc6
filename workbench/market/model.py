"""The market snapshot: what a user brings besides the book.

A :class:`MarketSnapshot` is immutable and versioned. Static definitions (calendars, curve
instruments, surface grids, credit indices) never change during a day; quotes do. Every quote
lives in one flat table (``quote_ids`` / ``quotes``) so that the live feed can tick any of them by
id, and :meth:`MarketSnapshot.with_quotes` returns a new snapshot with a higher version.

Units of quotes (see ``docs/formats.md``):

* rates (deposits, OIS and IRS par rates): decimal per year (0.0412 is 4.12%);
* FX spot: units of the pair's quote currency per one unit of its base currency (EURUSD 1.08);
* volatilities: decimal Black vol (0.085 is 8.5 vol points);
* equity spot: price in the equity's currency;
* credit index spreads: decimal per year (0.0055 is 55bp); correlations: decimal (0.30).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np

from workbench._types import FloatArray, IntArray

InstrumentKind = Literal["deposit", "ois", "irs"]
CurveKind = Literal["ois", "term"]
Interpolation = Literal["monotone_convex", "log_linear"]
DayCount = Literal["ACT/360", "ACT/365F", "30/360"]
BusinessDayConvention = Literal["F", "MF", "P", "U"]

FX_DELTA_PILLARS: tuple[str, ...] = ("10P", "25P", "ATM", "25C", "10C")
"""The delta pillars of an FX vol surface, put wing to call wing."""


class MarketError(ValueError):
    """A market snapshot or a quote is invalid; the message names what and where."""


@dataclass(frozen=True, slots=True)
class Calendar:
    """A business-day calendar: weekend days (0 = Monday … 6 = Sunday) and explicit holidays."""

    id: str
    weekend: tuple[int, ...] = (5, 6)
    holidays: tuple[date, ...] = ()

    def weekmask(self) -> str:
        """The ``numpy.busday_*`` weekmask, Monday first ("1111100" for Sat/Sun weekends)."""
        return "".join("0" if d in self.weekend else "1" for d in range(7))


@dataclass(frozen=True, slots=True)
class CurveInstrument:
    """One quoted instrument of a curve, starting on the curve's spot date.

    ``kind``: ``deposit`` (simple rate, ``day_count`` of the curve, one period of ``tenor``);
    ``ois`` (fixed vs overnight-compounded; both legs ``fixed_frequency_months``);
    ``irs`` (fixed vs the curve's term index, float leg every ``float_frequency_months``).
    """

    quote: str
    kind: InstrumentKind
    tenor: str  # "1W", "3M", "5Y" … from the spot date, end date business-day adjusted


@dataclass(frozen=True, slots=True)
class CurveSpec:
    """How to build one curve from quotes.

    An ``ois`` curve discounts itself. A ``term`` curve projects a term index (e.g. 3M) and is
    bootstrapped with its currency's OIS curve (``discount_curve``) for discounting.
    Curve time is ACT/365F from the as-of date; nodes sit on the instruments' end dates.
    """

    id: str  # "USD.SOFR", "EUR.EURIBOR6M"
    currency: str
    kind: CurveKind
    calendar: str
    instruments: tuple[CurveInstrument, ...]
    spot_lag: int = 2  # business days
    day_count: DayCount = "ACT/360"  # float leg and deposits
    fixed_day_count: DayCount = "ACT/360"
    fixed_frequency_months: int = 12
    float_frequency_months: int = 12  # the term index tenor for "term" curves
    business_day: BusinessDayConvention = "MF"
    discount_curve: str | None = None  # required for "term" curves
    interpolation: Interpolation = "monotone_convex"


@dataclass(frozen=True, slots=True)
class FxPair:
    """A currency pair quoted as units of ``quote_ccy`` per one ``base_ccy`` (EURUSD: EUR, USD)."""

    pair: str  # "EURUSD"
    base_ccy: str
    quote_ccy: str
    spot_quote: str  # "FX.EURUSD"
    calendar: str
    spot_lag: int = 2


@dataclass(frozen=True, slots=True)
class FxVolSurface:
    """A delta × expiry Black vol surface for one pair.

    ``quotes[i][j]`` is the quote id of expiry ``expiries[i]`` and delta pillar ``deltas[j]``
    (``FXVOL.EURUSD.1Y.25C``). Deltas are forward, premium-unadjusted; ``25P`` is a put of
    delta −0.25 (call delta 0.75), ``ATM`` is call delta 0.5.
    """

    pair: str
    expiries: tuple[str, ...]
    deltas: tuple[str, ...]
    quotes: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class EquitySpec:
    """An equity underlying: spot quote, continuous dividend yield and a vol surface.

    ``vol_quotes[i][j]`` is the quote id for expiry ``vol_expiries[i]`` and moneyness
    ``vol_moneyness[j]`` (strike / spot, e.g. 0.8 … 1.2): ``EQVOL.AAPL.1Y.100``.
    """

    id: str  # "AAPL"
    currency: str
    spot_quote: str  # "EQ.AAPL"
    dividend_yield: float  # continuous, decimal per year
    vol_expiries: tuple[str, ...]
    vol_moneyness: tuple[float, ...]
    vol_quotes: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class CreditIndex:
    """A credit index of equally weighted names for index and tranche positions.

    Name ``i`` has a flat hazard rate ``hazard_weights[i] * spread / (1 - recovery)`` where
    ``spread`` is the index quote, so one index tick moves every name's default threshold.
    ``hazard_weights`` average to 1. One flat Gaussian-copula correlation per index.
    """

    id: str  # "CDX.IG"
    currency: str
    maturity: date  # the series' scheduled termination date (a 20th of Mar/Jun/Sep/Dec)
    coupon: float  # running coupon, decimal per year (0.01 for IG)
    recovery: float  # decimal (0.40)
    spread_quote: str  # "CDX.IG.5Y"
    correlation_quote: str  # "CDX.IG.5Y.CORR"
    names: tuple[str, ...]
    hazard_weights: tuple[float, ...]
    calendar: str = "USD"


@dataclass(frozen=True)
class MarketSnapshot:
    """An immutable, versioned market: static definitions plus one flat quote table.

    Parameters
    ----------
    as_of
        The valuation (business) date. Curve and option times are measured from it.
    version
        Increases with every change of quotes; caches key on it.
    quote_ids, quotes
        The quote table. ``quotes`` is read-only float64, aligned with ``quote_ids``.
    """

    as_of: date
    version: int
    calendars: Mapping[str, Calendar]
    quote_ids: tuple[str, ...]
    quotes: FloatArray
    curves: tuple[CurveSpec, ...]
    fx_pairs: tuple[FxPair, ...] = ()
    fx_vol_surfaces: tuple[FxVolSurface, ...] = ()
    equities: tuple[EquitySpec, ...] = ()
    credit_indices: tuple[CreditIndex, ...] = ()
    base_currency: str = "USD"
    quote_index: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        quotes = np.array(self.quotes, dtype=np.float64, copy=True)
        if quotes.shape != (len(self.quote_ids),):
            raise MarketError(
                f"quotes has shape {quotes.shape}, expected ({len(self.quote_ids)},) "
                "to match quote_ids"
            )
        quotes.setflags(write=False)
        object.__setattr__(self, "quotes", quotes)
        index = {qid: i for i, qid in enumerate(self.quote_ids)}
        if len(index) != len(self.quote_ids):
            seen: set[str] = set()
            dup = next(q for q in self.quote_ids if q in seen or seen.add(q))  # type: ignore[func-returns-value]
            raise MarketError(f"quote id {dup!r} appears twice in the quote table")
        object.__setattr__(self, "quote_index", index)

    def __eq__(self, other: object) -> bool:
        """Equal definitions and bit-identical quotes (the lookup index is derived)."""
        if not isinstance(other, MarketSnapshot):
            return NotImplemented
        return (
            self.as_of == other.as_of
            and self.version == other.version
            and self.quote_ids == other.quote_ids
            and np.array_equal(self.quotes, other.quotes)
            and self.calendars == other.calendars
            and self.curves == other.curves
            and self.fx_pairs == other.fx_pairs
            and self.fx_vol_surfaces == other.fx_vol_surfaces
            and self.equities == other.equities
            and self.credit_indices == other.credit_indices
            and self.base_currency == other.base_currency
        )

    def __hash__(self) -> int:
        return hash((self.as_of, self.version, self.quote_ids, self.quotes.tobytes()))

    def with_quote_values(self, values: FloatArray) -> MarketSnapshot:
        """A new snapshot with the whole quote table replaced (the live feed's path)."""
        return self._derive(values, self.version + 1, self.as_of)

    def _derive(self, values: FloatArray, version: int, as_of: date) -> MarketSnapshot:
        """A copy with other quote values, version and date; the definitions and the quote
        index are shared, not rebuilt (this runs on every tick)."""
        quotes = np.array(values, dtype=np.float64, copy=True)
        if quotes.shape != self.quotes.shape:
            raise MarketError(
                f"quotes has shape {quotes.shape}, expected {self.quotes.shape} to match quote_ids"
            )
        quotes.setflags(write=False)
        new = copy.copy(self)
        object.__setattr__(new, "quotes", quotes)
        object.__setattr__(new, "version", version)
        object.__setattr__(new, "as_of", as_of)
        return new

    def quote(self, quote_id: str) -> float:
        """The value of one quote (units as in the module docstring)."""
        try:
            return float(self.quotes[self.quote_index[quote_id]])
        except KeyError:
            raise MarketError(f"unknown quote id {quote_id!r}") from None

    def quote_rows(self, quote_ids: Sequence[str]) -> IntArray:
        """The rows of several quotes in the quote table (``quotes``), in the order given."""
        try:
            idx = [self.quote_index[q] for q in quote_ids]
        except KeyError as exc:
            raise MarketError(f"unknown quote id {exc.args[0]!r}") from None
        return np.asarray(idx, dtype=np.int64)

    def quote_values(self, quote_ids: tuple[str, ...] | list[str]) -> FloatArray:
        """The values of several quotes, in the order given."""
        return self.quotes[self.quote_rows(quote_ids)]

    def with_quotes(self, updates: Mapping[str, float]) -> MarketSnapshot:
        """A new snapshot with some quotes replaced and ``version + 1``."""
        values = self.quotes.copy()
        for qid, value in updates.items():
            i = self.quote_index.get(qid)
            if i is None:
                raise MarketError(f"unknown quote id {qid!r}")
            values[i] = float(value)
        return self._derive(values, self.version + 1, self.as_of)

    def with_as_of(self, as_of: date) -> MarketSnapshot:
        """The same quotes seen from another valuation date (used for theta)."""
        return self._derive(self.quotes, self.version, as_of)

    def curve(self, curve_id: str) -> CurveSpec:
        """The definition of one curve."""
        for spec in self.curves:
            if spec.id == curve_id:
                return spec
        raise MarketError(f"unknown curve {curve_id!r}")

    def discount_curve_id(self, currency: str) -> str:
        """The id of the OIS curve that discounts ``currency`` cash flows."""
        for spec in self.curves:
            if spec.currency == currency and spec.kind == "ois":
                return spec.id
        raise MarketError(f"no OIS discount curve for currency {currency!r}")

    def currencies(self) -> tuple[str, ...]:
        """Every currency with a discount curve, in definition order."""
        return tuple(dict.fromkeys(s.currency for s in self.curves if s.kind == "ois"))
