"""Discount and projection curves bootstrapped from deposit, OIS and IRS quotes.

A :class:`CurveBuilder` does the quote-independent work once (schedules, accruals, the query
times of every cash flow) and then solves the instruments' par conditions with the
:mod:`workbench._ext` bootstrap kernel on every rebuild, warm-started from the last solution.
Curve time is ACT/365F from the as-of date; nodes sit on the instruments' end dates.

Par conditions (per unit notional, ``K`` the quote, ``P`` the curve being built, ``D`` its
discount curve):

* deposit over ``[s, e]``: ``P(s)/P(e) − (1 + K·a) = 0``;
* OIS, fixed vs compounded overnight on the same curve: ``K Σ a_j P(t_j) − P(s) + P(e) = 0``;
* IRS on a term index: ``Σ_k D(e_k)(P(s_k)/P(e_k) − 1) − K Σ_j a_j D(t_j) = 0``.

Key-rate sensitivities come two ways (docs/greeks.md says why they differ):

* bumped: each quote moved ±1bp and the curve re-solved, warm-started from the base nodes moved
  by the first-order prediction below (one or two Newton steps; the other quotes, the schedules
  and the query times are the base curve's), a term curve re-solved on each bumped OIS curve;
* exact: implicit differentiation of the solved system, ``∂y/∂q = −(∂R/∂y)⁻¹ ∂R/∂q``,
  including a term curve's dependence on its OIS curve's quotes.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date

import numpy as np

from workbench import _ext
from workbench._types import BP, FloatArray, IntArray, KeyRateMethod
from workbench.market.model import CurveSpec, Interpolation, MarketError, MarketSnapshot
from workbench.market.schedules import (
    add_tenor,
    adjust,
    schedule,
    spot_date,
    year_fraction,
    year_fractions_from,
)

_METHOD = {"log_linear": _ext.LOG_LINEAR, "monotone_convex": _ext.MONOTONE_CONVEX}
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
            elif inst.kind == "ois":
                fixed = schedule(spot, raw_end, spec.fixed_frequency_months, cal, spec.business_day)
                acc = year_fraction(fixed[:-1], fixed[1:], spec.fixed_day_count)
                c0a.append(0.0)
                c0b.append(0.0)
                for d, a in zip(fixed[1:].astype(date), acc, strict=True):
                    term(0.0, float(a), qi(d), 0, None)
                for sign, d in ((-1.0, spot), (1.0, end)):
                    term(sign, 0.0, qi(d), 0, None)
            elif inst.kind == "irs":
                if spec.discount_curve is None:
                    raise MarketError(f"curve {spec.id}: IRS instruments need a discount_curve")
                fixed = schedule(spot, raw_end, spec.fixed_frequency_months, cal, spec.business_day)
                acc = year_fraction(fixed[:-1], fixed[1:], spec.fixed_day_count)
                c0a.append(0.0)
                c0b.append(0.0)
                for d, a in zip(fixed[1:].astype(date), acc, strict=True):
                    d_coef.append((k, d, 0.0, -float(a)))
                flt = schedule(spot, raw_end, spec.float_frequency_months, cal, spec.business_day)
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

    def bumped_coefficients(self, node: int, bp: float) -> tuple[FloatArray, FloatArray]:
        """The residual coefficients of the last build with the quote of instrument ``node``
        (node order) moved by ``bp`` basis points, the discount values held (``c0`` and
        ``w`` are affine in each quote: only that instrument's entries change)."""
        base = self._bump_base()
        c0, w = base.c0.copy(), base.w.copy()
        h = bp * BP
        c0[node] += h * base.dc0_dk[node]
        terms = slice(int(self.term_ptr[node]), int(self.term_ptr[node + 1]))
        w[terms] += h * self.term_wk[terms]  # 0 on the terms weighted by D (IRS float legs)
        return c0, w

    def coefficients_on(self, dvals: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The residual coefficients of the last build's quotes on other discount values
        ``dvals`` at :attr:`d_t` (a bumped discount curve)."""
        base = self._bump_base()
        c0 = base.c0_own + np.bincount(
            self.d_coef_inst, weights=base.d_coef * dvals[self.d_coef_pt], minlength=base.c0.size
        )
        w = base.w.copy()
        w[base.d_terms] = dvals[self.term_dpt[base.d_terms]]
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
            self._base = _BumpBase(
                c0, w, dc0_dk, self.c0a + k * self.c0b, d_coef, np.flatnonzero(self.term_dpt >= 0)
            )
        return self._base

    def solve_from(self, c0: FloatArray, w: FloatArray, start: FloatArray) -> FloatArray:
        """Node log-DFs solved for the residual coefficients ``c0``, ``w`` (see
        :meth:`bumped_coefficients`), Newton from ``start``; the builder's own state (warm
        start, last quotes) is left as it was. A start the solve cannot converge from is
        retried from the last solution."""
        error = ""
        for first in (start, self.logdf):
            y = first.copy()
            try:
                self._newton(c0, w, y)
            except ValueError as exc:
                error = str(exc)
                continue
            return y
        raise MarketError(f"curve {self.spec.id}: bumped quote: {error}") from None

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


class CurveSet:
    """Every curve of a market, built in dependency order (OIS first, then term curves)."""

    def __init__(
        self, market: MarketSnapshot, *, interpolation: Interpolation | None = None
    ) -> None:
        self.interpolation = interpolation
        self._builders: dict[str, CurveBuilder] = {}
        specs = sorted(market.curves, key=lambda s: 0 if s.kind == "ois" else 1)
        for spec in specs:
            if spec.kind == "term" and spec.discount_curve not in {s.id for s in market.curves}:
                raise MarketError(
                    f"curve {spec.id}: discount curve {spec.discount_curve!r} is unknown"
                )
            method = _METHOD[interpolation or spec.interpolation]
            self._builders[spec.id] = CurveBuilder(spec, market, method)
        self._curves: dict[str, Curve] = {}
        self._jac: dict[str, tuple[tuple[str, ...], FloatArray]] = {}
        self._bumps: dict[str, BumpedNodes] = {}
        self.as_of = market.as_of
        self.used: set[str] = set()  # curves read through [] since built (see :meth:`retain`)
        self.rebuild(market)

    def retain(self, curve_ids: Collection[str]) -> None:
        """Keep only ``curve_ids`` and the curves they discount on: the others are dropped and
        no longer re-solved when quotes move (a worker whose positions read a few curves keeps
        those it has read, :attr:`used`). A dropped curve is unknown afterwards."""
        keep = set(curve_ids)
        for cid in list(keep):
            builder = self._builders.get(cid)
            if builder is not None and builder.spec.discount_curve is not None:
                keep.add(builder.spec.discount_curve)
        self._builders = {k: v for k, v in self._builders.items() if k in keep}
        self._curves = {k: v for k, v in self._curves.items() if k in keep}
        self._jac = {k: v for k, v in self._jac.items() if k in keep}
        self._bumps = {k: v for k, v in self._bumps.items() if k in keep}

    def rebuild(self, market: MarketSnapshot, curve_ids: Collection[str] | None = None) -> None:
        """Re-solve the curves from the market's quotes (warm start).

        With ``curve_ids``, only those curves and the term curves they discount are re-solved
        (the others keep their nodes: their quotes must not have moved).
        """
        if market.as_of != self.as_of:
            fresh = CurveSet(market, interpolation=self.interpolation)
            self.__dict__.update(fresh.__dict__)
            return
        todo = set(self._builders) if curve_ids is None else set(curve_ids)
        for cid, builder in self._builders.items():  # dependency order: OIS first
            dc = builder.spec.discount_curve
            disc_id = dc if builder.spec.kind == "term" else None
            if cid not in todo and disc_id not in todo:
                continue
            todo.add(cid)
            self._jac.pop(cid, None)
            self._bumps.pop(cid, None)
            disc = self._curves[disc_id] if disc_id is not None else None
            self._curves[cid] = builder.build(market.quote_values(builder.quote_ids), disc)

    def _with_dependants(self, curve_ids: Collection[str]) -> set[str]:
        """``curve_ids`` and every term curve discounted by one of them."""
        out = set(curve_ids)
        for cid, builder in self._builders.items():  # dependency order: OIS first
            if builder.spec.kind == "term" and builder.spec.discount_curve in out:
                out.add(cid)
        return out

    def shocked(self, market: MarketSnapshot, curve_ids: Collection[str]) -> CurveSet:
        """A copy re-solved on ``market`` for ``curve_ids`` (and their dependants); the other
        curves are shared with this set, which is left as it was (a what-if's curves)."""
        todo = self._with_dependants(curve_ids) & set(self._builders)
        new = copy.copy(self)
        new._curves = dict(self._curves)
        new._jac = {k: v for k, v in self._jac.items() if k not in todo}
        new._bumps = {k: v for k, v in self._bumps.items() if k not in todo}
        new._builders = dict(self._builders)
        for cid in todo:
            builder = copy.copy(self._builders[cid])
            builder.logdf = builder.logdf.copy()  # the warm start is solved in place
            new._builders[cid] = builder
        new.rebuild(market, todo)
        return new

    def __getitem__(self, curve_id: str) -> Curve:
        try:
            curve = self._curves[curve_id]
        except KeyError:
            raise MarketError(f"unknown curve {curve_id!r}") from None
        self.used.add(curve_id)
        return curve

    def __contains__(self, curve_id: object) -> bool:
        return curve_id in self._curves

    def ids(self) -> tuple[str, ...]:
        """Curve ids in build order."""
        return tuple(self._curves)

    def quote_jacobian(self, curve_id: str) -> tuple[tuple[str, ...], FloatArray]:
        """Quote ids and ∂(node log-DF)/∂quote per +1bp (n × k), incl. the discount curve's."""
        hit = self._jac.get(curve_id)
        if hit is not None:
            return hit
        builder = self._builders[curve_id]
        disc_id = builder.spec.discount_curve if builder.spec.kind == "term" else None
        disc = self._curves[disc_id] if disc_id else None
        own, via = builder.sensitivities(disc)
        qids: tuple[str, ...] = builder.quote_ids
        jac = own * BP
        if via is not None and disc_id is not None:
            dq, djac = self.quote_jacobian(disc_id)
            qids = qids + dq
            jac = np.hstack([jac, via @ djac])
        self._jac[curve_id] = (qids, jac)
        return qids, jac

    def log_df_sensitivity(
        self, curve_id: str, t: FloatArray
    ) -> tuple[tuple[str, ...], FloatArray]:
        """Quote ids and ∂ log P(t) / ∂ quote per +1bp (m × k) at arbitrary times."""
        curve = self[curve_id]
        qids, jac = self.quote_jacobian(curve_id)
        q = np.ascontiguousarray(t, dtype=np.float64)
        out = np.empty(q.size)
        ij = np.empty((q.size, curve.node_t.size))
        _ext.interp_log_df_jacobian(curve.method, curve.node_t, curve.node_logdf, q, out, ij)
        return qids, ij @ jac

    def bumped_nodes(self, curve_id: str) -> BumpedNodes:
        """The curve's node log-DFs re-solved with each quote it depends on moved ±1bp (its
        own quotes, then its discount curve's, as :meth:`quote_jacobian` orders them)."""
        hit = self._bumps.get(curve_id)
        if hit is not None:
            return hit
        builder = self._builders[curve_id]
        curve = self[curve_id]
        qids, jac = self.quote_jacobian(curve_id)
        own = len(builder.quote_ids)
        up = np.empty((len(qids), curve.node_t.size))
        down = np.empty_like(up)
        at_node = np.argsort(builder.order)  # spec position → node-order position
        for j in range(own):
            for sign, out in ((1.0, up), (-1.0, down)):
                c0, w = builder.bumped_coefficients(int(at_node[j]), sign)
                out[j] = builder.solve_from(c0, w, curve.node_logdf + sign * jac[:, j])
        if own < len(qids):  # a term curve on each bumped OIS curve
            disc_id = builder.spec.discount_curve
            assert disc_id is not None
            disc = self._curves[disc_id]
            dn = self.bumped_nodes(disc_id)
            dl = np.empty(builder.d_t.size)
            for i in range(len(dn.quote_ids)):
                for sign, src, out in ((1.0, dn.up, up), (-1.0, dn.down, down)):
                    _ext.interp_log_df(disc.method, disc.node_t, src[i], builder.d_t, dl)
                    c0, w = builder.coefficients_on(np.exp(dl))
                    out[own + i] = builder.solve_from(
                        c0, w, curve.node_logdf + sign * jac[:, own + i]
                    )
        hit = BumpedNodes(qids, up, down)
        self._bumps[curve_id] = hit
        return hit

    def log_df_bumped(
        self, curve_id: str, t: FloatArray
    ) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
        """Quote ids and log P(t) on the curve re-solved with each quote +1bp and −1bp
        (quotes × times each), see :meth:`bumped_nodes`."""
        curve = self[curve_id]
        bumped = self.bumped_nodes(curve_id)
        q = np.ascontiguousarray(t, dtype=np.float64)
        up = np.empty((len(bumped.quote_ids), q.size))
        down = np.empty_like(up)
        for j in range(len(bumped.quote_ids)):
            _ext.interp_log_df(curve.method, curve.node_t, bumped.up[j], q, up[j])
            _ext.interp_log_df(curve.method, curve.node_t, bumped.down[j], q, down[j])
        return bumped.quote_ids, up, down

    def log_df_change(
        self, curve_id: str, t: FloatArray, method: KeyRateMethod
    ) -> tuple[tuple[str, ...], FloatArray]:
        """Quote ids and the change of log P(t) per +1bp of each quote (times × quotes): the
        central difference ``(log P₊ − log P₋)/2`` of the re-solved curves (``"bump"``) or
        the exact derivative × 1bp (``"jacobian"``)."""
        if method == "jacobian":
            return self.log_df_sensitivity(curve_id, t)
        qids, up, down = self.log_df_bumped(curve_id, t)
        change: FloatArray = ((up - down) / 2.0).T
        return qids, change


@dataclass(frozen=True)
class BumpedNodes:
    """A curve's node log-DFs re-bootstrapped with one quote moved: row ``j`` of ``up``
    (``down``) is the curve with ``quote_ids[j]`` +1bp (−1bp), every other quote held."""

    quote_ids: tuple[str, ...]
    up: FloatArray
    down: FloatArray


def rate_quote_ids(
    market: MarketSnapshot, currency: str | Collection[str] | None = None
) -> list[str]:
    """Every curve quote id (optionally of one currency or of several)."""
    wanted = {currency} if isinstance(currency, str) else currency
    return [
        i.quote
        for spec in market.curves
        if wanted is None or spec.currency in wanted
        for i in spec.instruments
    ]


def shifted(
    market: MarketSnapshot, bp: float, currency: str | Collection[str] | None = None
) -> MarketSnapshot:
    """The market with every curve quote (of one currency, several, or all) moved by ``bp``
    basis points."""
    ids = rate_quote_ids(market, currency)
    values = market.quotes.copy()
    values[[market.quote_index[q] for q in ids]] += bp * BP
    return market.with_quote_values(values)


__all__ = [
    "BumpedNodes",
    "Curve",
    "CurveBuilder",
    "CurveSet",
    "IntArray",
    "rate_quote_ids",
    "shifted",
]
