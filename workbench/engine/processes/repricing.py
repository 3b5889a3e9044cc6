"""A worker's pricing state: its groups, their last results, and dirty-set repricing.

No sockets and no clock here: the process shell in :mod:`engine.processes.worker` feeds it quote
tables and writes what it returns. Results are kept in each position's currency so that an FX spot
tick only re-converts to USD (a multiplication) instead of repricing.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.engine.processes.partition import GroupSpec, conversion_quotes, worker_groups
from workbench.market.model import MarketSnapshot
from workbench.pricing.conversion import base_rate_column
from workbench.pricing.credit_book import CreditPricer
from workbench.pricing.curves import CurveSet
from workbench.pricing.equity_book import EquityPricer
from workbench.pricing.fx_book import FxPricer
from workbench.pricing.rates_book import RatesPricer
from workbench.pricing.risk import ClassPricer, Kept, forget_kept
from workbench.pricing.surfaces import SplineCache

LOCAL_COLUMNS = ("pv_ccy", "delta", "gamma", "vega", "theta")


class InjectedFaultError(RuntimeError):
    """A reprice failed on purpose: its group matches a ``fail_reprice`` pattern."""


@dataclass
class Update:
    """Rows to write and their columns in USD (``pv_ccy`` in the position's currency).

    ``failed`` holds every group whose last reprice failed (key → the error), ``failed_rows``
    their rows: not written, to be flagged stale until a reprice of them succeeds.
    """

    rows: IntArray
    columns: dict[str, FloatArray]
    groups: list[str]
    timings_ns: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    failed_rows: IntArray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _make_pricer(
    book: Book,
    rows: IntArray,
    market: MarketSnapshot,
    asset_class: str,
    cache: SplineCache,
    n_paths: int,
    tranche_method: Literal["mc", "recursion"],
) -> ClassPricer:
    if asset_class == "rates":
        return RatesPricer(book, rows, market)
    if asset_class == "fx":
        return FxPricer(book, rows, market, cache=cache)
    if asset_class == "credit":
        return CreditPricer(book, rows, market, n_paths=n_paths, method=tranche_method)
    if asset_class == "equity":
        return EquityPricer(book, rows, market, cache=cache)
    raise ValueError(f"unknown asset class {asset_class!r}")


class Repricer:
    """The positions of one worker (asset class × slot) and everything to reprice them."""

    def __init__(
        self,
        book: Book,
        market: MarketSnapshot,
        asset_class: str,
        *,
        slot: int = 0,
        n_slots: int = 1,
        n_paths: int = 50_000,
        tranche_method: Literal["mc", "recursion"] = "recursion",
    ) -> None:
        self.book = book
        self.asset_class = asset_class
        self.market = market
        self.cache = SplineCache()
        self.groups: list[GroupSpec] = worker_groups(book, market, asset_class, slot, n_slots)
        self.rows: IntArray = (
            np.sort(np.concatenate([g.rows for g in self.groups]))
            if self.groups
            else np.empty(0, dtype=np.int64)
        )
        # one pricer for every group: a flush reprices its dirty groups in one vectorised call
        self.pricer: ClassPricer = _make_pricer(
            book, self.rows, market, asset_class, self.cache, n_paths, tranche_method
        )
        if hasattr(self.pricer, "with_key_rates"):  # the service publishes Greeks, not ladders
            self.pricer.with_key_rates = False
        n_quotes = len(market.quote_ids)
        # which groups read each quote (quotes × groups): a flush's dirty groups in one gather
        self.reads = np.zeros((n_quotes, len(self.groups)), dtype=bool)
        for k, g in enumerate(self.groups):
            self.reads[np.asarray(g.quotes, dtype=np.int64), k] = True
        self.rate_quotes = np.zeros(n_quotes, dtype=bool)
        self.curve_ids = [spec.id for spec in market.curves]
        self.quote_curve = np.full(n_quotes, -1, dtype=np.int64)  # the curve it is a quote of
        for c, spec in enumerate(market.curves):
            for inst in spec.instruments:
                self.rate_quotes[market.quote_index[inst.quote]] = True
                self.quote_curve[market.quote_index[inst.quote]] = c
        self.fx_quotes = np.zeros(n_quotes, dtype=bool)
        self.fx_quotes[conversion_quotes(market)] = True
        self.curves = CurveSet(market)
        self.curves_next = CurveSet(self._next(market))
        n = len(book)
        self.local = {c: np.full(n, np.nan) for c in LOCAL_COLUMNS}
        self.fx = np.ones(n)
        self.repriced = 0
        self._rows_cache: Kept[tuple[int, ...], IntArray] = Kept(64)
        self.fail_patterns: tuple[str, ...] = ()  # fault injection: group keys that fail
        self.failed: dict[int, str] = {}  # group index → why its last reprice failed
        self.failed_curves: set[str] = set()  # curves whose last rebuild failed

    @staticmethod
    def _next(market: MarketSnapshot) -> MarketSnapshot:
        return market.with_as_of(market.as_of + timedelta(days=1))

    def _rows_of(self, which: tuple[int, ...]) -> IntArray:
        """The rows of groups ``which``, ascending (kept: a worker sees the same few sets of
        dirty groups again and again)."""
        return self._rows_cache.get(
            which, lambda: np.sort(np.concatenate([self.groups[k].rows for k in which]))
        )

    def _only(self, which: list[int]) -> set[str] | None:
        """The pricer's selection for groups ``which`` (None: every group)."""
        if len(which) == len(self.groups):
            return None
        return {self.groups[k].underlying for k in which}

    def _price_groups(self, market: MarketSnapshot, which: list[int]) -> dict[str, int]:
        if not which:
            return {}
        for k in which:
            key = self.groups[k].key
            if any(fnmatch.fnmatchcase(key, p) for p in self.fail_patterns):
                raise InjectedFaultError(f"fault injection: fail_reprice matches {key}")
        only = self._only(which)
        t0 = time.perf_counter_ns()
        res = self.pricer.risk(market, self.curves, only)
        t1 = time.perf_counter_ns()
        pv_next = self.pricer.pv(self._next(market), self.curves_next, only)
        t2 = time.perf_counter_ns()
        rows = res.rows
        self.local["pv_ccy"][rows] = res.pv
        self.local["delta"][rows] = res.delta
        self.local["gamma"][rows] = res.gamma
        self.local["vega"][rows] = res.vega
        self.local["theta"][rows] = pv_next - res.pv
        self.repriced += rows.size
        return {self.asset_class: t1 - t0, "theta": t2 - t1}

    def _price_isolating(self, market: MarketSnapshot, which: list[int]) -> dict[str, int]:
        """Price groups ``which`` in one call; if it fails, group by group, so one group that
        cannot be priced leaves the others fresh. Updates :attr:`failed`."""
        try:
            timings = self._price_groups(market, which)
        except Exception as exc:  # any pricer exception: isolate the groups that raise it
            if len(which) == 1:
                self.failed[which[0]] = _describe(exc)
                return {}
            timings = {}
            for k in which:
                try:
                    for name, ns in self._price_groups(market, [k]).items():
                        timings[name] = timings.get(name, 0) + ns
                except Exception as one:
                    self.failed[k] = _describe(one)
                else:
                    self.failed.pop(k, None)
            return timings
        for k in which:
            self.failed.pop(k, None)
        return timings

    def _rebuild_or_fail(
        self, market: MarketSnapshot, timings: dict[str, int], curve_ids: set[str]
    ) -> set[int]:
        """Re-solve ``curve_ids`` (and the curves whose last rebuild failed); the groups that
        read a curve that does not solve are returned (not to be priced on it)."""
        wanted = curve_ids | self.failed_curves
        try:
            self._rebuild(market, timings, wanted)
        except Exception as exc:
            self.failed_curves = wanted
            why = f"curve {', '.join(sorted(wanted))} did not solve: {_describe(exc)}"
            codes = [c for c, cid in enumerate(self.curve_ids) if cid in wanted]
            quotes = np.flatnonzero(np.isin(self.quote_curve, codes))
            hit = set(self._groups_reading(quotes))
            for k in hit:
                self.failed[k] = why
            return hit
        self.failed_curves = set()
        return set()

    def _groups_reading(self, quotes: IntArray) -> list[int]:
        """The groups that read any of ``quotes`` (quote rows), ascending."""
        return np.flatnonzero(self.reads[quotes].any(axis=0)).tolist()

    def failed_rows(self) -> IntArray:
        """Rows of the groups whose last reprice failed, ascending."""
        if not self.failed:
            return np.empty(0, dtype=np.int64)
        return self._rows_of(tuple(sorted(self.failed)))

    def _failures(self) -> dict[str, str]:
        return {self.groups[k].key: why for k, why in sorted(self.failed.items())}

    def _convert(self, rows: IntArray) -> dict[str, FloatArray]:
        fx = self.fx[rows]
        out = {"pv": self.local["pv_ccy"][rows] * fx, "pv_ccy": self.local["pv_ccy"][rows].copy()}
        for c in ("delta", "gamma", "vega", "theta"):
            out[c] = self.local[c][rows] * fx
        return out

    def _rebuild(
        self, market: MarketSnapshot, timings: dict[str, int], curve_ids: set[str] | None = None
    ) -> None:
        """Re-solve the curves (those of ``curve_ids`` and their dependants, or all)."""
        t0 = time.perf_counter_ns()
        self.curves.rebuild(market, curve_ids)
        self.curves_next.rebuild(self._next(market), curve_ids)
        timings["curves"] = time.perf_counter_ns() - t0

    def forget(self) -> None:
        """Drop every cache (splines, tranche losses, smile solutions): the next price starts
        cold, as if every quote had moved."""
        self.cache.clear()
        forget_kept([self.pricer])

    def full(self, market: MarketSnapshot) -> Update:
        """Reprice every group against ``market`` (start-up, restart, every quote dirty)."""
        self.market = market
        timings: dict[str, int] = {}
        self.failed = {}
        self._rebuild(market, timings)
        timings.update(self._price_isolating(market, list(range(len(self.groups)))))
        # from now on re-solve only the curves this worker's positions read
        self.curves.retain(self.curves.used)
        self.curves_next.retain(self.curves_next.used)
        t0 = time.perf_counter_ns()
        self.fx = base_rate_column(market, self.book.currency.codes, self.book.currency.labels)
        rows = self._without_failed(self.rows)
        columns = self._convert(rows)
        timings["convert"] = time.perf_counter_ns() - t0
        return Update(
            rows,
            columns,
            [g.key for k, g in enumerate(self.groups) if k not in self.failed],
            timings,
            self._failures(),
            self.failed_rows(),
        )

    def current(self) -> Update:
        """Every row of this worker as last priced (the failed ones left out and listed), in
        USD at the current FX rates: what a worker taking over a slot writes."""
        rows = self._without_failed(self.rows)
        return Update(
            rows,
            self._convert(rows),
            [g.key for k, g in enumerate(self.groups) if k not in self.failed],
            {},
            self._failures(),
            self.failed_rows(),
        )

    def _without_failed(self, rows: IntArray) -> IntArray:
        if not self.failed:
            return rows
        return np.setdiff1d(rows, self.failed_rows(), assume_unique=True)

    def update(self, values: FloatArray, changed: IntArray) -> Update | None:
        """Apply a new quote table of which ``changed`` quote rows moved; reprice what reads them
        and every group whose last reprice failed (``changed`` may then be empty: a retry).

        A group that fails again keeps its last good values and is listed in the result's
        ``failed`` (its rows are not written: they stay stale and age). Returns None when
        nothing of this worker depends on the changed quotes and nothing had failed.
        """
        dirty = sorted(set(self._groups_reading(changed)) | set(self.failed))
        fx_moved = bool(self.fx_quotes[changed].any())
        if not dirty and not fx_moved:
            return None
        market = self.market.with_quote_values(values)
        self.market = market
        timings: dict[str, int] = {}
        unsolved: set[int] = set()
        if self.rate_quotes[changed].any() or self.failed_curves:
            codes = np.unique(self.quote_curve[changed])
            moved = {self.curve_ids[c] for c in codes.tolist() if c >= 0}
            unsolved = self._rebuild_or_fail(market, timings, moved)
        timings.update(self._price_isolating(market, [k for k in dirty if k not in unsolved]))
        t0 = time.perf_counter_ns()
        if fx_moved:
            self.fx = base_rate_column(market, self.book.currency.codes, self.book.currency.labels)
            rows = self.rows
        else:
            priced = tuple(k for k in dirty if k not in self.failed)
            rows = self._rows_of(priced) if priced else np.empty(0, dtype=np.int64)
        rows = self._without_failed(rows)
        columns = self._convert(rows)
        timings["convert"] = time.perf_counter_ns() - t0
        return Update(
            rows,
            columns,
            [self.groups[k].key for k in dirty if k not in self.failed],
            timings,
            self._failures(),
            self.failed_rows(),
        )

    def whatif(self, shocked: MarketSnapshot) -> tuple[IntArray, FloatArray, FloatArray]:
        """Rows, base PV and shocked PV (USD) of every position, on a shocked copy of the market.

        Only the groups that read a shocked quote are repriced (the others' shocked PV is their
        live PV, PnL exactly 0); separate curve sets are used, so the live state (curves,
        results, caches' current entries) is not disturbed.
        """
        moved = np.flatnonzero(shocked.quotes != self.market.quotes)
        dirty = self._groups_reading(moved)
        rows = self.rows
        base = self.local["pv_ccy"][rows] * self.fx[rows]
        pv_new = self.local["pv_ccy"].copy()
        if dirty:
            moved_curves = {self.curve_ids[c] for c in np.unique(self.quote_curve[moved]).tolist()
                            if c >= 0}  # fmt: skip
            curves = self.curves.shocked(shocked, moved_curves) if moved_curves else self.curves
            only = self._only(dirty)
            pv_new[self.pricer.rows_for(only)] = self.pricer.pv(shocked, curves, only)
        if self.fx_quotes[moved].any():
            fx_shocked = base_rate_column(
                shocked, self.book.currency.codes, self.book.currency.labels
            )
        else:
            fx_shocked = self.fx
        return rows, base, pv_new[rows] * fx_shocked[rows]
