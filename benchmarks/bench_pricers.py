"""Pricer throughput against QuantLib, measured in the same run on the same inputs.

(a) IRS reprice per swap: ``RatesPricer.pv`` (vectorised ``SwapGroup`` per curve) over every
    swap of the reference book, against ``swap.NPV()`` of QuantLib ``OvernightIndexedSwap`` /
    ``VanillaSwap`` objects on the same curves (``DiscountCurve`` on our log-linear nodes, which
    is the same curve) for a random sample of the swaps, scaled per swap. Target ≥ 20×.
(b) FX options with Greeks per option: ``black_greeks`` over every FX option of the reference
    book, against ``AnalyticEuropeanEngine`` NPV + delta + gamma + vega per option (flat
    continuous curves at the same r_d, r_f, the same vol) for a sample. Target ≥ 50×.

QuantLib objects are built once; each timed QuantLib repetition forces a fresh calculation with
``recalculate()``. Times are ``time.perf_counter`` medians over ``--repeat`` runs after one
warm-up; the PVs of both sides are compared on the sample so the timings are of equal work.

Run: ``python benchmarks/bench_pricers.py [--positions 40000] [--repeat 7] [--sample 2000]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date

import numpy as np
import QuantLib as ql  # noqa: N813 - the conventional alias
from _machine import machine

from workbench import _ext
from workbench.book.io import frame_to_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.schedules import add_tenor
from workbench.pricing.black import black_greeks
from workbench.pricing.curves import CurveSet
from workbench.pricing.rates_book import RatesPricer

_DC = {
    "ACT/360": ql.Actual360(),
    "ACT/365F": ql.Actual365Fixed(),
    "30/360": ql.Thirty360(ql.Thirty360.BondBasis),
}
_WEEKDAYS = (ql.Monday, ql.Tuesday, ql.Wednesday, ql.Thursday, ql.Friday, ql.Saturday, ql.Sunday)


def _qdate(d: date) -> ql.Date:
    return ql.Date(d.day, d.month, d.year)


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm-up: compilation, caches
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _fmt(per_item: list[float], unit: str = "µs") -> str:
    scale = 1e6 if unit == "µs" else 1e9
    med, lo, hi = (f(per_item) * scale for f in (statistics.median, min, max))
    return f"median {med:9.3f} {unit}  (min {lo:.3f}, max {hi:.3f})"


# -- (a) swaps ----------------------------------------------------------------------------------


class _QlRates:
    """QuantLib indices and discount curves on our curves' nodes (log-linear DFs)."""

    def __init__(self, market: MarketSnapshot, curves: CurveSet) -> None:
        ql.Settings.instance().evaluationDate = _qdate(market.as_of)
        self.calendars: dict[str, ql.Calendar] = {}
        for cid, cal in market.calendars.items():
            qc = ql.BespokeCalendar(f"bench-{cid}")
            for wd in cal.weekend:
                qc.addWeekend(_WEEKDAYS[wd])
            for h in cal.holidays:
                qc.addHoliday(_qdate(h))
            self.calendars[cid] = qc
        today = _qdate(market.as_of)
        self.handles: dict[str, ql.YieldTermStructureHandle] = {}
        for cid in curves.ids():
            c = curves[cid]
            dates = [today + round(t * 365.0) for t in c.node_t]
            dfs = np.exp(c.node_logdf).tolist()
            curve = ql.DiscountCurve(dates, dfs, ql.Actual365Fixed())
            curve.enableExtrapolation()
            self.handles[cid] = ql.YieldTermStructureHandle(curve)
        self.market = market

    def swap(self, book: Book, row: int) -> ql.Swap:
        market = self.market
        spec = market.curve(book.underlying.labels[int(book.underlying.codes[row])])
        disc_id = market.discount_curve_id(spec.currency)
        cal = self.calendars[spec.calendar]
        notional = float(book.notional[row])
        side = ql.Swap.Receiver if notional > 0 else ql.Swap.Payer
        start = _qdate(book.start[row].astype(date))
        end = _qdate(book.maturity[row].astype(date))

        def sched(months: int) -> ql.Schedule:
            tenor = ql.Period(months, ql.Months)
            mf = ql.ModifiedFollowing
            return ql.Schedule(start, end, tenor, cal, mf, mf, ql.DateGeneration.Backward, False)

        dc = _DC[spec.day_count]
        if spec.kind == "ois":
            index = ql.OvernightIndex(spec.id, 0, ql.Currency(), cal, dc, self.handles[spec.id])
            swap = ql.OvernightIndexedSwap(
                side,
                abs(notional),
                sched(spec.fixed_frequency_months),
                float(book.fixed_rate[row]),
                _DC[spec.fixed_day_count],
                index,
                float(book.float_spread[row]),
            )
        else:
            index = ql.IborIndex(
                spec.id,
                ql.Period(spec.float_frequency_months, ql.Months),
                spec.spot_lag,
                ql.Currency(),
                cal,
                ql.ModifiedFollowing,
                False,
                dc,
                self.handles[spec.id],
            )
            swap = ql.VanillaSwap(
                side,
                abs(notional),
                sched(spec.fixed_frequency_months),
                float(book.fixed_rate[row]),
                _DC[spec.fixed_day_count],
                sched(spec.float_frequency_months),
                index,
                float(book.float_spread[row]),
                dc,
                None,
                False,
            )
        swap.setPricingEngine(ql.DiscountingSwapEngine(self.handles[disc_id]))
        return swap


def bench_swaps(
    market: MarketSnapshot, book: Book, repeat: int, sample: int, rng: np.random.Generator
) -> float:
    curves = CurveSet(market, interpolation="log_linear")
    rows = book.rows("IRS")
    pricer = RatesPricer(book, rows, market)
    ours = _times(lambda: pricer.pv(market, curves), repeat)
    ours_per = [t / rows.size for t in ours]

    qlr = _QlRates(market, curves)
    pick = np.sort(rng.choice(rows.size, size=min(sample, rows.size), replace=False))
    swaps = [qlr.swap(book, int(rows[i])) for i in pick]

    def ql_reprice() -> list[float]:
        out = []
        for s in swaps:
            s.recalculate()
            out.append(s.NPV())
        return out

    theirs = _times(ql_reprice, repeat)
    theirs_per = [t / len(swaps) for t in theirs]
    ours_pv = pricer.pv(market, curves)[pick]
    err = np.max(np.abs(ours_pv - np.array(ql_reprice())) / np.abs(book.notional[rows[pick]]))
    ratio = statistics.median(theirs_per) / statistics.median(ours_per)
    print(f"(a) IRS reprice per swap ({rows.size:,} swaps; QuantLib sample {len(swaps):,})")
    print(f"    ours     {_fmt(ours_per)}   [whole book {statistics.median(ours) * 1e3:.2f} ms]")
    print(f"    QuantLib {_fmt(theirs_per)}")
    print(f"    ratio {ratio:,.1f}x (target >= 20x); max |PV diff| / notional {err:.2e}")
    return ratio


# -- (b) FX options -----------------------------------------------------------------------------


def _fx_inputs(market: MarketSnapshot, book: Book, curves: CurveSet) -> tuple[np.ndarray, ...]:
    """sign, S, K, T, r_d, r_f, vol columns of the book's FX options (ATM vol by expiry)."""
    rows = book.rows("FX_OPTION")
    pairs = {p.pair: p for p in market.fx_pairs}
    surfaces = {s.pair: s for s in market.fx_vol_surfaces}
    n = rows.size
    S, r_d, r_f, vol = (np.empty(n) for _ in range(4))
    T = (book.maturity[rows] - np.datetime64(market.as_of, "D")).astype(np.int64) / 365.0
    labels = book.underlying.labels
    for i, row in enumerate(rows.tolist()):
        pair = pairs[labels[int(book.underlying.codes[row])]]
        S[i] = market.quote(pair.spot_quote)
        t = np.array([T[i]])
        r_d[i] = -float(curves[market.discount_curve_id(pair.quote_ccy)].log_discount(t)[0]) / T[i]
        r_f[i] = -float(curves[market.discount_curve_id(pair.base_ccy)].log_discount(t)[0]) / T[i]
        surf = surfaces[pair.pair]
        atm = [market.quote(row_q[surf.deltas.index("ATM")]) for row_q in surf.quotes]
        exp_t = [(add_tenor(market.as_of, e) - market.as_of).days / 365.0 for e in surf.expiries]
        vol[i] = float(np.interp(T[i], exp_t, atm))
    return book.option_sign[rows], S, book.strike[rows], T, r_d, r_f, vol


def bench_fx_options(
    market: MarketSnapshot, book: Book, repeat: int, sample: int, rng: np.random.Generator
) -> float:
    curves = CurveSet(market)
    sign, S, K, T, r_d, r_f, vol = _fx_inputs(market, book, curves)
    ours = _times(lambda: black_greeks(sign, S, K, T, r_d, r_f, vol), repeat)
    ours_per = [t / sign.size for t in ours]

    today = _qdate(market.as_of)
    ql.Settings.instance().evaluationDate = today
    pick = rng.choice(sign.size, size=min(sample, sign.size), replace=False)
    options = []
    for i in pick.tolist():

        def flat(rate: float) -> ql.YieldTermStructureHandle:
            return ql.YieldTermStructureHandle(
                ql.FlatForward(today, rate, ql.Actual365Fixed(), ql.Continuous, ql.Annual)
            )

        process = ql.GeneralizedBlackScholesProcess(
            ql.QuoteHandle(ql.SimpleQuote(float(S[i]))),
            flat(float(r_f[i])),
            flat(float(r_d[i])),
            ql.BlackVolTermStructureHandle(
                ql.BlackConstantVol(today, ql.NullCalendar(), float(vol[i]), ql.Actual365Fixed())
            ),
        )
        kind = ql.Option.Call if sign[i] > 0 else ql.Option.Put
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, float(K[i])),
            ql.EuropeanExercise(today + round(float(T[i]) * 365.0)),
        )
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        options.append(opt)

    def ql_price() -> list[float]:
        out = []
        for o in options:
            o.recalculate()
            out.append(o.NPV())
            o.delta()
            o.gamma()
            o.vega()
        return out

    theirs = _times(ql_price, repeat)
    theirs_per = [t / len(options) for t in theirs]
    pv = black_greeks(sign, S, K, T, r_d, r_f, vol).pv[pick]
    err = np.max(np.abs(pv - np.array(ql_price())) / np.maximum(np.abs(pv), 1e-12 * S[pick]))
    ratio = statistics.median(theirs_per) / statistics.median(ours_per)
    print(
        f"(b) FX options with Greeks per option ({sign.size:,}; QuantLib sample {len(options):,})"
    )
    print(f"    ours     {_fmt(ours_per, 'ns')}   [all {statistics.median(ours) * 1e3:.3f} ms]")
    print(f"    QuantLib {_fmt(theirs_per, 'ns')}")
    print(f"    ratio {ratio:,.1f}x (target >= 50x); max relative PV diff {err:.2e}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sample", type=int, default=2_000, help="QuantLib sample size")
    args = parser.parse_args()

    print(machine(f"QuantLib {ql.__version__}", f"curve backend {_ext.BACKEND}"))
    market = generate_reference_market()
    book = frame_to_book(generate_reference_book(market, positions=args.positions, seed=1))
    rng = np.random.default_rng(5)
    saved = ql.Settings.instance().evaluationDate
    try:
        bench_swaps(market, book, args.repeat, args.sample, rng)
        bench_fx_options(market, book, args.repeat, args.sample, rng)
    finally:
        ql.Settings.instance().evaluationDate = saved


if __name__ == "__main__":
    main()
