"""When the aggregator publishes a snapshot: as soon as a flush is fully priced, never too often.

A conflation flush wakes every worker (an FX spot move re-converts every position to USD);
their results arrive milliseconds apart, the heaviest last. Each worker answers every flush it
sees, with fresh Greeks or an empty acknowledgement, so :class:`FlushTracker` knows when all of
them have priced a flush; the pacer then publishes at once, one snapshot per flush. Results it
cannot tie to a flush (a restart, a re-risk on demand) are published once they settle (no new
result for ``settle_ns``). A flush still incomplete ``max_wait_ns`` after it started (a worker
down or slow) is published partially, and again when complete. Never more than ``max_hz``
snapshots in any trailing second, nor two within ``min_gap_ns``; with nothing new, one every
``keepalive_ns`` (readers see the service is alive and ages grow).

Pure state machines on the caller's monotonic clock (nanoseconds): no sockets, no sleeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

_SECOND_NS = 1_000_000_000


class PublishPacer:
    """Decides when the next snapshot is due."""

    def __init__(
        self,
        max_hz: float,
        *,
        settle_ns: int = 5_000_000,
        max_wait_ns: int = 100_000_000,
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
        self.expecting: bool | None = None  # more results of a flush to come (None: unknown)
        self.last_publish_ns: int | None = None
        self._recent: deque[int] = deque()  # publish times within the trailing second

    def result(self, now_ns: int, *, expecting: bool | None = None) -> None:
        """A worker's new result, or a flush, has arrived. ``expecting``: True while a flush
        still awaits a worker, False once every open flush is priced (publish now), None for a
        result outside any flush (publish once results settle)."""
        if self.first_ns is None:
            self.first_ns = now_ns
        self.last_ns = now_ns
        self.expecting = expecting

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
            if self.expecting is False:
                want = self.last_ns
            elif self.expecting:
                want = self.first_ns + self.max_wait_ns
            else:
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
        self.expecting = None
        self.last_publish_ns = now_ns
        self._recent.append(now_ns)


class FlushTracker:
    """Which conflation flushes (quote-table generations) every worker has priced.

    Workers report the generation of the quote table they priced (``RiskUpdated.quote_gen``);
    a flush of generation ``g`` is complete when every worker has reported ``g`` or later.
    """

    def __init__(self, workers: Iterable[str], *, max_open: int = 1_024) -> None:
        self.priced_gen = dict.fromkeys(workers, -1)
        self.open: deque[tuple[int, int]] = deque(maxlen=max_open)  # (generation, flushed_ns)
        self.dropped = 0

    def flushed(self, gen: int, flushed_ns: int) -> None:
        """Ingestion flushed generation ``gen`` at ``flushed_ns``. Before every worker has
        priced once (start-up) flushes are not tracked: there is nothing to publish yet."""
        if self._done_gen() < 0:
            return
        if len(self.open) == self.open.maxlen:
            self.dropped += 1
        self.open.append((gen, flushed_ns))

    def priced(self, worker: str, gen: int) -> None:
        """``worker`` has priced the quote table as of generation ``gen``."""
        if worker in self.priced_gen:
            self.priced_gen[worker] = max(self.priced_gen[worker], gen)

    def _done_gen(self) -> int:
        return min(self.priced_gen.values(), default=-1)

    def waiting(self) -> bool:
        """Whether an open flush still awaits a worker."""
        return bool(self.open) and self.open[-1][0] > self._done_gen()

    def take_complete(self) -> list[int]:
        """``flushed_ns`` of the open flushes every worker has priced, now closed."""
        done = self._done_gen()
        out: list[int] = []
        while self.open and self.open[0][0] <= done:
            out.append(self.open.popleft()[1])
        return out

    def expire(self, now_ns: int, older_than_ns: int) -> int:
        """Close flushes open for longer than ``older_than_ns`` (a worker is down: its
        positions show as stale instead); returns how many."""
        n = 0
        while self.open and now_ns - self.open[0][1] > older_than_ns:
            self.open.popleft()
            n += 1
        self.dropped += n
        return n
