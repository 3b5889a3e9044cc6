"""The reference market: 7 currencies, 14 curves, 10 FX pairs, 50 equities, 4 credit indices.

Levels are realistic for late 2026 and deterministic for a seed. Calendars carry weekends and
explicit holiday lists from the year before the as-of date to 36 years after it.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from workbench.market.model import (
    FX_DELTA_PILLARS,
    Calendar,
    CreditIndex,
    CurveInstrument,
    CurveSpec,
    DayCount,
    EquitySpec,
    FxPair,
    FxVolSurface,
    MarketSnapshot,
)
from workbench.market.schedules import tenor_years

# currency: OIS id, term id, term months, OIS day count, fixed day count, fixed months, spot lag,
# short rate, long rate, term basis (decimal)
_CCY: dict[str, tuple[str, str, int, DayCount, DayCount, int, int, float, float, float]] = {
    "USD": ("SOFR", "TERMSOFR3M", 3, "ACT/360", "ACT/360", 12, 2, 0.0375, 0.0420, 0.0012),
    "EUR": ("ESTR", "EURIBOR6M", 6, "ACT/360", "30/360", 12, 2, 0.0195, 0.0265, 0.0018),
    "GBP": ("SONIA", "TERMSONIA3M", 3, "ACT/365F", "ACT/365F", 12, 0, 0.0385, 0.0440, 0.0010),
    "JPY": ("TONA", "TIBOR3M", 3, "ACT/365F", "ACT/365F", 12, 2, 0.0075, 0.0210, 0.0015),
    "CHF": ("SARON", "TERMSARON3M", 3, "ACT/360", "30/360", 12, 2, -0.0005, 0.0080, 0.0008),
    "CAD": ("CORRA", "TERMCORRA3M", 3, "ACT/365F", "ACT/365F", 12, 2, 0.0255, 0.0330, 0.0011),
    "AUD": ("AONIA", "BBSW6M", 6, "ACT/365F", "ACT/365F", 12, 2, 0.0360, 0.0450, 0.0020),
}
_OIS_TENORS = (
    "1M", "2M", "3M", "6M", "9M", "1Y", "18M", "2Y", "3Y", "4Y", "5Y", "6Y", "7Y", "8Y", "9Y",
    "10Y", "12Y", "15Y", "20Y", "25Y", "30Y",
)  # fmt: skip
_IRS_TENORS = tuple(t for t in _OIS_TENORS if t.endswith("Y"))
_FIXED_HOLIDAYS: dict[str, tuple[tuple[int, int], ...]] = {
    "USD": ((1, 1), (6, 19), (7, 4), (11, 11), (12, 25)),
    "EUR": ((1, 1), (5, 1), (12, 25), (12, 26)),
    "GBP": ((1, 1), (12, 25), (12, 26)),
    "JPY": ((1, 1), (1, 2), (1, 3), (2, 11), (5, 3), (5, 4), (5, 5), (11, 3), (11, 23)),
    "CHF": ((1, 1), (1, 2), (8, 1), (12, 25), (12, 26)),
    "CAD": ((1, 1), (7, 1), (11, 11), (12, 25), (12, 26)),
    "AUD": ((1, 1), (1, 26), (4, 25), (12, 25), (12, 26)),
}
_SPOTS = {
    "EURUSD": 1.0842,
    "GBPUSD": 1.2705,
    "USDJPY": 151.35,
    "USDCHF": 0.8815,
    "USDCAD": 1.3960,
    "AUDUSD": 0.6545,
}
_CROSSES = {
    "EURGBP": ("EURUSD", "GBPUSD"),
    "EURJPY": ("EURUSD", "USDJPY"),
    "EURCHF": ("EURUSD", "USDCHF"),
    "GBPJPY": ("GBPUSD", "USDJPY"),
}
_FX_EXPIRIES = ("1W", "1M", "2M", "3M", "6M", "9M", "1Y", "2Y", "3Y", "5Y")
_EQ_EXPIRIES = ("1M", "3M", "6M", "1Y", "2Y", "3Y")
_EQ_MONEYNESS = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
_EQUITIES = (
    [
        (t, "USD")
        for t in (
            "AAPL",
            "MSFT",
            "NVDA",
            "AMZN",
            "GOOGL",
            "META",
            "TSLA",
            "JPM",
            "V",
            "UNH",
            "XOM",
            "JNJ",
            "WMT",
            "PG",
            "MA",
            "HD",
            "CVX",
            "KO",
            "PEP",
            "ABBV",
            "MRK",
            "COST",
            "AVGO",
            "ADBE",
            "CRM",
            "NFLX",
            "AMD",
            "INTC",
            "ORCL",
            "BAC",
        )
    ]
    + [(t, "EUR") for t in ("SAP", "ASML", "MC", "SIE", "TTE", "SAN", "ALV", "OR", "AIR", "BNP")]
    + [(t, "GBP") for t in ("SHEL", "AZN", "HSBA", "ULVR", "BP")]
    + [(t, "JPY") for t in ("7203", "6758", "9984")]
    + [(t, "CHF") for t in ("NESN", "ROG")]
)
# id, currency, coupon, recovery, spread, correlation, calendar
_INDICES = (
    ("CDX.IG", "USD", 0.01, 0.40, 0.0055, 0.32),
    ("CDX.HY", "USD", 0.05, 0.30, 0.0320, 0.22),
    ("ITRAXX.MAIN", "EUR", 0.01, 0.40, 0.0060, 0.34),
    ("ITRAXX.XOVER", "EUR", 0.05, 0.40, 0.0290, 0.25),
)


def _calendar(ccy: str, first: int, last: int) -> Calendar:
    days: list[date] = []
    for year in range(first, last + 1):
        for month, day in _FIXED_HOLIDAYS[ccy]:
            d = date(year, month, day)
            if d.weekday() == 5:
                d += timedelta(days=2)
            elif d.weekday() == 6:
                d += timedelta(days=1)
            days.append(d)
    return Calendar(ccy, (5, 6), tuple(sorted(set(days))))


def _par(short: float, long: float, years: float, hump: float) -> float:
    shape = 1.0 - np.exp(-years / 4.0)
    return float(short + (long - short) * shape + hump * years * np.exp(-years / 3.0))


def generate_reference_market(*, as_of: date = date(2026, 11, 24), seed: int = 7) -> MarketSnapshot:
    """The reference snapshot (see the module docstring); deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    quotes: dict[str, float] = {}
    calendars = {c: _calendar(c, as_of.year - 1, as_of.year + 36) for c in _CCY}
    curves: list[CurveSpec] = []
    for ccy, (ois, term, months, dc, fdc, fm, lag, short, long, basis) in _CCY.items():
        hump = float(rng.normal(0.0, 0.0008))
        ois_id, term_id = f"{ccy}.{ois}", f"{ccy}.{term}"
        inst = [CurveInstrument(f"{ois_id}.DEP.1W", "deposit", "1W")]
        quotes[inst[0].quote] = round(short + float(rng.normal(0, 5e-5)), 6)
        for tenor in _OIS_TENORS:
            q = f"{ois_id}.OIS.{tenor}"
            inst.append(CurveInstrument(q, "ois", tenor))
            y = tenor_years(tenor)
            quotes[q] = round(_par(short, long, y, hump) + float(rng.normal(0, 3e-5)), 6)
        curves.append(
            CurveSpec(
                ois_id,
                ccy,
                "ois",
                ccy,
                tuple(inst),
                spot_lag=lag,
                day_count=dc,
                fixed_day_count=dc,
                fixed_frequency_months=12,
                float_frequency_months=12,
            )
        )
        dep = f"{term_id}.DEP.{months}M"
        tinst = [CurveInstrument(dep, "deposit", f"{months}M")]
        quotes[dep] = round(_par(short, long, months / 12, hump) + basis, 6)
        for tenor in _IRS_TENORS:
            q = f"{term_id}.IRS.{tenor}"
            tinst.append(CurveInstrument(q, "irs", tenor))
            y = tenor_years(tenor)
            quotes[q] = round(
                _par(short, long, y, hump)
                + basis * (0.6 + 0.4 * np.exp(-y / 10))
                + float(rng.normal(0, 3e-5)),
                6,
            )
        curves.append(
            CurveSpec(
                term_id,
                ccy,
                "term",
                ccy,
                tuple(tinst),
                spot_lag=lag,
                day_count=dc,
                fixed_day_count=fdc,
                fixed_frequency_months=fm,
                float_frequency_months=months,
                discount_curve=ois_id,
            )
        )

    spots = dict(_SPOTS)
    for cross, (a, b) in _CROSSES.items():
        spots[cross] = spots[a] * spots[b] if b != "GBPUSD" else spots[a] / spots[b]
    pairs: list[FxPair] = []
    surfaces: list[FxVolSurface] = []
    atm_base = {
        "EURUSD": 0.075,
        "GBPUSD": 0.080,
        "USDJPY": 0.100,
        "USDCHF": 0.078,
        "USDCAD": 0.062,
        "AUDUSD": 0.095,
        "EURGBP": 0.055,
        "EURJPY": 0.105,
        "EURCHF": 0.058,
        "GBPJPY": 0.115,
    }
    for pair, spot in spots.items():
        base, quote = pair[:3], pair[3:]
        sq = f"FX.{pair}"
        quotes[sq] = round(spot, 6)
        pairs.append(FxPair(pair, base, quote, sq, quote if quote != "USD" else base))
        rr = float(rng.normal(-0.004, 0.003))
        rows: list[tuple[str, ...]] = []
        for expiry in _FX_EXPIRIES:
            y = tenor_years(expiry)
            atm = atm_base[pair] * (1.0 + 0.25 * np.exp(-y * 2)) + 0.004 * np.log1p(y)
            row: list[str] = []
            for pillar in FX_DELTA_PILLARS:
                x = {"10P": -0.4, "25P": -0.25, "ATM": 0.0, "25C": 0.25, "10C": 0.4}[pillar]
                vol = atm + rr * x * 2.0 + 0.006 * (abs(x) / 0.25) ** 1.6
                q = f"FXVOL.{pair}.{expiry}.{pillar}"
                quotes[q] = round(float(vol), 6)
                row.append(q)
            rows.append(tuple(row))
        surfaces.append(FxVolSurface(pair, _FX_EXPIRIES, FX_DELTA_PILLARS, tuple(rows)))

    equities: list[EquitySpec] = []
    for ticker, ccy in _EQUITIES:
        sq = f"EQ.{ticker}"
        level = float(np.exp(rng.uniform(np.log(20.0), np.log(900.0))))
        if ccy == "JPY":
            level *= 40.0
        quotes[sq] = round(level, 4)
        atm = float(rng.uniform(0.18, 0.55))
        skew = float(rng.uniform(-0.35, -0.10))
        vq: list[tuple[str, ...]] = []
        for expiry in _EQ_EXPIRIES:
            y = tenor_years(expiry)
            row = []
            for m in _EQ_MONEYNESS:
                vol = (
                    atm * (1.0 + 0.15 * np.exp(-y)) + skew * np.log(m) / np.sqrt(max(y, 0.25)) * 0.5
                )
                vol += 0.10 * np.log(m) ** 2
                q = f"EQVOL.{ticker}.{expiry}.{round(m * 100):d}"
                quotes[q] = round(float(max(vol, 0.05)), 6)
                row.append(q)
            vq.append(tuple(row))
        equities.append(
            EquitySpec(
                ticker,
                ccy,
                sq,
                round(float(rng.uniform(0.0, 0.035)), 5),
                _EQ_EXPIRIES,
                _EQ_MONEYNESS,
                tuple(vq),
            )
        )

    indices: list[CreditIndex] = []
    for iid, ccy, coupon, recovery, spread, corr in _INDICES:
        sq, cq = f"{iid}.5Y", f"{iid}.5Y.CORR"
        quotes[sq] = spread
        quotes[cq] = corr
        w = rng.lognormal(0.0, 0.6, 125)
        w = w / w.mean()
        w = np.round(w, 12)
        w[-1] = 125.0 - w[:-1].sum()
        indices.append(
            CreditIndex(
                iid,
                ccy,
                date(2031, 12, 20),
                coupon,
                recovery,
                sq,
                cq,
                tuple(f"{iid}.N{i + 1:03d}" for i in range(125)),
                tuple(float(x) for x in w),
                calendar=ccy,
            )
        )

    return MarketSnapshot(
        as_of=as_of,
        version=1,
        calendars=calendars,
        quote_ids=tuple(quotes),
        quotes=np.array(list(quotes.values()), dtype=np.float64),
        curves=tuple(curves),
        fx_pairs=tuple(pairs),
        fx_vol_surfaces=tuple(surfaces),
        equities=tuple(equities),
        credit_indices=tuple(indices),
    )
