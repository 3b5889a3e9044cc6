"""Every curve of a market, built in dependency order, with their key-rate sensitivities.

Each curve is bootstrapped by a :class:`~workbench.pricing.bootstrap.CurveBuilder`; a
:class:`CurveSet` re-solves the curves whose quotes moved (and the term curves they discount).
Key-rate sensitivities, per +1bp of each quote, come two ways (docs/greeks.md says why they
differ):

* bumped: each quote moved ±1bp and the curve re-solved, warm-started from the base nodes moved
  by the first-order prediction (one or two Newton steps; the other quotes, the schedules and
  the query times are the base curve's), a term curve re-solved on each bumped OIS curve;
* exact: implicit differentiation of the solved system, ``∂y/∂q = −(∂R/∂y)⁻¹ ∂R/∂q``,
  including a term curve's dependence on its OIS curve's quotes.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from workbench import _ext
from workbench._types import BP, FloatArray, IntArray, KeyRateMethod
from workbench.market.model import Interpolation, MarketError, MarketSnapshot
from workbench.pricing.bootstrap import INTERPOLATION_METHODS, Curve, CurveBuilder


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
            method = INTERPOLATION_METHODS[interpolation or spec.interpolation]
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
        own quotes, then its discount curve's, as :meth:`quote_jacobian` orders them): every
        bump of the curve in one batched solve, each warm-started from the base nodes moved
        by the Jacobian's prediction."""
        hit = self._bumps.get(curve_id)
        if hit is not None:
            return hit
        builder = self._builders[curve_id]
        curve = self[curve_id]
        qids, jac = self.quote_jacobian(curve_id)
        own = len(builder.quote_ids)
        signs = np.array([1.0, -1.0])
        # rows: (+1bp, −1bp) for each quote, quotes in quote_jacobian order
        start = (
            curve.node_logdf[None, :]
            + np.repeat(jac.T, 2, axis=0) * np.tile(signs, len(qids))[:, None]
        )
        at_node = np.argsort(builder.order)  # spec position → node-order position
        c0, w = builder.bumped_coefficients(np.repeat(at_node, 2), np.tile(signs, own))
        if own < len(qids):  # the term curve on each bumped OIS curve
            disc_id = builder.spec.discount_curve
            assert disc_id is not None
            disc = self._curves[disc_id]
            dn = self.bumped_nodes(disc_id)
            d_nodes = np.empty((2 * len(dn.quote_ids), disc.node_t.size))
            d_nodes[0::2], d_nodes[1::2] = dn.up, dn.down
            dl = np.empty((d_nodes.shape[0], builder.d_t.size))
            _ext.interp_log_df_rows(disc.method, disc.node_t, d_nodes, builder.d_t, dl)
            c0_d, w_d = builder.coefficients_on(np.exp(dl))
            c0, w = np.vstack([c0, c0_d]), np.vstack([w, w_d])
        nodes = builder.solve_from(c0, w, start)
        hit = BumpedNodes(
            qids, np.ascontiguousarray(nodes[0::2]), np.ascontiguousarray(nodes[1::2])
        )
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
        _ext.interp_log_df_rows(curve.method, curve.node_t, bumped.up, q, up)
        _ext.interp_log_df_rows(curve.method, curve.node_t, bumped.down, q, down)
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
    values[market.quote_rows(ids)] += bp * BP
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
