"""The batch re-risk: load a book and a market, price everything, write Parquet, print a summary."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
import polars as pl

from workbench._types import KeyRateMethod
from workbench.book.io import load_book
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.io import load_market
from workbench.market.model import Interpolation, MarketSnapshot
from workbench.pricing.portfolio import BookRisk, PortfolioPricer

RISK_COLUMNS: tuple[str, ...] = (
    "position_id",
    "desk",
    "book",
    "currency",
    "product",
    "asset_class",
    "pv",
    "pv_ccy",
    "delta",
    "gamma",
    "vega",
    "theta",
)


def key_rates_path(out_path: Path) -> Path:
    """Where the key-rate file goes: next to ``out_path``, ``_key_rates`` inserted before its
    last suffix (docs/pricing.md, "Output files").

    Examples
    --------
    >>> for out in ("risk.parquet", "out/day1/risk.pq", "risk", "risk.v2.parquet"):
    ...     print(key_rates_path(Path(out)).as_posix())
    risk_key_rates.parquet
    out/day1/risk_key_rates.pq
    risk_key_rates
    risk.v2_key_rates.parquet
    """
    return out_path.with_name(out_path.stem + "_key_rates" + out_path.suffix)


def _refuse_overwriting_inputs(outputs: list[Path], inputs: list[Path]) -> None:
    """An output that is one of the input files would be overwritten after they were read."""
    for out in outputs:
        for given in inputs:
            if out.exists() and given.exists() and out.samefile(given):
                raise ValueError(f"{out}: an output of this run would overwrite the input {given}")


def risk_frame(book: Book, risk: BookRisk) -> pl.DataFrame:
    """One row per position: ids, product, PV (USD and own currency) and Greeks in USD."""
    products = book.product.values()
    return pl.DataFrame(
        {
            "position_id": list(book.position_id),
            "desk": book.desk.values(),
            "book": book.book.values(),
            "currency": book.currency.values(),
            "product": products,
            "asset_class": [ASSET_CLASS[p] for p in products],
            "pv": risk.pv,
            "pv_ccy": risk.pv_ccy,
            "delta": risk.delta,
            "gamma": risk.gamma,
            "vega": risk.vega,
            "theta": risk.theta,
        }
    )


def key_rate_frame(book: Book, market: MarketSnapshot, risk: BookRisk) -> pl.DataFrame:
    """Key-rate DV01s in long format: ``position_id``, ``quote_id``, ``kr_dv01`` (USD per 1bp)."""
    kr = risk.key_rates
    ids = np.asarray(book.position_id, dtype=object)
    quotes = np.asarray(market.quote_ids, dtype=object)
    return pl.DataFrame(
        {
            "position_id": ids[kr.rows].tolist(),
            "quote_id": quotes[kr.quotes].tolist(),
            "kr_dv01": kr.values,
        },
        schema={"position_id": pl.String, "quote_id": pl.String, "kr_dv01": pl.Float64},
    )


def run_batch(
    *,
    book_path: str | Path,
    market_path: Path,
    out_path: Path,
    interpolation: Interpolation | None = None,
    n_paths: int = 50_000,
    tranche_method: Literal["mc", "recursion"] = "recursion",
    key_rates: KeyRateMethod = "bump",
    max_notional: Mapping[str, float] | None = None,
    stream: TextIO | None = None,
) -> BookRisk:
    """Re-risk ``book_path`` against ``market_path`` and write ``out_path`` and
    :func:`key_rates_path` of it (columns in docs/pricing.md, "Output files").

    ``max_notional`` changes the book's notional bounds per currency
    (:data:`~workbench.book.validation.MAX_NOTIONAL`). Prints the time spent loading, setting
    up, per asset class and writing, and a summary of PV and Greeks by asset class, to
    ``stream`` when given.
    """
    kr_path = key_rates_path(out_path)
    _refuse_overwriting_inputs([out_path, kr_path], [Path(book_path), market_path])
    t0 = time.perf_counter()
    market = load_market(market_path)
    book = load_book(book_path, market=market, max_notional=max_notional)
    t_load = time.perf_counter() - t0

    pricer = PortfolioPricer(
        book,
        market,
        interpolation=interpolation,
        n_paths=n_paths,
        tranche_method=tranche_method,
        key_rates=key_rates,
    )
    t0 = time.perf_counter()
    risk = pricer.risk(market)
    t_price = time.perf_counter() - t0

    t0 = time.perf_counter()
    frame = risk_frame(book, risk)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(out_path)
    key_rate_frame(book, market, risk).write_parquet(kr_path)
    t_write = time.perf_counter() - t0

    if stream is not None:
        _print_summary(stream, frame, risk, len(book), t_load, pricer.setup_seconds, t_price)
        print(f"write {t_write:8.3f} s  -> {out_path}, {kr_path}", file=stream)
    return risk


def _print_summary(
    stream: TextIO,
    frame: pl.DataFrame,
    risk: BookRisk,
    n: int,
    t_load: float,
    t_setup: float,
    t_price: float,
) -> None:
    summary = (
        frame.group_by("asset_class")
        .agg(
            pl.len().alias("positions"),
            pl.col("pv").sum(),
            pl.col("delta").sum(),
            pl.col("gamma").sum(),
            pl.col("vega").sum(),
            pl.col("theta").sum(),
        )
        .sort("asset_class")
    )
    print(
        f"{n:,} positions priced; totals in USD (delta per its bump, see docs/greeks.md)",
        file=stream,
    )
    header = (
        f"{'asset class':<12}{'positions':>10}{'pv':>18}{'delta':>16}"
        f"{'gamma':>14}{'vega':>14}{'theta':>14}"
    )
    print(header, file=stream)
    for row in summary.iter_rows(named=True):
        print(
            f"{row['asset_class']:<12}{row['positions']:>10,}{row['pv']:>18,.0f}"
            f"{row['delta']:>16,.0f}{row['gamma']:>14,.0f}{row['vega']:>14,.0f}"
            f"{row['theta']:>14,.0f}",
            file=stream,
        )
    print(f"load  {t_load:8.3f} s", file=stream)
    print(
        f"setup {t_setup:8.3f} s  (schedules, matrices, random numbers, compilation)", file=stream
    )
    print(f"price {t_price:8.3f} s", file=stream)
    for stage, seconds in risk.timings.items():
        print(f"  {stage:<14}{seconds:8.3f} s", file=stream)
