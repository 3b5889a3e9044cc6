"""The book: the columns of a position file and the loaded, column-oriented :class:`Book`.

One row per position. Amounts are signed: a positive ``notional`` is the long side as the
table below says. See ``docs/book-format.md`` for the file format with examples.

=============  ===========  ==============================================================
product        underlying   notional sign and unit; other columns used
=============  ===========  ==============================================================
IRS            curve id     + receives fixed, in ``currency``; start, maturity, fixed_rate,
                            float_spread. An OIS curve id (``USD.SOFR``) makes an OIS swap,
                            a term curve id (``EUR.EURIBOR6M``) a term-index swap.
FX_FWD         pair         + buys ``notional`` units of the base currency at ``strike``
                            (quote ccy per base) on ``maturity`` (the delivery date).
FX_OPTION      pair         + long; amount of base currency; strike, option_type, maturity
                            (the expiry date; European, settled at expiry).
CDX_INDEX      index id     + buys protection, in ``currency``; coupon, maturity.
CDX_TRANCHE    index id     + buys protection on the tranche, tranche notional in
                            ``currency``; attach, detach, coupon, maturity.
EQ_OPTION      equity id    + long; number of shares; strike, option_type, maturity (expiry).
=============  ===========  ==============================================================

``currency`` is the position's own currency (the one ``pv_ccy`` is in): the swap currency, the
pair's quote currency, the index or equity currency.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np

from workbench._types import DateArray, FloatArray, IntArray

PRODUCTS: Final[tuple[str, ...]] = (
    "IRS",
    "FX_FWD",
    "FX_OPTION",
    "CDX_INDEX",
    "CDX_TRANCHE",
    "EQ_OPTION",
)
"""Product names; a position's ``product`` code indexes this tuple."""

ASSET_CLASSES: Final = ("rates", "fx", "credit", "equity")
"""The asset classes, in the order every table lists them."""

ASSET_CLASS: Final[dict[str, str]] = {
    "IRS": "rates",
    "FX_FWD": "fx",
    "FX_OPTION": "fx",
    "CDX_INDEX": "credit",
    "CDX_TRANCHE": "credit",
    "EQ_OPTION": "equity",
}
"""The pricing worker (asset class) of each product."""

STRING_COLUMNS: Final[tuple[str, ...]] = (
    "position_id",
    "product",
    "desk",
    "book",
    "currency",
    "underlying",
    "option_type",
)
DATE_COLUMNS: Final[tuple[str, ...]] = ("start", "maturity")
FLOAT_COLUMNS: Final[tuple[str, ...]] = (
    "notional",
    "fixed_rate",
    "float_spread",
    "strike",
    "attach",
    "detach",
    "coupon",
)
ALL_COLUMNS: Final[tuple[str, ...]] = STRING_COLUMNS + DATE_COLUMNS + FLOAT_COLUMNS
REQUIRED_COLUMNS: Final[tuple[str, ...]] = (
    *(c for c in STRING_COLUMNS if c != "option_type"),
    "notional",
    "maturity",
)
"""The columns every book file has; the others may be left out (``docs/book-format.md``)."""

REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "IRS": ("start", "maturity", "fixed_rate"),
    "FX_FWD": ("maturity", "strike"),
    "FX_OPTION": ("maturity", "strike", "option_type"),
    "CDX_INDEX": ("maturity", "coupon"),
    "CDX_TRANCHE": ("maturity", "coupon", "attach", "detach"),
    "EQ_OPTION": ("maturity", "strike", "option_type"),
}
"""Columns that must be present and valid for each product (beyond the common ones)."""


@dataclass(frozen=True, slots=True)
class Categorical:
    """A string column held as int64 codes into ``labels``."""

    codes: IntArray
    labels: tuple[str, ...]

    def values(self) -> list[str]:
        """The strings, one per row."""
        return [self.labels[c] for c in self.codes.tolist()]


@dataclass(frozen=True)
class Book:
    """Loaded positions as columns. Every numeric column is float64; NaN where not applicable.

    ``option_sign`` is +1.0 for calls, −1.0 for puts and NaN for non-options. Dates are
    ``datetime64[D]``; ``start`` is NaT where not applicable.
    """

    position_id: tuple[str, ...]
    product: Categorical
    desk: Categorical
    book: Categorical
    currency: Categorical
    underlying: Categorical
    start: DateArray
    maturity: DateArray
    notional: FloatArray
    fixed_rate: FloatArray
    float_spread: FloatArray
    strike: FloatArray
    option_sign: FloatArray
    attach: FloatArray
    detach: FloatArray
    coupon: FloatArray
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.position_id)

    def take(self, rows: IntArray) -> Book:
        """The positions at ``rows``, in that order; categorical columns keep their labels (a
        code means the same desk, currency … in the part as in the whole)."""
        idx = np.asarray(rows, dtype=np.int64)
        out: dict[str, object] = {"position_id": tuple(self.position_id[i] for i in idx.tolist())}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Categorical):
                out[f.name] = Categorical(value.codes[idx], value.labels)
            elif isinstance(value, np.ndarray):
                out[f.name] = value[idx]
        return Book(**out, source=self.source)  # type: ignore[arg-type]

    def rows(self, product: str) -> IntArray:
        """Row indices of every position of one product, ascending."""
        try:
            code = self.product.labels.index(product)
        except ValueError:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.product.codes == code).astype(np.int64)
