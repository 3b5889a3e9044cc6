"""HTTP polling sources of quotes: replies parsed, values offered, faults counted.

Each polling source (:class:`~.config.PollSourceConfig`) is one :class:`Poller` task of the
polling process's asyncio loop (:mod:`~.pollers`, a child of the ingestion): a GET of ``url``
with an httpx ``AsyncClient`` every ``poll_s``, the whole request limited to ``timeout_s``, the
next poll after a failure delayed by :func:`backoff_s`; each outcome goes to the ingestion. A
reply is JSON ``{"quotes": [{"id": str, "value": number, "seq": int}, …]}`` (docs/ticks.md,
"Polling sources"). In the ingestion, :class:`PollIntake` (no I/O) takes a parsed reply: each
entry is offered to the same :class:`~.conflation.Conflator` as the feed's ticks
(with the source's own sequence numbers) when :class:`~.failover.Failover` lets the source
serve the quote, else refused as ``outranked``.

A failed poll is counted under one error (:data:`POLL_ERRORS`) and changes no quote: the last
good value stays in the table and ages. Nothing a server sends stops the ingestion.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Final

import httpx
import msgspec

from workbench.engine.processes.conflation import NO_SEQ, REJECT_REASONS, Conflator
from workbench.engine.processes.failover import Failover
from workbench.engine.protocol.config import BackoffConfig, PollSourceConfig
from workbench.engine.telemetry import logs

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per request

POLL_ERRORS: Final = (
    "timeout",
    "connect",
    "http_5xx",
    "http_status",
    "too_large",
    "bad_json",
    "bad_shape",
    "partial",
)
"""Why a poll failed: no reply within ``timeout_s``; no connection (refused, reset); a 5xx
status; another status than 200; a body over :data:`MAX_REPLY_BYTES`; not JSON; JSON but not
``{"quotes": [...]}``. ``partial`` (a reply that lacks some of the source's quotes) is counted
too, but its entries are taken."""
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
"""Largest reply body read; a larger one is ``too_large``."""


class PollQuote(msgspec.Struct, frozen=True):
    """One entry of a reply: a quote id, its value (unit of its class), its sequence number."""

    id: str
    value: float
    seq: int


class PollReply(msgspec.Struct, frozen=True):
    """A reply: its entries, each decoded on its own (a bad entry does not spoil the rest)."""

    quotes: list[msgspec.Raw]


_reply_decoder: Final = msgspec.json.Decoder(PollReply)
_quote_decoder: Final = msgspec.json.Decoder(PollQuote)


def parse_reply(body: bytes) -> tuple[list[PollQuote | None], str | None]:
    """The entries of a reply body (None for an entry that is not a valid quote object), or
    no entries and the error (``bad_json``, ``bad_shape``).

    Examples
    --------
    >>> parse_reply(b'{"quotes": [{"id": "CDX.IG.5Y", "value": 0.0055, "seq": 3}, {"id": 1}]}')
    ([PollQuote(id='CDX.IG.5Y', value=0.0055, seq=3), None], None)
    >>> parse_reply(b"<html>"), parse_reply(b'{"quotes": 3}')
    (([], 'bad_json'), ([], 'bad_shape'))
    """
    try:
        reply = _reply_decoder.decode(body)
    except msgspec.ValidationError:
        return [], "bad_shape"
    except msgspec.DecodeError:
        return [], "bad_json"
    out: list[PollQuote | None] = []
    for raw in reply.quotes:
        try:
            out.append(_quote_decoder.decode(raw))
        except msgspec.DecodeError:
            out.append(None)
    return out, None


def backoff_s(config: BackoffConfig, failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed polls (≥ 1).

    Examples
    --------
    >>> [backoff_s(BackoffConfig(initial_s=0.5, max_s=3.0), n) for n in (1, 2, 3, 4, 5)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    return float(min(config.max_s, config.initial_s * 2.0 ** min(failures - 1, 60)))


class SourceCounts:
    """Counters of one polling source: values offered, accepted and rejected per reason,
    polls and failed polls per error."""

    def __init__(self) -> None:
        self.offered = 0
        self.accepted = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.polls = 0
        self.errors = dict.fromkeys(POLL_ERRORS, 0)
        self.last_ok_ns = 0

    def stats(self, prefix: str) -> dict[str, float]:
        """The counters as ``<prefix>.offered`` … ``<prefix>.errors.<error>``."""
        out = {
            f"{prefix}.offered": float(self.offered),
            f"{prefix}.accepted": float(self.accepted),
            f"{prefix}.rejected": float(sum(self.rejected.values())),
            f"{prefix}.polls": float(self.polls),
            f"{prefix}.errors": float(sum(self.errors.values())),
        }
        out |= {f"{prefix}.rejected.{r}": float(n) for r, n in self.rejected.items()}
        out |= {f"{prefix}.errors.{e}": float(n) for e, n in self.errors.items()}
        return out


class PollIntake:
    """Offers the entries of polling sources' replies to the conflator, through the failover.

    Parameters
    ----------
    quote_index
        Quote id → row of the quote table.
    conflator
        The feed's conflator (the same validation and conflation for every source).
    failover
        Which source serves each guarded quote.
    """

    def __init__(
        self, quote_index: Mapping[str, int], conflator: Conflator, failover: Failover
    ) -> None:
        self.quote_index = dict(quote_index)
        self.conflator = conflator
        self.failover = failover
        n_sources = len(failover.names)
        self.counts = [SourceCounts() for _ in range(n_sources)]  # [0], the feed's: unused
        self.seqs = [conflator.new_seqs() for _ in range(n_sources)]

    def outcome(self, source: int, entries: list[PollQuote | None], error: str | None) -> None:
        """One poll of ``source``: its entries, or the error it failed with; taken now."""
        if error is not None:
            self.failed(source, error)
        else:
            self.take(source, entries, time.monotonic_ns())
        self.log_flips()

    def failed(self, source: int, error: str) -> None:
        """A poll of ``source`` failed with ``error`` (one of :data:`POLL_ERRORS`)."""
        counts = self.counts[source]
        counts.polls += 1
        counts.errors[error] += 1

    def take(self, source: int, entries: list[PollQuote | None], now_ns: int) -> None:
        """Offer the entries of one good reply of ``source``, read at ``now_ns``."""
        counts = self.counts[source]
        counts.polls += 1
        counts.last_ok_ns = now_ns
        listed = self.failover.listed[source]
        conflator, failover, seqs = self.conflator, self.failover, self.seqs[source]
        seen: set[int] = set()
        for entry in entries:
            counts.offered += 1
            index = None if entry is None else self.quote_index.get(entry.id)
            if entry is None:
                reason: str | None = "bad_payload"
            elif index is None or index not in listed:
                reason = "unknown_id"
            elif not failover.eligible(source, index, now_ns):
                seen.add(index)
                reason = "outranked"
            else:
                seen.add(index)
                if failover.source_of[index] != source:
                    seqs[index] = NO_SEQ  # taking over: its current value, even if sent before
                reason = conflator.offer_from(seqs, index, entry.value, entry.seq, now_ns)
                if reason is None:
                    failover.took(source, index, now_ns)
                elif reason == "duplicate":
                    failover.answered(source, index, now_ns)
            if reason is None:
                counts.accepted += 1
                continue
            if reason in ("bad_payload", "unknown_id", "outranked"):
                conflator.reject(reason)  # the conflator's totals count every source
            counts.rejected[reason] += 1
        if len(seen) < len(listed):
            counts.errors["partial"] += 1

    def stats(self) -> dict[str, float]:
        """Per-source counters (``source.<name>.…``; the feed's are the totals less the
        polling sources') and the failover's."""
        names = self.failover.names
        out: dict[str, float] = {}
        feed = self.conflator.stats()
        keys = ("offered", "accepted", "rejected", *(f"rejected.{r}" for r in REJECT_REASONS))
        for k in range(1, len(names)):
            mine = self.counts[k].stats(f"source.{names[k]}")
            out |= mine
            for key in keys:
                feed[key] -= mine[f"source.{names[k]}.{key}"]
        for key in keys:
            out[f"source.feed.{key}"] = feed[key]
        return out | self.failover.stats()

    def log_flips(self) -> None:
        """Log the flips since the last call, one JSON record each (event ``source_flip``)."""
        for flip in self.failover.events:
            logs.event(
                log, "source_flip", f"{flip.quote}: {flip.before} → {flip.after}",
                quote=flip.quote, before=flip.before, after=flip.after, mono_ns=flip.now_ns,
            )  # fmt: skip
        self.failover.events.clear()


Sink = Callable[[int, list[PollQuote | None], str | None], None]
"""Where a poll's outcome goes: (source number, entries, None) or (source number, [], error)."""


class Poller:
    """The task that polls one source (``source``, its number) and hands each outcome to
    ``sink``; ``clock`` is the monotonic clock in ns."""

    def __init__(
        self,
        source: int,
        config: PollSourceConfig,
        sink: Sink,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.source = source
        self.config = config
        self.sink = sink
        self.clock = clock
        self.failures = 0

    async def fetch(self, client: httpx.AsyncClient) -> bytes | str:
        """One GET: the body, or the error (one of :data:`POLL_ERRORS`)."""
        async with client.stream("GET", self.config.url) as response:
            if response.status_code >= 500:
                return "http_5xx"
            if response.status_code != 200:
                return "http_status"
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    return "too_large"
            return bytes(body)

    async def poll(self, client: httpx.AsyncClient) -> bool:
        """Poll once and hand the outcome over; whether it was good."""
        try:
            got = await asyncio.wait_for(self.fetch(client), self.config.timeout_s)
        except (TimeoutError, httpx.TimeoutException):
            got = "timeout"
        except (httpx.HTTPError, httpx.InvalidURL, OSError):
            got = "connect"
        entries, error = parse_reply(got) if isinstance(got, bytes) else ([], got)
        self.sink(self.source, entries, error)
        return error is None

    async def run(self) -> None:
        """Poll every ``poll_s`` (from the start of one poll to the next), or after the backoff
        delay while polls fail, until cancelled."""
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            while True:
                t0 = self.clock()
                if await self.poll(client):
                    self.failures = 0
                    wait_s = self.config.poll_s - (self.clock() - t0) / 1e9
                else:
                    self.failures += 1
                    wait_s = backoff_s(self.config.backoff, self.failures)
                await asyncio.sleep(max(wait_s, 0.0) if math.isfinite(wait_s) else 0.0)
