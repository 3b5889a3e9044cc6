"""Every message that crosses a socket: frozen msgspec structs, msgpack on the wire, no pickle.

Each family is a tagged union (``op`` field) so a receiver decodes with one typed decoder and a
bad or foreign payload is a :class:`msgspec.DecodeError`, never code execution. Tables travel as
Arrow IPC stream bytes (raw column buffers plus a schema), read with ``polars.read_ipc_stream``.

Ticks are the one hot message: a msgpack array ``[quote_id, value, seq, sent_ns]`` (see
``docs/ticks.md``), decoded at a few hundred nanoseconds each.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import polars as pl

from workbench.risk.breaches import Breach
from workbench.risk.shocks import AnyShock

SCHEMA_VERSION = 2
"""The wire schema of every message; 2: tables as Arrow IPC streams and every grid grouping in
a snapshot (a client of version 1 could not read them: it is refused by name instead)."""
MAX_CONTROL_BYTES = 1 << 20
"""A control request larger than this is refused with an error reply, undecoded."""
MAX_WIRE_BYTES = 64 * MAX_CONTROL_BYTES
"""A message larger than this closes the sender's connection unread (libzmq's MAXMSGSIZE)."""


class Tick(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One quote update from a feed: an array of exactly four elements.

    ``value`` in the quote's unit (docs/formats.md); ``seq`` increases per quote id at the
    publisher (duplicates and older values are dropped); ``sent_ns`` is the publisher's
    ``time.monotonic_ns()`` (CLOCK_MONOTONIC, comparable between processes of one machine).
    """

    quote_id: str
    value: float
    seq: int
    sent_ns: int


# --- internal notices -----------------------------------------------------------------------


class Notice(msgspec.Struct, frozen=True, tag_field="op", kw_only=True):
    """Base of the service's internal messages."""

    v: int = SCHEMA_VERSION


class QuotesDirty(Notice, frozen=True, tag="dirty"):
    """Ingestion flushed conflated quotes into the quote table (generation ``gen``)."""

    gen: int
    flushed_ns: int
    quotes: tuple[int, ...]


class RiskUpdated(Notice, frozen=True, tag="risk"):
    """A worker has priced the quote table as of generation ``quote_gen``: fresh Greeks written
    for ``repriced`` positions, or 0 (an acknowledgement: nothing of it moved); timings in
    nanoseconds."""

    worker: str
    asset_class: str
    quote_gen: int
    flushed_ns: int
    done_ns: int
    reprice_ns: int
    repriced: int
    failed: dict[str, str] = {}
    """Pricing groups of this worker whose last reprice failed (group key → the error): their
    positions are flagged stale (``reprice failed``) until a reprice of them succeeds."""


class Heartbeat(Notice, frozen=True, tag="hb"):
    """A child process is alive (``ready`` once it has finished its set-up)."""

    role: str
    pid: int
    sent_ns: int
    ready: bool
    stats: dict[str, float] = {}
    histograms: dict[str, list[float]] = {}
    """Latency histograms of this process's boundaries (:mod:`engine.telemetry.histograms` wire
    form)."""


class LossSummary(Notice, frozen=True, tag="loss"):
    """The loss process's last VaR/ES result, for the snapshots (docs/var.md, "Live"):
    ``values`` ``var:<desk>`` (the first VaR level) and ``es:<desk>`` (USD, losses; the firm as
    ``Firm``), ``var_generation``; ``made_ns``: when its quotes were copied, UTC ns."""

    values: dict[str, float]
    made_ns: int


NoticeMessage = QuotesDirty | RiskUpdated | Heartbeat | LossSummary


# --- control plane --------------------------------------------------------------------------


class Request(msgspec.Struct, frozen=True, tag_field="op", kw_only=True):
    """Base of the control requests a client sends."""

    v: int = SCHEMA_VERSION


class StatusRequest(Request, frozen=True, tag="status"):
    """Processes, their state, counters and timings."""


class PositionsRequest(Request, frozen=True, tag="positions"):
    """The per-position risk snapshot (optionally one asset class)."""

    asset_class: str | None = None


class AggregateRequest(Request, frozen=True, tag="aggregate"):
    """Roll-ups of the live risk grouped by ``by`` (any of desk, book, currency, asset_class,
    product, underlying)."""

    by: tuple[str, ...] = ("desk",)


class WhatIfRequest(Request, frozen=True, tag="whatif"):
    """Reprice a shocked copy of the live market on the workers; PnL grouped by ``by``."""

    shocks: tuple[AnyShock, ...]
    by: tuple[str, ...] = ("desk",)


class ProfileRequest(Request, frozen=True, tag="profile"):
    """Profile the named worker for ``seconds`` while it serves live ticks."""

    worker: str
    seconds: float = 2.0


class SetOptionRequest(Request, frozen=True, tag="set_option"):
    """Set a worker option (``spline_cache``: bool) for experiments."""

    worker: str
    option: str
    value: bool | int | float | str


class RestartRequest(Request, frozen=True, tag="restart"):
    """Restart one worker (its positions are marked stale until it is back)."""

    worker: str


class RepriceRequest(Request, frozen=True, tag="reprice"):
    """Re-risk every position now (every quote treated as dirty), Greeks included, on every
    worker in parallel; the reply has each worker's time."""


class LimitsRequest(Request, frozen=True, tag="limits"):
    """Current limit usage and breaches."""


class StopRequest(Request, frozen=True, tag="stop"):
    """Shut the whole service down cleanly."""


class ReloadBookRequest(Request, frozen=True, tag="reload_book"):
    """Take a new book: the booking file at ``path`` (empty: the file the service was started
    with, re-read), validated first, frozen, and swapped in atomically (docs/service.md)."""

    path: str = ""


class MarketRequest(Request, frozen=True, tag="market"):
    """The quotes and curve pillars the service prices at, and for each of ``curves`` its
    zero and 3M forward rates at ``years`` (years from the as-of date), base and with
    ``shocks`` applied."""

    curves: tuple[str, ...] = ()
    shocks: tuple[AnyShock, ...] = ()
    years: tuple[float, ...] = ()


ControlRequest = (
    StatusRequest
    | PositionsRequest
    | AggregateRequest
    | WhatIfRequest
    | ProfileRequest
    | SetOptionRequest
    | RestartRequest
    | RepriceRequest
    | LimitsRequest
    | StopRequest
    | ReloadBookRequest
    | MarketRequest
)


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to any request: ``ok`` or an ``error`` naming what was wrong."""

    ok: bool
    error: str | None = None
    data: dict[str, Any] = {}
    tables: dict[str, bytes] = {}
    v: int = SCHEMA_VERSION


SNAPSHOT_GROUPINGS: tuple[tuple[str, ...], ...] = (
    (),
    ("desk",),
    ("asset_class",),
    ("desk", "currency"),
    ("book",),
    ("currency",),
    ("desk", "asset_class"),
    ("product",),
    ("underlying",),
)
"""The groupings whose roll-up every :class:`Snapshot` carries (the grid's choices), each under
:func:`table_name`."""


def table_name(by: Sequence[str]) -> str:
    """The :class:`Snapshot` table of the roll-up grouped ``by``: the group columns joined by
    commas (``"desk,currency"``), ``"firm"`` for no group column."""
    return ",".join(by) if by else "firm"


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An aggregated view published by the aggregator (≤ 10 per second).

    ``tables`` (Arrow IPC): the roll-up of every grouping of :data:`SNAPSHOT_GROUPINGS` under
    its :func:`table_name` (``"firm"``, ``"desk"``, ``"asset_class"``, ``"desk,currency"``, …;
    the columns of ``risk.aggregation.rollup``) and ``"limits"`` (the limit usage).
    """

    seq: int
    made_ns: int
    tables: dict[str, bytes]
    breaches: tuple[Breach, ...] = ()
    stats: dict[str, float] = {}
    v: int = SCHEMA_VERSION


# --- worker-side requests (aggregator → worker) -------------------------------------------


class WorkerRequest(msgspec.Struct, frozen=True, tag_field="op", kw_only=True):
    """Requests a worker answers on its own socket."""

    v: int = SCHEMA_VERSION


class WorkerWhatIf(WorkerRequest, frozen=True, tag="whatif"):
    """Price the worker's positions on the live market with ``shocks`` applied (PV only)."""

    shocks: tuple[AnyShock, ...]


class WorkerProfile(WorkerRequest, frozen=True, tag="profile"):
    """Run the profiler for ``seconds`` of live work."""

    seconds: float


class WorkerSetOption(WorkerRequest, frozen=True, tag="set_option"):
    """Set an option of the worker."""

    option: str
    value: bool | int | float | str


class WorkerStats(WorkerRequest, frozen=True, tag="stats"):
    """Stage timings and cache counters."""


class WorkerReprice(WorkerRequest, frozen=True, tag="reprice"):
    """Reprice every position of the worker on its live market, caches dropped first, and
    write the results."""


class WorkerMarket(WorkerRequest, frozen=True, tag="market"):
    """:class:`MarketRequest`, answered from the market the worker last priced."""

    curves: tuple[str, ...] = ()
    shocks: tuple[AnyShock, ...] = ()
    years: tuple[float, ...] = ()


AnyWorkerRequest = (
    WorkerWhatIf | WorkerProfile | WorkerSetOption | WorkerStats | WorkerReprice | WorkerMarket
)


# --- codecs ---------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
tick_decoder = msgspec.msgpack.Decoder(Tick)
notice_decoder = msgspec.msgpack.Decoder(NoticeMessage)
request_decoder = msgspec.msgpack.Decoder(ControlRequest)
worker_request_decoder = msgspec.msgpack.Decoder(AnyWorkerRequest)
reply_decoder = msgspec.msgpack.Decoder(Reply)
snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode(message: msgspec.Struct) -> bytes:
    """msgpack bytes of any message above."""
    return _encoder.encode(message)


class VersionError(ValueError):
    """A message of another schema version: refused, never decoded as the current one."""


def check_version(message: msgspec.Struct) -> None:
    """Raise :class:`VersionError` unless ``message`` (any struct above with ``v``) is of
    :data:`SCHEMA_VERSION`."""
    v = getattr(message, "v", SCHEMA_VERSION)
    if v != SCHEMA_VERSION:
        raise VersionError(f"schema version {v} refused: this service speaks {SCHEMA_VERSION}")


def decode_request(payload: bytes) -> ControlRequest:
    """A control request, refused (:class:`msgspec.DecodeError` or :class:`VersionError`) when
    it is not one of this schema version."""
    check_size(payload)
    req = request_decoder.decode(payload)
    check_version(req)
    return req


def check_size(payload: bytes) -> None:
    """Raise :class:`msgspec.DecodeError` for a request over :data:`MAX_CONTROL_BYTES`."""
    if len(payload) > MAX_CONTROL_BYTES:
        raise msgspec.DecodeError(
            f"request of {len(payload):,} bytes refused: larger than {MAX_CONTROL_BYTES:,}"
        )


_IPC_FILE_MAGIC = b"ARROW1"


def frame_to_bytes(frame: pl.DataFrame) -> bytes:
    """A Polars frame as Arrow IPC stream bytes (raw buffers, no pickle; the stream format
    writes and reads a small table ~10x faster than the file format)."""
    sink = io.BytesIO()
    frame.write_ipc_stream(sink, compression="uncompressed")
    return sink.getvalue()


def bytes_to_frame(data: bytes) -> pl.DataFrame:
    """The inverse of :func:`frame_to_bytes` (Arrow IPC file bytes are read too)."""
    if data[: len(_IPC_FILE_MAGIC)] == _IPC_FILE_MAGIC:
        return pl.read_ipc(io.BytesIO(data))
    return pl.read_ipc_stream(io.BytesIO(data))


def error_reply(message: str) -> Reply:
    """A failed request's answer."""
    return Reply(ok=False, error=message)


Role = Literal["feed", "ingest", "worker", "aggregator", "supervisor"]


# --- the live loss process (client → loss) ---------------------------------------------------


class LossRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Ask the live loss process (docs/var.md, "Live") for its last ``"var"`` or ``"stress"``
    result, or for an ``"explain"`` of the PnL since ``since_ns`` (UTC ns since the epoch;
    None: the service's first quotes of the UTC day)."""

    what: Literal["var", "stress", "explain"]
    since_ns: int | None = None
    v: int = SCHEMA_VERSION


loss_request_decoder = msgspec.msgpack.Decoder(LossRequest)
