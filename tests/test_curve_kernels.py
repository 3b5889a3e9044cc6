"""The compiled curve kernels agree with their NumPy twin; bootstrapped curves reprice.

Tolerances: interpolated values and bootstrapped node values are compared as absolute
differences of log discount factors, ≤ 1e-12. Jacobian entries ∂ log P / ∂ node log-DF are
compared as ``|Δ| ≤ 1e-12 · max(1, |entry|)``: next to a one-day interval an entry is ~365.

The compiled module must be built (``python setup.py build_ext --inplace``): the tests fail,
not skip, without it.

Hypothesis profiles: ``fast`` (default, 50 examples) and ``expensive`` (2,000 examples), chosen
with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import _ext
from workbench._ext import curve_kernels_np as twin
from workbench._types import BP, FloatArray
from workbench.market.model import CurveSpec, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.schedules import (
    add_tenor,
    adjust,
    schedule,
    spot_date,
    year_fraction,
)
from workbench.pricing.curves import Curve, CurveBuilder

settings.register_profile(
    "fast", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "expensive", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

ATOL = 1e-12
METHODS = (twin.LOG_LINEAR, twin.MONOTONE_CONVEX)
METHOD_IDS = ("log_linear", "monotone_convex")
TOL = 1e-13  # the bootstrap tolerance CurveBuilder uses, per unit notional
REPRICE_TOL = 1e-8  # per unit notional


def _load_compiled() -> ModuleType:
    try:
        return importlib.import_module("workbench._ext.curve_kernels")
    except ImportError as exc:
        pytest.fail(
            f"the compiled curve kernels are not built ({exc}); "
            "run `python setup.py build_ext --inplace`"
        )


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    return _load_compiled()


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


# ------------------------------------------------------------------------------------------
# random curves

Regime = str  # "positive" (collar active), "negative" (no collar), "mixed"


@st.composite
def curves(draw: st.DrawFn, regime: Regime | None = None) -> tuple[FloatArray, FloatArray]:
    """Node times from 0 (intervals one day to five years) and log-DFs with rates by regime."""
    regime = regime or draw(st.sampled_from(("positive", "negative", "mixed")))
    n_int = draw(st.integers(1, 24))
    dt = draw(st.lists(st.floats(1 / 365, 5.0), min_size=n_int, max_size=n_int))
    lo, hi = {"positive": (5e-4, 0.08), "negative": (-0.02, -5e-4), "mixed": (-0.02, 0.06)}[regime]
    fwd = draw(st.lists(st.floats(lo, hi), min_size=n_int, max_size=n_int))
    if regime == "mixed" and n_int >= 2:
        i = draw(st.integers(0, n_int - 1))
        j = (i + 1 + draw(st.integers(0, n_int - 2))) % n_int
        fwd[i], fwd[j] = -abs(fwd[i]) - 1e-4, abs(fwd[j]) + 1e-4
    t = np.concatenate([[0.0], np.cumsum(dt)])
    y = np.concatenate([[0.0], -np.cumsum(np.array(fwd) * np.array(dt))])
    return t, y


@st.composite
def queries(draw: st.DrawFn, t: FloatArray) -> FloatArray:
    """Random times inside, every node, and times beyond the last node."""
    inside = draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
    beyond = draw(st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=5))
    return np.concatenate([np.array(inside) * t[-1], t, t[-1] + np.array(beyond)])


def _interp_both(
    compiled: ModuleType, method: int, t: FloatArray, y: FloatArray, q: FloatArray
) -> tuple[FloatArray, FloatArray]:
    a = np.full(q.size, np.nan)
    b = np.full(q.size, np.nan)
    compiled.interp_log_df(method, t, y, q, a)
    twin.interp_log_df(method, t, y, q, b)
    return a, b


def _jacobian_both(
    compiled: ModuleType, method: int, t: FloatArray, y: FloatArray, q: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    va, vb = np.full(q.size, np.nan), np.full(q.size, np.nan)
    ja, jb = np.full((q.size, t.size), np.nan), np.full((q.size, t.size), np.nan)
    compiled.interp_log_df_jacobian(method, t, y, q, va, ja)
    twin.interp_log_df_jacobian(method, t, y, q, vb, jb)
    return va, vb, ja, jb


def _assert_jac_close(ja: FloatArray, jb: FloatArray) -> None:
    assert np.all(np.isfinite(ja))
    excess = np.abs(ja - jb) / np.maximum(1.0, np.abs(jb))
    k, j = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[k, j] <= ATOL, f"jac[{k}, {j}]: compiled {ja[k, j]!r}, twin {jb[k, j]!r}"


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@pytest.mark.parametrize("regime", ["positive", "negative", "mixed"])
@given(data=st.data())
def test_interpolation_agrees_with_twin(
    compiled: ModuleType, method: int, regime: Regime, data: st.DataObject
) -> None:
    t, y = data.draw(curves(regime))
    q = data.draw(queries(t))
    a, b = _interp_both(compiled, method, t, y, q)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=0.0, atol=ATOL)
    at_nodes, _ = _interp_both(compiled, method, t, y, t)
    np.testing.assert_allclose(at_nodes, y, rtol=0.0, atol=ATOL)


def _node_rows(t: FloatArray, q: FloatArray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of queries sitting exactly on a node, and that node's index."""
    hit = np.isin(q, t)
    return np.flatnonzero(hit), np.searchsorted(t, q[hit])


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@pytest.mark.parametrize("regime", ["positive", "negative", "mixed"])
@given(data=st.data())
def test_jacobian_agrees_with_twin(
    compiled: ModuleType, method: int, regime: Regime, data: st.DataObject
) -> None:
    """Off the nodes the Jacobians agree; on a node the row is the unit vector of that node.

    The twin's row on a node is compared in ``test_jacobian_on_a_node_is_the_unit_vector``.
    """
    t, y = data.draw(curves(regime))
    q = data.draw(queries(t))
    va, vb, ja, jb = _jacobian_both(compiled, method, t, y, q)
    np.testing.assert_allclose(va, vb, rtol=0.0, atol=ATOL)
    rows, nodes = _node_rows(t, q)
    unit = np.zeros((rows.size, t.size))
    unit[np.arange(rows.size), nodes] = 1.0
    unit[:, 0] = 0.0  # node 0 is pinned
    np.testing.assert_allclose(ja[rows], unit, rtol=0.0, atol=ATOL)
    off = np.setdiff1d(np.arange(q.size), rows)
    _assert_jac_close(ja[off], jb[off])
    assert np.all(ja[:, 0] == 0.0)


@pytest.mark.parametrize("kernels_name", ["compiled", "twin"])
def test_jacobian_on_a_node_is_the_unit_vector(compiled: ModuleType, kernels_name: str) -> None:
    """log P(t_j) = y_j whatever the other nodes, so ∂ log P(t_j)/∂y = e_j.

    The curve has equal discrete forwards on (1, 2) and (2, 3) and the collar caps the node
    forward at 1, so on the interval (1, 2) Hagan–West's g1 is exactly 0: region (iv) with its
    switch point η = g1/(g0 + g1) = 0 at the node itself.
    """
    kernels = compiled if kernels_name == "compiled" else twin
    t = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, -0.0625, -0.078125, -0.09375])  # fd = 6.25%, 1.5625%, 1.5625%
    val, jac = np.empty(t.size), np.empty((t.size, t.size))
    kernels.interp_log_df_jacobian(twin.MONOTONE_CONVEX, t, y, t, val, jac)
    np.testing.assert_allclose(val, y, rtol=0.0, atol=ATOL)
    expected = np.eye(t.size)
    expected[0, 0] = 0.0
    np.testing.assert_allclose(jac, expected, rtol=0.0, atol=ATOL)


def _collared_curve() -> tuple[FloatArray, FloatArray]:
    """Positive forwards with jumps steep enough that the collar clips both ways."""
    t = np.array([0.0, 0.02, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0])
    fwd = np.array([0.001, 0.05, 0.002, 0.03, 0.031, 0.0005, 0.04, 0.001, 0.02])
    y = np.concatenate([[0.0], -np.cumsum(fwd * np.diff(t))])
    return t, y


def test_collar_case_agrees(compiled: ModuleType) -> None:
    t, y = _collared_curve()
    fd = -np.diff(y) / np.diff(t)
    f = twin._node_forwards(t, fd[None, :])[0]
    hi = 2.0 * np.concatenate([[fd[0]], np.minimum(fd[:-1], fd[1:]), [fd[-1]]])
    assert np.any(f == 0.0), "the test curve must hit the collar's floor"
    assert np.any(f == hi), "the test curve must hit the collar's cap"
    q = np.concatenate([np.linspace(0.0, 12.0, 241), t])
    for method in METHODS:
        va, vb, ja, jb = _jacobian_both(compiled, method, t, y, q)
        np.testing.assert_allclose(va, vb, rtol=0.0, atol=ATOL)
        _assert_jac_close(ja, jb)


def test_jacobian_matches_central_difference(compiled: ModuleType) -> None:
    """The Jacobian is the derivative of the values (away from region switches)."""
    t, y = _collared_curve()
    q = np.linspace(0.01, 11.0, 57)
    for method in METHODS:
        val = np.empty(q.size)
        jac = np.empty((q.size, t.size))
        compiled.interp_log_df_jacobian(method, t, y, q, val, jac)
        h = 1e-7
        for j in range(1, t.size):
            up, dn = y.copy(), y.copy()
            up[j] += h
            dn[j] -= h
            vu, vd = np.empty(q.size), np.empty(q.size)
            compiled.interp_log_df(method, t, up, q, vu)
            compiled.interp_log_df(method, t, dn, q, vd)
            np.testing.assert_allclose(jac[:, j], (vu - vd) / (2 * h), rtol=0.0, atol=1e-5)


# ------------------------------------------------------------------------------------------
# bootstrap on random node sets: par bonds with coupons at every node and mid-interval


@st.composite
def bond_curves(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, dict[str, np.ndarray]]:
    """Random node times and par-bond quotes; instrument i matures on node i + 1."""
    t, y_true = draw(curves())
    n = t.size
    q = np.concatenate([t, 0.5 * (t[:-1] + t[1:])])  # nodes, then mid-points
    order = np.argsort(q, kind="stable")
    q = q[order]
    pos = np.empty(q.size, dtype=np.int64)
    pos[order] = np.arange(q.size)
    ptr = [0]
    w: list[float] = []
    a: list[int] = []
    c0 = np.empty(n - 1)
    p_true = np.exp(np.interp(q, t, y_true))  # only sets realistic coupons
    for i in range(n - 1):
        # coupons at the mid-points and nodes up to the maturity, a_j = half an interval
        pay = [(pos[n + j], 0.5 * (t[j + 1] - t[j])) for j in range(i + 1)]
        pay += [(pos[j + 1], 0.5 * (t[j + 1] - t[j])) for j in range(i + 1)]
        annuity = sum(acc * p_true[k] for k, acc in pay)
        mat = pos[i + 1]
        coupon = (1.0 - p_true[mat]) / annuity
        for k, acc in pay:
            w.append(coupon * acc)
            a.append(int(k))
        w.append(1.0)
        a.append(int(mat))
        c0[i] = -1.0
        ptr.append(len(w))
    arrays = {
        "query_t": q,
        "c0": c0,
        "term_ptr": np.array(ptr, dtype=np.int64),
        "term_w": np.array(w),
        "term_a": np.array(a, dtype=np.int64),
        "term_b": np.full(len(a), int(pos[0]), dtype=np.int64),
    }
    return t, y_true, arrays


def _bootstrap(
    kernels: ModuleType, method: int, t: FloatArray, y0: FloatArray, arr: dict[str, np.ndarray]
) -> tuple[FloatArray, int]:
    y = y0.copy()
    it = kernels.bootstrap(
        method,
        t,
        arr["query_t"],
        arr["c0"],
        arr["term_ptr"],
        arr["term_w"],
        arr["term_a"],
        arr["term_b"],
        y,
        TOL,
        50,
    )
    return y, int(it)


def _residuals(
    kernels: ModuleType, method: int, t: FloatArray, y: FloatArray, arr: dict[str, np.ndarray]
) -> FloatArray:
    logp = np.empty(arr["query_t"].size)
    kernels.interp_log_df(method, t, y, arr["query_t"], logp)
    vals = arr["term_w"] * np.exp(logp[arr["term_a"]] - logp[arr["term_b"]])
    inst = np.repeat(np.arange(t.size - 1), np.diff(arr["term_ptr"]))
    res: FloatArray = np.bincount(inst, weights=vals, minlength=t.size - 1) + arr["c0"]
    return res


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@given(case=bond_curves())
def test_bootstrap_agrees_on_random_nodes(
    compiled: ModuleType, method: int, case: tuple[FloatArray, FloatArray, dict[str, np.ndarray]]
) -> None:
    t, y_true, arr = case
    cold = np.concatenate([[0.0], y_true[1:] * 0.9])
    ya, ita = _bootstrap(compiled, method, t, cold, arr)
    yb, itb = _bootstrap(twin, method, t, cold, arr)
    np.testing.assert_allclose(ya, yb, rtol=0.0, atol=ATOL)
    assert abs(ita - itb) <= 1
    assert np.max(np.abs(_residuals(compiled, method, t, ya, arr))) <= REPRICE_TOL


# ------------------------------------------------------------------------------------------
# the reference market


def _builders(market: MarketSnapshot, method: int) -> dict[str, CurveBuilder]:
    specs = sorted(market.curves, key=lambda s: 0 if s.kind == "ois" else 1)
    return {s.id: CurveBuilder(s, market, method) for s in specs}


def _solve_market(
    kernels: ModuleType,
    market: MarketSnapshot,
    builders: dict[str, CurveBuilder],
    warm: dict[str, FloatArray] | None = None,
) -> tuple[dict[str, Curve], dict[str, int]]:
    """Every curve bootstrapped by ``kernels`` from the builders' arrays (OIS curves first)."""
    curves_out: dict[str, Curve] = {}
    iters: dict[str, int] = {}
    for cid, b in builders.items():
        dc = b.spec.discount_curve
        disc = curves_out[dc] if b.spec.kind == "term" and dc is not None else None
        k = market.quote_values(b.quote_ids)[b.order]
        dvals = disc.discount(b.d_t) if disc is not None and b.d_t.size else np.zeros(0)
        c0, w = b._coefficients(k, dvals)
        y = np.concatenate([[0.0], -k * b.node_t[1:]]) if warm is None else warm[cid].copy()
        iters[cid] = int(
            kernels.bootstrap(
                b.method, b.node_t, b.query_t, c0, b.term_ptr, w, b.term_a, b.term_b, y, TOL, 50
            )
        )
        curves_out[cid] = Curve(cid, b.spec.currency, market.as_of, b.method, b.node_t, y)
    return curves_out, iters


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_bootstrap_agrees_on_reference_market(
    compiled: ModuleType, market: MarketSnapshot, method: int
) -> None:
    builders = _builders(market, method)
    ca, ia = _solve_market(compiled, market, builders)
    cb, ib = _solve_market(twin, market, builders)
    assert len(ca) == 14
    for cid in ca:
        np.testing.assert_allclose(
            ca[cid].node_logdf, cb[cid].node_logdf, rtol=0.0, atol=ATOL, err_msg=cid
        )
        assert abs(ia[cid] - ib[cid]) <= 1, cid
    # a live tick: one quote per curve moved 1bp, warm start from the last solution
    mid = [b.quote_ids[len(b.quote_ids) // 2] for b in builders.values()]
    moved = market.with_quotes({q: market.quote(q) + BP for q in mid})
    warm = {cid: c.node_logdf for cid, c in ca.items()}
    wa, _ = _solve_market(compiled, moved, builders, warm)
    wb, _ = _solve_market(twin, moved, builders, warm)
    for cid in wa:
        np.testing.assert_allclose(
            wa[cid].node_logdf, wb[cid].node_logdf, rtol=0.0, atol=ATOL, err_msg=cid
        )
        assert not np.array_equal(wa[cid].node_logdf, ca[cid].node_logdf), cid


def _par_residuals(
    spec: CurveSpec, market: MarketSnapshot, curves_: dict[str, Curve]
) -> FloatArray:
    """Each instrument's par condition per unit notional, from the market's definitions.

    Written from the documented par conditions (see ``workbench.pricing.curves``), not from
    the builder's term arrays: deposits ``P(s)/P(e) − (1 + K a)``; OIS
    ``K Σ a_j P(t_j) − P(s) + P(e)``; IRS ``Σ_k D(e_k)(P(s_k)/P(e_k) − 1) − K Σ_j a_j D(t_j)``.
    """
    cal = market.calendars[spec.calendar]
    spot = spot_date(market.as_of, spec.spot_lag, cal)
    curve = curves_[spec.id]
    disc = curves_[spec.discount_curve] if spec.discount_curve else curve

    def p(c: Curve, dates: np.ndarray) -> FloatArray:
        return c.discount(c.year_fraction(np.asarray(dates, dtype="datetime64[D]")))

    out = []
    for inst in spec.instruments:
        k = float(market.quote(inst.quote))
        # coupons roll back from the unadjusted maturity (ISDA); the last one is paid on `end`
        raw_end = add_tenor(spot, inst.tenor)
        end = adjust(raw_end, cal, spec.business_day)
        se = np.array([spot, end], dtype="datetime64[D]")
        if inst.kind == "deposit":
            acc = year_fraction(se[:1], se[1:], spec.day_count)[0]
            ps = p(curve, se)
            out.append(ps[0] / ps[1] - (1.0 + k * acc))
        elif inst.kind == "ois":
            fixed = schedule(spot, raw_end, spec.fixed_frequency_months, cal, spec.business_day)
            acc = year_fraction(fixed[:-1], fixed[1:], spec.fixed_day_count)
            ps = p(curve, se)
            out.append(k * float(acc @ p(curve, fixed[1:])) - ps[0] + ps[1])
        else:
            fixed = schedule(spot, raw_end, spec.fixed_frequency_months, cal, spec.business_day)
            acc = year_fraction(fixed[:-1], fixed[1:], spec.fixed_day_count)
            flt = schedule(spot, raw_end, spec.float_frequency_months, cal, spec.business_day)
            proj = p(curve, flt)
            float_leg = float(p(disc, flt[1:]) @ (proj[:-1] / proj[1:] - 1.0))
            out.append(float_leg - k * float(acc @ p(disc, fixed[1:])))
    return np.array(out)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_curves_reprice_their_instruments(
    compiled: ModuleType, market: MarketSnapshot, method: int
) -> None:
    builders = _builders(market, method)
    for kernels in (compiled, twin):
        solved, _ = _solve_market(kernels, market, builders)
        for spec in market.curves:
            res = _par_residuals(spec, market, solved)
            assert res.size == len(spec.instruments) > 0
            worst = int(np.argmax(np.abs(res)))
            assert abs(res[worst]) <= REPRICE_TOL, (
                f"{kernels.__name__} {spec.id} {spec.instruments[worst].quote}: {res[worst]:.3e}"
            )


def test_package_uses_compiled_backend(compiled: ModuleType) -> None:
    """Unless the twin is forced, the package picks the compiled kernels."""
    if os.environ.get("WORKBENCH_BACKEND", "").strip().lower() == "numpy":
        assert _ext.BACKEND == "numpy"
    else:
        assert _ext.BACKEND == "cython"
        assert _ext.bootstrap is compiled.bootstrap


# ------------------------------------------------------------------------------------------
# errors


def _tiny_case() -> tuple[FloatArray, dict[str, np.ndarray]]:
    """Two deposits on [0, 1]: both pin node 1, nothing pins node 2."""
    t = np.array([0.0, 1.0, 2.0])
    arr = {
        "query_t": np.array([0.0, 1.0]),
        "c0": np.array([-1.03, -1.04]),
        "term_ptr": np.array([0, 1, 2], dtype=np.int64),
        "term_w": np.array([1.0, 1.0]),
        "term_a": np.array([0, 0], dtype=np.int64),
        "term_b": np.array([1, 1], dtype=np.int64),
    }
    return t, arr


@pytest.mark.parametrize("kernels_name", ["compiled", "twin"])
def test_singular_system_is_refused(compiled: ModuleType, kernels_name: str) -> None:
    kernels = compiled if kernels_name == "compiled" else twin
    t, arr = _tiny_case()
    y = np.array([0.0, -0.03, -0.06])
    with pytest.raises(ValueError, match=r"^bootstrap Jacobian is singular: two instruments"):
        _bootstrap(kernels, twin.LOG_LINEAR, t, y, arr)
    assert np.array_equal(y, [0.0, -0.03, -0.06])  # untouched on failure


def test_non_convergence_message_matches_twin(compiled: ModuleType, market: MarketSnapshot) -> None:
    spec = next(s for s in market.curves if s.kind == "ois")
    b = CurveBuilder(spec, market, twin.MONOTONE_CONVEX)
    k = market.quote_values(b.quote_ids)[b.order]
    c0, w = b._coefficients(k, np.zeros(0))
    messages = []
    for kernels in (compiled, twin):
        y = np.concatenate([[0.0], -k * b.node_t[1:]])
        with pytest.raises(ValueError, match="did not converge in 1 iterations") as info:
            kernels.bootstrap(
                b.method, b.node_t, b.query_t, c0, b.term_ptr, w, b.term_a, b.term_b, y, TOL, 1
            )
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_bad_shapes_are_refused(compiled: ModuleType) -> None:
    t = np.array([0.0, 1.0, 2.0])
    y = np.array([0.0, -0.01, -0.02])
    with pytest.raises(ValueError, match="entries for 3 query times"):
        compiled.interp_log_df(1, t, y, np.zeros(3), np.empty(2))
    with pytest.raises(ValueError, match="jac has shape"):
        compiled.interp_log_df_jacobian(1, t, y, np.zeros(3), np.empty(3), np.empty((3, 2)))
    t2, arr = _tiny_case()
    arr["term_a"] = np.array([0, 5], dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        _bootstrap(compiled, 0, t2, y, arr)
    arr["term_a"] = np.array([0, 0], dtype=np.int64)
    arr["term_ptr"] = np.array([0, 0, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="instrument 0 has no terms"):
        _bootstrap(compiled, 0, t2, y, arr)
