"""Positions priced off a fallback quote, counted per group of a roll-up (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from workbench._types import IntArray


def with_fallback_counts(
    rollup: pl.DataFrame, by: Sequence[str], static: pl.DataFrame, rows: IntArray
) -> pl.DataFrame:
    """``rollup`` (a roll-up grouped ``by``) with ``fallback`` (Int64): how many positions of
    each group, among ``rows`` (rows of ``static``, the book's static frame), were priced off
    a quote of a polling source.

    Examples
    --------
    >>> import numpy as np
    >>> static = pl.DataFrame({"desk": ["a", "a", "b"]})
    >>> r = pl.DataFrame({"desk": ["a", "b"], "positions": [2, 1]})
    >>> with_fallback_counts(r, ["desk"], static, np.array([1]))["fallback"].to_list()
    [1, 0]
    """
    group = list(by)
    if rows.size == 0 or not group:
        return rollup.with_columns(pl.lit(int(rows.size), dtype=pl.Int64).alias("fallback"))
    counts = static[rows].group_by(group).agg(pl.len().cast(pl.Int64).alias("fallback"))
    joined = rollup.join(counts, on=group, how="left", maintain_order="left")
    return joined.with_columns(pl.col("fallback").fill_null(0))
