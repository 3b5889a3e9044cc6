"""Garman–Kohlhagen / Black–Scholes with a continuous dividend yield, vectorised.

Inputs are float64 columns (broadcastable): ``sign`` +1 call / −1 put, ``S`` spot (quote
currency per base, or the equity price), ``K`` strike, ``T`` years to expiry (ACT/365F),
``r_d`` domestic continuous zero rate, ``r_f`` foreign rate or dividend yield (continuous,
decimal per year), ``vol`` Black vol (decimal). Prices are per unit of underlying in the
domestic currency. ``scipy.special.ndtr`` gives the normal CDF to full double precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from workbench._types import FloatArray

_INV_SQRT_2PI = 0.3989422804014327


@dataclass(frozen=True, slots=True)
class BlackGreeks:
    """Price and raw partial derivatives per unit of underlying (domestic currency).

    ``delta`` ∂PV/∂S, ``gamma`` ∂²PV/∂S², ``vega`` ∂PV/∂vol (per 1.0 of vol), ``theta_t``
    ∂PV/∂t as calendar time passes (= −∂PV/∂T, per year), ``rho_d`` ∂PV/∂r_d, ``rho_f`` ∂PV/∂r_f.
    """

    pv: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta_t: FloatArray
    rho_d: FloatArray
    rho_f: FloatArray


def _d1_d2(
    S: FloatArray, K: FloatArray, T: FloatArray, r_d: FloatArray, r_f: FloatArray, vol: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    sd = vol * np.sqrt(T)
    d1 = (np.log(S / K) + (r_d - r_f) * T) / sd + 0.5 * sd
    return d1, d1 - sd, sd


def black_price(
    sign: FloatArray,
    S: FloatArray,
    K: FloatArray,
    T: FloatArray,
    r_d: FloatArray,
    r_f: FloatArray,
    vol: FloatArray,
) -> FloatArray:
    """Option value per unit of underlying, domestic currency."""
    d1, d2, _ = _d1_d2(S, K, T, r_d, r_f, vol)
    df_d = np.exp(-r_d * T)
    df_f = np.exp(-r_f * T)
    return sign * (S * df_f * ndtr(sign * d1) - K * df_d * ndtr(sign * d2))  # type: ignore[no-any-return]


def black_greeks(
    sign: FloatArray,
    S: FloatArray,
    K: FloatArray,
    T: FloatArray,
    r_d: FloatArray,
    r_f: FloatArray,
    vol: FloatArray,
) -> BlackGreeks:
    """Price and analytic Greeks (see :class:`BlackGreeks`) for T > 0 and vol > 0."""
    d1, d2, sd = _d1_d2(S, K, T, r_d, r_f, vol)
    df_d = np.exp(-r_d * T)
    df_f = np.exp(-r_f * T)
    n1 = ndtr(sign * d1)
    n2 = ndtr(sign * d2)
    pdf1 = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    pv = sign * (S * df_f * n1 - K * df_d * n2)
    delta = sign * df_f * n1
    gamma = df_f * pdf1 / (S * sd)
    vega = S * df_f * pdf1 * np.sqrt(T)
    theta_t = (
        -S * df_f * pdf1 * vol / (2.0 * np.sqrt(T))
        + sign * r_f * S * df_f * n1
        - sign * r_d * K * df_d * n2
    )
    rho_d = sign * K * T * df_d * n2
    rho_f = -sign * S * T * df_f * n1
    return BlackGreeks(pv, delta, gamma, vega, theta_t, rho_d, rho_f)


def validate_inputs(
    S: FloatArray, K: FloatArray, T: FloatArray, vol: FloatArray, *, what: str = "option"
) -> None:
    """Refuse non-positive spot/strike/expiry/vol or non-finite inputs, naming the first bad one."""
    for name, col in (("spot", S), ("strike", K), ("expiry time", T), ("vol", vol)):
        arr = np.broadcast_to(np.asarray(col, dtype=np.float64), np.broadcast(S, K, T, vol).shape)
        bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0.0)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{what} {i}: {name} must be positive and finite, got {arr[i]!r}")
