"""One curve bootstrapped from its deposit, OIS and IRS quotes, and the curve it gives.

A :class:`CurveBuilder` does the quote-independent work once (schedules, accruals, the query
times of every cash flow) and then solves the instruments' par conditions with the
:mod:`workbench._ext` bootstrap kernel on every rebuild, warm-started from the last solution.
Curve time is ACT/365F years from the as-of date; nodes sit on the instruments' end dates.

Par conditions (per unit notional, ``K`` the quote as a decimal rate, ``P`` the curve being
built, ``D`` its discount curve):

* deposit over ``[s, e]``: ``P(s)/P(e) − (1 + K·a) = 0``;
* OIS, fixed vs compounded overnight on the same curve: ``K Σ a_j P(t_j) − P(s) + P(e) = 0``;
* IRS on a term index: ``Σ_k D(e_k)(P(s_k)/P(e_k) − 1) − K Σ_j a_j D(t_j) = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from workbench import _ext
from workbench._types import BP, FloatArray, IntArray
from workbench.market.model import CurveSpec, MarketError, MarketSnapshot
from workbench.market.schedules import (
    add_tenor,
    adjust,
    schedule,
    spot_date,
    year_fraction,
    year_fractions_from,
)

INTERPOLATION_METHODS = {"log_linear": _ext.LOG_LINEAR, "monotone_convex": _ext.MONOTONE_CONVEX}
"""The :mod:`workbench._ext` method code of each ``Interpolation`` name."""
_TOL = 1e-12  # residual per unit notional (every instrument reprices within 1e-8 of it)


@dataclass(frozen=True)
class Curve:
    """A built curve: nodes in ACT/365F time from ``as_of`` and their log discount factors."""

    id: str
    currency: str
    as_of: date
    method: int
    node_t: FloatArray
    node_logdf: FloatArray

    def log_discount(self, t: FloatArray) -> FloatArray:
        """log P(t) for year fractions ``t`` ≥ 0."""
        q = np.ascontiguousarray(t, dtype=np.float64)
        out = np.empty(q.shape, dtype=np.float64)
        _ext.interp_log_df(self.method, self.node_t, self.node_logdf, q.ravel(), out.ravel())
        return out

    def discount(self, t: FloatArray) -> FloatArray:
        """Discount factors P(t)."""
        return np.exp(self.log_discount(t))

    def zero_rate(self, t: FloatArray) -> FloatArray:
        """Continuously compounded zero rates, decimal per year (``t`` > 0)."""
        return -self.log_discount(t) / np.asarray(t, dtype=np.float64)

    def forward(self, t1: FloatArray, t2: FloatArray, accrual: FloatArray) -> FloatArray:
        """Simple forward rates over ``[t1, t2]`` with the given accrual fractions."""
        return (np.exp(self.log_discount(t1) - self.log_discount(t2)) - 1.0) / accrual

    def year_fraction(self, dates: np.ndarray) -> FloatArray:
        """Curve time of ``datetime64[D]`` dates."""
        return year_fractions_from(self.as_of, dates)


@dataclass(frozen=True)
class _BumpBase:
    """A build's residual coefficients and their parts that one bump changes."""

    c0: FloatArray
    w: FloatArray
    dc0_dk: FloatArray  # ∂c0_i/∂K_i, discount values held
    c0_own: FloatArray  # the part of c0 that does not read the discount curve
    d_coef: FloatArray  # weight of each discount value in c0 (per d_coef entry)
    d_terms: IntArray  # terms weighted by a discount value (IRS float legs)
    d_sum: FloatArray  # (d_coef entries × instruments): each entry's instrument, one-hot


class CurveBuilder:
    """The fixed structure of one curve's instruments, rebuilt quickly from new quotes."""

    def __init__(self, spec: CurveSpec, market: MarketSnapshot, method: int) -> None:
        self.spec = spec
        self.method = method
        self.as_of = market.as_of
        cal = market.calendars[spec.calendar]
        spot = spot_date(market.as_of, spec.spot_lag, cal)
        self.quote_ids = tuple(i.quote for i in spec.instruments)
        # coupon schedules roll back from the unadjusted spot + tenor (ISDA); pillars sit on the
        # adjusted end date
        raw_ends = [add_tenor(spot, i.tenor) for i in spec.instruments]
        ends = [adjust(e, cal, spec.business_day) for e in raw_ends]
        order = np.argsort(np.array(ends, dtype="datetime64[D]"), kind="stable")
        if len({ends[i] for i in order}) != len(ends):
            raise MarketError(f"curve {spec.id}: two instruments end on the same date")
        self.order = order
        insts = [spec.instruments[i] for i in order]
        ends = [ends[i] for i in order]
        raw_ends = [raw_ends[i] for i in order]
        self.node_t = np.concatenate(
            [[0.0], year_fractions_from(market.as_of, np.array(ends, "datetime64[D]"))]
        )
        dates: dict[date, int] = {market.as_of: 0}

        def qi(d: date) -> int:
            return dates.setdefault(d, len(dates))

        # terms: w = wa + K*wb (own-curve part); D-dependent parts listed separately
        ptr = [0]
        t_w0: list[float] = []
        t_wk: list[float] = []
        t_a: list[int] = []
        t_b: list[int] = []
        t_dpt: list[date | None] = []  # term weight = D(this date) (IRS float legs)
        c0a: list[float] = []
        c0b: list[float] = []

        def term(w0: float, wk: float, a: int, b: int, dpt: date | None) -> None:
            t_w0.append(w0)
            t_wk.append(wk)
            t_a.append(a)
            t_b.append(b)
            t_dpt.append(dpt)

        d_coef: list[tuple[int, date, float, float]] = []  # (inst, date, coef, coef per K)
        for k, (inst, end, raw_end) in enumerate(zip(insts, ends, raw_ends, strict=True)):
            if inst.kind == "deposit":
                a = float(
                    year_fraction(
                        np.array([spot], "datetime64[D]"),
                        np.array([end], "datetime64[D]"),
                        spec.day_count,
                    )[0]
                )
                c0a.append(-1.0)
                c0b.append(-a)
                term(1.0, 0.0, qi(spot), qi(end), None)
            elif inst.kind in ("ois", "irs"):
                if inst.kind == "irs" and spec.discount_curve is None:
                    raise MarketError(f"curve {spec.id}: IRS instruments need a discount_curve")
                fixed = schedule(spot, raw_end, spec.fixed_frequency_months, cal, spec.business_day)
                acc = year_fraction(fixed[:-1], fixed[1:], spec.fixed_day_count)
                coupons = zip(fixed[1:].astype(date), acc, strict=True)
                c0a.append(0.0)
                c0b.append(0.0)
                if inst.kind == "ois":  # fixed leg and P(e) − P(s) on the curve being built
                    for d, a in coupons:
                        term(0.0, float(a), qi(d), 0, None)
                    for sign, d in ((-1.0, spot), (1.0, end)):
                        term(sign, 0.0, qi(d), 0, None)
                else:  # IRS: fixed leg on D, float leg P(s)/P(e) − 1 weighted by D(e)
                    for d, a in coupons:
                        d_coef.append((k, d, 0.0, -float(a)))
                    flt = schedule(
                        spot, raw_end, spec.float_frequency_months, cal, spec.business_day
                    )
                    for s, e in zip(flt[:-1].astype(date), flt[1:].astype(date), strict=True):
                        d_coef.append((k, e, -1.0, 0.0))
                        term(0.0, 0.0, qi(s), qi(e), e)
            else:  # pragma: no cover - the market loader refuses other kinds
                raise MarketError(f"curve {spec.id}: unknown instrument kind {inst.kind!r}")
            ptr.append(len(t_w0))
        self.query_dates = np.array(list(dates), dtype="datetime64[D]")
        self.query_t = year_fractions_from(market.as_of, self.query_dates)
        self.term_ptr = np.array(ptr, dtype=np.int64)
        self.term_inst = np.repeat(np.arange(len(insts)), np.diff(self.term_ptr))
        self.term_w0 = np.array(t_w0)
        self.term_wk = np.array(t_wk)
        self.term_a = np.array(t_a, dtype=np.int64)
        self.term_b = np.array(t_b, dtype=np.int64)
        self.c0a = np.array(c0a)
        self.c0b = np.array(c0b)
        d_dates = sorted({d for _, d, _, _ in d_coef} | {d for d in t_dpt if d is not None})
        self.d_index = {d: i for i, d in enumerate(d_dates)}
        self.d_t = year_fractions_from(market.as_of, np.array(d_dates, dtype="datetime64[D]"))
        self.d_coef_inst = np.array([c[0] for c in d_coef], dtype=np.int64)
        self.d_coef_pt = np.array([self.d_index[c[1]] for c in d_coef], dtype=np.int64)
        self.d_coef_a = np.array([c[2] for c in d_coef])
        self.d_coef_b = np.array([c[3] for c in d_coef])
        self.term_dpt = np.array(
            [self.d_index[d] if d is not None else -1 for d in t_dpt], dtype=np.int64
        )
        self.logdf = np.zeros(self.node_t.size)
        self._k: FloatArray = np.zeros(len(insts))
        self._dvals: FloatArray = np.zeros(len(d_dates))
        self._base: _BumpBase | None = None  # the last build's coefficients, for bumps

    def _coefficients(self, k: FloatArray, dvals: FloatArray) -> tuple[FloatArray, FloatArray]:
        c0 = self.c0a + k * self.c0b
        w = self.term_w0 + k[self.term_inst] * self.term_wk
        if dvals.size:
            coef = self.d_coef_a + k[self.d_coef_inst] * self.d_coef_b
            c0 = c0 + np.bincount(
                self.d_coef_inst, weights=coef * dvals[self.d_coef_pt], minlength=c0.size
            )
            has_d = self.term_dpt >= 0
            w = np.where(has_d, dvals[np.maximum(self.term_dpt, 0)], w)
        return c0, w

    def build(self, quotes: FloatArray, discount: Curve | None) -> Curve:
        """Solve the curve for quote values (in ``spec.instruments`` order)."""
        k = np.asarray(quotes, dtype=np.float64)[self.order]
        dvals = (
            discount.discount(self.d_t) if discount is not None and self.d_t.size else np.zeros(0)
        )
        c0, w = self._coefficients(k, dvals)
        if not self.logdf[1:].any():  # cold start: flat at each quote
            self.logdf[1:] = -k * self.node_t[1:]
        try:
            self._newton(c0, w, self.logdf)
        except ValueError as exc:
            raise MarketError(f"curve {self.spec.id}: {exc}") from None
        self._k, self._dvals = k, dvals
        self._base = None
        return Curve(
            self.spec.id,
            self.spec.currency,
            self.as_of,
            self.method,
            self.node_t,
            self.logdf.copy(),
        )

    def _newton(self, c0: FloatArray, w: FloatArray, y: FloatArray) -> None:
        """Solve the node log-DFs ``y`` in place (from their values) for the residual
        coefficients ``c0``, ``w`` (raises ValueError when it does not converge)."""
        _ext.bootstrap(
            self.method, self.node_t, self.query_t, c0, self.term_ptr, w, self.term_a,
            self.term_b, y, _TOL, 50,
        )  # fmt: skip

    def bumped_coefficients(
        self, nodes: int | IntArray, bp: float | FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The residual coefficients of the last build with the quote of instrument
        ``nodes[r]`` (node order) moved by ``bp[r]`` basis points, the discount values held
        (``c0`` and ``w`` are affine in each quote: only that instrument's entries change):
        rows of ``c0`` (bumps × instruments) and ``w`` (bumps × terms), or one ``c0`` and one
        ``w`` for one bump (``nodes`` an int, ``bp`` a float)."""
        if np.ndim(nodes) == 0 and np.ndim(bp) == 0:
            c0_1, w_1 = self.bumped_coefficients(np.array([nodes]), np.array([bp], np.float64))
            return c0_1[0], w_1[0]
        base = self._bump_base()
        h = np.asarray(bp, dtype=np.float64) * BP
        at = np.asarray(nodes, dtype=np.int64)
        c0 = np.repeat(base.c0[None, :], at.size, axis=0)
        c0[np.arange(at.size), at] += h * base.dc0_dk[at]
        # 0 on the terms weighted by D (IRS float legs)
        own = self.term_inst[None, :] == at[:, None]
        w = base.w[None, :] + own * (h[:, None] * self.term_wk[None, :])
        return c0, w

    def coefficients_on(self, dvals: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The residual coefficients of the last build's quotes on other discount values, one
        row per row of ``dvals`` (values at :attr:`d_t` of a bumped discount curve; one
        ``c0`` and one ``w`` for a 1-D ``dvals``)."""
        if dvals.ndim == 1:
            c0_1, w_1 = self.coefficients_on(dvals[None, :])
            return c0_1[0], w_1[0]
        base = self._bump_base()
        rows = dvals.shape[0]
        c0 = np.repeat(base.c0_own[None, :], rows, axis=0)
        if self.d_coef_inst.size:
            weighted = base.d_coef[None, :] * dvals[:, self.d_coef_pt]
            c0 += weighted @ base.d_sum
        w = np.repeat(base.w[None, :], rows, axis=0)
        w[:, base.d_terms] = dvals[:, self.term_dpt[base.d_terms]]
        return c0, w

    def _bump_base(self) -> _BumpBase:
        if self._base is None:
            k, dvals = self._k, self._dvals
            c0, w = self._coefficients(k, dvals)
            dc0_dk = self.c0b.copy()
            d_coef = self.d_coef_a + k[self.d_coef_inst] * self.d_coef_b
            if dvals.size:
                dc0_dk += np.bincount(
                    self.d_coef_inst,
                    weights=self.d_coef_b * dvals[self.d_coef_pt],
                    minlength=k.size,
                )
            d_sum = np.zeros((self.d_coef_inst.size, k.size))
            d_sum[np.arange(self.d_coef_inst.size), self.d_coef_inst] = 1.0
            self._base = _BumpBase(
                c0,
                w,
                dc0_dk,
                self.c0a + k * self.c0b,
                d_coef,
                np.flatnonzero(self.term_dpt >= 0),
                d_sum,
            )
        return self._base

    def solve_from(self, c0: FloatArray, w: FloatArray, start: FloatArray) -> FloatArray:
        """Node log-DFs solved for each row of the residual coefficients ``c0``, ``w`` (see
        :meth:`bumped_coefficients`), Newton from the same row of ``start``, every row in one
        kernel call (rows × nodes); the builder's own state (warm start, last quotes) is left
        as it was. A row the solve cannot converge from is retried from the last solution.
        1-D ``c0``, ``w`` and ``start`` solve one system and give one node vector."""
        if np.ndim(start) == 1:
            one: FloatArray = self.solve_from(c0[None, :], w[None, :], start[None, :])[0]
            return one
        y = np.array(start, dtype=np.float64, order="C", copy=True)
        status = np.empty(y.shape[0], dtype=np.int64)
        _ext.bootstrap_rows(
            self.method, self.node_t, self.query_t, np.ascontiguousarray(c0), self.term_ptr,
            np.ascontiguousarray(w), self.term_a, self.term_b, y, _TOL, 50, status,
        )  # fmt: skip
        for r in np.flatnonzero(status < 0):
            retry = self.logdf.copy()
            try:
                self._newton(c0[r], w[r], retry)
            except ValueError as exc:
                raise MarketError(f"curve {self.spec.id}: bumped quote: {exc}") from None
            y[r] = retry
        return y

    def sensitivities(self, discount: Curve | None) -> tuple[FloatArray, FloatArray | None]:
        """∂y/∂q for own quotes (n × k, spec order) and ∂y/∂y_D (n × n_D) if discounted."""
        n = self.node_t.size
        logp = np.empty(self.query_t.size)
        jac = np.empty((self.query_t.size, n))
        _ext.interp_log_df_jacobian(self.method, self.node_t, self.logdf, self.query_t, logp, jac)
        _, w = self._coefficients(self._k, self._dvals)
        e = np.exp(logp[self.term_a] - logp[self.term_b])
        rows = (w * e)[:, None] * (jac[self.term_a] - jac[self.term_b])
        dr_dy = np.zeros((n - 1, n))
        np.add.at(dr_dy, self.term_inst, rows)
        a = dr_dy[:, 1:]
        # own quotes: R_i depends on K_i only
        dr_dk = self.c0b + np.bincount(self.term_inst, weights=self.term_wk * e, minlength=n - 1)
        if self._dvals.size:
            dr_dk = dr_dk + np.bincount(
                self.d_coef_inst,
                weights=self.d_coef_b * self._dvals[self.d_coef_pt],
                minlength=n - 1,
            )
        dy = np.zeros((n, n - 1))
        dy[1:] = -np.linalg.solve(a, np.diag(dr_dk))
        own = np.zeros((n, n - 1))
        own[:, self.order] = dy  # back to spec order of quotes
        if discount is None or not self._dvals.size:
            return own, None
        # dependence on the discount curve's node log-DFs
        coef = self.d_coef_a + self._k[self.d_coef_inst] * self.d_coef_b
        dr_dd = np.zeros((n - 1, self._dvals.size))
        np.add.at(dr_dd, (self.d_coef_inst, self.d_coef_pt), coef)
        has_d = self.term_dpt >= 0
        np.add.at(dr_dd, (self.term_inst[has_d], self.term_dpt[has_d]), e[has_d])
        dl = np.empty(self.d_t.size)
        djac = np.empty((self.d_t.size, discount.node_t.size))
        _ext.interp_log_df_jacobian(
            discount.method, discount.node_t, discount.node_logdf, self.d_t, dl, djac
        )
        dr_dyd = dr_dd @ (self._dvals[:, None] * djac)
        via = np.zeros((n, discount.node_t.size))
        via[1:] = -np.linalg.solve(a, dr_dyd)
        return own, via


__all__ = ["INTERPOLATION_METHODS", "Curve", "CurveBuilder"]
