"""Priority and failover of quote sources, per quote: a pure state machine (no I/O, no clock).

A quote listed by one or more polling sources is *guarded*; its sources in priority order are
the feed (source 0), then the polling sources that list it, in configuration order. The feed
always wins: each of its accepted ticks is taken. A polling source's value is offered to
validation only while every source before it has left the quote without an update for the
quote's ``stale_after_s`` (that of its first polling source); otherwise it is refused as
``outranked``. For the feed an update is an accepted tick; for a polling source an answer that
validation accepted or found a ``duplicate`` of its last accepted value (the source is alive,
the quote did not move).

The source of each quote's last accepted value is :attr:`Failover.source_of`; a change of it
is a *flip* (counted, and recorded in :attr:`Failover.events` for the process to log). A quote
is on its fallback while that source is not the feed. Quotes no polling source lists never
reach this class (ingestion routes the feed's ticks of guarded quotes here only).

Examples
--------
>>> from workbench.engine.protocol.config import PollSourceConfig
>>> src = PollSourceConfig(name="poll", url="http://x", quotes=("CDX.*",), stale_after_s=1.0)
>>> f = Failover(["FX.EURUSD", "CDX.IG.5Y"], [src], start_ns=0)
>>> f.guarded, f.eligible(1, 1, 500_000_000), f.eligible(1, 1, 1_500_000_000)
({1: (1,)}, False, True)
>>> f.took(1, 1, 1_500_000_000); int(f.source_of[1]), f.flips
(1, 1)
>>> f.primary(1, 2_000_000_000); int(f.source_of[1]), f.flips
(0, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.engine.protocol.config import PollSourceConfig

FEED: Final = 0
"""Source number of the feed; polling source ``k`` of the configuration is ``k + 1``."""
_NEVER: Final = -(2**62)


@dataclass(frozen=True)
class Flip:
    """Quote ``quote`` changed source at ``now_ns`` (monotonic ns): names of both sources."""

    quote: str
    before: str
    after: str
    now_ns: int


class Failover:
    """Which source each guarded quote takes its values from.

    Parameters
    ----------
    quote_ids
        Every quote id, in quote-table order.
    sources
        The polling sources in priority order (source ``k + 1`` is ``sources[k]``).
    start_ns
        When the feed started to count (monotonic ns): a guarded quote the feed has not
        quoted is stale ``stale_after_s`` after this.
    """

    def __init__(
        self, quote_ids: Sequence[str], sources: Sequence[PollSourceConfig], start_ns: int
    ) -> None:
        self.quote_ids = list(quote_ids)
        self.names: tuple[str, ...] = ("feed", *(s.name for s in sources))
        chains: dict[int, list[int]] = {}
        listed: list[list[int]] = [[] for _ in self.names]
        for k, source in enumerate(sources, start=1):
            for i, q in enumerate(self.quote_ids):
                if any(fnmatchcase(q, p) for p in source.quotes):
                    chains.setdefault(i, []).append(k)
                    listed[k].append(i)
        self.guarded: dict[int, tuple[int, ...]] = {i: tuple(c) for i, c in chains.items()}
        """Quote row → its polling sources in priority order."""
        self.listed: tuple[frozenset[int], ...] = tuple(frozenset(rows) for rows in listed)
        """Per source number, the quote rows it answers for (none for the feed)."""
        self._stale_ns = {
            i: round(sources[c[0] - 1].stale_after_s * 1e9) for i, c in self.guarded.items()
        }
        self._updated: list[dict[int, int]] = [dict.fromkeys(self.guarded, start_ns)]
        self._updated += [dict.fromkeys(rows, _NEVER) for rows in self.listed[1:]]
        self._rows: IntArray = np.fromiter(self.guarded, dtype=np.int64, count=len(self.guarded))
        self._keys = [f"fallback.{self.quote_ids[i]}" for i in self.guarded]
        self._listed_rows = [np.array(sorted(rows), dtype=np.int64) for rows in self.listed]
        self.source_of: IntArray = np.zeros(len(self.quote_ids), dtype=np.int64)
        """Source number of each quote's last accepted value (0: the feed)."""
        self.flips = 0
        self.events: list[Flip] = []
        """Flips not yet logged (the process drains this list)."""

    def resume(self, sources: IntArray) -> None:
        """Take each guarded quote's source from ``sources`` (the quote table's ``source``
        column, as a previous ingestion left it), so that a restart neither forgets nor
        re-counts the quotes on their fallback; an entry that is not one of the quote's
        sources counts as the feed."""
        for i, chain in self.guarded.items():
            k = int(sources[i])
            self.source_of[i] = k if k in chain else FEED

    def primary(self, index: int, now_ns: int) -> None:
        """The feed's tick of guarded quote ``index`` was accepted at ``now_ns``."""
        self._updated[FEED][index] = now_ns
        if self.source_of[index] != FEED:
            self._flip(index, FEED, now_ns)

    def eligible(self, source: int, index: int, now_ns: int) -> bool:
        """Whether polling source ``source`` may offer a value of quote ``index`` at
        ``now_ns``: every source before it in the quote's chain has been silent for longer
        than the quote's ``stale_after_s``."""
        limit = now_ns - self._stale_ns[index]
        if self._updated[FEED][index] >= limit:
            return False
        for before in self.guarded[index]:
            if before == source:
                return True
            if self._updated[before][index] >= limit:
                return False
        return False  # the source does not list the quote

    def answered(self, source: int, index: int, now_ns: int) -> None:
        """Polling source ``source`` answered quote ``index`` with a valid value."""
        self._updated[source][index] = now_ns

    def took(self, source: int, index: int, now_ns: int) -> None:
        """A value of quote ``index`` from polling source ``source`` was accepted."""
        self._updated[source][index] = now_ns
        if self.source_of[index] != source:
            self._flip(index, source, now_ns)

    def _flip(self, index: int, source: int, now_ns: int) -> None:
        before = int(self.source_of[index])
        self.source_of[index] = source
        self.flips += 1
        self.events.append(
            Flip(self.quote_ids[index], self.names[before], self.names[source], now_ns)
        )

    def age_ns(self, source: int, index: int, now_ns: int) -> int | None:
        """Nanoseconds since ``source`` last updated quote ``index`` (None: never)."""
        t = self._updated[source].get(index, _NEVER)
        return None if t == _NEVER else now_ns - t

    def stats(self) -> dict[str, float]:
        """``flips``, ``fallback_quotes`` (guarded quotes now on a polling source),
        ``source.<name>.on_fallback`` per polling source and ``fallback.<quote id>`` (the
        source number each guarded quote is on: 0 the feed, k the k-th polling source)."""
        on = self.source_of
        out: dict[str, float] = {
            "flips": float(self.flips),
            "fallback_quotes": float(np.count_nonzero(on[self._rows] != FEED)),
        }
        for k, name in enumerate(self.names[1:], start=1):
            on_k = np.count_nonzero(on[self._listed_rows[k]] == k)
            out[f"source.{name}.on_fallback"] = float(on_k)
        out |= zip(self._keys, on[self._rows].astype(np.float64).tolist(), strict=True)
        return out


class GroupFallback:
    """Which positions are priced off a quote of a polling source: a position is when a quote
    its pricing group reads is (FX conversion quotes left out).

    Parameters
    ----------
    groups
        Each pricing group's book rows and quote rows (``(rows, quotes)``).
    n_positions
        Rows of the book.

    Examples
    --------
    >>> g = GroupFallback([(np.array([0, 2]), np.array([1])), (np.array([1]), np.array([0]))], 3)
    >>> g.flags(np.array([0, 2]), np.array([0, 1, 2])).tolist()
    [1.0, 0.0, 1.0]
    """

    def __init__(self, groups: Iterable[tuple[IntArray, IntArray]], n_positions: int) -> None:
        self.row_group: IntArray = np.full(n_positions, -1, dtype=np.int64)
        quotes: list[IntArray] = []
        owners: list[IntArray] = []
        for k, (rows, qs) in enumerate(groups):
            self.row_group[rows] = k
            quotes.append(np.asarray(qs, dtype=np.int64))
            owners.append(np.full(len(qs), k, dtype=np.int64))
        self.n_groups = len(quotes)
        self.quotes: IntArray = np.concatenate(quotes) if quotes else np.empty(0, np.int64)
        self.owner: IntArray = np.concatenate(owners) if owners else np.empty(0, np.int64)

    def flags(self, sources: IntArray, rows: IntArray) -> FloatArray:
        """1.0 for each of ``rows`` whose group reads a quote whose ``sources`` entry (the
        quote table's ``source`` column) is not the feed, else 0.0."""
        hits = np.bincount(
            self.owner, weights=sources[self.quotes] != FEED, minlength=self.n_groups + 1
        )
        on = np.append(hits[: self.n_groups] > 0, False)  # row_group -1: no group
        out: FloatArray = on[self.row_group[rows]].astype(np.float64)
        return out
