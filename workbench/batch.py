"""The batch re-risk: load a book and a market, price everything, write Parquet, print a summary.

Also the door through which the end-of-day report (:mod:`workbench.reports`) prices, without
importing the pricing, book or market packages itself: :func:`rerisk` (the report's frames of
one re-risk of a book file against a market file) and :func:`pin_market` (a market file of
quotes taken from a running service).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import numpy as np
import polars as pl

from workbench._types import FloatArray, KeyRateMethod
from workbench.book.io import load_book
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.io import load_market, save_market
from workbench.market.model import Interpolation, MarketSnapshot
from workbench.market.schedules import tenor_years
from workbench.pricing.curves import CurveSet
from workbench.pricing.portfolio import BookRisk, PortfolioPricer
from workbench.risk.aggregation import risk_frame as measures_frame
from workbench.risk.aggregation import static_frame

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
            **_risk_columns(risk),
        }
    )


def _risk_columns(risk: BookRisk) -> dict[str, FloatArray]:
    """``pv``, ``pv_ccy`` and the Greeks of ``risk``, by column name (book row order)."""
    return {
        "pv": risk.pv,
        "pv_ccy": risk.pv_ccy,
        "delta": risk.delta,
        "gamma": risk.gamma,
        "vega": risk.vega,
        "theta": risk.theta,
    }


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


# --- the door of the end-of-day report -------------------------------------------------------

CURVE_GRID_YEARS: Final = np.concatenate([np.linspace(0.1, 2.0, 20), np.linspace(2.25, 30.0, 112)])
"""Curve times (ACT/365F years) at which :attr:`Rerisk.curves` holds zero rates."""


class BatchInputError(ValueError):
    """A missing book or market file, a market not dated as asked, or quotes that do not fit
    the market they are pinned into."""


@dataclass(frozen=True)
class Rerisk:
    """One re-risk of a book file against a market file, as the frames a report reads.

    Attributes
    ----------
    as_of
        The market's date.
    positions
        :func:`workbench.risk.aggregation.risk_frame` of the book: labels (Enum), ``notional``,
        the raw risk columns, ``stale`` (all False), ``age_s`` (0) and every measure (USD).
    key_rates
        ``position_id``, ``quote_id``, ``curve``, ``currency``, ``tenor``, ``years`` and
        ``kr_dv01`` (USD per +1bp on that quote).
    curves
        ``curve``, ``currency``, ``kind`` (``ois`` or ``term``), ``years`` (on
        :data:`CURVE_GRID_YEARS`) and ``zero_rate`` (continuously compounded, decimal per year).
    timings
        Seconds: ``load_s``, ``setup_s``, ``price_s``, ``key_rates_and_curves_s`` and
        ``stages_s`` (per pricing stage).
    """

    as_of: date
    positions: pl.DataFrame
    key_rates: pl.DataFrame
    curves: pl.DataFrame
    timings: dict[str, Any]


def _market_file(path: Path, as_of: date | None) -> MarketSnapshot:
    if not path.is_file():
        raise BatchInputError(f"market file {path} does not exist")
    market = load_market(path)
    if as_of is not None and market.as_of != as_of:
        raise BatchInputError(f"market {path} is as of {market.as_of}, the report is as of {as_of}")
    return market


def quote_table(market: MarketSnapshot) -> pl.DataFrame:
    """Every curve quote: ``quote_id``, ``curve``, ``currency``, ``tenor``, ``years``."""
    rows = [
        (inst.quote, spec.id, spec.currency, inst.tenor, tenor_years(inst.tenor))
        for spec in market.curves
        for inst in spec.instruments
    ]
    schema = {"quote_id": pl.String, "curve": pl.String, "currency": pl.String,
              "tenor": pl.String, "years": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


def curve_table(market: MarketSnapshot) -> pl.DataFrame:
    """Zero rates of every curve of ``market`` on :data:`CURVE_GRID_YEARS` (see
    :attr:`Rerisk.curves`)."""
    curves = CurveSet(market)
    n = CURVE_GRID_YEARS.size
    parts = [
        pl.DataFrame(
            {
                "curve": [spec.id] * n,
                "currency": [spec.currency] * n,
                "kind": [spec.kind] * n,
                "years": CURVE_GRID_YEARS,
                "zero_rate": curves[spec.id].zero_rate(CURVE_GRID_YEARS),
            }
        )
        for spec in market.curves
    ]
    schema = {"curve": pl.String, "currency": pl.String, "kind": pl.String,
              "years": pl.Float64, "zero_rate": pl.Float64}  # fmt: skip
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def rerisk(
    book_path: Path,
    market_path: Path,
    *,
    as_of: date | None = None,
    n_paths: int = 50_000,
    tranche_method: Literal["mc", "recursion"] = "recursion",
) -> Rerisk:
    """Price ``book_path`` against ``market_path`` in this process: per-position risk with
    every measure, key-rate DV01s and curves (the ``workbench price`` computation).

    Raises
    ------
    BatchInputError
        A missing file, or (``as_of`` given) a market of another date.
    workbench.book.validation.BookError, workbench.market.model.MarketError
        An invalid book or market file (both are ``ValueError``).
    """
    if not book_path.is_file():
        raise BatchInputError(f"book file {book_path} does not exist")
    t0 = time.perf_counter()
    market = _market_file(market_path, as_of)
    book = load_book(book_path, market=market)
    t_load = time.perf_counter() - t0
    pricer = PortfolioPricer(book, market, n_paths=n_paths, tranche_method=tranche_method)
    t0 = time.perf_counter()
    risk = pricer.risk(market)
    t_price = time.perf_counter() - t0
    now = time.monotonic_ns()
    n = len(book)
    cols = {
        **_risk_columns(risk),
        "stale": np.zeros(n),
        "updated_ns": np.full(n, now, dtype=np.int64),
    }
    positions = measures_frame(static_frame(book), cols, now)
    t0 = time.perf_counter()
    key_rates = (
        key_rate_frame(book, market, risk)
        .join(quote_table(market), on="quote_id", how="left")
        .select("position_id", "quote_id", "curve", "currency", "tenor", "years", "kr_dv01")
    )
    curves = curve_table(market)
    timings = {
        "load_s": t_load,
        "setup_s": pricer.setup_seconds,
        "price_s": t_price,
        "key_rates_and_curves_s": time.perf_counter() - t0,
        "stages_s": dict(risk.timings),
    }
    return Rerisk(market.as_of, positions, key_rates, curves, timings)


@dataclass(frozen=True)
class PinnedMarket:
    """What :func:`pin_market` wrote: the market's date, its quote count and how many quotes
    differ from the market it was derived from."""

    as_of: date
    quotes: int
    moved: int


def pin_market(base_path: Path, quotes: pl.DataFrame, target: Path) -> PinnedMarket:
    """Write ``target``: the market file ``base_path`` with every quote value replaced by
    ``quotes`` (``quote_id``, ``value`` in the market file's units), in the market format of
    ``docs/formats.md`` (so ``workbench price`` reads it).

    Raises
    ------
    BatchInputError
        ``quotes`` does not hold exactly the quotes of the base market, once each.
    """
    base = _market_file(base_path, None)
    ids = quotes["quote_id"].to_list()
    if len(ids) != len(base.quote_ids) or set(ids) != set(base.quote_ids):
        missing = sorted(set(base.quote_ids) - set(ids))[:3]
        extra = sorted(set(ids) - set(base.quote_ids))[:3]
        raise BatchInputError(
            f"{len(ids)} quotes do not fit the {len(base.quote_ids)} of {base_path} "
            f"(missing {missing}, unknown {extra})"
        )
    values: FloatArray = np.empty(len(ids))
    values[[base.quote_index[q] for q in ids]] = quotes["value"].to_numpy()
    save_market(base.with_quote_values(values), target)
    return PinnedMarket(base.as_of, len(ids), int(np.count_nonzero(values != base.quotes)))
