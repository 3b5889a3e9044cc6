"""When the aggregator publishes a snapshot: soon after the workers' results, never too often.

A conflation flush wakes several workers, whose results arrive a few milliseconds apart. The
pacer publishes once they have settled (no new result for ``settle_ns``, or ``max_wait_ns``
after the first unpublished one), so one snapshot carries a whole flush; and never more than
``max_hz`` snapshots in any trailing second, nor two within ``min_gap_ns``. With nothing new it
still publishes every ``keepalive_ns`` (readers see the service is alive and ages grow).

A pure state machine on the caller's monotonic clock (nanoseconds): no sockets, no sleeping.
"""

from __future__ import annotations

from collections import deque

_SECOND_NS = 1_000_000_000


class PublishPacer:
    """Decides when the next snapshot is due."""

    def __init__(
        self,
        max_hz: float,
        *,
        settle_ns: int = 5_000_000,
        max_wait_ns: int = 40_000_000,
        min_gap_ns: int = 20_000_000,
        keepalive_ns: int = _SECOND_NS,
    ) -> None:
        if not max_hz > 0:
            raise ValueError(f"snapshot rate must be positive, got {max_hz!r} Hz")
        self.max_per_second = max(int(max_hz), 1)
        self.settle_ns = settle_ns
        self.max_wait_ns = max_wait_ns
        self.min_gap_ns = min_gap_ns
        self.keepalive_ns = keepalive_ns
        self.first_ns: int | None = None  # first result not yet published
        self.last_ns = 0  # latest result
        self.last_publish_ns: int | None = None
        self._recent: deque[int] = deque()  # publish times within the trailing second

    def result(self, now_ns: int) -> None:
        """A worker's new result has arrived."""
        if self.first_ns is None:
            self.first_ns = now_ns
        self.last_ns = now_ns

    def _allowed_from(self, now_ns: int) -> int:
        """The earliest time a publish may happen (rate cap and minimum gap)."""
        while self._recent and self._recent[0] <= now_ns - _SECOND_NS:
            self._recent.popleft()
        at = now_ns
        if len(self._recent) >= self.max_per_second:
            at = self._recent[0] + _SECOND_NS
        if self.last_publish_ns is not None:
            at = max(at, self.last_publish_ns + self.min_gap_ns)
        return at

    def next_due_ns(self, now_ns: int) -> int:
        """When a snapshot is due (≤ ``now_ns``: now)."""
        if self.first_ns is not None:
            want = min(self.last_ns + self.settle_ns, self.first_ns + self.max_wait_ns)
        elif self.last_publish_ns is None:
            want = now_ns
        else:
            want = self.last_publish_ns + self.keepalive_ns
        return max(want, self._allowed_from(now_ns))

    def due(self, now_ns: int) -> bool:
        """Whether to publish now."""
        return self.next_due_ns(now_ns) <= now_ns

    def published(self, now_ns: int) -> None:
        """A snapshot went out (it includes every result so far)."""
        self.first_ns = None
        self.last_publish_ns = now_ns
        self._recent.append(now_ns)
