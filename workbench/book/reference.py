"""The reference book: 40,000 positions over rates, FX, credit and equity, deterministic per seed.

Composition per 40,000: 22,000 IRS, 2,000 FX forwards, 8,000 FX options, 1,200 CDX index
positions, 800 CDX tranches, 6,000 equity options; other sizes scale proportionally. Twenty
desks of three books each; notionals realistic per product and currency (JPY in the billions).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workbench.market.crosses import base_per_unit
from workbench.market.model import MarketSnapshot
from workbench.market.schedules import add_months_array, adjust_array, spot_date

SHARES: dict[str, float] = {
    "IRS": 22_000 / 40_000,
    "FX_FWD": 2_000 / 40_000,
    "FX_OPTION": 8_000 / 40_000,
    "CDX_INDEX": 1_200 / 40_000,
    "CDX_TRANCHE": 800 / 40_000,
    "EQ_OPTION": 6_000 / 40_000,
}
_RATES_WEIGHTS = {
    "USD": 0.30,
    "EUR": 0.25,
    "GBP": 0.12,
    "JPY": 0.10,
    "CHF": 0.05,
    "CAD": 0.08,
    "AUD": 0.10,
}
_TRANCHES = {
    "CDX.IG": ((0.0, 0.03), (0.03, 0.07), (0.07, 0.15), (0.15, 1.0)),
    "CDX.HY": ((0.0, 0.15), (0.15, 0.25), (0.25, 0.35), (0.35, 1.0)),
    "ITRAXX.MAIN": ((0.0, 0.03), (0.03, 0.06), (0.06, 0.12), (0.12, 1.0)),
    "ITRAXX.XOVER": ((0.0, 0.10), (0.10, 0.20), (0.20, 0.35), (0.35, 1.0)),
}
_EQ_DESK = {
    "USD": "US Equity Derivatives",
    "EUR": "EU Equity Derivatives",
    "GBP": "UK Equity Derivatives",
    "JPY": "Asia Equity Derivatives",
    "CHF": "EU Equity Derivatives",
}


def counts(positions: int) -> dict[str, int]:
    """How many positions of each product a book of ``positions`` has."""
    out = {p: round(positions * s) for p, s in SHARES.items()}
    if positions >= 50:
        for p in out:
            out[p] = max(out[p], 1)
    out["IRS"] += positions - sum(out.values())
    return out


def _books(desk: str) -> list[str]:
    """Three books per desk, named after the whole desk name (initials alone collide)."""
    short = "".join(w[:3] for w in desk.split()).upper()
    return [f"{short}-{k}" for k in ("FLOW", "EXOTIC", "HEDGE")]


def generate_reference_book(
    market: MarketSnapshot, *, positions: int = 40_000, seed: int = 1
) -> pl.DataFrame:
    """A realistic book for ``market`` as a frame with the columns of ``docs/book-format.md``."""
    rng = np.random.default_rng(seed)
    usd = base_per_unit(market)
    n = counts(positions)
    parts = [
        _swaps(market, rng, n["IRS"], usd),
        _fx(market, rng, n["FX_FWD"], n["FX_OPTION"], usd),
        _credit(market, rng, n["CDX_INDEX"], n["CDX_TRANCHE"]),
        _equity(market, rng, n["EQ_OPTION"]),
    ]
    frame = pl.concat([p for p in parts if p.height], how="diagonal_relaxed")
    ids = [f"{p[:3]}-{i:06d}" for i, p in enumerate(frame["product"].to_list(), start=1)]
    return frame.with_columns(pl.Series("position_id", ids)).select(
        ["position_id", *[c for c in frame.columns if c != "position_id"]]
    )


def _notional(rng: np.random.Generator, k: int, lo: float, hi: float) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), k))


def _swaps(
    market: MarketSnapshot, rng: np.random.Generator, k: int, usd: dict[str, float]
) -> pl.DataFrame:
    ccys = list(_RATES_WEIGHTS)
    ccy = rng.choice(ccys, size=k, p=list(_RATES_WEIGHTS.values()))
    use_term = rng.random(k) < 0.5
    years = rng.choice(
        np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30]),
        size=k,
        p=np.array([8, 9, 9, 7, 12, 5, 7, 4, 3, 12, 4, 7, 6, 3, 4]) / 100.0,
    )
    fwd_months = np.where(rng.random(k) < 0.7, 0, rng.integers(1, 13, k))
    notional_usd = np.round(_notional(rng, k, 1e6, 5e8), -5)
    sign = np.where(rng.random(k) < 0.5, 1.0, -1.0)
    start = np.empty(k, dtype="datetime64[D]")
    maturity = np.empty(k, dtype="datetime64[D]")
    curve = np.empty(k, dtype=object)
    fixed = np.empty(k)
    notional = np.empty(k)
    for c in ccys:
        rows = np.flatnonzero(ccy == c)
        if not rows.size:
            continue
        ois = next(s for s in market.curves if s.currency == c and s.kind == "ois")
        term = next(s for s in market.curves if s.currency == c and s.kind == "term")
        cal = market.calendars[ois.calendar]
        spot = np.datetime64(spot_date(market.as_of, ois.spot_lag, cal), "D")
        s = adjust_array(add_months_array(np.full(rows.size, spot), fwd_months[rows]), cal, "MF")
        s = np.maximum(s, spot)
        start[rows] = s
        maturity[rows] = adjust_array(add_months_array(s, 12 * years[rows]), cal, "MF")
        curve[rows] = np.where(use_term[rows], term.id, ois.id)
        level = np.interp(
            years[rows],
            [1, 5, 10, 30],
            [market.quote(f"{ois.id}.OIS.{t}") for t in ("1Y", "5Y", "10Y", "30Y")],
        )
        fixed[rows] = np.round(level + rng.normal(0.0, 0.004, rows.size), 5)
        scale = 1e8 if c == "JPY" else 1e5
        notional[rows] = np.round(notional_usd[rows] / usd[c] / scale) * scale * sign[rows]
    desk = np.array([f"{c} Rates" for c in ccy], dtype=object)
    desk[(years >= 20) & (rng.random(k) < 0.4)] = "Rates Long End"
    return pl.DataFrame(
        {
            "product": ["IRS"] * k,
            "desk": desk.tolist(),
            "book": [_books(d)[int(j)] for d, j in zip(desk, rng.integers(0, 3, k), strict=True)],
            "currency": ccy.tolist(),
            "underlying": curve.tolist(),
            "start": start,
            "maturity": maturity,
            "notional": notional,
            "fixed_rate": fixed,
            "float_spread": np.zeros(k),
        }
    )


def _fx(
    market: MarketSnapshot, rng: np.random.Generator, k_fwd: int, k_opt: int, usd: dict[str, float]
) -> pl.DataFrame:
    pairs = market.fx_pairs
    frames = []
    for product, k in (("FX_FWD", k_fwd), ("FX_OPTION", k_opt)):
        if not k:
            continue
        idx = rng.integers(0, len(pairs), k)
        days = np.exp(
            rng.uniform(np.log(7), np.log(2 * 365 if product == "FX_FWD" else 5 * 365), k)
        )
        as_of = np.datetime64(market.as_of, "D")
        mat = np.empty(k, dtype="datetime64[D]")
        strike = np.empty(k)
        notional = np.empty(k)
        for j, pair in enumerate(pairs):
            rows = np.flatnonzero(idx == j)
            if not rows.size:
                continue
            cal = market.calendars[pair.calendar]
            mat[rows] = adjust_array(as_of + days[rows].astype("timedelta64[D]"), cal, "F")
            spot = market.quote(pair.spot_quote)
            t = days[rows] / 365.0
            carry = spot * (1.0 + 0.01 * t * rng.normal(0, 1, rows.size))
            if product == "FX_FWD":
                strike[rows] = np.round(carry * (1 + rng.normal(0, 0.01, rows.size)), 5)
            else:
                z = rng.uniform(-1.28, 1.28, rows.size)
                strike[rows] = np.round(carry * np.exp(-z * 0.10 * np.sqrt(t)), 5)
            base_usd = usd[pair.base_ccy]
            notional[rows] = np.round(_notional(rng, rows.size, 1e6, 1e8) / base_usd, -4)
        notional *= np.where(rng.random(k) < 0.5, 1.0, -1.0)
        desk_names = (
            ["G10 FX Forwards"]
            if product == "FX_FWD"
            else ["G10 FX Options", "JPY FX Options", "EUR FX Options"]
        )
        desks = [desk_names[int(i)] for i in rng.integers(0, len(desk_names), k)]
        frames.append(
            pl.DataFrame(
                {
                    "product": [product] * k,
                    "desk": desks,
                    "book": [
                        _books(d)[int(j)] for d, j in zip(desks, rng.integers(0, 3, k), strict=True)
                    ],
                    "currency": [pairs[int(i)].quote_ccy for i in idx],
                    "underlying": [pairs[int(i)].pair for i in idx],
                    "maturity": mat,
                    "notional": notional,
                    "strike": strike,
                    "option_type": (
                        [None] * k
                        if product == "FX_FWD"
                        else [("C" if x < 0.5 else "P") for x in rng.random(k)]
                    ),
                }
            )
        )
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _credit(
    market: MarketSnapshot, rng: np.random.Generator, k_idx: int, k_tr: int
) -> pl.DataFrame:
    indices = market.credit_indices
    frames = []
    if k_idx:
        idx = rng.integers(0, len(indices), k_idx)
        frames.append(
            pl.DataFrame(
                {
                    "product": ["CDX_INDEX"] * k_idx,
                    "desk": [
                        "Credit Index" if rng.random() < 0.7 else "Credit Flow"
                        for _ in range(k_idx)
                    ],
                    "currency": [indices[int(i)].currency for i in idx],
                    "underlying": [indices[int(i)].id for i in idx],
                    "maturity": [indices[int(i)].maturity for i in idx],
                    "notional": np.round(_notional(rng, k_idx, 1e7, 2e8), -6)
                    * np.where(rng.random(k_idx) < 0.5, 1.0, -1.0),
                    "coupon": [indices[int(i)].coupon for i in idx],
                }
            )
        )
    if k_tr:
        idx = rng.integers(0, len(indices), k_tr)
        which = rng.integers(0, 4, k_tr)
        att = [
            _TRANCHES.get(indices[int(i)].id, _TRANCHES["CDX.IG"])[int(w)]
            for i, w in zip(idx, which, strict=True)
        ]
        frames.append(
            pl.DataFrame(
                {
                    "product": ["CDX_TRANCHE"] * k_tr,
                    "desk": ["Credit Structured" for _ in range(k_tr)],
                    "currency": [indices[int(i)].currency for i in idx],
                    "underlying": [indices[int(i)].id for i in idx],
                    "maturity": [indices[int(i)].maturity for i in idx],
                    "notional": np.round(_notional(rng, k_tr, 5e6, 5e7), -5)
                    * np.where(rng.random(k_tr) < 0.5, 1.0, -1.0),
                    "coupon": [indices[int(i)].coupon for i in idx],
                    "attach": [a for a, _ in att],
                    "detach": [d for _, d in att],
                }
            )
        )
    if not frames:
        return pl.DataFrame()
    out = pl.concat(frames, how="diagonal_relaxed")
    desks = out["desk"].to_list()
    return out.with_columns(
        pl.Series(
            "book",
            [_books(d)[int(j)] for d, j in zip(desks, rng.integers(0, 3, len(desks)), strict=True)],
        )
    )


def _equity(market: MarketSnapshot, rng: np.random.Generator, k: int) -> pl.DataFrame:
    if not k:
        return pl.DataFrame()
    eqs = market.equities
    idx = rng.integers(0, len(eqs), k)
    days = np.exp(rng.uniform(np.log(30), np.log(3 * 365), k)).astype(np.int64)
    as_of = np.datetime64(market.as_of, "D")
    mat = np.empty(k, dtype="datetime64[D]")
    strike = np.empty(k)
    for j, e in enumerate(eqs):
        rows = np.flatnonzero(idx == j)
        if not rows.size:
            continue
        cal = market.calendars[e.currency]
        mat[rows] = adjust_array(as_of + days[rows].astype("timedelta64[D]"), cal, "F")
        strike[rows] = np.round(market.quote(e.spot_quote) * rng.uniform(0.75, 1.25, rows.size), 2)
    desks = [_EQ_DESK[eqs[int(i)].currency] if rng.random() < 0.8 else "Equity Vol" for i in idx]
    return pl.DataFrame(
        {
            "product": ["EQ_OPTION"] * k,
            "desk": desks,
            "book": [_books(d)[int(j)] for d, j in zip(desks, rng.integers(0, 3, k), strict=True)],
            "currency": [eqs[int(i)].currency for i in idx],
            "underlying": [eqs[int(i)].id for i in idx],
            "maturity": mat,
            "notional": np.round(_notional(rng, k, 100, 1e5))
            * np.where(rng.random(k) < 0.5, 1.0, -1.0),
            "strike": strike,
            "option_type": [("C" if x < 0.5 else "P") for x in rng.random(k)],
        }
    )


__all__ = ["counts", "generate_reference_book"]
