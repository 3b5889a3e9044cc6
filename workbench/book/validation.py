"""Checks of a book's rows, and the error that lists every problem with file, row, column, value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
import polars as pl

from workbench.book.schema import ASSET_CLASS, FLOAT_COLUMNS, REQUIRED
from workbench.market.model import MarketSnapshot

MAX_EXACT_INTEGER = 2**53
"""Integers beyond this cannot all be held exactly in float64 and are refused."""

MAX_NOTIONAL: Final[Mapping[str, float]] = MappingProxyType(
    {
        "USD": 1e11,
        "EUR": 1e11,
        "GBP": 1e11,
        "CHF": 1e11,
        "CAD": 1e11,
        "AUD": 1e11,
        "JPY": 1e13,
        "*": 1e13,
    }
)
"""The largest absolute amount one position may stand for, per currency of that amount (``"*"``:
any currency not listed): 100bn in the G10 currencies above, 10tn JPY, 200 times the largest
reference-book position. The amount is the notional in the row's ``currency`` (swaps, credit),
in the pair's base currency (FX: the notional is base units) or notional × strike in the
equity's currency (equity options: the notional is a number of shares). A row beyond its bound
is refused naming row, column and value (``docs/book-format.md``); ``load_book(...,
max_notional={...})`` and ``workbench price --max-notional CCY=AMOUNT,...`` change bounds."""


def notional_bounds(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """:data:`MAX_NOTIONAL` with ``overrides`` (currency → positive amount) applied.

    Examples
    --------
    >>> notional_bounds({"USD": 5e9})["USD"], notional_bounds()["JPY"]
    (5000000000.0, 10000000000000.0)
    """
    out = dict(MAX_NOTIONAL)
    for ccy, bound in (overrides or {}).items():
        if not bound > 0.0:
            raise ValueError(f"notional bound for {ccy}: {bound!r} is not a positive amount")
        out[ccy] = float(bound)
    return out


@dataclass(frozen=True, slots=True)
class BookIssue:
    """One problem in one cell (or row) of a book file."""

    file: str
    row: int  # 1-based data row
    column: str
    value: str
    message: str
    line: int | None = None  # CSV line (the header is line 1)

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{self.file}: {where}, column {self.column!r}, value {self.value!r}: {self.message}"


class BookError(ValueError):
    """A book file has problems; ``issues`` lists every one.

    The message is the one problem's line, or a count followed by one line per problem (the
    first 50).
    """

    def __init__(self, issues: list[BookIssue]) -> None:
        self.issues = issues
        if len(issues) == 1:
            super().__init__(str(issues[0]))
            return
        head = f"{len(issues)} problems in the book"
        shown = [str(i) for i in issues[:50]]
        more = [f"... and {len(issues) - 50} more"] if len(issues) > 50 else []
        super().__init__("\n".join([head, *shown, *more]))


def check_rows(
    frame: pl.DataFrame,
    market: MarketSnapshot | None,
    *,
    max_notional: Mapping[str, float] | None = None,
) -> list[tuple[int, str, str]]:
    """Row-level checks on a typed frame: ``(row index, column, message)`` for every problem.

    The frame has the book's columns already typed (strings, ``Date``, ``Float64``).
    ``max_notional`` overrides bounds of :data:`MAX_NOTIONAL`.
    """
    out: list[tuple[int, str, str]] = []
    product = frame["product"].to_list()

    def flag(mask: np.ndarray, column: str, message: str) -> None:
        for i in np.flatnonzero(mask):
            out.append((int(i), column, message))

    known = np.array([p in REQUIRED for p in product], dtype=bool)
    missing = np.array([p is None for p in product], dtype=bool)
    flag(missing, "product", "missing value")
    flag(~known & ~missing, "product", f"unknown product (expected one of {', '.join(REQUIRED)})")
    for col in ("position_id", "desk", "book", "currency", "underlying"):
        vals = frame[col].to_numpy()
        flag(np.array([v is None or v == "" for v in vals], dtype=bool), col, "missing value")
    for col in FLOAT_COLUMNS:
        vals = frame[col].to_numpy().astype(np.float64)
        flag(np.isnan(vals) & ~frame[col].is_null().to_numpy(), col, "NaN is not a value")
        flag(np.isinf(vals), col, "infinite value (overflow)")
    for prod, required in REQUIRED.items():
        rows = np.array([p == prod for p in product], dtype=bool)
        for col in required:
            flag(rows & frame[col].is_null().to_numpy(), col, f"required for {prod}")
    notional = frame["notional"].to_numpy().astype(np.float64)
    flag(frame["notional"].is_null().to_numpy(), "notional", "missing value")
    flag(notional == 0.0, "notional", "a zero notional is not a position")
    out.extend(_implausible_sizes(frame, notional, market, notional_bounds(max_notional)))
    start = frame["start"].to_numpy()
    maturity = frame["maturity"].to_numpy()
    has_start = ~np.isnat(start)
    with np.errstate(invalid="ignore"):
        flag(
            has_start & ~np.isnat(maturity) & (start >= maturity),
            "start",
            "start is not before maturity",
        )
    is_opt = np.array([p in ("FX_OPTION", "EQ_OPTION") for p in product], dtype=bool)
    opt_type = frame["option_type"].to_list()
    flag(
        is_opt & np.array([t not in ("C", "P") for t in opt_type], dtype=bool),
        "option_type",
        "expected C or P",
    )
    strike = frame["strike"].to_numpy().astype(np.float64)
    needs_strike = np.array(
        [p in ("FX_FWD", "FX_OPTION", "EQ_OPTION") for p in product], dtype=bool
    )
    flag(needs_strike & (strike <= 0.0), "strike", "strike must be positive")
    attach = frame["attach"].to_numpy().astype(np.float64)
    detach = frame["detach"].to_numpy().astype(np.float64)
    tr = np.array([p == "CDX_TRANCHE" for p in product], dtype=bool)
    flag(tr & ((attach < 0.0) | (attach >= detach)), "attach", "need 0 <= attach < detach")
    flag(tr & (detach > 1.0), "detach", "detach above 1 (100% of the pool)")
    coupon = frame["coupon"].to_numpy().astype(np.float64)
    flag(coupon < 0.0, "coupon", "a negative coupon")

    ids = frame["position_id"].to_list()
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid is None:
            continue
        if pid in first:
            out.append((i, "position_id", f"duplicate position id (also row {first[pid] + 1})"))
        else:
            first[pid] = i

    if market is not None:
        as_of = np.datetime64(market.as_of, "D")
        flag(
            ~np.isnat(maturity) & (maturity <= as_of),
            "maturity",
            f"maturity not after as-of {market.as_of}",
        )
        is_irs = np.array([p == "IRS" for p in product], dtype=bool)
        flag(
            is_irs & has_start & (start < as_of),
            "start",
            f"swap starts before as-of {market.as_of}: "
            "seasoned swaps need fixings the market does not carry",
        )
        ccy_of: dict[str, dict[str, str]] = {
            "rates": {c.id: c.currency for c in market.curves},
            "fx": {p.pair: p.quote_ccy for p in market.fx_pairs},
            "equity": {e.id: e.currency for e in market.equities},
            "credit": {c.id: c.currency for c in market.credit_indices},
        }
        surfaces = {s.pair for s in market.fx_vol_surfaces}
        index_maturity = {c.id: np.datetime64(c.maturity, "D") for c in market.credit_indices}
        what = {"rates": "curve", "fx": "FX pair", "equity": "equity", "credit": "credit index"}
        for i, (prod, und, ccy) in enumerate(
            zip(product, frame["underlying"].to_list(), frame["currency"].to_list(), strict=True)
        ):
            cls = ASSET_CLASS.get(prod)
            if cls is None or und is None:
                continue
            table = ccy_of[cls]
            if und not in table:
                out.append((i, "underlying", f"unknown {what[cls]} in the market"))
            elif ccy != table[und]:
                out.append((i, "currency", f"{und} is in {table[und]}"))
            elif prod == "FX_OPTION" and und not in surfaces:
                out.append((i, "underlying", "no vol surface for this pair in the market"))
            elif cls == "credit" and und in index_maturity:
                end = index_maturity[und]
                if not np.isnat(maturity[i]) and maturity[i] != end:
                    out.append(
                        (
                            i,
                            "maturity",
                            f"{und} matures on {end}; its positions follow the series' schedule",
                        )
                    )
    return out


def _implausible_sizes(
    frame: pl.DataFrame,
    notional: np.ndarray,
    market: MarketSnapshot | None,
    bounds: Mapping[str, float],
) -> list[tuple[int, str, str]]:
    """Rows whose notional stands for more than the bound of its currency (:data:`MAX_NOTIONAL`)."""
    product = frame["product"].to_list()
    currency = frame["currency"].to_list()
    underlying = frame["underlying"].to_list()
    strike = frame["strike"].to_numpy().astype(np.float64)
    base_of = {p.pair: p.base_ccy for p in market.fx_pairs} if market is not None else {}
    shares = np.array([p == "EQ_OPTION" for p in product], dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        amounts = np.abs(notional) * np.where(shares & (strike > 0.0), strike, 1.0)
        suspects = np.flatnonzero(amounts > min(bounds.values()))
    out: list[tuple[int, str, str]] = []
    for i in suspects:
        k = int(i)
        prod, ccy, und = product[k], currency[k], underlying[k]
        amount, what = float(amounts[k]), ""
        if prod in ("FX_FWD", "FX_OPTION") and und is not None:
            ccy = base_of.get(und, und[:3] if len(und) == 6 else ccy)
            what = f" (units of {ccy}, the base currency of {und})"
        elif shares[k]:
            what = f" (shares × strike = {amount:,.0f} {ccy})"
        if ccy is not None:
            bound = bounds.get(ccy, bounds["*"])
            if amount > bound:
                out.append(
                    (
                        k,
                        "notional",
                        f"implausible size{what}: above the bound of {bound:,.0f} {ccy} "
                        "(docs/book-format.md; --max-notional)",
                    )
                )
    return out
