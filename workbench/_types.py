"""Named types with units, shared by the whole package.

Every numeric column is float64. The aliases say what a number *means*; the docstrings of the
functions that take them say the unit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
"""A float64 column."""
IntArray = npt.NDArray[np.int64]
"""An int64 column of indices or codes (never an amount)."""
BoolArray = npt.NDArray[np.bool_]
DateArray = npt.NDArray[np.datetime64]
"""A ``datetime64[D]`` column of calendar dates."""

Rate = float
"""An annual rate as a decimal (0.0412 is 4.12%)."""
Time = float
"""A year fraction, ACT/365F from the valuation date unless said otherwise."""
DiscountFactor = float
Volatility = float
"""A Black volatility as a decimal per sqrt(year) (0.085 is 8.5 vol points)."""
Spread = float
"""A credit or basis spread as a decimal per year (0.0055 is 55bp)."""
Money = float
"""An amount of money in the currency the context names."""

KeyRateMethod = Literal["bump", "jacobian"]
"""How key-rate DV01s are computed: ``"bump"``, the PV change for a central ±1bp move of one
quote with the curves re-bootstrapped (the default: what a desk hedges); ``"jacobian"``, the
exact first derivative through the bootstrap's Jacobian, times 1bp (docs/greeks.md)."""

BP = 1.0e-4
"""One basis point as a decimal."""
VOL_POINT = 1.0e-2
"""One vol point as a decimal volatility."""
SPOT_BUMP = 1.0e-2
"""The relative spot move for FX and equity delta: +1%."""
CORR_POINT = 1.0e-2
"""One correlation point (+1%) for tranche vega."""
DAYS_PER_YEAR = 365.0
"""ACT/365F year length used for option times and curve times."""
