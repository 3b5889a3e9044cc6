"""The API's one link to a running service: a single snapshot subscription fanned out to every
HTTP reader, and the few requests the service is asked, each at most once per snapshot.

The link follows the service through :class:`~workbench.client.AsyncClient`. While no
snapshot arrives for ``silence_s`` seconds, or the service's supervisor has exited, the
service is *away*: readers get :class:`ServiceUnavailableError` (503) until a service of
that name runs again and publishes, which the link finds by itself (every ``retry_s`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

from workbench.api.renders import RenderCache
from workbench.client import AsyncClient, ServiceError, SnapshotView, connect

LinkState = Literal["connecting", "up", "away", "closed"]
_STATUS_TTL_S: Final = 1.0
"""How long a status answer is reused (seconds)."""
_POSITIONS_TTL_S: Final = 1.0
"""Seconds a per-position copy is served before the service is asked again (one answer for
40,000 positions holds the aggregator's loop for 120-400 ms: at most one a second)."""
_REQUEST_TIMEOUT_S: Final = 10.0
"""How long a request to the service may wait for its reply (seconds)."""


async def _close(stream: AsyncIterator[SnapshotView]) -> None:
    """Close an async generator's stream (its subscription socket)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


@dataclass(frozen=True)
class PositionsCopy:
    """One copy of the service's per-position risk, shared by every reader until the next."""

    number: int
    """Copies this link has read since it started, this one included (identifies it)."""
    seq: int
    """The snapshot that was latest when the copy was read."""
    frame: pl.DataFrame
    """The per-position risk (USD), as ``Client.snapshot()`` answers it."""
    meta: dict[str, Any]
    """The copy's identity (``generation``, ``book_generation``)."""


class ServiceUnavailableError(RuntimeError):
    """The service cannot answer now (the message says why); the API answers 503."""


@dataclass(eq=False)
class Mailbox:
    """One subscriber's latest snapshot: a newer one replaces one not yet taken (latest value
    wins, so a slow reader skips snapshots instead of queueing them)."""

    delivered: int = 0
    """Snapshots taken by the reader."""
    skipped: int = 0
    """Snapshots replaced before the reader took them."""
    _value: SnapshotView | None = None
    _closed: bool = False
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, view: SnapshotView) -> None:
        """Offer ``view`` (replacing one not yet taken)."""
        if self._value is not None:
            self.skipped += 1
        self._value = view
        self._ready.set()

    def close(self) -> None:
        """Wake the reader with None: the link is closing."""
        self._closed = True
        self._ready.set()

    async def take(self, timeout_s: float) -> SnapshotView | None:
        """The latest snapshot not yet taken, waiting up to ``timeout_s`` seconds; None on
        timeout or once closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        self._ready.clear()
        view, self._value = self._value, None
        if view is not None and not self._closed:
            self.delivered += 1
            return view
        return None

    @property
    def closed(self) -> bool:
        """Whether the link has closed this mailbox."""
        return self._closed


class ServiceLink:
    """A followed service: its latest snapshot, its subscribers and its cached answers.

    Parameters
    ----------
    name
        The service's name (``workbench serve --name``).
    run_root
        Where its run directory is (None: the default run root).
    silence_s
        Seconds without a snapshot after which the service is away (it publishes at least one
        a second).
    retry_s
        Seconds between two attempts to find the service, and between two checks that it is
        alive.
    """

    def __init__(
        self,
        name: str,
        *,
        run_root: str | Path | None = None,
        silence_s: float = 5.0,
        retry_s: float = 0.5,
    ) -> None:
        self.name = name
        self.run_root = run_root
        self.silence_s = silence_s
        self.retry_s = retry_s
        self.state: LinkState = "connecting"
        self.reason = f"service {name}: waiting for its first snapshot"
        self.latest: SnapshotView | None = None
        self.reconnects = 0
        self.closing = False
        """Set by :meth:`close`: the link stops following."""
        self.run_dir: str | None = None
        """The service's run directory, once found."""
        self._client: AsyncClient | None = None
        self._mailboxes: set[Mailbox] = set()
        self._rendered: dict[Any, bytes] = {}
        self._rendered_seq = -1
        self._positions: PositionsCopy | None = None
        self._positions_lock = asyncio.Lock()
        self._positions_at = 0.0  # monotonic time of the last per-position copy
        self._copies = 0  # per-position copies read since start
        self.renders = RenderCache()
        """Rendered per-position answers, shared by the readers of one copy."""
        self._status: tuple[float, dict[str, Any]] | None = None
        self._status_lock = asyncio.Lock()
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    # --- following the service ------------------------------------------------------------

    async def run(self) -> None:
        """Follow the service until :meth:`close` (run it as a task)."""
        while not self.closing:
            try:
                client = connect(self.name, run_root=self.run_root, asynchronous=True)
            except ServiceError as exc:
                self._away(str(exc))
                await asyncio.sleep(self.retry_s)
                continue
            client.timeout_s = _REQUEST_TIMEOUT_S
            self.run_dir = client.descriptor.config.run_dir or None
            try:
                await self._follow(client)
            finally:
                self._client = None
                await client.close()
            if not self.closing:
                await asyncio.sleep(self.retry_s)

    async def _follow(self, client: AsyncClient) -> None:
        stream = client.snapshots()
        pending: asyncio.Future[SnapshotView] = asyncio.ensure_future(anext(stream))
        heard = time.monotonic()
        try:
            while not self.closing:
                done, _ = await asyncio.wait({pending}, timeout=self.retry_s)
                if pending in done:
                    self._publish(client, pending.result())
                    heard = time.monotonic()
                    pending = asyncio.ensure_future(anext(stream))
                elif not await client.alive():
                    self._away(f"service {self.name}: its supervisor has exited")
                    return
                elif time.monotonic() - heard > self.silence_s:
                    self._away(f"service {self.name}: no snapshot for {self.silence_s:g} s")
                    return
        except ServiceError as exc:
            self._away(str(exc))
        finally:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
            with contextlib.suppress(Exception):
                await _close(stream)

    def _publish(self, client: AsyncClient, view: SnapshotView) -> None:
        if client is not self._client:  # a new attachment: nothing cached is of it
            self._rendered, self._rendered_seq = {}, -1
            self._positions = self._status = None
            if self.state == "away":
                self.reconnects += 1
        self.state, self.reason = "up", ""
        self._client, self.latest = client, view
        for box in self._mailboxes:
            box.put(view)

    def _away(self, why: str) -> None:
        if not self.closing:
            self.state, self.reason = "away", why
            self._client = None

    def close(self) -> None:
        """Stop following; wake every subscriber with None."""
        self.closing = True
        self.state = "closed"
        self.reason = "the API is shutting down"
        for box in self._mailboxes:
            box.close()
        for task in self._refreshing.values():
            task.cancel()

    # --- what readers ask -------------------------------------------------------------------

    def require(self) -> tuple[AsyncClient, SnapshotView]:
        """The client and latest snapshot of a service that is up.

        Raises
        ------
        ServiceUnavailableError
            The service is away, not yet found, or the API is closing (the reason).
        """
        if self.state != "up" or self._client is None or self.latest is None:
            raise ServiceUnavailableError(self.reason)
        return self._client, self.latest

    def rendered(self, seq: int, key: Any, make: Callable[[], bytes]) -> bytes:
        """``make()`` for snapshot ``seq``, computed once per ``key`` while ``seq`` is the
        latest (rendered answers of the latest snapshot are shared by every reader)."""
        if seq != self._rendered_seq:
            self._rendered, self._rendered_seq = {}, seq
        body = self._rendered.get(key)
        if body is None:
            body = self._rendered[key] = make()
        return body

    async def positions(self) -> PositionsCopy:
        """Per-position risk (USD), read from the service at most once per published snapshot
        and at most once a second (:data:`_POSITIONS_TTL_S`). Only the first copy of an
        attachment is waited for: later, the copy in hand is answered while the next is read.

        Raises
        ------
        ServiceUnavailableError
            The service is away or did not answer.
        """
        client, view = self.require()
        copy = self._positions
        if copy is None:  # the first copy of this attachment: every reader waits for it
            async with self._positions_lock:
                if self._positions is None:
                    await self._read_positions(client, view.seq)
            if self._positions is None:
                raise ServiceUnavailableError(f"service {self.name}: no positions answer")
            return self._positions
        young = time.monotonic() - self._positions_at < _POSITIONS_TTL_S
        if copy.seq < view.seq and not young:  # read the next copy; this one meanwhile
            self._background("positions", self._read_positions(client, view.seq))
        return copy

    async def _read_positions(self, client: AsyncClient, seq: int) -> None:
        """Read a copy of the per-position risk; keep it if ``client`` is still the link's."""
        try:
            frame, meta = await client.snapshot()
        except ServiceError as exc:
            if self._positions is None:
                raise ServiceUnavailableError(str(exc)) from None
            return  # the copy in hand is served until the next read or the service is away
        if client is self._client:
            self._copies += 1
            self._positions = PositionsCopy(self._copies, seq, frame, meta)
            self._positions_at = time.monotonic()

    def _background(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task unless one of that ``name`` is still running."""
        running = self._refreshing.get(name)
        if running is not None and not running.done():
            work.close()
            return
        self._refreshing[name] = asyncio.create_task(work, name=f"refresh-{name}")

    async def status(self) -> dict[str, Any]:
        """The service's status, asked at most once a second; once a status is in hand, it
        is answered while the next is asked.

        Raises
        ------
        ServiceUnavailableError
            The service is away or did not answer.
        """
        client, _ = self.require()
        if self._status is None:
            async with self._status_lock:
                if self._status is None:
                    await self._read_status(client)
            if self._status is None:
                raise ServiceUnavailableError(f"service {self.name}: no status answer")
        elif time.monotonic() - self._status[0] >= _STATUS_TTL_S:
            self._background("status", self._read_status(client))
        return self._status[1]

    async def _read_status(self, client: AsyncClient) -> None:
        """Ask the service's status; keep it if ``client`` is still the link's."""
        try:
            answer = await client.status()
        except ServiceError as exc:
            if self._status is None:
                raise ServiceUnavailableError(str(exc)) from None
            return
        if client is self._client:
            self._status = (time.monotonic(), answer)

    # --- subscribers --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[Mailbox]:
        """A mailbox that receives every snapshot published while the context is open."""
        box = Mailbox()
        if self.closing:
            box.close()
        self._mailboxes.add(box)
        try:
            yield box
        finally:
            self._mailboxes.discard(box)

    @property
    def subscribers(self) -> int:
        """Open subscriptions."""
        return len(self._mailboxes)

    def facts(self) -> dict[str, Any]:
        """The link's own state, for the status and health answers."""
        latest = self.latest
        return {
            "service": self.name,
            "state": self.state,
            "reason": self.reason,
            "snapshot_seq": None if latest is None else latest.seq,
            "snapshot_age_s": None
            if latest is None
            else round((time.monotonic_ns() - latest.received_ns) / 1e9, 3),
            "subscribers": len(self._mailboxes),
            "skipped": sum(b.skipped for b in self._mailboxes),
            "reconnects": self.reconnects,
            "positions_copies": self._copies,
            "positions_renders": self.renders.renders,
        }
