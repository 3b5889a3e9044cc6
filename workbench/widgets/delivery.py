"""Acknowledged delivery to the browser: a view sends its next update only once the browser has
taken the previous one, and stops sending while no browser takes anything (a closed tab).

The kernel cannot tell from its own traffic whether a browser shows a widget. Plain ipywidgets
can still answer: a front-end link (:func:`ipywidgets.jsdlink`) from the view's ``placeholder``
trait (the update's number, sent in the same message as its content) to a :class:`Receipt` (a
model with no view) makes the browser's widget manager copy each number it applied into the
receipt and send it back to the kernel. No JavaScript of ours, no extension.

Until a browser has sent one receipt, updates go out unpaced (a headless run has no browser to
wait for). After that, one update every ``ack_every_s`` is numbered (the others leave the
number as it was, so the browser sends nothing back for them), and at most one numbered update
is in flight: the update after it waits for its receipt (the newest value wins meanwhile), and
after ``pause_after_s`` without it the view counts as paused until a receipt arrives (reopening
the notebook restores the widgets and the link sends the receipt of the last update sent). So
a closed tab gets at most ``ack_every_s`` of updates before its widgets stop, and an open one
costs one receipt a second per widget, not one per update: each receipt is a message to the
kernel, which answers with a busy and an idle status that JupyterLab redraws its kernel
indicators for (with a receipt per update, the desk notebook's four widgets took Chromium from
29% to 61% of a core; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w  # type: ignore[import-untyped]
from traitlets import Unicode

PAUSE_AFTER_S = 3.0
"""Seconds an update may wait for its receipt before the view counts as paused."""

ACK_EVERY_S = 1.0
"""Seconds between two numbered updates (each gets a receipt back) once a browser is seen."""

RENEW_MAX_S = 60.0
"""Longest wait between two renewals of a paused view's receipt, seconds."""


class Receipt(w.Widget):  # type: ignore[misc]
    """A model without a view whose ``value`` the browser sets to the number of the last update
    it applied.

    A bare ``WidgetModel`` of ``@jupyter-widgets/base`` (no layout, no style: one comm of its
    own); its ``value`` is written by a front-end link and read by the kernel, so the kernel
    does not echo it back (``echo_update`` off: a receipt costs one message to the kernel and
    none back).

    Parameters
    ----------
    on_receipt
        Called with the number the browser sent (an int; 0 for anything not a number), at every
        receipt, equal to the previous one or not.
    """

    value = Unicode("").tag(sync=True, echo_update=False)

    def __init__(self, on_receipt: Callable[[int], None]) -> None:
        super().__init__()
        self._on_receipt = on_receipt

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Take a state sent by the browser; a ``value`` in it is a receipt."""
        super().set_state(sync_data)
        if "value" in sync_data:
            text = str(sync_data["value"])
            self._on_receipt(int(text) if text.isdigit() else 0)


class Delivery:
    """Paces one view's updates by the browser's receipts.

    Parameters
    ----------
    view
        The widget whose updates are paced; its ``placeholder`` trait carries each update's
        number (a :class:`ipywidgets.HTML` does not display it).
    pause_after_s
        Seconds without the receipt of the update in flight after which the view is paused.
    ack_every_s
        Seconds between two numbered updates once a browser has sent a receipt (0: every
        update numbered).
    renew_max_s
        Longest wait, seconds, between two renewals of the receipt while paused (the first
        comes ``pause_after_s`` after the pause, then twice as long each time).
    on_change
        Called with no argument when :attr:`paused` changes (to redraw a status line).

    Attributes
    ----------
    sent
        Number of the last numbered update sent (0: none yet); numbers count up from 1.
    received
        Highest number the browser has sent back (0: none yet).
    receipts
        Receipts received (a browser applying an update, or restoring the view).
    renewals
        Times the receipt and its link were replaced while paused.

    Notes
    -----
    While a cell awaits (``await run_for(60)``), ipykernel handles a receipt without the
    ``idle`` status the browser's widget manager waits for before it sends that widget's next
    message, so later receipts stay in the browser. While paused, the receipt and its link are
    therefore replaced by new ones (a new link sends its receipt as soon as the browser creates
    it), after ``pause_after_s``, then at doubling intervals up to ``renew_max_s``: a closed tab
    costs four small messages (two closes, two opens) per renewal, nothing else.
    """

    def __init__(
        self,
        view: w.DOMWidget,
        *,
        pause_after_s: float = PAUSE_AFTER_S,
        renew_max_s: float = RENEW_MAX_S,
        ack_every_s: float = ACK_EVERY_S,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.view = view
        self.pause_after_s = pause_after_s
        self.ack_every_s = ack_every_s
        self.renew_max_s = renew_max_s
        self.on_change = on_change
        self.sent = 0
        self.received = 0
        self.receipts = 0
        self.renewals = 0
        self.sent_at = math.nan
        self.paused = False
        self._renew_in = pause_after_s
        self._renew_at = math.inf
        self._event: asyncio.Event | None = None
        self.receipt, self.link = self._attach()

    def _attach(self) -> tuple[Receipt, w.DirectionalLink]:
        receipt = Receipt(self._received)
        return receipt, w.jsdlink((self.view, "placeholder"), (receipt, "value"))

    @property
    def paced(self) -> bool:
        """Whether a browser has sent a receipt (until then updates are not paced)."""
        return self.receipts > 0

    @property
    def in_flight(self) -> bool:
        """Whether the last update sent waits for its receipt."""
        return self.paced and self.received < self.sent

    def stamp(self) -> str:
        """The number to set as the view's ``placeholder`` in the same ``hold_sync()`` as an
        update's content: a new one before the first receipt and then ``ack_every_s`` after
        the last, else the last (no change: no receipt)."""
        now = time.monotonic()
        if not self.paced or self.sent == 0 or now - self.sent_at >= self.ack_every_s:
            self.sent += 1
            self.sent_at = now
        return str(self.sent)

    def _received(self, number: int) -> None:
        self.receipts += 1
        self.received = max(self.received, min(number, self.sent))
        self._renew_in = self.pause_after_s
        if self._event is not None:
            self._event.set()
        self._pause(False)

    def _pause(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self._renew_at = time.monotonic() + self._renew_in if paused else math.inf
            if self.on_change is not None:
                self.on_change()

    def renew(self) -> None:
        """Replace the receipt and its link by new ones (the browser creates them and the new
        link sends the receipt of the last update it applied)."""
        old = (self.link, self.receipt)
        self.receipt, self.link = self._attach()
        for widget in old:
            widget.close()
        self.renewals += 1

    async def turn(self) -> None:
        """Return when the next update may be sent: at once while unpaced or with nothing in
        flight, else when the receipt of the update in flight arrives (paused meanwhile once
        ``pause_after_s`` has passed since it was sent, renewing the receipt as it waits)."""
        if self._event is None:
            self._event = asyncio.Event()
        while self.in_flight:
            self._event.clear()
            now = time.monotonic()
            if not self.paused and now >= self.sent_at + self.pause_after_s:
                self._pause(True)
            if self.paused and now >= self._renew_at:
                self.renew()
                self._renew_in = min(2.0 * self._renew_in, self.renew_max_s)
                self._renew_at = now + self._renew_in
            until = self._renew_at if self.paused else self.sent_at + self.pause_after_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), max(until - now, 0.0))

    def describe(self) -> str:
        """What the browser has taken, in a few words (for a status line or a print)."""
        if not self.paced:
            return "no browser has shown it yet"
        if self.paused:
            waited = time.monotonic() - self.sent_at
            return (
                f"paused: update {self.sent} not taken by a browser for {waited:.0f} s "
                "(resumes when one shows it)"
            )
        return f"the browser took update {self.received} of {self.sent}"

    def close(self) -> None:
        """Close the link and the receipt (the view is the caller's)."""
        self.link.close()
        self.receipt.close()
