"""Latency histograms at the process boundaries, in Prometheus' cumulative-bucket form.

Each process counts its own boundary's latencies into fixed buckets since it started and sends
the counts in its heartbeats (``Heartbeat.histograms``); the supervisor exports the latest counts
of every process as one Prometheus histogram ``workbench_latency_seconds{boundary, process}``.
Every process measures with the machine's monotonic clock, which all processes share.

Boundaries (the process that measures, what):

- ``feed_to_ingest`` (ingest): the publisher's send to the tick's acceptance;
- ``ingest_to_worker`` (each worker): a conflation flush to the worker starting to reprice;
- ``reprice`` (each worker): one incremental reprice, shared-memory write included;
- ``worker_to_aggregator`` (aggregator): a worker's write done to the aggregator reading its
  notice;
- ``flush_to_publish`` (aggregator): a conflation flush to the snapshot that includes it
  published — the end-to-end figure;
- ``aggregator_to_client`` (the client, not exported): a snapshot made to a client reading it,
  see :meth:`workbench.client.Client.snapshots`.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

BUCKETS_MS: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1_000.0, 2_500.0, 5_000.0, 10_000.0,
)  # fmt: skip
"""Upper bounds (ms) of the buckets; one more bucket (+Inf) takes the rest."""

_EDGES = np.asarray(BUCKETS_MS)


class LatencyHistogram:
    """Counts of latencies per bucket (not cumulative) and their sum, since the start."""

    def __init__(self) -> None:
        self.counts = np.zeros(_EDGES.size + 1, dtype=np.int64)
        self.sum_ms = 0.0

    def observe_ms(self, values: float | npt.ArrayLike) -> None:
        """Count latencies in milliseconds (negative ones, clocks apart, are dropped)."""
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        v = v[np.isfinite(v) & (v >= 0.0)]
        if v.size:
            # bucket i holds BUCKETS_MS[i-1] < v ≤ BUCKETS_MS[i] (Prometheus' "le")
            self.counts += np.bincount(np.searchsorted(_EDGES, v), minlength=self.counts.size)
            self.sum_ms += float(v.sum())

    @property
    def count(self) -> int:
        """Latencies counted."""
        return int(self.counts.sum())

    def wire(self) -> list[float]:
        """Counts per bucket then the sum (ms), as sent in a heartbeat."""
        return [*map(float, self.counts), self.sum_ms]


def cumulative_buckets(wire: list[float]) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets ``[(le, cumulative count), …, ("+Inf", total)]`` (le in seconds) and
    the sum in seconds, from :meth:`LatencyHistogram.wire` counts."""
    counts = np.asarray(wire[:-1], dtype=np.float64)
    if counts.size != _EDGES.size + 1:
        raise ValueError(f"a latency histogram has {_EDGES.size + 1} buckets, got {counts.size}")
    running = np.cumsum(counts)
    bounds = [f"{ms / 1e3:g}" for ms in BUCKETS_MS] + ["+Inf"]
    return list(zip(bounds, map(float, running), strict=True)), wire[-1] / 1e3


def quantile_ms(wire: list[float], q: float) -> float:
    """The ``q`` quantile (0…1) estimated from the buckets: the upper bound of the bucket that
    holds it (an overestimate by at most one bucket); NaN when nothing was counted."""
    counts = np.asarray(wire[:-1], dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    i = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(_EDGES[i]) if i < _EDGES.size else float("inf")
