"""The plumbing every live widget shares: a latest-value mailbox, a throttled consumer, and a
connection that finds the service by name and reconnects with backoff when it stops.

Everything runs as asyncio tasks on the kernel's own event loop, so widgets stay live while the
kernel is idle and never block the next cell: no thread, no busy loop, no blocking socket call.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, TypeVar

import ipywidgets as w  # type: ignore[import-untyped]

from workbench.client import Client, ServiceError, SnapshotView, connect
from workbench.widgets.delivery import Delivery

T = TypeVar("T")

PACING_ENV = "WORKBENCH_WIDGET_PACING"
"""Environment variable: ``0`` turns the browser's pacing of the live widgets off (the desk
dashboard sets it: Voila's widget manager holds back the receipts, so paced widgets would redraw
only at each renewal of their receipt; Voila ends the kernel when its page closes, so no
backlog builds there)."""


def paced() -> bool:
    """Whether live widgets wait for the browser's receipts (:data:`PACING_ENV`)."""
    return os.environ.get(PACING_ENV, "1") != "0"


REQUEST_TIMEOUT_S = 15.0
"""Timeout of a widget's request to the service, seconds (a profile adds its own length)."""


class Latest(Generic[T]):
    """A one-slot mailbox: :meth:`put` overwrites, :meth:`get` waits for the newest value.

    A slow consumer never builds a backlog: whatever arrived while it was busy is replaced by the
    newest value (``skipped`` counts the values nobody saw).

    Examples
    --------
    >>> box: Latest[int] = Latest()
    >>> for i in range(5):
    ...     box.put(i)
    >>> asyncio.run(box.get()), box.skipped
    (4, 4)
    """

    def __init__(self) -> None:
        self._value: T | None = None
        self._full = False
        self._event: asyncio.Event | None = None
        self.offered = 0
        self.taken = 0

    def _ev(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def put(self, value: T) -> None:
        """Store ``value``, replacing any value not yet taken."""
        self._value = value
        self._full = True
        self.offered += 1
        if self._event is not None:
            self._event.set()

    @property
    def pending(self) -> bool:
        """Whether a value waits to be taken."""
        return self._full

    @property
    def skipped(self) -> int:
        """Values replaced before anyone took them."""
        return self.offered - self.taken - (1 if self._full else 0)

    def take(self) -> T | None:
        """The waiting value (None if there is none), without waiting."""
        if not self._full:
            return None
        value = self._value
        self._full = False
        self._value = None
        self.taken += 1
        return value

    async def get(self) -> T:
        """Wait for a value and take it."""
        ev = self._ev()
        while not self._full:
            ev.clear()
            await ev.wait()
        value = self._value
        self._full = False
        self._value = None
        self.taken += 1
        return value  # type: ignore[return-value]


async def throttled(
    box: Latest[T],
    apply: Callable[[T], Awaitable[None] | None],
    *,
    max_hz: float,
    debounce_s: float = 0.0,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Apply the newest value of ``box`` at most ``max_hz`` times a second, forever.

    With ``debounce_s`` > 0 it waits that long after a value arrives and takes the newest one
    then (so a dragged slider sends one request when it stops, not one per pixel). With a
    ``gate`` (such as :meth:`workbench.widgets.delivery.Delivery.turn`) it awaits ``gate()``
    before it takes each value, so values that arrive while the gate is shut are skipped but
    the newest.
    """
    period = 1.0 / max_hz if max_hz > 0 else 0.0
    while True:
        if gate is not None:
            await gate()
        value = await box.get()
        if debounce_s > 0:
            while True:
                await asyncio.sleep(debounce_s)
                newer = box.take()
                if newer is None:
                    break
                value = newer
        t0 = time.monotonic()
        out = apply(value)
        if inspect.isawaitable(out):
            await out
        rest = period - (time.monotonic() - t0)
        if rest > 0:
            await asyncio.sleep(rest)


class Connection:
    """A service found by name; reconnects by itself (with backoff) after the service stops.

    Parameters
    ----------
    service
        A :class:`Client`, a service name, or None (the only running service).
    run_root
        Where services write their descriptors (default: the client's, or the usual root).
    on_state
        Called with ``(state, text)`` whenever the state changes; states are ``connecting``,
        ``live`` and ``stopped``.
    backoff_s
        First and largest wait between reconnection attempts, seconds (doubling).
    """

    def __init__(
        self,
        service: Client | str | None = None,
        *,
        run_root: str | Path | None = None,
        on_state: Callable[[str, str], None] | None = None,
        backoff_s: tuple[float, float] = (0.25, 4.0),
    ) -> None:
        self._client: Client | None = None
        if isinstance(service, Client):
            self._client = service
            self.name: str | None = service.name
            run_root = run_root or Path(service.descriptor.config.run_dir).parent
            self._owned = False
        else:
            self.name = service
            self._owned = True
        self.run_root = run_root
        self.on_state = on_state
        self.backoff_s = backoff_s
        self.state = "connecting"
        self.attempts = 0
        self.reconnects = 0
        self._closed = False
        if self._client is not None:
            self._set("live", self._live_text(self._client))

    @staticmethod
    def _live_text(client: Client) -> str:
        return f"service {client.name!r} live (pid {client.descriptor.pid})"

    def _set(self, state: str, text: str) -> None:
        self.state = state
        if self.on_state is not None:
            self.on_state(state, text)

    def _drop(self, reason: str) -> None:
        """Forget the current client (its service stopped)."""
        client, self._client = self._client, None
        if client is not None and self._owned:
            with contextlib.suppress(Exception):
                client.close()
        self._owned = True  # every later client is ours to close
        if not self._closed:
            self._set("stopped", f"service {self.name or ''} stopped — reconnecting… ({reason})")

    async def client(self) -> Client:
        """The live client, waiting (with backoff) until the service is reachable."""
        if self._client is not None:
            return self._client
        wait = self.backoff_s[0]
        while True:
            self.attempts += 1
            try:
                client = connect(self.name, run_root=self.run_root)
            except ServiceError as exc:
                if self.state != "stopped":
                    self._set("connecting", f"connecting… ({exc})")
            else:
                client.timeout_s = REQUEST_TIMEOUT_S
                try:
                    await client.aping(timeout_s=2.0)
                except ServiceError:
                    client.close()
                else:
                    if self.name is None:
                        self.name = client.name
                    if self.state == "stopped":
                        self.reconnects += 1
                    self._client = client
                    self._set("live", self._live_text(client))
                    return client
            await asyncio.sleep(wait)
            wait = min(wait * 2.0, self.backoff_s[1])

    async def healthy(self, client: Client) -> bool:
        """Whether ``client``'s service still answers (its process alive, a status reply)."""
        if not client.alive():
            return False
        try:
            await client.aping(timeout_s=2.0)
        except ServiceError:
            return False
        return True

    def failed(self, client: Client, error: BaseException) -> None:
        """A request on ``client`` failed: if its service is gone, start reconnecting."""
        if self._client is client and not client.alive():
            self._drop(str(error) or type(error).__name__)

    async def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        """Run a request, reconnecting and retrying while the service is down."""
        while True:
            client = await self.client()
            try:
                return await fn(client)
            except ServiceError as exc:
                if await self.healthy(client):
                    raise
                if self._client is client:
                    self._drop(str(exc))

    async def snapshots(self, *, stall_s: float = 3.0) -> AsyncIterator[SnapshotView]:
        """Snapshots as published, across restarts of the service (a gap while it is down).

        When no snapshot arrives for ``stall_s`` seconds the service is asked for its status;
        if it does not answer, the connection is dropped and re-made.
        """
        while not self._closed:
            client = await self.client()
            stream = client.snapshots()
            nxt: asyncio.Future[SnapshotView] | None = None
            try:
                while True:
                    if nxt is None:
                        nxt = asyncio.ensure_future(anext(stream))
                    done, _ = await asyncio.wait({nxt}, timeout=stall_s)
                    if done:
                        snap = nxt.result()
                        nxt = None
                        yield snap
                    elif not await self.healthy(client):
                        self._drop(f"no snapshot for {stall_s:.0f} s")
                        break
            finally:
                if nxt is not None:
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                await stream.aclose()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Release the client's sockets (the service keeps running)."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owned:
            client.close()


_STATE_STYLE = {
    "live": ("#1a7f37", "●"),
    "connecting": ("#9a6700", "◌"),
    "stopped": ("#cf222e", "■"),
    "paused": ("#9a6700", "⏸"),
}


def status_html(state: str, text: str) -> str:
    """The small coloured status line every widget shows."""
    colour, mark = _STATE_STYLE.get(state, ("#57606a", "?"))
    return f'<span style="color:{colour};font-size:90%">{mark} {html.escape(text)}</span>'


class LiveWidget:
    """Base of the live widgets: a :class:`Connection`, a status line, tasks on the kernel loop.

    Subclasses build ``self.widget`` (an ipywidgets box) and start their loops with
    :meth:`_spawn`; a view redrawn from a stream draws through :meth:`_paced`, so a closed tab
    or a slow browser costs the kernel and JupyterLab no backlog. Display the object itself
    (``display(w)`` or as a cell's last value).
    """

    def __init__(self, service: Client | str | None = None, *, run_root: str | None = None):
        self.status = w.HTML(value=status_html("connecting", "connecting…"))
        self.error = ""
        self._state = ("connecting", "connecting…")
        self._delivery: Delivery | None = None
        self.conn = Connection(service, run_root=run_root, on_state=self._on_state)
        self._tasks: list[asyncio.Task[Any]] = []
        self.widget: Any = w.VBox([self.status])

    def _on_state(self, state: str, text: str) -> None:
        self._state = (state, text)
        self._show_state()

    def _show_state(self) -> None:
        if self._delivery is not None and self._delivery.paused:
            self.status.value = status_html("paused", self._delivery.describe())
        else:
            self.status.value = status_html(*self._state)

    @property
    def pacing(self) -> Delivery | None:
        """The pacing of this widget's redraws by the browser's receipts (None: unpaced)."""
        return self._delivery

    def _pacing(self) -> Delivery:
        if self._delivery is None:
            self._delivery = Delivery(self.status, on_change=self._show_state)
        return self._delivery

    async def _turn(self) -> None:
        """Return when the next redraw may be sent (:meth:`Delivery.turn` of the status line;
        at once with :data:`PACING_ENV` set to ``0``)."""
        if paced():
            await self._pacing().turn()

    def _stamp(self) -> None:
        """Mark the end of a redraw: a number in the status line's ``placeholder`` that the
        browser sends back once it has applied everything before it."""
        if paced():
            self.status.placeholder = self._pacing().stamp()

    def _paced(
        self, box: Latest[T], apply: Callable[[T], Awaitable[None] | None], *, max_hz: float
    ) -> Coroutine[Any, Any, None]:
        """:func:`throttled` redraws of ``box`` gated by the browser: each redraw ends with
        :meth:`_stamp` and the next waits for its receipt (:meth:`_turn`); without one for
        :data:`~workbench.widgets.delivery.PAUSE_AFTER_S` the widget pauses (status ``paused``)
        until a browser shows it again (:mod:`workbench.widgets.delivery`)."""

        async def stamped(value: T) -> None:
            out = apply(value)
            if inspect.isawaitable(out):
                await out
            self._stamp()

        return throttled(box, stamped, max_hz=max_hz, gate=self._turn)

    @property
    def state(self) -> str:
        """``connecting``, ``live`` or ``stopped``."""
        return self.conn.state

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task on the running loop (the kernel's, in a notebook)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        task = loop.create_task(coro)
        task.add_done_callback(self._done)
        self._tasks.append(task)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.error = f"{type(exc).__name__}: {exc}"
            self.status.value = status_html("stopped", f"stopped by an error: {self.error}")

    def close(self) -> None:
        """Cancel the widget's tasks and close its sockets (the views keep their last state)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.conn.close()
        if self._delivery is not None:
            self._delivery.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


async def run_for(seconds: float) -> None:
    """Let the widgets work for ``seconds`` (a headless run's bounded wait; ``await`` it)."""
    if seconds > 0:
        await asyncio.sleep(seconds)
