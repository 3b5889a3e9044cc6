"""A 20-pillar OIS curve rebuilt after one quote tick, against QuantLib in the same run.

The live engine re-solves a curve whenever one of its quotes moves, warm-started from the last
solution. This script alternates the USD SOFR 5Y quote between its reference value and +0.5bp
and times each rebuild:

* the Cython bootstrap kernel alone (Newton on the prepared term arrays);
* the full ``CurveBuilder.build`` (quote ordering, coefficients, kernel, the ``Curve``);
* the NumPy twin kernel alone;
* QuantLib's ``PiecewiseConvexMonotoneForward`` / ``PiecewiseLogLinearDiscount`` on
  ``OISRateHelper``s over the same quotes, calendar and conventions: ``SimpleQuote.setValue``
  then ``discount()`` at one date forces the bootstrap.

Both interpolations are timed (monotone convex is the default). The zero rates of the two
libraries' curves are compared at the pillars as a check that the helpers are equivalent.
Target: kernel rebuild ≤ 100 µs.

Run: ``python benchmarks/bench_curve.py [--repeat 2000] [--ql-repeat 300]``
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from datetime import date
from types import ModuleType

import numpy as np
import QuantLib as ql  # noqa: N813 - the conventional alias
from _machine import machine

from workbench import _ext
from workbench._ext import curve_kernels_np
from workbench._types import BP, FloatArray
from workbench.market.model import Calendar, CurveSpec, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.curves import CurveBuilder

CURVE = "USD.SOFR"
PILLARS = 20
TICK_QUOTE = "USD.SOFR.OIS.5Y"
TICK = 0.5 * BP
TOL = 1e-13  # CurveBuilder's tolerance, per unit notional
METHODS = {"monotone_convex": _ext.MONOTONE_CONVEX, "log_linear": _ext.LOG_LINEAR}


def timed(step: Callable[[int], object], repeat: int, warmup: int = 20) -> list[float]:
    """Seconds per call of ``step(i)`` for i = 0..repeat−1 (after ``warmup`` untimed calls)."""
    for i in range(warmup):
        step(i)
    out = []
    gc.disable()
    try:
        for i in range(repeat):
            t0 = time.perf_counter()
            step(i)
            out.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return out


def fmt(xs: list[float]) -> str:
    """Median and range in µs."""
    med = statistics.median(xs)
    return (
        f"median {med * 1e6:9.1f} µs  (min {min(xs) * 1e6:8.1f}, max {max(xs) * 1e6:9.1f}, "
        f"n={len(xs)})"
    )


def pillar_spec(market: MarketSnapshot) -> CurveSpec:
    """The USD OIS curve cut to its last ``PILLARS`` instruments (2M … 30Y OIS)."""
    spec = market.curve(CURVE)
    return dataclasses.replace(spec, instruments=spec.instruments[-PILLARS:])


# ------------------------------------------------------------------------------------------
# QuantLib


def ql_date(d: date) -> ql.Date:
    return ql.Date(d.day, d.month, d.year)


def ql_calendar(cal: Calendar) -> ql.Calendar:
    """The market's calendar (weekend + explicit holidays) as a QuantLib calendar."""
    out = ql.BespokeCalendar(f"workbench-{cal.id}")
    days = {0: ql.Monday, 1: ql.Tuesday, 2: ql.Wednesday, 3: ql.Thursday}
    days |= {4: ql.Friday, 5: ql.Saturday, 6: ql.Sunday}
    for wd in cal.weekend:
        out.addWeekend(days[wd])
    for d in cal.holidays:
        out.addHoliday(ql_date(d))
    return out


def ql_curve(
    market: MarketSnapshot, spec: CurveSpec, method: str
) -> tuple[ql.YieldTermStructure, list[ql.SimpleQuote]]:
    """QuantLib's curve on OIS helpers with the spec's conventions, and its quotes."""
    ql.Settings.instance().evaluationDate = ql_date(market.as_of)
    cal = ql_calendar(market.calendars[spec.calendar])
    dc = {"ACT/360": ql.Actual360(), "ACT/365F": ql.Actual365Fixed()}[spec.fixed_day_count]
    index = ql.OvernightIndex(f"{spec.id}-ref", 0, ql.USDCurrency(), cal, dc)
    quotes = [ql.SimpleQuote(market.quote(i.quote)) for i in spec.instruments]
    helpers = [
        ql.OISRateHelper(
            spec.spot_lag,
            ql.Period(i.tenor),
            ql.QuoteHandle(q),
            index,
            telescopicValueDates=True,
            paymentConvention=ql.ModifiedFollowing,
            paymentFrequency=ql.Annual,
            paymentCalendar=cal,
            endOfMonth=False,
            convention=ql.ModifiedFollowing,
        )
        for i, q in zip(spec.instruments, quotes, strict=True)
    ]
    cls = {
        "monotone_convex": ql.PiecewiseConvexMonotoneForward,
        "log_linear": ql.PiecewiseLogLinearDiscount,
    }[method]
    curve = cls(ql_date(market.as_of), helpers, ql.Actual365Fixed())
    curve.enableExtrapolation()
    return curve, quotes


# ------------------------------------------------------------------------------------------


def run_method(
    name: str,
    method: int,
    market: MarketSnapshot,
    spec: CurveSpec,
    states: tuple[FloatArray, FloatArray],
    repeat: int,
    ql_repeat: int,
) -> None:
    """Time one interpolation's rebuilds (ours and QuantLib's) and print them."""
    ids = tuple(i.quote for i in spec.instruments)
    base = states[0]
    builder = CurveBuilder(spec, market, method)
    builder.build(base, None)
    args_of = []
    for q in states:
        c0, w = builder._coefficients(q[builder.order], np.zeros(0))
        args_of.append((c0, w))
    y = builder.logdf.copy()

    def kernel(i: int, mod: ModuleType = _ext, y: FloatArray = y) -> int:
        c0, w = args_of[(i + 1) % 2]
        it: int = mod.bootstrap(
            builder.method,
            builder.node_t,
            builder.query_t,
            c0,
            builder.term_ptr,
            w,
            builder.term_a,
            builder.term_b,
            y,
            TOL,
            50,
        )
        return it

    iters = [kernel(i) for i in range(4)]
    t_kernel = timed(kernel, repeat)
    t_build = timed(lambda i: builder.build(states[(i + 1) % 2], None), repeat)
    y_np = y.copy()
    t_twin = timed(lambda i: kernel(i, curve_kernels_np, y_np), ql_repeat, warmup=4)

    curve, quotes = ql_curve(market, spec, name)
    tick_quote = quotes[ids.index(TICK_QUOTE)]
    probe = ql_date(date(2036, 11, 26))
    curve.discount(probe)

    def ql_rebuild(i: int) -> float:
        tick_quote.setValue(float(states[(i + 1) % 2][ids.index(TICK_QUOTE)]))
        return float(curve.discount(probe))

    t_ql = timed(ql_rebuild, ql_repeat, warmup=4)

    # equivalence check at the pillars, both on the base quotes
    tick_quote.setValue(float(base[ids.index(TICK_QUOTE)]))
    ours = builder.build(base, None)
    ql_logdf = np.array(
        [np.log(curve.discount(float(t))) for t in ours.node_t[1:]], dtype=np.float64
    )
    dz = (ours.node_logdf[1:] - ql_logdf) / ours.node_t[1:]

    med_ql = statistics.median(t_ql)
    print(f"Newton iterations per rebuild (Cython): {iters}")
    for label, xs in (
        ("Cython kernel bootstrap", t_kernel),
        ("CurveBuilder.build (Cython)", t_build),
        ("NumPy twin kernel bootstrap", t_twin),
        (f"QuantLib {type(curve).__name__}", t_ql),
    ):
        print(f"{label:<42}{fmt(xs)}")
    print(
        "ratio QuantLib / ours (median): "
        f"kernel {med_ql / statistics.median(t_kernel):.0f}x, "
        f"build {med_ql / statistics.median(t_build):.0f}x, "
        f"NumPy twin {med_ql / statistics.median(t_twin):.1f}x"
    )
    print(
        f"zero-rate difference ours − QuantLib at the pillars: max {np.max(np.abs(dz)) / BP:.3f} bp"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="Cython kernel and build")
    parser.add_argument("--ql-repeat", type=int, default=300, help="QuantLib and NumPy twin")
    args = parser.parse_args()

    print(f"machine: {machine(f'QuantLib {ql.__version__}', f'workbench backend {_ext.BACKEND}')}")
    market = generate_reference_market()
    spec = pillar_spec(market)
    ids = tuple(i.quote for i in spec.instruments)
    base = market.quote_values(ids)
    moved = base.copy()
    moved[ids.index(TICK_QUOTE)] += TICK
    states = (base, moved)
    print(
        f"curve: {CURVE}, {len(ids)} OIS pillars 2M–30Y; tick: {TICK_QUOTE} ± {TICK / BP:.1f}bp, "
        "alternating, each rebuild warm-started from the previous solution"
    )
    if _ext.BACKEND != "cython":
        print("WARNING: the compiled kernels are not in use; run setup.py build_ext --inplace")

    for name, method in METHODS.items():
        print(f"\n== {name}")
        run_method(name, method, market, spec, states, args.repeat, args.ql_repeat)


if __name__ == "__main__":
    main()
