"""The batched kernels behind the bump key rates, and the bumped curves they solve.

``interp_log_df_rows`` and ``bootstrap_rows`` (compiled and twin) give, row for row, what
``interp_log_df`` and ``bootstrap`` give (1e-12 in log DF); ``CurveSet.bumped_nodes`` is the
curve bootstrapped afresh on the market with that one quote moved ±1bp.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_curve_kernels import ATOL, METHOD_IDS, METHODS, _load_compiled, _tiny_case, curves

from workbench._ext import curve_kernels_np as twin
from workbench._types import BP
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.bootstrap import CurveBuilder
from workbench.pricing.curves import CurveSet

TOL = 1e-12  # CurveBuilder's residual tolerance per unit notional


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    return _load_compiled()


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@given(data=st.data())
def test_rows_interpolate_as_one_curve_at_a_time(
    compiled: ModuleType, method: int, data: st.DataObject
) -> None:
    """Several curves on the same node times (moved by up to 5bp per node, as bumps do)."""
    t, y = data.draw(curves())
    rows = data.draw(st.integers(1, 6))
    moves = data.draw(
        st.lists(st.floats(-5e-4, 5e-4), min_size=rows * t.size, max_size=rows * t.size)
    )
    ys = y[None, :] + np.array(moves).reshape(rows, t.size) * t[None, :]
    q = np.concatenate([np.linspace(0.0, t[-1] + 3.0, 41), t])
    one = np.empty((rows, q.size))
    for r in range(rows):
        compiled.interp_log_df(method, t, ys[r], q, one[r])
    for kernels in (compiled, twin):
        out = np.full((rows, q.size), np.nan)
        kernels.interp_log_df_rows(method, t, ys, q, out)
        np.testing.assert_allclose(out, one, rtol=0.0, atol=ATOL, err_msg=kernels.__name__)


def _bumped_system(
    market: MarketSnapshot, method: int
) -> tuple[CurveBuilder, dict[str, np.ndarray]]:
    """An OIS curve's builder after a build, and the coefficient rows of each quote ±1bp."""
    spec = market.curve("GBP.SONIA")
    builder = CurveBuilder(spec, market, method)
    builder.build(market.quote_values(builder.quote_ids), None)
    k = len(builder.quote_ids)
    c0, w = builder.bumped_coefficients(np.repeat(np.arange(k), 2), np.tile([1.0, -1.0], k))
    start = np.repeat(builder.logdf[None, :], 2 * k, axis=0)
    return builder, {"c0": c0, "w": w, "start": start}


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_rows_solve_as_one_system_at_a_time(
    compiled: ModuleType, market: MarketSnapshot, method: int
) -> None:
    b, sys_ = _bumped_system(market, method)
    rows = sys_["c0"].shape[0]
    one = sys_["start"].copy()
    for r in range(rows):
        compiled.bootstrap(
            method, b.node_t, b.query_t, sys_["c0"][r], b.term_ptr, sys_["w"][r], b.term_a,
            b.term_b, one[r], TOL, 50,
        )  # fmt: skip
    assert not np.allclose(one[0], one[1])  # +1bp and −1bp differ
    for kernels in (compiled, twin):
        y = sys_["start"].copy()
        status = np.full(rows, -9, dtype=np.int64)
        kernels.bootstrap_rows(
            method, b.node_t, b.query_t, sys_["c0"], b.term_ptr, sys_["w"], b.term_a,
            b.term_b, y, TOL, 50, status,
        )  # fmt: skip
        assert (status >= 1).all(), kernels.__name__
        np.testing.assert_allclose(y, one, rtol=0.0, atol=ATOL, err_msg=kernels.__name__)


@pytest.mark.parametrize("kernels_name", ["compiled", "twin"])
def test_a_row_that_fails_says_so_and_is_left_as_it_was(
    compiled: ModuleType, market: MarketSnapshot, kernels_name: str
) -> None:
    """No exception: −2 for a row not converged in ``max_iter``, −1 for a singular system."""
    kernels = compiled if kernels_name == "compiled" else twin
    method = twin.MONOTONE_CONVEX
    b, sys_ = _bumped_system(market, method)
    y = sys_["start"][:2].copy()
    kernels.bootstrap(
        method, b.node_t, b.query_t, sys_["c0"][0], b.term_ptr, sys_["w"][0], b.term_a,
        b.term_b, y[0], TOL, 50,
    )  # fmt: skip
    solved = y[0].copy()
    y[1, 1:] = 0.0  # flat zero rates: one Newton step does not get there
    status = np.zeros(2, dtype=np.int64)
    kernels.bootstrap_rows(
        method, b.node_t, b.query_t, sys_["c0"][:2], b.term_ptr, sys_["w"][:2], b.term_a,
        b.term_b, y, TOL, 1, status,
    )  # fmt: skip
    assert status[0] == 0  # already solved
    assert status[1] == -2
    assert np.array_equal(y[0], solved)
    assert (y[1, 1:] == 0.0).all()
    t, arr = _tiny_case()
    ys = np.array([[0.0, -0.03, -0.06]])
    status = np.zeros(1, dtype=np.int64)
    kernels.bootstrap_rows(
        twin.LOG_LINEAR, t, arr["query_t"], arr["c0"][None, :], arr["term_ptr"],
        arr["term_w"][None, :], arr["term_a"], arr["term_b"], ys, TOL, 50, status,
    )  # fmt: skip
    assert status[0] == -1
    assert np.array_equal(ys, [[0.0, -0.03, -0.06]])


@pytest.mark.parametrize("interpolation", ["monotone_convex", "log_linear"])
@pytest.mark.parametrize("curve_id", ["GBP.SONIA", "GBP.TERMSONIA3M"])
def test_bumped_nodes_are_the_curve_bootstrapped_on_the_bumped_market(
    market: MarketSnapshot, interpolation: str, curve_id: str
) -> None:
    """Each row of ``bumped_nodes`` against a fresh CurveSet on the market with that quote
    moved ±1bp (a term curve's rows include its OIS discount curve's quotes)."""
    base = CurveSet(market, interpolation=interpolation)  # type: ignore[arg-type]
    bumped = base.bumped_nodes(curve_id)
    if curve_id == "GBP.TERMSONIA3M":
        assert any(q.startswith("GBP.SONIA.") for q in bumped.quote_ids)
    for j, q in enumerate(bumped.quote_ids):
        for sign, rows in ((1.0, bumped.up), (-1.0, bumped.down)):
            moved = market.with_quotes({q: market.quote(q) + sign * BP})
            fresh = CurveSet(moved, interpolation=interpolation)[curve_id]  # type: ignore[arg-type]
            np.testing.assert_allclose(rows[j], fresh.node_logdf, rtol=0.0, atol=1e-11, err_msg=q)


def test_one_bump_at_a_time_is_a_row_of_the_batch(market: MarketSnapshot) -> None:
    """The builder's one-bump forms (an int node and a float size; 1-D coefficients and
    start) give the row the batched forms give."""
    b, sys_ = _bumped_system(market, twin.MONOTONE_CONVEX)
    batch = b.solve_from(sys_["c0"], sys_["w"], sys_["start"])
    for r in (0, 3):
        c0, w = b.bumped_coefficients(r // 2, 1.0 if r % 2 == 0 else -1.0)
        assert c0.shape == sys_["c0"][r].shape
        np.testing.assert_array_equal(c0, sys_["c0"][r])
        np.testing.assert_array_equal(w, sys_["w"][r])
        np.testing.assert_array_equal(b.solve_from(c0, w, sys_["start"][r]), batch[r])
    term = CurveBuilder(market.curve("GBP.TERMSONIA3M"), market, twin.MONOTONE_CONVEX)
    sonia = CurveSet(market)["GBP.SONIA"]
    term.build(market.quote_values(term.quote_ids), sonia)
    dvals = np.exp(sonia.log_discount(term.d_t))
    rows = term.coefficients_on(np.stack([dvals, 0.99 * dvals]))
    for k, scale in enumerate((1.0, 0.99)):
        c0, w = term.coefficients_on(scale * dvals)
        np.testing.assert_allclose(c0, rows[0][k], rtol=1e-14, atol=0.0)  # BLAS sum order
        np.testing.assert_array_equal(w, rows[1][k])
