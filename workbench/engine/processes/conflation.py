"""Tick validation, de-duplication and conflation: a pure state machine (no I/O, no clock).

The ingestion process feeds every decoded tick to :meth:`Conflator.offer` with the time it read
it, and asks :meth:`Conflator.due` every few milliseconds which quotes to write to the quote
table. Nothing here knows about sockets, asyncio or shared memory, so tests drive it with
events and times of their choosing.

Quote classes come from the quote id (``docs/formats.md``):

============== ======================= ============================== ====================
class          ids                     valid values                   window (config field)
============== ======================= ============================== ====================
``fx_spot``    ``FX.EURUSD``           > 0, jump ≤ 50% of the last    ``fx_spot_ms``
``fx_vol``     ``FXVOL.…``             0 < vol ≤ 5.0 (500 vol points) ``fx_vol_ms``
``eq_spot``    ``EQ.AAPL``             > 0, jump ≤ 50% of the last    ``equity_ms``
``eq_vol``     ``EQVOL.…``             0 < vol ≤ 5.0                  ``equity_ms``
``credit``     ``CDX.…``/``ITRAXX.…``  0 < spread ≤ 1.0 (10,000 bp)   ``credit_ms``
``corr``       ``*.CORR``              0 < correlation < 1            ``credit_ms``
``rate``       anything else           -0.20 ≤ rate ≤ 1.00            ``rates_ms``
============== ======================= ============================== ====================

Checks run in this order and the first failure is the reject reason: ``nan``; the value
checks, ``non_positive`` (spots, vols, spreads; rates may be negative) or ``out_of_range``
(infinite, outside the class bounds above, a correlation of 0 or 1 included); then the
sequence, ``out_of_range`` (not in 0 … 2**63 - 1), ``duplicate`` (equal to the last accepted
``seq`` of that quote) or ``out_of_order`` (lower); last the jump check, ``out_of_range`` for
a spot more than ``max_jump`` away from its last accepted value. A spot that really moved that
much is not stuck forever: after ``jump_confirm`` consecutive jump rejects of one quote that
agree with each other (each within ``max_jump`` of the one before), the last of them is
accepted as the new level. Rejected ticks change nothing but the counters (and the jump
confirmation state). ``bad_payload`` and ``unknown_id`` are decided by the caller before a
tick has a quote index and are counted through :meth:`Conflator.reject`.

Conflation: the first accepted update of a quote opens its window, which closes at the next
multiple of the class window on the clock (``(now_ns // window + 1) * window``); later accepted
updates only replace the pending value (latest wins); once the window has closed
:meth:`Conflator.due` returns the quote once with its latest value and seq, and the next
accepted update opens a new window. Closing on a grid rather than a window after each quote's
first update makes every quote of a class flush at the same instants: the workers reprice a
class's moves in one batch a few times a second instead of a trickle of small batches, and no
update waits longer than one window. Credit indices are spread over ``credit_phases`` phases of
their grid (an index's spread and correlation quotes share one): index ``k`` closes at
``((now − φ) // window + 1) · window + φ`` with ``φ`` the ``k mod phases``-th of
:func:`credit_phase_instants` (instants where the other classes flush anyway, the least busy
of them), so the tranche repricing of the indices is spread over the window and lands on the
lightest flushes. A window of 0 flushes at the next :meth:`Conflator.due`.
``now_ns`` must not decrease between calls.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.engine.protocol.config import ConflationConfig

REJECT_REASONS: Final = (
    "bad_payload",
    "unknown_id",
    "nan",
    "non_positive",
    "out_of_range",
    "duplicate",
    "out_of_order",
    "outranked",
)
"""Every reason a tick can be dropped for, in the order of the checks (``outranked``: a polling
source's value of a quote whose higher-priority source is live, :mod:`~.failover`)."""

QUOTE_CLASSES: Final = ("fx_spot", "fx_vol", "eq_spot", "eq_vol", "credit", "corr", "rate")
"""Quote classes; the index in this tuple is the class code of :func:`classify`."""

FX_SPOT, FX_VOL, EQ_SPOT, EQ_VOL, CREDIT, CORR, RATE = range(7)

MAX_VOL: Final = 5.0
"""Largest accepted volatility (decimal per sqrt(year): 500 vol points)."""
MAX_SPREAD: Final = 1.0
"""Largest accepted credit spread (decimal per year: 10,000 bp)."""
RATE_BOUNDS: Final = (-0.20, 1.00)
"""Accepted range of a rate quote (decimal per year), both ends included."""

_NO_SEQ: Final = -(2**63)
NO_SEQ: Final = _NO_SEQ
"""The last accepted sequence number of a quote that has none (the next one is accepted)."""
_SEQ_MAX: Final = 2**63 - 1


def classify(quote_id: str) -> int:
    """The class code (index into :data:`QUOTE_CLASSES`) of a quote id.

    Examples
    --------
    >>> [QUOTE_CLASSES[classify(q)] for q in ("FX.EURUSD", "CDX.IG.5Y.CORR", "USD.SOFR.OIS.5Y")]
    ['fx_spot', 'corr', 'rate']
    """
    if quote_id.endswith(".CORR"):
        return CORR
    head = quote_id.split(".", 1)[0]
    return {
        "FX": FX_SPOT,
        "FXVOL": FX_VOL,
        "EQ": EQ_SPOT,
        "EQVOL": EQ_VOL,
        "CDX": CREDIT,
        "ITRAXX": CREDIT,
    }.get(head, RATE)


def credit_phase_instants(config: ConflationConfig) -> list[int]:
    """Where in the credit grid (ns past each multiple of the credit window) each of the
    ``credit_phases`` phases closes.

    A phase joins a flush that happens anyway (no extra snapshot): among the instants of the
    other classes' grids that repeat within the credit window, the ones where the fewest other
    classes close (with the defaults: FX spot alone, never the rates, equity or FX vol
    instants), evenly picked. Without such instants the phases are evenly spaced,
    ``k · window / credit_phases``.

    Examples
    --------
    >>> [t // 1_000_000 for t in credit_phase_instants(ConflationConfig())]
    [200, 600, 1200, 1600]
    """
    n = config.credit_phases
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"credit_phases must be a whole number ≥ 1, got {n!r}")
    w = window_ns(CREDIT, config)
    others = [window_ns(c, config) for c in (FX_SPOT, FX_VOL, EQ_SPOT, EQ_VOL, RATE)]
    grids = [g for g in others if g > 0 and w % g == 0]
    load: dict[int, int] = {}
    for g in grids:
        for t in range(0, w, g):
            load[t] = load.get(t, 0) + 1
    if not load:
        return [k * w // n for k in range(n)]
    fewest = min(load.values())
    light = sorted(t for t, classes in load.items() if classes == fewest)
    return [light[k * len(light) // n] for k in range(n)]


def _credit_phases(
    quote_ids: Sequence[str], classes: Sequence[int], config: ConflationConfig
) -> list[int]:
    """Grid phase (ns) of each quote: 0, except credit quotes, whose index (the quote id less a
    ``.CORR`` suffix) takes phase ``credit_phase_instants(config)[k mod phases]`` for the k-th
    index of the market."""
    phases = [0] * len(quote_ids)
    instants = credit_phase_instants(config)
    w = window_ns(CREDIT, config)
    slots: dict[str, int] = {}
    for i, (q, c) in enumerate(zip(quote_ids, classes, strict=True)):
        if c in (CREDIT, CORR) and w > 0:
            key = q.removesuffix(".CORR")
            k = slots.setdefault(key, len(slots))
            phases[i] = instants[k % len(instants)]
    return phases


def next_flush_ns(now_ns: int, config: ConflationConfig) -> int:
    """The first grid instant after ``now_ns`` (monotonic ns) where some class's window may
    close: a flush when that class has quotes pending (credit at its phases).

    Examples
    --------
    >>> ms = 1_000_000
    >>> [next_flush_ns(t * ms, ConflationConfig()) // ms for t in (0, 200, 210, 499, 760)]
    [200, 250, 250, 500, 800]
    """
    best = -1
    for quote_class, phases in (
        (FX_SPOT, (0,)), (FX_VOL, (0,)), (EQ_SPOT, (0,)), (RATE, (0,)),
        (CREDIT, tuple(credit_phase_instants(config))),
    ):  # fmt: skip
        w = window_ns(quote_class, config)
        if w <= 0:
            continue
        for phi in phases:
            at = ((now_ns - phi) // w + 1) * w + phi
            best = at if best < 0 else min(best, at)
    return best if best >= 0 else now_ns


def window_ns(quote_class: int, config: ConflationConfig) -> int:
    """The conflation window of a class in nanoseconds."""
    ms = (
        config.fx_spot_ms,
        config.fx_vol_ms,
        config.equity_ms,
        config.equity_ms,
        config.credit_ms,
        config.credit_ms,
        config.rates_ms,
    )[quote_class]
    if not ms >= 0.0 or math.isinf(ms):
        raise ValueError(f"conflation window of {QUOTE_CLASSES[quote_class]}: {ms!r} ms")
    return round(ms * 1e6)


class Conflator:
    """Validates, de-duplicates and conflates ticks of a fixed set of quotes.

    Parameters
    ----------
    quote_ids
        Every quote id, in quote-table order (a tick is offered by its index in this list).
    initial
        The current value of each quote (the reference of the spot jump check); a value that
        is not finite and positive disables the jump check until a value is accepted.
    config
        Conflation windows per class, milliseconds.
    max_jump
        Largest accepted relative move of a spot (FX or equity) from its last accepted value
        (0.5 = 50%).
    jump_confirm
        Consecutive consistent jump rejects of one quote after which the level is accepted;
        0 disables this (a jumped spot then stays rejected).
    """

    def __init__(
        self,
        quote_ids: Sequence[str],
        initial: Sequence[float] | FloatArray,
        config: ConflationConfig,
        *,
        max_jump: float = 0.5,
        jump_confirm: int = 3,
    ) -> None:
        n = len(quote_ids)
        values = np.asarray(initial, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError(f"initial has shape {values.shape}, expected ({n},)")
        if not max_jump > 0.0:
            raise ValueError(f"max_jump must be positive, got {max_jump!r}")
        self.quote_ids = tuple(quote_ids)
        self.max_jump = float(max_jump)
        self.jump_confirm = int(jump_confirm)
        self._class = [classify(q) for q in self.quote_ids]
        windows = [window_ns(c, config) for c in range(len(QUOTE_CLASSES))]
        self._window = [windows[c] for c in self._class]
        self._phase = _credit_phases(self.quote_ids, self._class, config)
        # one FIFO per lane (class, phase): the deadlines of a lane rise with time
        lanes = sorted({(c, self._phase[i]) for i, c in enumerate(self._class)})
        lane_of = {lane: k for k, lane in enumerate(lanes)}
        self._lane = [lane_of[(c, self._phase[i])] for i, c in enumerate(self._class)]
        self._grids = sorted({(windows[c], ph) for c, ph in lanes})  # (window, phase) in use
        self._last = [float(v) for v in values]  # last accepted value (jump reference)
        self._seq = [_NO_SEQ] * n  # last accepted seq
        self._pending = [False] * n
        self._pend_value = [math.nan] * n
        self._pend_seq = [0] * n
        self._jump_value = [math.nan] * n
        self._jump_count = [0] * n
        self._queues: list[deque[tuple[int, int]]] = [deque() for _ in lanes]
        self.offered = 0
        self.accepted = 0
        self.flushed = 0
        self.gaps = 0  # accepted ticks whose seq skipped past the quote's last one + 1
        self.gap_ticks = 0  # the seqs skipped in those gaps
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)

    # --- events ---------------------------------------------------------------------------

    def reject(self, reason: str) -> None:
        """Count a tick dropped before it had a quote index (``bad_payload``, ``unknown_id``)."""
        self.offered += 1
        self.rejected[reason] += 1

    def offer(self, index: int, value: float, seq: int, now_ns: int) -> str | None:
        """Offer one tick of quote ``index`` read at ``now_ns`` (monotonic, nanoseconds).

        Returns
        -------
        str or None
            None if accepted, else the reject reason (one of :data:`REJECT_REASONS`).
        """
        self.offered += 1
        reason = self._check(index, value, seq)
        if reason is not None:
            self.rejected[reason] += 1
            return reason
        self.accepted += 1
        last_seq = self._seq[index]
        if last_seq != _NO_SEQ and seq > last_seq + 1:
            self.gaps += 1  # the publisher's seqs of this quote skipped: ticks lost upstream
            self.gap_ticks += seq - last_seq - 1
        self._last[index] = value
        self._seq[index] = seq
        self._jump_count[index] = 0
        self._pend_value[index] = value
        self._pend_seq[index] = seq
        if not self._pending[index]:
            self._pending[index] = True
            w = self._window[index]
            ph = self._phase[index]
            deadline = ((now_ns - ph) // w + 1) * w + ph if w > 0 else now_ns
            self._queues[self._lane[index]].append((deadline, index))
        return None

    def offer_from(
        self, seqs: list[int], index: int, value: float, seq: int, now_ns: int
    ) -> str | None:
        """Offer one value of quote ``index`` from a source with its own sequence numbers.

        The same checks and conflation as :meth:`offer`, except that ``seq`` is compared with
        (and, if accepted, stored in) ``seqs[index]``, the source's last accepted sequence
        number of each quote, never with the feed's. ``seqs`` starts as
        :meth:`new_seqs`. A poll sees only a quote's latest value, so skipped numbers are not
        counted as ``gaps``.
        """
        feed_seq, gaps, gap_ticks = self._seq[index], self.gaps, self.gap_ticks
        self._seq[index] = seqs[index]
        reason = self.offer(index, value, seq, now_ns)
        seqs[index] = self._seq[index]
        self._seq[index], self.gaps, self.gap_ticks = feed_seq, gaps, gap_ticks
        return reason

    def new_seqs(self) -> list[int]:
        """Sequence numbers of a source that has sent nothing yet (for :meth:`offer_from`)."""
        return [_NO_SEQ] * len(self._seq)

    def _check(self, index: int, value: float, seq: int) -> str | None:
        if value != value:
            return "nan"
        c = self._class[index]
        if c == RATE:
            if not RATE_BOUNDS[0] <= value <= RATE_BOUNDS[1]:
                return "out_of_range"
        elif c == CORR:
            if not 0.0 < value < 1.0:
                return "out_of_range"
        elif value <= 0.0:
            return "non_positive"
        elif c in (FX_VOL, EQ_VOL):
            if value > MAX_VOL:
                return "out_of_range"
        elif c == CREDIT:
            if value > MAX_SPREAD:
                return "out_of_range"
        elif math.isinf(value):
            return "out_of_range"
        last_seq = self._seq[index]
        if not 0 <= seq <= _SEQ_MAX:
            return "out_of_range"
        if seq == last_seq:
            return "duplicate"
        if seq < last_seq:
            return "out_of_order"
        if c in (FX_SPOT, EQ_SPOT):
            ref = self._last[index]
            if 0.0 < ref < math.inf and abs(value / ref - 1.0) > self.max_jump:
                return self._jump(index, value)
        return None

    def _jump(self, index: int, value: float) -> str | None:
        """A spot jumped: reject it unless enough consistent jumps confirm the new level."""
        before = self._jump_value[index]
        if self._jump_count[index] > 0 and abs(value / before - 1.0) <= self.max_jump:
            self._jump_count[index] += 1
        else:
            self._jump_count[index] = 1
        self._jump_value[index] = value
        if self.jump_confirm > 0 and self._jump_count[index] >= self.jump_confirm:
            return None
        return "out_of_range"

    def due(self, now_ns: int) -> tuple[IntArray, FloatArray, IntArray]:
        """Quotes whose window has expired by ``now_ns``: (indices, latest values, their seqs).

        Each returned quote leaves the pending set; indices are in no particular order.
        """
        out: list[int] = []
        for queue in self._queues:
            while queue and queue[0][0] <= now_ns:
                out.append(queue.popleft()[1])
        pending = self._pending
        for i in out:
            pending[i] = False
        self.flushed += len(out)
        idx = np.fromiter(out, dtype=np.int64, count=len(out))
        values = np.fromiter((self._pend_value[i] for i in out), dtype=np.float64, count=len(out))
        seqs = np.fromiter((self._pend_seq[i] for i in out), dtype=np.int64, count=len(out))
        return idx, values, seqs

    # --- state ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Quotes waiting for their window to expire."""
        return sum(len(q) for q in self._queues)

    @property
    def rejected_total(self) -> int:
        """Ticks dropped for any reason."""
        return sum(self.rejected.values())

    @property
    def conflation_ratio(self) -> float:
        """Accepted ticks per flushed quote value (0.0 before the first flush)."""
        return self.accepted / self.flushed if self.flushed else 0.0

    def next_flush_ns(self, now_ns: int) -> int:
        """The earliest instant after ``now_ns`` at which a window can close — of a quote
        already pending or of one a tick may open meanwhile (windows close on their class's
        grid): the flusher can sleep until then. ``now_ns`` when a class has a 0 window.

        Examples
        --------
        >>> c = Conflator(["FX.EURUSD", "USD.SOFR.OIS.1Y"], [1.1, 0.04], ConflationConfig())
        >>> c.next_flush_ns(1_150_000_000), c.next_flush_ns(1_210_000_000)
        (1200000000, 1250000000)
        """
        if not self._grids or self._grids[0][0] == 0:
            return now_ns
        return min(((now_ns - ph) // w + 1) * w + ph for w, ph in self._grids)

    def stats(self) -> dict[str, float]:
        """Counters for heartbeats and metrics (``rejected.<reason>`` per reason)."""
        out: dict[str, float] = {
            "offered": float(self.offered),
            "accepted": float(self.accepted),
            "rejected": float(self.rejected_total),
            "flushed": float(self.flushed),
            "pending": float(self.pending),
            "conflation_ratio": self.conflation_ratio,
            "gaps": float(self.gaps),
            "gap_ticks": float(self.gap_ticks),
        }
        for reason, count in self.rejected.items():
            out[f"rejected.{reason}"] = float(count)
        return out
