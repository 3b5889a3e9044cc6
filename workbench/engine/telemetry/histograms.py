"""Latency histograms at the process boundaries: one type, fine buckets, Prometheus export.

Each process counts its own boundary's latencies since it started in one
:class:`LatencyHistogram` and sends the counts in its heartbeats (``Heartbeat.histograms``, the
:data:`BUCKETS_MS` buckets); the supervisor exports the latest counts of every process as one
Prometheus histogram ``workbench_latency_seconds{boundary, process}``. Every process measures
with the machine's monotonic clock, which all processes share.

Boundaries (the process that measures, what):

- ``feed_to_ingest`` (ingest): the publisher's send to the tick's acceptance;
- ``ingest_to_worker`` (each worker): a conflation flush to the worker starting to reprice;
- ``reprice`` (each worker): one incremental reprice, shared-memory write included;
- ``worker_to_aggregator`` (aggregator): a worker's write done to the aggregator reading its
  notice;
- ``flush_to_publish`` (aggregator): a conflation flush to the snapshot that includes it
  published — the end-to-end figure;
- ``feed_lateness`` (feed): a tick's scheduled send time to its actual send, one per batch;
- ``aggregator_to_client`` (the client, not exported): a snapshot made to a client reading it,
  see :meth:`workbench.client.Client.snapshots`.
"""

from __future__ import annotations

import bisect
import math
from typing import Final

import numpy as np
import numpy.typing as npt

BUCKETS_MS: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0,
    250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
)  # fmt: skip
"""Upper bounds (ms) of the exported buckets; one more bucket (+Inf) takes the rest. Finer
between 25 and 250 ms, where the service's flush → publish latencies lie (its goals are 25
and 50 ms), so that a percentile read from these counts is bracketed closely there."""

_EDGES = np.asarray(BUCKETS_MS)

FINE_EDGES_MS: Final = np.unique(np.concatenate([np.geomspace(1e-4, 1e5, 601), _EDGES]))
"""Upper bounds (ms) of the counted buckets: 0.1 µs to 100 s, at most 3.5% apart (600 log-spaced
steps), every :data:`BUCKETS_MS` bound among them; one more bucket takes the rest."""

_FINE_LIST: Final = FINE_EDGES_MS.tolist()
_SCALARS: Final = (float, int)
_EXPORT_STARTS: Final = np.concatenate([[0], np.searchsorted(FINE_EDGES_MS, _EDGES) + 1]).astype(
    np.intp
)
"""The first counted bucket of each exported one (each exported bound is a counted bound)."""


class LatencyHistogram:
    """Latencies (ms) counted since the start in :data:`FINE_EDGES_MS` buckets, and their sum.

    Bucket ``i`` holds ``FINE_EDGES_MS[i-1] < v ≤ FINE_EDGES_MS[i]`` (Prometheus' ``le``). A
    negative or non-finite value is not a latency (clocks apart) and is not counted.

    Parameters
    ----------
    recent
        Also tell the quantiles of the latest ``recent`` to ``2 * recent`` latencies
        (:meth:`quantile_ms` with ``recent=True``); 0: only those of the whole run.

    Examples
    --------
    >>> h = LatencyHistogram()
    >>> h.observe_ms(0.8)
    >>> h.observe_ms([0.04, 3.0, -1.0])
    >>> h.count, h.wire()[:6]
    (3, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    """

    def __init__(self, *, recent: int = 0) -> None:
        self.counts = np.zeros(FINE_EDGES_MS.size + 1, dtype=np.int64)
        self.sum_ms = 0.0
        self._recent = recent
        self._since_mark = 0
        self._marks = [self.counts.copy(), self.counts.copy()]

    def observe_ms(self, values: float | npt.ArrayLike) -> None:
        """Count latencies in milliseconds: one number (under 1 µs) or an array (~50-90 ns each)."""
        if isinstance(values, _SCALARS):
            if 0.0 <= values < math.inf:
                self.counts[bisect.bisect_left(_FINE_LIST, values)] += 1
                self.sum_ms += values
                if self._recent:
                    self._counted(1)
            return
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        v = v[np.isfinite(v) & (v >= 0.0)]
        if v.size:
            self.counts += np.bincount(
                np.searchsorted(FINE_EDGES_MS, v), minlength=self.counts.size
            )
            self.sum_ms += float(v.sum())
            if self._recent:
                self._counted(int(v.size))

    def _counted(self, n: int) -> None:
        self._since_mark += n
        if self._since_mark >= self._recent:  # the window moves on by `recent` latencies
            self._marks = [self._marks[1], self.counts.copy()]
            self._since_mark = 0

    @property
    def count(self) -> int:
        """Latencies counted."""
        return int(self.counts.sum())

    def quantile_ms(self, q: float, *, recent: bool = False) -> float:
        """The ``q`` quantile (0…1) in ms: the upper bound of the bucket that holds it (at most
        3.5% above the exact value); inf past 100 s, NaN when nothing was counted.

        ``recent``: of the latest ``recent`` to ``2 * recent`` latencies only (see the class).
        """
        counts = self.counts - self._marks[0] if recent else self.counts
        cum = np.cumsum(counts)
        total = int(cum[-1])
        if total <= 0:
            return math.nan
        i = int(np.searchsorted(cum, q * total))
        return float(FINE_EDGES_MS[i]) if i < FINE_EDGES_MS.size else math.inf

    def wire(self) -> list[float]:
        """Counts per :data:`BUCKETS_MS` bucket (then +Inf) and the sum (ms), as sent in a
        heartbeat."""
        return [*map(float, np.add.reduceat(self.counts, _EXPORT_STARTS)), self.sum_ms]


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
    """The ``q`` quantile (0…1) estimated from the :meth:`LatencyHistogram.wire` buckets: the
    upper bound of the bucket that holds it (an overestimate by at most one bucket); NaN when
    nothing was counted."""
    counts = np.asarray(wire[:-1], dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    i = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(_EDGES[i]) if i < _EDGES.size else float("inf")
