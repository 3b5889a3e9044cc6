"""When background work (the live loss measures) may take a core without delaying a flush.

A conflation flush sets the hot path going: every worker reprices, the aggregator publishes
the snapshot. Background work that runs meanwhile makes that snapshot later, whatever its
priority (measured: a VaR run niced 10, or on ``SCHED_IDLE``, took the service's flush →
publish p99 from ~50 to 84–92 ms). :class:`FlushGaps` lets it run in steps only in the gaps:
after a flush's snapshot is out and before the next instant of the conflation grid
(:func:`~.conflation.next_flush_ns`) where another flush may start.

It is told when a flush happened (ingestion's notice) and when a snapshot was published, and
answers how long a step may take if started now (:meth:`FlushGaps.room_ns`). The hot path is

* **busy** from a flush until a snapshot published after it, at most ``settle_ns`` (a worker
  down or slow: the background work does not wait for ever);
* **idle** when no flush came for ``idle_ns`` (no ticks): any step may start.

A step longer than every gap of the grid cannot fit; it may start as soon as the hot path is
not busy (:meth:`FlushGaps.may_start`), early in a gap. Pure: no sockets, no sleeping, the
caller's monotonic clock in nanoseconds.
"""

from __future__ import annotations

from typing import Final

from workbench.engine.processes.conflation import next_flush_ns
from workbench.engine.protocol.config import ConflationConfig

_MS: Final = 1_000_000
UNBOUNDED: Final = 1 << 62
""":meth:`FlushGaps.room_ns` when the hot path is idle."""


class FlushGaps:
    """The hot path's busy and free time, from its flushes and snapshots (see the module
    docstring).

    Parameters
    ----------
    conflation
        The service's conflation windows: where the next flush may start.
    settle_ns
        The longest a flush counts as busy without a snapshot after it.
    margin_ns
        Kept free before the next grid instant (a step's time is an estimate).
    idle_ns
        No flush for this long: the hot path is idle.
    """

    def __init__(
        self,
        conflation: ConflationConfig,
        *,
        settle_ns: int = 250 * _MS,
        margin_ns: int = 3 * _MS,
        idle_ns: int = 1_000 * _MS,
    ) -> None:
        self.conflation = conflation
        self.settle_ns = settle_ns
        self.margin_ns = margin_ns
        self.idle_ns = idle_ns
        self.flush_ns = -UNBOUNDED  # the last flush seen (its instant)
        self.seen_ns = -UNBOUNDED  # when it was seen
        self.published_ns = -UNBOUNDED  # the last snapshot seen
        self.widest_ns = self._widest_gap_ns()  # the grid repeats: measured once

    def flushed(self, flush_ns: int, now_ns: int) -> None:
        """Ingestion flushed at ``flush_ns`` (seen at ``now_ns``)."""
        if flush_ns >= self.flush_ns:
            self.flush_ns = flush_ns
            self.seen_ns = now_ns

    def published(self, now_ns: int) -> None:
        """A snapshot was published (seen at ``now_ns``)."""
        self.published_ns = now_ns

    def idle(self, now_ns: int) -> bool:
        """No flush for ``idle_ns``."""
        return now_ns - self.seen_ns >= self.idle_ns

    def busy(self, now_ns: int) -> bool:
        """The last flush has no snapshot after it yet (for at most ``settle_ns``)."""
        waiting = self.published_ns < self.seen_ns
        return waiting and now_ns - self.seen_ns < self.settle_ns and not self.idle(now_ns)

    def room_ns(self, now_ns: int) -> int:
        """How long a step started now may take: 0 while busy, :data:`UNBOUNDED` when idle,
        else the time to the next grid instant less the margin (≥ 0)."""
        if self.idle(now_ns):
            return UNBOUNDED
        if self.busy(now_ns):
            return 0
        return max(0, next_flush_ns(now_ns, self.conflation) - self.margin_ns - now_ns)

    def may_start(self, now_ns: int, step_ns: int) -> bool:
        """Whether a step of ``step_ns`` may start now: it fits the room, or it fits no gap of
        the grid and the hot path is not busy."""
        room = self.room_ns(now_ns)
        if step_ns <= room:
            return True
        return not self.busy(now_ns) and step_ns > self.widest_ns

    def _widest_gap_ns(self) -> int:
        """The widest gap between two grid instants over one credit window (the longest
        period of the grid), less the margin."""
        at, widest = 0, 0
        end = max(1_000 * _MS, round(self.conflation.credit_ms * _MS))
        while at < end:
            nxt = next_flush_ns(at, self.conflation)
            if nxt <= at:  # a window of 0: flushes at any time
                return 0
            widest = max(widest, nxt - at)
            at = nxt
        return max(0, widest - self.margin_ns)


__all__ = ["UNBOUNDED", "FlushGaps"]
