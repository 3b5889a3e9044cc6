"""The reference market history: synthetic daily quotes whose last day is a given market.

Joint daily moves come from a factor model with volatility clustering and fat tails
(docs/history.md gives every parameter):

* **factors**, one series each: the equity market, equity vol, FX vol, credit spreads, USD
  strength, a correlation factor, and per currency the level, slope and curvature of its rate
  curves (Nelson–Siegel loadings, decay :data:`NS_DECAY_Y` years). Each is a GARCH(1,1)
  (:data:`GARCH_ALPHA`, :data:`GARCH_BETA`, unit long-run variance) driven by a multivariate
  Student-t innovation (:data:`T_DOF` degrees of freedom: one chi-square draw per day for all
  factors, so bad days are bad everywhere), correlated by :func:`factor_correlation`;
* **quotes** load on the factors of their class, plus their own noise (Student-t, constant
  variance): curve pillars (absolute, decimals), FX spots through per-currency values against
  USD (log; crosses stay consistent), equity spots (log), FX and equity vols (log: a surface
  moves together, with a little noise per pillar), index spreads (log) and correlations (logit);
* **levels** mean-revert where markets do (rates, vols, spreads, correlations: AR(1) with the
  class's :data:`PERSISTENCE`), spots are random walks;
* the path is anchored so that its **last day is the market exactly**; days are weekdays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from workbench._types import FloatArray
from workbench.market.model import MarketSnapshot
from workbench.market.schedules import tenor_years

GARCH_ALPHA = 0.08
GARCH_BETA = 0.90
T_DOF = 5.0
NS_DECAY_Y = 2.0

DAILY_VOL: dict[str, float] = {
    "equity_market": 0.011,  # log
    "equity_vol": 0.045,  # log of vols
    "fx_vol": 0.030,  # log of vols
    "credit": 0.030,  # log of spreads
    "usd": 0.005,  # log, USD against every other currency
    "correlation": 0.020,  # logit
    "level": 0.0004,  # absolute (4bp)
    "slope": 0.00025,
    "curvature": 0.00015,
}
"""Daily volatility (long run) of each factor, in the units of the quotes' move."""

NOISE: dict[str, float] = {
    "rate": 0.00003,  # 0.3bp per pillar
    "fx": 0.004,  # log, per currency against USD
    "equity": 0.012,  # log, per name
    "equity_vol_name": 0.02,  # log, per underlying's surface
    "fx_vol_pair": 0.012,  # log, per pair's surface
    "vol_pillar": 0.004,  # log, per vol quote
    "credit": 0.012,  # log, per index
    "correlation": 0.01,  # logit, per index
}
"""Daily volatility of each quote's own noise (constant), in the units of its move."""

PERSISTENCE: dict[str, float] = {
    "rate": 0.995,
    "vol": 0.98,
    "credit": 0.99,
    "correlation": 0.99,
    "spot": 1.0,
}
"""AR(1) coefficient of each class's level (1: a random walk)."""

_GLOBAL = ("equity_market", "equity_vol", "fx_vol", "credit", "usd", "correlation")
_CROSS: dict[tuple[str, str], float] = {
    ("equity_market", "equity_vol"): -0.7,
    ("equity_market", "credit"): -0.6,
    ("equity_vol", "credit"): 0.5,
    ("equity_vol", "fx_vol"): 0.4,
    ("fx_vol", "credit"): 0.3,
    ("equity_market", "usd"): -0.2,
    ("usd", "fx_vol"): 0.2,
    ("credit", "correlation"): 0.3,
    ("equity_market", "level"): 0.25,
    ("credit", "level"): -0.2,
}
"""Correlations between factors; ``level`` stands for every currency's level factor."""
_LEVELS_TOGETHER = 0.55  # two currencies' level factors
_SLOPES_TOGETHER = 0.3
_CURVES_TOGETHER = 0.2


@dataclass(frozen=True)
class _Factors:
    names: tuple[str, ...]

    def at(self, name: str) -> int:
        return self.names.index(name)


def _factor_names(currencies: Sequence[str]) -> _Factors:
    per_ccy = [f"{kind}:{c}" for kind in ("level", "slope", "curvature") for c in currencies]
    return _Factors((*_GLOBAL, *per_ccy))


def factor_correlation(currencies: Sequence[str]) -> FloatArray:
    """The factors' correlation matrix (global factors, then level, slope and curvature per
    currency), made positive definite."""
    f = _factor_names(currencies)
    n = len(f.names)
    c = np.eye(n)

    def kind(name: str) -> str:
        return name.split(":")[0]

    for i, a in enumerate(f.names):
        for j, b in enumerate(f.names):
            if i >= j:
                continue
            ka, kb = kind(a), kind(b)
            rho = _CROSS.get((ka, kb), _CROSS.get((kb, ka), 0.0))
            if ka == kb == "level":
                rho = _LEVELS_TOGETHER
            elif ka == kb == "slope":
                rho = _SLOPES_TOGETHER
            elif ka == kb == "curvature":
                rho = _CURVES_TOGETHER
            c[i, j] = c[j, i] = rho
    w, v = np.linalg.eigh(c)
    c = (v * np.maximum(w, 1e-6)) @ v.T
    d = np.sqrt(np.diag(c))
    out: FloatArray = c / np.outer(d, d)
    return out


def _garch_factors(rng: np.random.Generator, corr: FloatArray, steps: int) -> FloatArray:
    """(steps × factors) innovations with unit long-run variance: GARCH(1,1) on each factor,
    driven by a multivariate Student-t (one chi-square per day for every factor)."""
    n = corr.shape[0]
    chol = np.linalg.cholesky(corr)
    g = rng.standard_normal((steps, n)) @ chol.T
    scale = np.sqrt((T_DOF - 2.0) / rng.chisquare(T_DOF, steps))[:, None]
    z = g * scale  # unit variance, fat tails, joint
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    h = np.ones(n)
    out = np.empty((steps, n))
    for t in range(steps):
        out[t] = np.sqrt(h) * z[t]
        h = omega + GARCH_ALPHA * out[t] ** 2 + GARCH_BETA * h
    return out


def _noise(rng: np.random.Generator, steps: int, n: int) -> FloatArray:
    """(steps × n) independent Student-t draws with unit variance."""
    out: FloatArray = rng.standard_t(T_DOF, (steps, n)) * np.sqrt((T_DOF - 2.0) / T_DOF)
    return out


def _weekdays(end: date, days: int) -> np.ndarray:
    """The ``days`` weekdays ending on ``end`` (or on the weekday before it), ascending."""
    while end.weekday() >= 5:
        end -= timedelta(days=1)
    out: list[date] = []
    d = end
    while len(out) < days:
        if d.weekday() < 5:
            out.append(d)
        d -= timedelta(days=1)
    return np.array(out[::-1], dtype="datetime64[D]")


def _moves(market: MarketSnapshot, steps: int, rng: np.random.Generator) -> tuple[
    FloatArray, FloatArray, np.ndarray
]:  # fmt: skip
    """Daily moves (steps × quotes) in each quote's units of move, each quote's persistence,
    and how a move applies (0 absolute, 1 log, 2 logit)."""
    ids = list(market.quote_ids)
    at = {q: k for k, q in enumerate(ids)}
    n = len(ids)
    currencies = sorted({c.currency for c in market.curves})
    fac = _factor_names(currencies)
    eps = _garch_factors(rng, factor_correlation(currencies), steps)

    def factor(name: str, vol_key: str) -> FloatArray:
        out: FloatArray = eps[:, fac.at(name)] * DAILY_VOL[vol_key]
        return out

    moves = np.zeros((steps, n))
    phi = np.ones(n)
    how = np.zeros(n, dtype=np.int64)
    # rates: Nelson-Siegel loadings on the currency's level, slope and curvature
    for curve in market.curves:
        c = curve.currency
        level, slope, curv = (factor(f"{k}:{c}", k) for k in ("level", "slope", "curvature"))
        for inst in curve.instruments:
            k = at[inst.quote]
            y = max(tenor_years(inst.tenor), 1e-3) / NS_DECAY_Y
            f2 = (1.0 - np.exp(-y)) / y
            moves[:, k] = level + f2 * slope + (f2 - np.exp(-y)) * curv
            moves[:, k] += NOISE["rate"] * _noise(rng, steps, 1)[:, 0]
            phi[k] = PERSISTENCE["rate"]
    # FX: each currency's log value in USD; a pair moves by base's minus quote's
    usd = factor("usd", "usd")
    value = {c: np.zeros(steps) for c in sorted({market.base_currency, *currencies})}
    for c in value:
        if c != "USD":
            value[c] = -usd + NOISE["fx"] * _noise(rng, steps, 1)[:, 0]
    for pair in market.fx_pairs:
        for c in (pair.base_ccy, pair.quote_ccy):
            if c not in value:
                value[c] = -usd + NOISE["fx"] * _noise(rng, steps, 1)[:, 0]
        k = at[pair.spot_quote]
        moves[:, k] = value[pair.base_ccy] - value[pair.quote_ccy]
        how[k] = 1
    # FX vols: the FX vol factor, the pair's surface, the pillar
    fx_vol = factor("fx_vol", "fx_vol")
    for surf in market.fx_vol_surfaces:
        pair_move = fx_vol + NOISE["fx_vol_pair"] * _noise(rng, steps, 1)[:, 0]
        quotes = [at[q] for row in surf.quotes for q in row]
        moves[:, quotes] = pair_move[:, None] + NOISE["vol_pillar"] * _noise(
            rng, steps, len(quotes)
        )
        how[quotes], phi[quotes] = 1, PERSISTENCE["vol"]
    # equities: the market, the name; their vols: the equity vol factor, the name, the pillar
    mkt, eq_vol = factor("equity_market", "equity_market"), factor("equity_vol", "equity_vol")
    for eq in market.equities:
        k = at[eq.spot_quote]
        moves[:, k] = mkt + NOISE["equity"] * _noise(rng, steps, 1)[:, 0]
        how[k] = 1
        name_move = eq_vol + NOISE["equity_vol_name"] * _noise(rng, steps, 1)[:, 0]
        quotes = [at[q] for row in eq.vol_quotes for q in row]
        moves[:, quotes] = name_move[:, None] + NOISE["vol_pillar"] * _noise(
            rng, steps, len(quotes)
        )
        how[quotes], phi[quotes] = 1, PERSISTENCE["vol"]
    # credit: index spreads (log) and correlations (logit)
    credit, corr = factor("credit", "credit"), factor("correlation", "correlation")
    for ix in market.credit_indices:
        k = at[ix.spread_quote]
        moves[:, k] = credit + NOISE["credit"] * _noise(rng, steps, 1)[:, 0]
        how[k], phi[k] = 1, PERSISTENCE["credit"]
        k = at[ix.correlation_quote]
        moves[:, k] = corr + NOISE["correlation"] * _noise(rng, steps, 1)[:, 0]
        how[k], phi[k] = 2, PERSISTENCE["correlation"]
    return moves, phi, how


def generate_history(market: MarketSnapshot, *, days: int = 750, seed: int = 7) -> pl.DataFrame:
    """``days`` weekdays of quotes ending on ``market.as_of`` (or the weekday before), the
    last day equal to ``market``; long format (date, quote_id, value), sorted by date.

    Raises
    ------
    ValueError
        If ``days`` < 2.
    """
    if days < 2:
        raise ValueError(f"a history needs at least 2 days, got {days}")
    rng = np.random.default_rng(seed)
    dates = _weekdays(market.as_of, days)
    moves, phi, how = _moves(market, days - 1, rng)
    # levels as AR(1) deviations in each quote's units of move, anchored on the last day
    dev = np.zeros((days, moves.shape[1]))
    for t in range(1, days):
        dev[t] = phi * dev[t - 1] + moves[t - 1]
    dev -= dev[-1]
    ref = market.quote_values(list(market.quote_ids))
    values = np.empty_like(dev)
    a, lg, lt = how == 0, how == 1, how == 2
    values[:, a] = ref[a] + dev[:, a]
    values[:, lg] = ref[lg] * np.exp(dev[:, lg])
    logit = np.log(ref[lt] / (1.0 - ref[lt]))
    values[:, lt] = 1.0 / (1.0 + np.exp(-(logit + dev[:, lt])))
    values[-1] = ref  # exactly the market, not ref·exp(0) rounded
    n = len(market.quote_ids)
    return pl.DataFrame(
        {
            "date": np.repeat(dates, n),
            "quote_id": np.tile(np.array(market.quote_ids, dtype=object), days),
            "value": values.ravel(),
        },
        schema={"date": pl.Date, "quote_id": pl.String, "value": pl.Float64},
    )


__all__ = [
    "DAILY_VOL",
    "GARCH_ALPHA",
    "GARCH_BETA",
    "NOISE",
    "NS_DECAY_Y",
    "PERSISTENCE",
    "T_DOF",
    "factor_correlation",
    "generate_history",
]
