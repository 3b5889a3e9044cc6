"""Every curve of a market re-bootstrapped under many scenarios, and swaps priced on them.

A scenario is a row of quote values on the market's quotes. Each curve is solved for every
scenario from today's solution, exactly as :meth:`workbench.pricing.curves.CurveSet.shocked`
solves one scenario: the par conditions' coefficients of all the scenarios are formed at once
(they are affine in the quotes and linear in the discount curve's values), and each scenario's
node log discount factors come from the same compiled Newton solve
(:func:`workbench._ext.bootstrap`, warm-started at today's nodes), so a scenario's curve is the
one the per-scenario path builds, to the last bit.

Swaps are then the cash-flow matrix of each curve group
(:class:`workbench.pricing.swaps.Exposure`: swaps × discount values, fixed at load) times a
(values × scenarios) matrix of discount values.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from workbench import _ext
from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import MarketError, MarketSnapshot
from workbench.market.schedules import year_fractions_from
from workbench.pricing.bootstrap import _TOL, INTERPOLATION_METHODS, CurveBuilder
from workbench.pricing.curves import CurveSet
from workbench.pricing.rates_book import swap_groups
from workbench.pricing.swaps import SwapGroup, swap_pvs

_MAX_ITER = 50


class _Solver:
    """One curve's par conditions as matrices over scenarios (coefficients in node order)."""

    def __init__(self, builder: CurveBuilder, quote_rows: IntArray) -> None:
        self.builder = builder
        b = builder
        self.rows = quote_rows[b.order]  # quote rows in node order
        self.has_d = b.term_dpt >= 0

    def coefficients(self, k: FloatArray, dvals: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``c0`` (S × instruments) and ``w`` (S × terms) for quote rows ``k`` (S × instruments,
        node order) and discount values ``dvals`` (S × discount dates)."""
        b = self.builder
        c0 = b.c0a + k * b.c0b
        w = b.term_w0 + k[:, b.term_inst] * b.term_wk
        if dvals.shape[1]:
            coef = b.d_coef_a + k[:, b.d_coef_inst] * b.d_coef_b
            terms = coef * dvals[:, b.d_coef_pt]
            # summed per scenario in the order the single-scenario build sums them
            c0 = c0 + np.stack([np.bincount(b.d_coef_inst, weights=row, minlength=c0.shape[1])
                                for row in terms])  # fmt: skip
            w = np.where(self.has_d, dvals[:, np.maximum(b.term_dpt, 0)], w)
        return c0, w

    def solve(self, values: FloatArray, start: FloatArray, dvals: FloatArray) -> FloatArray:
        """Node log-DFs (S × nodes) for the scenarios' quotes ``values`` (S × market quotes)."""
        b = self.builder
        c0, w = self.coefficients(values[:, self.rows], dvals)
        out = np.repeat(start[None, :], values.shape[0], axis=0)
        for s in range(values.shape[0]):
            y = out[s]
            try:
                _ext.bootstrap(
                    b.method, b.node_t, b.query_t, np.ascontiguousarray(c0[s]), b.term_ptr,
                    np.ascontiguousarray(w[s]), b.term_a, b.term_b, y, _TOL, _MAX_ITER,
                )  # fmt: skip
            except ValueError as exc:
                raise MarketError(f"curve {b.spec.id}, scenario {s}: {exc}") from None
        return out


class ScenarioCurves:
    """Every curve of ``market`` set up once; :meth:`solve` re-bootstraps them all under a
    block of scenarios, from ``today``'s solved nodes (``today`` is left as it was)."""

    def __init__(self, market: MarketSnapshot, today: CurveSet) -> None:
        self.as_of = market.as_of
        specs = sorted(market.curves, key=lambda s: 0 if s.kind == "ois" else 1)
        self._solvers: dict[str, _Solver] = {}
        self._start: dict[str, FloatArray] = {}
        self._disc: dict[str, str | None] = {}
        for spec in specs:
            method = INTERPOLATION_METHODS[today.interpolation or spec.interpolation]
            builder = CurveBuilder(spec, market, method)
            self._solvers[spec.id] = _Solver(builder, market.quote_rows(builder.quote_ids))
            self._start[spec.id] = today[spec.id].node_logdf.copy()
            self._disc[spec.id] = spec.discount_curve if spec.kind == "term" else None
        self.method = {cid: s.builder.method for cid, s in self._solvers.items()}
        self.node_t = {cid: s.builder.node_t for cid, s in self._solvers.items()}

    def restart(self, today: CurveSet) -> None:
        """Start later solves from ``today``'s solved nodes (today's quotes moved; the same
        market otherwise): as if set up on them."""
        for cid in self._solvers:
            self._start[cid] = today[cid].node_logdf.copy()

    def solve(self, values: FloatArray) -> SolvedCurves:
        """Every curve solved under each row of ``values`` (S × the market's quotes)."""
        nodes: dict[str, FloatArray] = {}
        for cid, solver in self._solvers.items():  # OIS curves first
            disc = self._disc[cid]
            if disc is None:
                dvals = np.zeros((values.shape[0], 0))
            else:
                dvals = np.exp(self._log_df(disc, nodes[disc], solver.builder.d_t))
            nodes[cid] = solver.solve(values, self._start[cid], dvals)
        return SolvedCurves(self, nodes)

    def _log_df(self, curve_id: str, nodes: FloatArray, t: FloatArray) -> FloatArray:
        q = np.ascontiguousarray(t, dtype=np.float64)
        out = np.empty((nodes.shape[0], q.size))
        method, node_t = self.method[curve_id], self.node_t[curve_id]
        for s in range(nodes.shape[0]):
            _ext.interp_log_df(method, node_t, nodes[s], q, out[s])
        return out


class SolvedCurves:
    """The curves of a block of scenarios: ``nodes[curve id]`` (S × nodes) log-DFs."""

    def __init__(self, set_up: ScenarioCurves, nodes: dict[str, FloatArray]) -> None:
        self._set_up = set_up
        self.nodes = nodes

    @property
    def scenarios(self) -> int:
        """How many scenarios the block has."""
        return int(next(iter(self.nodes.values())).shape[0])

    def log_discount(self, curve_id: str, t: FloatArray) -> FloatArray:
        """log P(t) of curve ``curve_id`` under each scenario (S × times), ``t`` ≥ 0 years."""
        try:
            nodes = self.nodes[curve_id]
        except KeyError:
            raise MarketError(f"unknown curve {curve_id!r}") from None
        return self._set_up._log_df(curve_id, nodes, t)


class ScenarioSwaps:
    """A book's swaps (rows ``rows``), grouped by projection curve as the live pricer groups
    them, each group's cash flows laid out once (:class:`~workbench.pricing.swaps.SwapGroup`)."""

    def __init__(self, book: Book, rows: IntArray, market: MarketSnapshot) -> None:
        self.rows = rows
        self._groups: list[tuple[IntArray, SwapGroup, FloatArray]] = []
        for g_rows, group in swap_groups(book, rows, market):
            group.exposure()  # the cash-flow matrix, made once
            t = year_fractions_from(market.as_of, group.dates)
            self._groups.append((np.searchsorted(rows, g_rows), group, t))
        self._reduced: dict[tuple[bytes, int], list[FloatArray]] = {}

    def pv(self, curves: SolvedCurves) -> FloatArray:
        """PV per swap (S × swaps, in ``rows`` order), swap currency: each group's cash flows
        in one compiled pass with the scenarios innermost (the live pricer's kernel, so each
        scenario's PVs are the per-scenario path's to the last bit)."""
        out = np.empty((curves.scenarios, self.rows.size))
        for at, group, t in self._groups:
            log_d, log_p = self._log_dfs(curves, group, t)
            d = np.exp(log_d)
            p = d if log_p is log_d else np.exp(log_p)
            fx, fl = group.fixed, group.float
            out[:, at] = swap_pvs(
                t, d, p, fx.swap, fx.pay, fx.accrual, fl.swap, fl.start, fl.pay, fl.accrual,
                group.notional, group.fixed_rate, group.spread,
            )  # fmt: skip
        return out

    @property
    def currencies(self) -> list[str]:
        """Each curve group's currency, in group order."""
        return [group.spec.currency for _, group, _ in self._groups]

    def discount_values(self, curves: SolvedCurves) -> list[FloatArray]:
        """Per curve group, the discount values its cash-flow matrix multiplies under each
        scenario (S × values; :class:`~workbench.pricing.swaps.Exposure`)."""
        out = []
        for _, group, t in self._groups:
            log_d, log_p = self._log_dfs(curves, group, t)
            out.append(group.exposure().values(log_d, log_p, t > 0.0))
        return out

    def by_code(self, codes: IntArray, n_groups: int) -> list[FloatArray]:
        """Per curve group, its cash-flow matrix summed by ``codes`` (one group code per swap,
        ``rows`` order): (``n_groups`` × values), swap currency per unit of value. The
        group sums of swap PVs are then these times :meth:`discount_values`: no per-swap PV
        is formed."""
        key = (hashlib.blake2b(np.ascontiguousarray(codes).tobytes(), digest_size=16).digest(),
               n_groups)  # fmt: skip
        reduced = self._reduced.get(key)
        if reduced is None:
            reduced = []
            for at, group, _ in self._groups:
                c = codes[at]
                onehot = sp.csr_matrix(
                    (np.ones(c.size), (c, np.arange(c.size))), shape=(n_groups, c.size)
                )
                reduced.append(np.asarray((onehot @ group.exposure().matrix).todense()))
            self._reduced = {key: reduced}
        return reduced

    @staticmethod
    def _log_dfs(
        curves: SolvedCurves, group: SwapGroup, t: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """log D and log P at the group's dates (S × dates each; the same array for OIS)."""
        tq = np.maximum(t, 0.0)
        log_d = curves.log_discount(group.disc_id, tq)
        same = group.proj_id == group.disc_id
        return log_d, (log_d if same else curves.log_discount(group.proj_id, tq))


__all__ = ["ScenarioCurves", "ScenarioSwaps", "SolvedCurves"]
