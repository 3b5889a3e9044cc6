"""Risk results as columns, and the contract every asset-class pricer follows.

A pricer is built once for its positions (schedules, sparse matrices, random numbers: whatever
does not depend on quotes) and then priced many times against markets. ``risk`` returns the Greeks
of its positions in each position's own currency; the portfolio converts to the base currency.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Generic, Protocol, TypeVar

import numpy as np

from workbench._types import FloatArray, IntArray, KeyRateMethod
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.pricing.curves import CurveSet
from workbench.pricing.splines import SplineCache


@dataclass(frozen=True, slots=True)
class KeyRates:
    """Key-rate DV01s in long format: PV change for +1bp on one quote, per position.

    ``rows`` index the book, ``quotes`` index ``MarketSnapshot.quote_ids``; ``values`` are in
    the position's currency (per asset-class result) or the base currency (portfolio result).
    """

    rows: IntArray
    quotes: IntArray
    values: FloatArray

    @staticmethod
    def empty() -> KeyRates:
        """No key rates."""
        return KeyRates(
            np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, np.float64)
        )

    @staticmethod
    def concat(parts: list[KeyRates]) -> KeyRates:
        """Several key-rate blocks as one."""
        if not parts:
            return KeyRates.empty()
        return KeyRates(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.quotes for p in parts]),
            np.concatenate([p.values for p in parts]),
        )

    @staticmethod
    def from_dense(
        rows: IntArray, quote_index: IntArray, matrix: FloatArray, *, drop_below: float = 0.0
    ) -> KeyRates:
        """Long format from a dense (positions × quotes) matrix, dropping exact zeros.

        ``drop_below`` drops entries whose magnitude is at most that (in currency units).
        """
        keep = np.abs(matrix) > drop_below
        r, q = np.nonzero(keep)
        return KeyRates(rows[r], quote_index[q], matrix[r, q])


@dataclass(frozen=True, slots=True)
class ClassRisk:
    """Greeks of one asset class's positions, in each position's currency.

    Units as in ``docs/greeks.md``: ``delta`` per the product's bump (1bp rates/credit, +1% spot),
    ``gamma`` the change of that delta for the same bump, ``vega`` per vol point (tranches: per
    +1% correlation), all in the position's currency.
    """

    rows: IntArray
    pv: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    key_rates: KeyRates

    @staticmethod
    def empty() -> ClassRisk:
        """The risk of no positions."""
        empty = np.empty(0)
        return ClassRisk(np.empty(0, np.int64), empty, empty, empty, empty, KeyRates.empty())


class PositionRows:
    """The book rows of one group of FX or equity positions and the static columns their
    pricers read: ``notional`` (signed, in units of the underlying), ``strike`` (price of one
    unit, in the quote currency), ``sign`` (+1 call, −1 put, NaN for a forward) and ``maturity``
    (``datetime64[D]``)."""

    def __init__(self, book: Book, rows: IntArray) -> None:
        self.rows = rows
        self.notional = book.notional[rows]
        self.strike = book.strike[rows]
        self.sign = book.option_sign[rows]
        self.maturity = book.maturity[rows]


class ClassPricer(Protocol):
    """What the portfolio and the service's workers need from an asset-class pricer.

    A pricer's positions fall into named groups (the underlying: a projection curve, an FX
    pair, an index, an equity). ``only`` restricts a call to some of them (``None``: all), so a
    tick reprices the groups that read its quote in one vectorised call.
    """

    asset_class: str
    rows: IntArray

    def rows_for(self, only: Collection[str] | None = None) -> IntArray:
        """Book rows of the groups in ``only``, in the order ``risk`` and ``pv`` return them."""
        ...

    def risk(
        self, market: MarketSnapshot, curves: CurveSet, only: Collection[str] | None = None
    ) -> ClassRisk:
        """PV and Greeks of the positions of the groups in ``only`` against ``market``."""
        ...

    def pv(
        self, market: MarketSnapshot, curves: CurveSet, only: Collection[str] | None = None
    ) -> FloatArray:
        """PV only, in each position's currency (used for theta), in ``rows_for`` order."""
        ...


class SelectionPricer:
    """``pv`` and ``risk`` of a pricer that prices any selection of its groups in one call,
    ``_price(market, curves, greeks=..., only=...)``, in ``rows_for(only)`` order. What its
    Greeks mean is in the pricer's docstring. By default a selection's rows are its groups'
    rows (``_group_rows``, named ``_names``) one group after the other."""

    _names: list[str]
    _group_rows: list[IntArray]

    def rows_for(self, only: Collection[str] | None = None) -> IntArray:
        """Book rows of the groups in ``only`` (all with None), in ``risk`` and ``pv`` order."""
        return selected_rows(self._group_rows, self._names, only)

    def _price(
        self,
        market: MarketSnapshot,
        curves: CurveSet,
        *,
        greeks: bool,
        only: Collection[str] | None,
    ) -> ClassRisk:
        raise NotImplementedError

    def pv(
        self, market: MarketSnapshot, curves: CurveSet, only: Collection[str] | None = None
    ) -> FloatArray:
        """PV in each position's currency, ``rows_for(only)`` order."""
        return self._price(market, curves, greeks=False, only=only).pv

    def risk(
        self, market: MarketSnapshot, curves: CurveSet, only: Collection[str] | None = None
    ) -> ClassRisk:
        """PV and Greeks of the positions of the groups in ``only``, each position's currency."""
        return self._price(market, curves, greeks=True, only=only)


class SurfacePricer(SelectionPricer):
    """A :class:`SelectionPricer` of options whose vols come from cached vol splines (FX,
    equity): its book ``rows``, the spline ``cache``, ``with_key_rates`` (off in the live
    worker, which does not publish them) and ``key_rate_method``."""

    def __init__(self, rows: IntArray, cache: SplineCache) -> None:
        self.rows = rows
        self.cache = cache
        self.with_key_rates = True
        self.key_rate_method: KeyRateMethod = "bump"


def selected_rows(
    rows: Sequence[IntArray], names: Sequence[str], only: Collection[str] | None
) -> IntArray:
    """The rows of the groups named in ``only`` (all with None), group after group."""
    picked = [rows[k] for k in selected(names, only)]
    return np.concatenate(picked) if picked else np.empty(0, np.int64)


def selected(names: Sequence[str], only: Collection[str] | None) -> list[int]:
    """Indices of the groups named in ``only`` (every group with ``None``), in ``names`` order.

    Examples
    --------
    >>> selected(["EURUSD", "USDJPY", "GBPUSD"], {"GBPUSD", "EURUSD"})
    [0, 2]
    """
    return [i for i, name in enumerate(names) if only is None or name in only]


def forget_kept(pricers: Iterable[object]) -> None:
    """Drop what class pricers keep between calls for the same quotes (tranche losses, smile
    solutions), so the next price costs what it costs after every quote has moved."""
    for pricer in pricers:
        forget = getattr(pricer, "forget", None)
        if forget is not None:
            forget()


_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)


class QuoteGrids:
    """Vol grids (rows of quote ids) read from a market's quote vector with one index each.

    The row numbers of a grid's quotes are looked up once per quote layout: snapshots derived
    from one another share their ``quote_ids``, so a live pricer looks them up once; a market
    with another layout (the same ids in another order) gets them looked up again.
    """

    def __init__(self) -> None:
        self._layout: tuple[str, ...] | None = None
        self._rows: dict[str, IntArray] = {}

    def values(
        self, market: MarketSnapshot, name: str, grid: Sequence[Sequence[str]]
    ) -> FloatArray:
        """The quotes of ``grid`` (named ``name``), shaped like it."""
        if market.quote_ids is not self._layout and market.quote_ids != self._layout:
            self._rows.clear()
            self._layout = market.quote_ids
        rows = self._rows.get(name)
        if rows is None:
            rows = np.array([[market.quote_index[q] for q in row] for row in grid], np.int64)
            self._rows[name] = rows
        values: FloatArray = market.quotes[rows]
        return values


class Kept(Generic[_K, _T]):
    """Values made once per key and kept: at most ``limit``, the oldest dropped first. For
    what a live pricer sees again and again (dates, selections of groups, row layouts)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._store: dict[_K, _T] = {}

    def get(self, key: _K, make: Callable[[], _T]) -> _T:
        """The value kept for ``key``, made by ``make()`` the first time."""
        hit = self._store.get(key)
        if hit is None:
            hit = make()
            if len(self._store) >= self.limit:
                self._store.pop(next(iter(self._store)))
            self._store[key] = hit
        return hit


class KeptByDate(Generic[_T]):
    """Values that depend on the as-of date alone (times to expiry, spot dates), kept per
    (name, date): a live pricer sees two dates (today, and tomorrow for theta), so a tick
    recomputes none of them. At most ``limit`` entries, the oldest dropped first."""

    def __init__(self, limit: int = 256) -> None:
        self._kept: Kept[tuple[str, date], _T] = Kept(limit)

    def get(self, name: str, as_of: date, make: Callable[[], _T]) -> _T:
        """The value kept for ``(name, as_of)``, made by ``make()`` the first time."""
        return self._kept.get((name, as_of), make)
