"""Prometheus metrics of the whole service, served by the supervisor on a loopback port.

Every child reports its counters in its heartbeats (``Heartbeat.stats``); they are exported as
``workbench_process_stat{process, stat}`` (ticks, rejects by reason, conflation ratio, latency
percentiles in microseconds, reprice times in milliseconds, cache hits …). The supervisor adds
restarts and staleness read from the risk table, and exports the latency histograms the
processes count at their boundaries (:mod:`engine.telemetry.histograms`) as
``workbench_latency_seconds{boundary, process}``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from workbench.engine.telemetry.histograms import cumulative_buckets
from workbench.engine.transport.shm import RiskTable


class _Latencies(Collector):
    """The latest histogram counts of every process, exported at each scrape."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], list[float]] = {}

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "workbench_latency_seconds",
            "Latency at a process boundary (see the boundary label), since the process started",
            labels=["boundary", "process"],
        )
        for (process, boundary), wire in sorted(self.latest.items()):
            buckets, total = cumulative_buckets(wire)
            family.add_metric([boundary, process], buckets, total)
        yield family


class Metrics:
    """The registry and its HTTP exporter (``host:port``; port 0 disables the exporter)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry()
        self.stat = Gauge(
            "workbench_process_stat",
            "Counters and gauges reported by each process in its heartbeats",
            ["process", "stat"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "workbench_restarts",
            "Unplanned restarts of a process",
            ["process"],
            registry=self.registry,
        )
        self.stale = Gauge(
            "workbench_stale_positions",
            "Stale positions, whatever the reason (worker down, reprice failed, not priced yet)",
            registry=self.registry,
        )
        self.worst_age = Gauge(
            "workbench_worst_age_seconds",
            "Age of the oldest position's Greeks",
            registry=self.registry,
        )
        self.latencies = _Latencies()
        self.registry.register(self.latencies)
        self._server: Any = None
        self._last_gauge = 0.0
        if int(port):
            self._server = start_http_server(int(port), addr=host, registry=self.registry)

    def heartbeat(
        self,
        process: str,
        stats: dict[str, float],
        histograms: dict[str, list[float]] | None = None,
    ) -> None:
        """Export the counters and latency histograms of one heartbeat."""
        for key, value in stats.items():
            self.stat.labels(process, key).set(value)
        for boundary, wire in (histograms or {}).items():
            self.latencies.latest[(process, boundary)] = list(wire)

    def restart(self, process: str) -> None:
        """Count an unplanned restart."""
        self.restarts.labels(process).inc()

    def gauge_staleness(self, risk: RiskTable) -> None:
        """Refresh the staleness gauges (at most once a second)."""
        now = time.monotonic()
        if now - self._last_gauge < 1.0:
            return
        self._last_gauge = now
        stale = risk.columns["stale"]
        updated = risk.columns["updated_ns"]
        self.stale.set(float(np.count_nonzero(stale)))
        written = updated[updated > 0]
        if written.size:
            self.worst_age.set((time.monotonic_ns() - int(written.min())) / 1e9)

    def close(self) -> None:
        """Stop the HTTP exporter."""
        if self._server is not None:
            server = self._server[0] if isinstance(self._server, tuple) else self._server
            server.shutdown()
            server.server_close()
