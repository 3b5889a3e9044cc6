"""Tick streams the feed publishes: a synthetic market, or the rows of a recorded tick file.

* :func:`synthetic_ticks`: an endless, reproducible stream for every quote id of a market
  (G10 FX spots tick most, equities next, rates, vols and credit less; random walks with
  per-class scales that revert slowly to the snapshot; bursts, exponential gaps, and now and
  then a duplicate or a quote's previous tick again after its newer one).
* :func:`record` and :func:`read_replay`: a Parquet tick file (``quote_id``, ``value``, ``seq``,
  ``t_ns`` offsets from the start), written and read back in file order.

No sockets and no clock: the feed process (:mod:`~.feed`) paces and sends what these yield.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from workbench._types import FloatArray
from workbench.engine.processes.conflation import (
    CORR,
    CREDIT,
    EQ_SPOT,
    EQ_VOL,
    FX_SPOT,
    FX_VOL,
    RATE,
    classify,
)
from workbench.market.model import MarketSnapshot

TickRow = tuple[str, float, int, int]
"""(quote_id, value, seq, offset_ns): one tick and its time from the start of the stream."""

ANOMALY_RATE: Final = 0.001
"""Default share of ticks that come as a duplicate or as a swapped (out-of-order) pair."""
REPLAY_COLUMNS: Final = {"quote_id": pl.String, "value": pl.Float64, "seq": pl.Int64}
"""Replay file columns (and ``t_ns``, an integer offset in ns from the start)."""

# ticks per quote relative to a rate quote; step scale; reversion per tick; bounds
_ACTIVITY: Final = {
    FX_SPOT: 60.0,
    EQ_SPOT: 6.0,
    RATE: 1.0,
    FX_VOL: 0.4,
    EQ_VOL: 0.1,
    CREDIT: 0.5,
    CORR: 0.05,
}
_STEP: Final = {  # (multiplicative?, scale): relative for spots and spreads, absolute else
    FX_SPOT: (True, 0.5e-4),  # half a basis point of the price
    EQ_SPOT: (True, 2.0e-4),
    RATE: (False, 0.5e-4),  # half a basis point of rate
    FX_VOL: (False, 1.0e-3),  # 0.1 vol point
    EQ_VOL: (False, 1.0e-3),
    CREDIT: (True, 2.0e-3),  # 0.1 bp on a 55 bp index
    CORR: (False, 2.0e-3),
}
_BOUNDS: Final = {
    FX_SPOT: (0.0, math.inf),
    EQ_SPOT: (0.0, math.inf),
    RATE: (-0.15, 0.5),
    FX_VOL: (0.01, 2.0),
    EQ_VOL: (0.01, 2.0),
    CREDIT: (1.0e-5, 0.5),
    CORR: (0.02, 0.98),
}
_REVERSION: Final = 1.0e-3
_BURST_TICKS: Final = 1_024
_BURST_PROB: Final = 0.1
_BURST_FACTOR: Final = 4.0


def activity_weights(quote_ids: Iterable[str]) -> FloatArray:
    """The share of ticks of each quote (sums to 1)."""
    w: FloatArray = np.array([_ACTIVITY[classify(q)] for q in quote_ids], dtype=np.float64)
    out: FloatArray = w / w.sum()
    return out


def synthetic_ticks(
    market: MarketSnapshot,
    rate: float,
    seed: int,
    *,
    anomaly_rate: float = ANOMALY_RATE,
    seq_start: int = 1,
    chunk: int = 4 * _BURST_TICKS,
) -> Iterator[TickRow]:
    """An endless, reproducible stream of realistic ticks for every quote of ``market``.

    Parameters
    ----------
    market
        The snapshot whose quotes tick (values start at its quotes).
    rate
        Mean ticks per second over all quotes (anomalies come on top).
    seed
        Random seed: the same seed gives the same stream.
    anomaly_rate
        Share of ticks followed by an anomaly, half each: the same tick again (a duplicate),
        or the quote's previous tick again (an older seq after a newer one: out of order).
    seq_start
        The first sequence number of every quote.
    chunk
        Ticks drawn per vectorised step (a multiple of 1,024).

    Yields
    ------
    TickRow
        ``(quote_id, value, seq, offset_ns)`` with non-decreasing ``offset_ns``.

    Notes
    -----
    Each quote follows a random walk (relative steps for spots and spreads, absolute steps for
    rates, vols and correlations; scales in ``_STEP``) with a slow reversion to its snapshot
    value, kept inside the bounds of ``_BOUNDS``. Gaps between ticks are exponential; a
    stretch of 1,024 ticks comes at 4× the rate with probability 0.1 (a burst), and the gaps
    are scaled so that the long-run rate is ``rate``.
    """
    if not rate > 0.0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    if chunk <= 0 or chunk % _BURST_TICKS:
        raise ValueError(f"chunk must be a positive multiple of {_BURST_TICKS}, got {chunk}")
    ids = np.array(market.quote_ids, dtype=object)
    n = ids.size
    rng = np.random.default_rng(seed)
    codes = [classify(q) for q in market.quote_ids]
    p = activity_weights(market.quote_ids)
    mult = np.array([_STEP[c][0] for c in codes])
    scale = np.array([_STEP[c][1] for c in codes])
    lo = np.array([_BOUNDS[c][0] for c in codes])
    hi = np.array([_BOUNDS[c][1] for c in codes])
    start = np.asarray(market.quotes, dtype=np.float64)
    # walk in log space for relative steps: level = log(x) there, x elsewhere
    target = np.where(mult, np.log(np.where(mult, start, 1.0)), start)
    level = target.copy()
    seq = np.full(n, seq_start - 1, dtype=np.int64)
    time_factor = (1.0 - _BURST_PROB) + _BURST_PROB / _BURST_FACTOR
    gap_ns = 1e9 / rate / time_factor
    t0 = 0.0
    half = anomaly_rate / 2.0
    blocks = chunk // _BURST_TICKS
    while True:
        idx = rng.choice(n, size=chunk, p=p)
        z = rng.standard_normal(chunk)
        factor = np.where(rng.random(blocks) < _BURST_PROB, _BURST_FACTOR, 1.0)
        gaps = rng.exponential(gap_ns, chunk) / np.repeat(factor, _BURST_TICKS)
        u = rng.random(chunk)
        times = t0 + np.cumsum(gaps)
        t0 = float(times[-1])
        # per-quote cumulative steps inside the chunk (stable sort keeps time order)
        order = np.argsort(idx, kind="stable")
        q = idx[order]
        inc = scale[q] * z + _REVERSION * (target[q] - level[q])
        csum = np.cumsum(inc)
        first = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
        size = np.diff(np.r_[first, chunk])
        before = np.repeat(np.r_[0.0, csum[first[1:] - 1]], size)
        rank = np.arange(chunk) - np.repeat(first, size)
        new_level = level[q] + csum - before
        prev_level = np.where(rank == 0, level[q], np.r_[level[q[0]], new_level[:-1]])
        last = np.r_[first[1:] - 1, chunk - 1]
        level[q[last]] = new_level[last]

        def value_of(lv: FloatArray, qq: np.ndarray = q) -> FloatArray:
            x: FloatArray = np.where(mult[qq], np.exp(lv), np.clip(lv, lo[qq], hi[qq]))
            return x

        values = np.empty(chunk)
        prev = np.empty(chunk)
        values[order] = value_of(new_level)
        prev[order] = value_of(prev_level)
        seqs = np.empty(chunk, dtype=np.int64)
        seqs[order] = seq[q] + rank + 1
        seq[q[last]] += size
        # rates, vols and correlations stay inside their bounds
        level[q[last]] = np.where(mult[q[last]], level[q[last]], values[order][last])
        for quote, x, s, t, a, x0 in zip(
            ids[idx].tolist(),
            values.tolist(),
            seqs.tolist(),
            times.astype(np.int64).tolist(),
            u.tolist(),
            prev.tolist(),
            strict=True,
        ):
            yield (quote, x, s, t)
            if a < half:
                yield (quote, x, s, t)  # a duplicate
            elif a < anomaly_rate:
                yield (quote, x0, s - 1, t)  # the previous tick again, after this one


def record(ticks: Iterable[TickRow], path: str | Path) -> int:
    """Write ticks to a Parquet replay file; returns the number of rows.

    Columns: ``quote_id`` (string), ``value`` (float64), ``seq`` (int64), ``t_ns`` (int64,
    nanoseconds from the start of the recording).
    """
    rows = list(ticks)
    frame = pl.DataFrame(
        {
            "quote_id": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "seq": [r[2] for r in rows],
            "t_ns": [r[3] for r in rows],
        },
        schema={**REPLAY_COLUMNS, "t_ns": pl.Int64},
    )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(p)
    return frame.height


def read_replay(path: str | Path) -> Iterator[TickRow]:
    """The rows of a replay file, in file order.

    Raises
    ------
    ValueError
        If the file lacks a column, a column has the wrong type, or a value is null.
    """
    frame = pl.read_parquet(path)
    for name, dtype in {**REPLAY_COLUMNS, "t_ns": pl.Int64}.items():
        if name not in frame.columns:
            raise ValueError(f"{path}: replay file has no column {name!r}")
        got = frame.schema[name]
        if name == "t_ns" and got.is_integer():
            continue
        if got != dtype:
            raise ValueError(f"{path}: column {name!r} is {got}, expected {dtype}")
        if frame[name].null_count():
            raise ValueError(f"{path}: column {name!r} has null values")
    return zip(
        frame["quote_id"].to_list(),
        frame["value"].to_list(),
        frame["seq"].to_list(),
        frame["t_ns"].cast(pl.Int64).to_list(),
        strict=True,
    )
