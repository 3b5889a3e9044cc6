"""Limit monitoring: usage by hand, a breach's life (starts, persists with its start, clears),
hysteresis, netting, and the monitor against a model over random value paths."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.book.schema import PRODUCTS, Book, Categorical
from workbench.risk.aggregation import RISK_INPUTS, risk_frame, static_frame
from workbench.risk.limits import LimitConfig, LimitMonitor, LimitReport

SECOND = 1_000_000_000
# desk A: two swaps; desk B: one swap and one FX forward
PRODUCTS_ = ["IRS", "IRS", "IRS", "FX_FWD"]
DESKS = ["A", "A", "B", "B"]


def _cat(values: list[str], labels: tuple[str, ...] | None = None) -> Categorical:
    labs = labels if labels is not None else tuple(sorted(set(values)))
    return Categorical(np.array([labs.index(v) for v in values], dtype=np.int64), labs)


def _book() -> Book:
    n = len(PRODUCTS_)
    nan = np.full(n, np.nan)
    return Book(
        position_id=tuple(f"P{i}" for i in range(n)),
        product=_cat(PRODUCTS_, PRODUCTS),
        desk=_cat(DESKS),
        book=_cat(DESKS),
        currency=_cat(["USD"] * n),
        underlying=_cat(["USD.SOFR", "USD.SOFR", "USD.SOFR", "EURUSD"]),
        start=np.full(n, np.datetime64("NaT"), dtype="datetime64[D]"),
        maturity=np.full(n, np.datetime64("2030-01-02"), dtype="datetime64[D]"),
        notional=np.ones(n),
        fixed_rate=nan.copy(),
        float_spread=np.zeros(n),
        strike=nan.copy(),
        option_sign=nan.copy(),
        attach=nan.copy(),
        detach=nan.copy(),
        coupon=nan.copy(),
    )


STATIC = static_frame(_book())


def frame(delta: list[float]) -> pl.DataFrame:
    """A risk frame whose positions have the given deltas (USD)."""
    n = STATIC.height
    cols = {c: np.zeros(n) for c in RISK_INPUTS}
    cols["delta"] = np.asarray(delta, dtype=np.float64)
    cols["stale"] = np.zeros(n)
    cols["updated_ns"] = np.full(n, SECOND, dtype=np.int64)
    return risk_frame(STATIC, cols, now_ns=2 * SECOND)


LIMITS = (
    LimitConfig(measure="dv01", limit=150.0),
    LimitConfig(measure="dv01", limit=50.0, desk="A"),
    LimitConfig(measure="fx_delta", limit=10.0, desk="B"),
)


def _keys(report: LimitReport, attr: str) -> list[tuple[str, str, int]]:
    return [(b.scope, b.measure, b.since_ns) for b in getattr(report, attr)]


def test_usage_is_the_absolute_net_over_each_scope() -> None:
    monitor = LimitMonitor(LIMITS, desks=["A", "B"])
    # desk A dv01: 30 - 70 = -40; firm dv01: -40 + 100 = 60; desk B fx delta: -4
    report = monitor.evaluate(frame([30.0, -70.0, 100.0, -4.0]), now_ns=SECOND)
    usage = report.usage
    assert usage["scope"].to_list() == ["firm", "desk:A", "desk:B"]
    assert usage["measure"].to_list() == ["dv01", "dv01", "fx_delta"]
    assert usage["value"].to_list() == [60.0, 40.0, 4.0]
    assert usage["limit"].to_list() == [150.0, 50.0, 10.0]
    assert usage["utilisation"].to_list() == pytest.approx([0.4, 0.8, 0.4])
    assert usage["breached"].to_list() == [False, False, False]
    assert report.breaches == report.new == report.cleared == ()


def test_a_breach_starts_persists_with_its_start_and_clears() -> None:
    monitor = LimitMonitor(LIMITS, desks=["A", "B"])
    r1 = monitor.evaluate(frame([30.0, 30.0, 0.0, 0.0]), now_ns=10)  # desk A: 60 > 50
    assert _keys(r1, "new") == [("desk:A", "dv01", 10)]
    assert _keys(r1, "breaches") == [("desk:A", "dv01", 10)]
    assert r1.breaches[0].value == 60.0
    assert r1.breaches[0].limit == 50.0
    assert r1.usage["breached"].to_list() == [False, True, False]

    r2 = monitor.evaluate(frame([40.0, 40.0, 0.0, 0.0]), now_ns=20)  # still over: 80
    assert r2.new == ()
    assert r2.cleared == ()
    assert _keys(r2, "breaches") == [("desk:A", "dv01", 10)]
    assert r2.breaches[0].value == 80.0

    r3 = monitor.evaluate(frame([-40.0, -40.0, -100.0, 0.0]), now_ns=30)  # firm |−180| > 150
    assert _keys(r3, "new") == [("firm", "dv01", 30)]
    assert _keys(r3, "breaches") == [("firm", "dv01", 30), ("desk:A", "dv01", 10)]

    r4 = monitor.evaluate(frame([10.0, 0.0, 0.0, 0.0]), now_ns=40)
    assert r4.breaches == ()
    assert r4.new == ()
    assert _keys(r4, "cleared") == [("firm", "dv01", 30), ("desk:A", "dv01", 10)]
    assert [b.value for b in r4.cleared] == [10.0, 10.0]
    assert monitor.active == {}

    r5 = monitor.evaluate(frame([60.0, 0.0, 0.0, 0.0]), now_ns=50)  # a new breach, a new start
    assert _keys(r5, "new") == [("desk:A", "dv01", 50)]


def test_offsetting_positions_net_before_the_limit() -> None:
    monitor = LimitMonitor([LimitConfig(measure="dv01", limit=50.0, desk="A")], desks=["A", "B"])
    report = monitor.evaluate(frame([1000.0, -990.0, 0.0, 0.0]), now_ns=1)
    assert report.usage["value"].to_list() == [10.0]
    assert report.breaches == ()


def test_unpriced_positions_do_not_poison_the_value() -> None:
    monitor = LimitMonitor([LimitConfig(measure="dv01", limit=50.0)])
    report = monitor.evaluate(frame([20.0, float("nan"), 10.0, 0.0]), now_ns=1)
    assert report.usage["value"].to_list() == [30.0]


def test_hysteresis_keeps_a_breach_until_clearly_below() -> None:
    monitor = LimitMonitor([LimitConfig(measure="dv01", limit=100.0)], hysteresis=0.1)
    assert monitor.evaluate(frame([105.0, 0, 0, 0]), now_ns=1).new
    assert monitor.evaluate(frame([95.0, 0, 0, 0]), now_ns=2).breaches  # above 90: still on
    assert monitor.evaluate(frame([89.0, 0, 0, 0]), now_ns=3).cleared


def test_bad_configuration_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown measure 'delta'"):
        LimitMonitor([LimitConfig(measure="delta", limit=1.0)])
    with pytest.raises(ValueError, match="unknown desk 'Z'"):
        LimitMonitor([LimitConfig(measure="dv01", limit=1.0, desk="Z")], desks=["A", "B"])
    with pytest.raises(ValueError, match="must be positive"):
        LimitMonitor([LimitConfig(measure="dv01", limit=-1.0)])
    with pytest.raises(ValueError, match="must be positive"):
        LimitMonitor([LimitConfig(measure="dv01", limit=float("nan"))])
    with pytest.raises(ValueError, match="more than one"):
        LimitMonitor([LimitConfig(measure="cs01", limit=1.0)] * 2)
    with pytest.raises(ValueError, match="hysteresis"):
        LimitMonitor([], hysteresis=1.0)
    # without the desk list, an unknown desk is refused on the first frame
    monitor = LimitMonitor([LimitConfig(measure="dv01", limit=1.0, desk="Z")])
    with pytest.raises(ValueError, match="unknown desk 'Z'"):
        monitor.evaluate(frame([0.0] * 4), now_ns=1)


def test_no_limits_gives_an_empty_report() -> None:
    report = LimitMonitor([]).evaluate(frame([1.0] * 4), now_ns=1)
    assert report.usage.height == 0
    assert report.usage.columns == ["scope", "measure", "value", "limit", "utilisation", "breached"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-300.0, 300.0, allow_nan=False), min_size=1, max_size=30))
def test_breaches_follow_a_model_of_the_value_path(path: list[float]) -> None:
    """Breached iff |value| > limit; ``since_ns`` is the start of the current run over it."""
    monitor = LimitMonitor([LimitConfig(measure="dv01", limit=100.0, desk="A")])
    since: int | None = None
    for t, value in enumerate(path, start=1):
        report = monitor.evaluate(frame([value, 0.0, 0.0, 0.0]), now_ns=t)
        over = abs(value) > 100.0
        was = since
        since = (since if since is not None else t) if over else None
        assert [b.since_ns for b in report.breaches] == ([since] if over else [])
        assert len(report.new) == int(over and was is None)
        assert len(report.cleared) == int(not over and was is not None)
        assert report.usage["breached"].to_list() == [over]
