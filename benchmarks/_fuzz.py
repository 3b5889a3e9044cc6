"""Fuzzing the service through its real sockets: generators and drivers shared by
``benchmarks/bench_fuzz.py`` and ``tests/test_fuzz.py`` (issue 12, point 9).

Everything is deterministic from a seed (``random.Random``; nothing reads the clock except
``sent_ns`` and the timeouts).

**Ticks** (:class:`TickFuzzer`): messages of one or more frames, for the ingestion's SUB socket.
Valid ticks (``[quote_id, value, seq, sent_ns]``, :mod:`workbench.engine.protocol.messages`) and
mutations
of them: truncated, extended, arrays of the wrong length, a map instead of an array, each field of
a wrong msgpack type, hostile values for valid ids (NaN with any payload, ±inf, ±0, subnormals,
±1e308, the bounds of each quote class and one ulp past them, spot jumps and confirmed jumps,
integers for floats up to 2**64 - 1), hostile sequence numbers (negative, 2**63 - 1, 2**63 and
beyond, equal, decreasing, far ahead), hostile ``sent_ns``, unknown and overlong ids, ids that
are not UTF-8 or hold NUL, empty frames, multi-part messages (each frame is one tick for the
ingestion), random bytes, random msgpack, and a sweep of frames of every size from 0 up to and
past :data:`~workbench.engine.processes.ingest.MAX_TICK_BYTES` (then 8 KiB … 16 MiB).

**Control requests** (:class:`RequestFuzzer`): for the aggregator's control ROUTER and the
supervisor's ROUTER, one DEALER each: every op with valid and hostile fields (NaN, ±inf, huge
and negative numbers, unknown and near-miss names, empty, overlong and non-ASCII strings,
repeated group columns, wrong types), unknown ops, other schema versions, truncated, bit-flipped
and garbage msgpack, non-map msgpack, extra frames, a missing delimiter frame, large payloads
under :data:`~workbench.engine.protocol.messages.MAX_CONTROL_BYTES` and oversize ones past it.
Requests that legitimately end or change the service are never sent (:meth:`RequestFuzzer.safe`
decodes every candidate as the service would): a stop, a restart of a process that exists, a
reload of a readable book. So a pid that changes, or a restart counted, is a defect.

**Drivers**: :class:`TickModel` replays every frame through the ingestion's own
:class:`~workbench.engine.processes.ingest.TickHandler` in this process (the expected count of each
outcome), :func:`publish_ticks` sends through a PUB socket, paced on the ingestion's ``offered``
counter, :class:`RequestRunner` sends the requests (its own DEALER per request, a window of
them in flight, a deadline per request) and :func:`check` turns what was seen into PASS/FAIL
lines.

Known defects (``KNOWN_DEFECTS``): requests are tagged with the defect they trigger; a run can
leave them out (``skip_defects``) to test everything else.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
import numpy as np
import zmq

from workbench.engine.processes.conflation import (
    CORR,
    CREDIT,
    EQ_SPOT,
    EQ_VOL,
    FX_SPOT,
    FX_VOL,
    RATE,
    REJECT_REASONS,
    Conflator,
    classify,
)
from workbench.engine.processes.ingest import MAX_TICK_BYTES, TickHandler
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ConflationConfig
from workbench.engine.transport.shm import pid_alive

KNOWN_DEFECTS: Final[dict[str, str]] = {}
"""Defects a run can leave out (tag → what happens). Empty: the six the first runs found (a
reload path holding a NUL, a grouping repeating a column in an aggregate and in a what-if, a
profile of NaN seconds, a what-if too slow for the workers' heartbeats, an oversize request
left unanswered) are fixed, and each has its regression test in tests/test_fuzz.py."""
"""Defects of the service found by this fuzzer: tag → what happens (see tests/test_fuzz.py)."""

# --- raw msgpack ----------------------------------------------------------------------------

_enc = msgspec.msgpack.Encoder()
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1


def pack(obj: Any) -> bytes:
    """msgpack bytes of a plain Python object (lists, dicts, str, bytes, numbers, None)."""
    return _enc.encode(obj)


def raw_str(data: bytes) -> bytes:
    """A msgpack str holding ``data`` as is (not necessarily UTF-8)."""
    n = len(data)
    if n < 32:
        return bytes([0xA0 | n]) + data
    if n < 256:
        return b"\xd9" + bytes([n]) + data
    if n < 65536:
        return b"\xda" + struct.pack(">H", n) + data
    return b"\xdb" + struct.pack(">I", n) + data


def raw_array(items: Sequence[bytes]) -> bytes:
    """A msgpack array of already encoded items."""
    n = len(items)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 65536:
        head = b"\xdc" + struct.pack(">H", n)
    else:
        head = b"\xdd" + struct.pack(">I", n)
    return head + b"".join(items)


def raw_f64(bits: int) -> bytes:
    """A msgpack float64 with these exact bits (NaN payloads, negative NaN …)."""
    return b"\xcb" + struct.pack(">Q", bits)


def raw_f32(x: float) -> bytes:
    """A msgpack float32 (msgspec accepts it for a float field)."""
    return b"\xca" + struct.pack(">f", x)


def raw_int(x: int, width: str) -> bytes:
    """A msgpack int in a chosen (possibly non-minimal) encoding: u8 … u64, i8 … i64."""
    fmt = {
        "u8": (0xCC, ">B"),
        "u16": (0xCD, ">H"),
        "u32": (0xCE, ">I"),
        "u64": (0xCF, ">Q"),
        "i8": (0xD0, ">b"),
        "i16": (0xD1, ">h"),
        "i32": (0xD2, ">i"),
        "i64": (0xD3, ">q"),
    }
    code, spec = fmt[width]
    return bytes([code]) + struct.pack(spec, x)


def random_object(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value (nested up to 3 levels)."""
    k = rng.randrange(12 if depth < 3 else 9)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.choice(
            [
                0,
                1,
                -1,
                127,
                128,
                255,
                256,
                65535,
                65536,
                _INT64_MAX,
                _INT64_MIN,
                _UINT64_MAX,
                rng.randrange(-(2**40), 2**40),
            ]
        )
    if k == 3:
        return rng.choice([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e308, rng.random()])
    if k == 4:
        return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(12)))
    if k == 5:
        return rng.randbytes(rng.randrange(12))
    if k == 6:
        return rng.choice(["FX.EURUSD", "status", "op", "v", "", "\x00", "fx-0"])
    if k == 7:
        return msgspec.msgpack.Ext(rng.randrange(-128, 128), rng.randbytes(rng.randrange(9)))
    if k == 8:
        return rng.choice([1, 2, 0, "1"])
    if k in (9, 10):
        return [random_object(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {_key(rng): random_object(rng, depth + 1) for _ in range(rng.randrange(5))}


def _key(rng: random.Random) -> str:
    """A map key: a name the service knows, or random text."""
    if rng.random() < 0.5:
        return rng.choice(["op", "v", "", "x", "\x00", "status", "worker", "by", "shocks"])
    return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(1, 10)))


def bit_flips(rng: random.Random, data: bytes, n: int) -> bytes:
    """``data`` with ``n`` random bits flipped."""
    out = bytearray(data)
    for _ in range(n):
        if out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


# --- ticks ----------------------------------------------------------------------------------

Message = tuple[str, list[bytes]]
"""A kind (for the report) and the frames of one ZeroMQ message."""

_WRONG_TYPES: Final[tuple[tuple[str, Callable[[random.Random], bytes]], ...]] = (
    ("nil", lambda r: pack(None)),
    ("bool", lambda r: pack(r.random() < 0.5)),
    ("int", lambda r: pack(r.choice([0, 7, -7, _UINT64_MAX]))),
    ("float", lambda r: pack(r.choice([1.0, 1.1, math.nan]))),
    ("str", lambda r: pack(r.choice(["1.1", "", "FX.EURUSD", "nan"]))),
    ("bin", lambda r: pack(r.choice([b"FX.EURUSD", b"", b"\x00" * 8]))),
    ("array", lambda r: pack([1.1])),
    ("map", lambda r: pack({"value": 1.1})),
    ("ext", lambda r: pack(msgspec.msgpack.Ext(1, b"\x00" * 8))),
    ("timestamp", lambda r: pack(msgspec.msgpack.Ext(-1, b"\x00\x00\x00\x00"))),
)
_ACCEPTED_TYPES: Final = ({"str"}, {"int", "float"}, {"int"}, {"int"})
"""The msgpack types each field of a tick accepts (``value``: float or int)."""

_NAN_BITS: Final = (
    0x7FF8000000000000,
    0xFFF8000000000000,
    0x7FF0000000000001,
    0x7FFFFFFFFFFFFFFF,
    0xFFFFFFFFFFFFFFFF,
    0x7FF4000000000000,
)


class TickFuzzer:
    """Random and mutated ticks for a market of ``quote_ids`` whose current values are
    ``values`` (deterministic from ``seed``)."""

    def __init__(
        self,
        quote_ids: Sequence[str],
        values: Sequence[float],
        seed: int,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock  # sent_ns: the only input not from the seed (pass a counter to fix it)
        self.ids = list(quote_ids)
        self.base = [float(v) for v in values]
        self.level = list(self.base)  # spots: the level after a confirmed jump
        self.top = [0] * len(self.ids)  # the highest in-range seq sent per quote
        self.cls = [classify(q) for q in self.ids]
        self.spots = [i for i, c in enumerate(self.cls) if c in (FX_SPOT, EQ_SPOT)]
        self.limit = MAX_TICK_BYTES
        kinds: list[tuple[str, float, Callable[[], Message | list[Message]]]] = [
            ("valid", 30, self._valid),
            ("hostile_value", 16, self._hostile_value),
            ("hostile_seq", 8, self._hostile_seq),
            ("hostile_sent_ns", 2, self._hostile_sent_ns),
            ("wrong_type", 10, self._wrong_type),
            ("int_encodings", 2, self._int_encodings),
            ("truncated", 6, self._truncated),
            ("extended", 3, self._extended),
            ("wrong_length", 4, self._wrong_length),
            ("map", 1, self._as_map),
            ("unknown_id", 6, self._unknown_id),
            ("non_utf8", 3, self._non_utf8),
            ("empty", 1, lambda: ("empty", [b""])),
            ("random_bytes", 3, self._random_bytes),
            ("random_msgpack", 3, self._random_msgpack),
            ("bit_flip", 3, self._bit_flip),
            ("oversize", 0.2, self._oversize),
            ("jump_confirm", 0.3, self._jump_confirm),
        ]
        self._kinds = [k[2] for k in kinds]
        self._weights = [k[1] for k in kinds]

    # --- pieces ---------------------------------------------------------------------------

    def _pick(self) -> int:
        return self.rng.randrange(len(self.ids))

    def _plausible(self, i: int) -> float:
        """A value a real feed could send for quote ``i``."""
        r = self.rng
        c = self.cls[i]
        if c == RATE:
            return min(max(self.base[i] + r.gauss(0.0, 2e-4), -0.2), 1.0)
        if c == CORR:
            return min(max(self.base[i] * (1 + r.gauss(0.0, 1e-3)), 1e-6), 1 - 1e-6)
        ref = self.level[i] if c in (FX_SPOT, EQ_SPOT) else self.base[i]
        return abs(ref * (1 + r.gauss(0.0, 1e-3))) or 1e-6

    def _next_seq(self, i: int) -> int:
        self.top[i] = min(self.top[i] + 1 + (self.rng.random() < 0.01), 2**64 - 1)
        return self.top[i]

    def _note(self, i: int, seq: int) -> None:
        if 0 <= seq <= _INT64_MAX:
            self.top[i] = max(self.top[i], seq)

    def _encode(self, qid: bytes, value: bytes, seq: bytes, sent: bytes) -> bytes:
        return raw_array([qid, value, seq, sent])

    def _fields(self, i: int | None = None) -> list[bytes]:
        """The four encoded fields of a valid tick of quote ``i`` (random if None)."""
        i = self._pick() if i is None else i
        return [
            pack(self.ids[i]),
            pack(self._plausible(i)),
            pack(self._next_seq(i)),
            pack(self.clock()),
        ]

    def valid_tick(self, i: int | None = None) -> bytes:
        """One valid tick (a plausible value, the next seq of its quote)."""
        return raw_array(self._fields(i))

    # --- kinds ----------------------------------------------------------------------------

    def _valid(self) -> Message:
        return "valid", [self.valid_tick()]

    def _hostile_float(self, i: int) -> bytes:
        r = self.rng
        c = self.cls[i]
        ref = self.level[i]
        ulp = math.ulp
        # a spot: at and past the jump check's 50% each way, and absurd levels
        spot = [ref * 1.5, ref * 1.5 * (1 + 1e-15), ref * 0.5, ref * 0.49, ref * 100, ref / 100,
                ulp(0.0), 1e300]  # fmt: skip
        bounds: list[float] = {
            RATE: [-0.2, -0.2 - ulp(0.2), 1.0, 1.0 + ulp(1.0), -0.19999, 0.99999],
            CORR: [ulp(0.0), 1e-300, 1 - ulp(1.0) / 2, 1.0, 0.0, 1 + ulp(1.0)],
            CREDIT: [1.0, 1.0 + ulp(1.0), ulp(0.0), 1e-300],
            FX_VOL: [5.0, 5.0 + ulp(5.0), ulp(0.0), 1e-300],
            EQ_VOL: [5.0, 5.0 + ulp(5.0), ulp(0.0), 1e-300],
            FX_SPOT: spot,
            EQ_SPOT: spot,
        }[c]
        common = [
            math.inf,
            -math.inf,
            0.0,
            -0.0,
            -1.0,
            -ulp(0.0),
            1.7976931348623157e308,
            -1.7976931348623157e308,
            1e-320,
            2.2250738585072014e-308,
        ]
        k = r.randrange(10)
        if k < 4:
            return pack(r.choice(bounds))
        if k < 7:
            return pack(r.choice(common))
        if k == 7:
            return raw_f64(r.choice(_NAN_BITS))
        if k == 8:
            return raw_f32(r.choice([math.nan, math.inf, -math.inf, 3.4e38, 1e-45, 0.5]))
        return pack(r.choice([0, 1, -1, 5, 2**53 + 1, _INT64_MAX, _INT64_MIN, _UINT64_MAX]))

    def _hostile_value(self) -> Message:
        i = self._pick() if self.rng.random() < 0.5 else self.rng.choice(self.spots)
        f = self._fields(i)
        f[1] = self._hostile_float(i)
        return "hostile_value", [raw_array(f)]

    def _hostile_seq(self) -> Message:
        r = self.rng
        i = self._pick()
        f = self._fields(i)
        last = self.top[i]
        seq = r.choice(
            [
                -1,
                _INT64_MIN,
                _INT64_MAX + 1,
                _UINT64_MAX,
                2**63 + 7,
                0,
                last,
                last,
                last - 1,
                max(last - 1000, 0),
                last + 2**20,
                last - 2**62,
            ]
            + ([_INT64_MAX] if r.random() < 0.02 else [])
        )
        self._note(i, seq)
        f[2] = pack(seq) if _INT64_MIN <= seq <= _UINT64_MAX else pack(0)
        return "hostile_seq", [raw_array(f)]

    def _hostile_sent_ns(self) -> Message:
        f = self._fields()
        f[3] = pack(self.rng.choice([_INT64_MIN, -1, 0, _INT64_MAX, _UINT64_MAX, 1]))
        return "hostile_sent_ns", [raw_array(f)]

    def _wrong_type(self) -> Message:
        f = self._fields()
        k = self.rng.randrange(4)
        _, make = self.rng.choice([t for t in _WRONG_TYPES if t[0] not in _ACCEPTED_TYPES[k]])
        f[k] = make(self.rng)
        return f"wrong_type.{('quote_id', 'value', 'seq', 'sent_ns')[k]}", [raw_array(f)]

    def _int_encodings(self) -> Message:
        """Valid ints in non-minimal widths (and negative ones in signed widths)."""
        i = self._pick()
        f = self._fields(i)
        seq = self._next_seq(i)
        width = "u64" if seq >= 2**32 else self.rng.choice(["u32", "u64", "i64"])
        f[2] = raw_int(seq, width)
        f[3] = raw_int(self.rng.randrange(2**31), self.rng.choice(["i32", "u32", "i64", "u64"]))
        return "int_encodings", [raw_array(f)]

    def _truncated(self) -> Message:
        t = self.valid_tick()
        return "truncated", [t[: self.rng.randrange(len(t))]]

    def _extended(self) -> Message:
        t = self.valid_tick()
        return "extended", [t + self.rng.randbytes(self.rng.randrange(1, 16))]

    def _wrong_length(self) -> Message:
        f = self._fields()
        n = self.rng.choice([0, 1, 2, 3, 5, 6, 16, 17])
        items = (f * 5)[:n] if n <= 4 else [*f, *[pack(random_object(self.rng))] * (n - 4)]
        return "wrong_length", [raw_array(items)]

    def _as_map(self) -> Message:
        i = self._pick()
        names = ("quote_id", "value", "seq", "sent_ns")
        vals = (self.ids[i], self._plausible(i), self._next_seq(i), self.clock())
        return "map", [pack(dict(zip(names, vals, strict=True)))]

    def _unknown_id(self) -> Message:
        r = self.rng
        known = r.choice(self.ids)
        qid = r.choice(
            [
                "",
                " ",
                known.lower(),
                known + " ",
                " " + known,
                known + ".",
                known[:-1],
                known + "\x00",
                "\x00" + known,
                known.replace(".", "/"),
                "FX.EURUSD\u200b",
                "ＦＸ.EURUSD",
                "FX.EURUSD" * 3,
                "x" * r.randrange(24, 400),
                "é" * 50,
                "".join(chr(r.randrange(0x20, 0x10FFFF)) for _ in range(8))
                .encode("utf-8", "replace")
                .decode("utf-8", "replace"),
                "\ud7ff" + known,
                "NOPE." + str(r.randrange(10**6)),
            ]
        )
        f = self._fields()
        f[0] = pack(qid)
        return "unknown_id", [raw_array(f)]

    def _non_utf8(self) -> Message:
        r = self.rng
        known = r.choice(self.ids).encode()
        bad = r.choice(
            [
                b"\xff",
                b"\xc3\x28",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\x80",
                b"\xe2\x82",
                b"\xc0\xaf",
                r.randbytes(6),
            ]
        )
        at = r.randrange(len(known) + 1)
        f = self._fields()
        f[0] = raw_str(known[:at] + bad + known[at:])
        return "non_utf8", [raw_array(f)]

    def _random_bytes(self) -> Message:
        n = self.rng.choice([1, 2, 3, 4, 5, 8, 16, 32, 40, 64, 100, 1000])
        return "random_bytes", [self.rng.randbytes(n)]

    def _random_msgpack(self) -> Message:
        return "random_msgpack", [pack(random_object(self.rng))]

    def _bit_flip(self) -> Message:
        return "bit_flip", [bit_flips(self.rng, self.valid_tick(), self.rng.randint(1, 3))]

    def _oversize(self) -> Message:
        n = self.limit + self.rng.choice([1, 2, 100, self.limit, 3 * self.limit])
        return "oversize", [self.of_size(n)]

    def _jump_confirm(self) -> list[Message]:
        """Three consecutive consistent jumps of one spot: the third is its new level."""
        i = self.rng.choice(self.spots)
        target = self.level[i] * self.rng.choice([3.0, 0.2, 10.0, 0.1])
        out: list[Message] = []
        for _ in range(3):
            f = self._fields(i)
            f[1] = pack(target * (1 + self.rng.gauss(0.0, 1e-4)))
            out.append(("jump_confirm", [raw_array(f)]))
        self.level[i] = target
        return out

    def of_size(self, n: int) -> bytes:
        """A frame of exactly ``n`` bytes: a well-formed tick of an unknown id padded to ``n``
        when it can be one, random bytes below the smallest tick."""
        rng = self.rng
        # [id, value, seq, sent_ns]; the value and seq in several widths to hit every size
        for value in (pack(1.5), pack(1), raw_f32(1.5)):
            for seq in (pack(1), raw_int(1, "u8"), raw_int(1, "u16"), raw_int(1, "u32")):
                fixed = 1 + len(value) + len(seq) + 1  # the array header and sent_ns 0
                for head in (1, 2, 3, 5):  # fixstr, str8, str16, str32 headers
                    k = n - fixed - head
                    ok = {1: 0 <= k < 32, 2: 32 <= k < 256, 3: 256 <= k < 65536, 5: k >= 65536}
                    if ok[head]:
                        qid = ("SWEEP." + "X" * k)[:k].encode()
                        out = raw_array([raw_str(qid), value, seq, pack(0)])
                        assert len(out) == n
                        return out
        return rng.randbytes(n)

    def size_sweep(self, budget: int) -> list[int]:
        """Frame sizes: every size from 0 to the limit + 256, then 8 KiB … 16 MiB; when the
        budget is smaller, the sizes around 0 and the limit and an even sample in between."""
        big = [2 * self.limit, 8192, 65536, 1 << 20, 16 << 20]
        every = list(range(self.limit + 257))
        if budget >= len(every) + len(big):
            return every + big
        edge = [*range(0, 65), *range(self.limit - 64, self.limit + 65)]
        rest = max(budget - len(edge) - len(big), 0)
        middle = [int(x) for x in np.linspace(65, self.limit - 65, rest)] if rest else []
        return sorted(set(edge + middle)) + big[:3] + ([1 << 20] if budget >= 1000 else [])

    # --- the stream -----------------------------------------------------------------------

    def messages(self, n: int) -> Iterator[Message]:
        """Messages totalling exactly ``n`` frames (each frame is one tick for the ingestion):
        the size sweep spread evenly through them, the rest drawn by kind, a few multi-part."""
        sweep = self.size_sweep(n // 4)
        every = max(n // max(len(sweep), 1), 1)
        left = n
        k = 0
        due = 0
        while left > 0:
            if sweep and (k >= due or left <= len(sweep)):
                yield "size_sweep", [self.of_size(sweep.pop(0))]
                left -= 1
                k += 1
                due += every
                continue
            if left >= 2 and self.rng.random() < 0.03:
                parts = min(self.rng.randint(2, 5), left)
                frames = [self._one()[1][0] for _ in range(parts)]
                if self.rng.random() < 0.2:
                    frames[self.rng.randrange(parts)] = b""
                yield "multipart", frames
                left -= parts
                k += parts
                continue
            got = self._draw()
            for m in got:
                if left <= 0:
                    break
                yield m
                left -= len(m[1])
                k += len(m[1])

    def _draw(self) -> list[Message]:
        made = self.rng.choices(self._kinds, self._weights)[0]()
        return made if isinstance(made, list) else [made]

    def _one(self) -> Message:
        while True:
            got = self._draw()
            if len(got) == 1:
                return got[0]


class TickModel:
    """The expected outcome of every frame: the ingestion's own :class:`TickHandler` run here
    on the same market (a replica of its state, checks, and counters)."""

    def __init__(self, quote_ids: Sequence[str], values: Sequence[float]) -> None:
        index = {q: i for i, q in enumerate(quote_ids)}
        conflator = Conflator(
            list(quote_ids), np.asarray(values, dtype=np.float64), ConflationConfig()
        )
        self.handler = TickHandler(index, conflator)
        self.outcomes: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {}
        self.bytes = 0

    def handle(self, kind: str, frame: bytes) -> None:
        reason = self.handler.handle(frame, time.monotonic_ns()) or "accepted"
        self.outcomes[reason] += 1
        self.by_kind.setdefault(kind, Counter())[reason] += 1
        self.bytes += len(frame)
        samples = self.handler.latency.samples
        if len(samples) > 4096:
            samples.clear()

    @property
    def frames(self) -> int:
        return sum(self.outcomes.values())


# --- control requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzRequest:
    """One request: where it goes, its frames (the payload last), how long the service may
    take by its own rules, what its answer must be (``ok``, ``error``, or ``any``)."""

    kind: str
    target: str  # "control" (aggregator) or "supervisor"
    frames: tuple[bytes, ...]
    timeout_s: float
    expect: str = "any"
    defect: str | None = None
    delimiter: bool = True  # an empty frame before the payload (as REQ and Client send)


_HOSTILE_FLOATS: Final = (
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    -1.0,
    1e308,
    -1e308,
    5e-324,
    1e-300,
    1e300,
    2.0,
    0.05,
)
_HOSTILE_INTS: Final = (0, -1, 2, 3, 99, _INT64_MAX, _INT64_MIN, _UINT64_MAX, 2**32)
_GROUP_COLUMNS: Final = ("desk", "book", "currency", "asset_class", "product", "underlying")


class RequestFuzzer:
    """Random control requests (deterministic from ``seed``).

    ``workers``: the service's worker names; ``processes``: every process name the supervisor
    restarts on request (never sent as a restart target); ``books``: booking files the service
    could reload (never sent); ``bad_files``: existing files that are not books (sent as reload
    paths); ``max_profile_s``: longest profile of a real worker to ask for (None: any, the
    service clamps to 60 s); ``skip_defects``: tags of :data:`KNOWN_DEFECTS` not to trigger.
    """

    def __init__(
        self,
        seed: int,
        *,
        workers: Sequence[str],
        processes: Sequence[str],
        books: Sequence[str | Path] = (),
        bad_files: Sequence[str | Path] = (),
        margin_s: float = 10.0,
        max_profile_s: float | None = None,
        skip_defects: frozenset[str] = frozenset(),
    ) -> None:
        self.rng = random.Random(seed)
        self.workers = list(workers)
        self.processes = set(processes) | set(workers)
        self.books = {str(Path(b).resolve()) for b in books}
        self.bad_files = [str(p) for p in bad_files]
        self.margin_s = margin_s
        self.max_profile_s = max_profile_s
        self.skip = skip_defects
        self.skipped: Counter[str] = Counter()
        ops: list[tuple[str, float]] = [
            ("status", 12),
            ("positions", 7),
            ("aggregate", 10),
            ("limits", 5),
            ("whatif", 6),
            ("profile", 4),
            ("set_option", 5),
            ("restart", 4),
            ("reprice", 0.7),
            ("stop", 3),
            ("reload_book", 4),
            ("unknown_op", 5),
            ("worker_op", 2),
            ("version", 6),
            ("garbage", 4),
            ("truncated", 4),
            ("bit_flip", 5),
            ("not_a_map", 3),
            ("random_map", 3),
            ("extra_frames", 3),
            ("no_delimiter", 2),
            ("empty", 1.5),
            ("big", 0.6),
            ("oversize", 0.25),
            ("slow_whatif", 0.15),
        ]
        self._ops = [o for o, _ in ops]
        self._weights = [w for _, w in ops]

    # --- helpers --------------------------------------------------------------------------

    def _name(self) -> str:
        """A worker name, valid or a near miss."""
        r = self.rng
        if self.workers and r.random() < 0.5:
            return r.choice(self.workers)
        w = r.choice(self.workers) if self.workers else "fx-0"
        return r.choice(
            [
                "",
                " ",
                w.upper(),
                w + " ",
                w + "\x00",
                w.replace("-0", "-9"),
                "fx-1",
                "nobody-0",
                "supervisor",
                "standby",
                "ingest-0",
                "*",
                "../" + w,
                "é" * 40,
                "x" * 5000,
            ]
        )

    def _by(self) -> tuple[list[Any], str | None]:
        """A ``by``; and the defect tag when it repeats a column."""
        r = self.rng
        k = r.randrange(8)
        if k < 4:
            by: list[Any] = r.sample(_GROUP_COLUMNS, r.randint(1, 3))
        elif k == 4:
            by = []
        elif k == 5:
            by = [r.choice(_GROUP_COLUMNS)] * 2
        elif k == 6:
            by = [r.choice(["Desk", "pv", "row", "", "desk ", "*", "é"]), "desk"]
        else:
            by = [r.choice(_GROUP_COLUMNS), 1] if r.random() < 0.5 else list(_GROUP_COLUMNS)
        repeated = all(isinstance(b, str) for b in by) and len(set(by)) != len(by)
        return by, "repeated" if repeated else None

    def _pattern(self) -> str:
        r = self.rng
        return r.choice(
            [
                "*",
                "EUR*",
                "[",
                "]",
                "[!",
                "[]",
                "[!]",
                "\\",
                "**",
                "?",
                "???????",
                "",
                "*[a-",
                "[z-a]",
                "EURUSD",
                "nomatch",
                "*" * 64,
                "?*" * 32,
                "[" * 64,
                "é*",
                "\x00",
                "*.*.*",
            ]
        )

    def _shock(self) -> dict[str, Any]:
        r = self.rng

        def f() -> float:
            return r.choice(_HOSTILE_FLOATS) if r.random() < 0.6 else r.uniform(-50, 50)

        kind = r.choice(["parallel", "twist", "quote", "spot", "vol", "spread", "nope", ""])
        s: dict[str, Any] = {"kind": kind}
        if kind == "parallel":
            s["bp"] = f()
            if r.random() < 0.3:
                s["currency"] = r.choice(["USD", "EUR", "usd", "", "XXX", None])
        elif kind == "twist":
            s.update(short_bp=f(), long_bp=f())
            if r.random() < 0.5:
                s.update(short_years=f(), long_years=f())
        elif kind == "quote":
            s["quote_id"] = r.choice(["FX.EURUSD", "USD.SOFR.OIS.5Y", "nope", "", "CDX.IG.5Y.CORR"])
            if r.random() < 0.45:
                s["bp"] = f()
            if r.random() < 0.45:
                s["value"] = f()
        elif kind in ("spot", "vol", "spread"):
            s[{"spot": "pct", "vol": "points", "spread": "bp"}[kind]] = f()
            if r.random() < 0.6:
                s["pattern"] = self._pattern()
        else:
            s["bp"] = f()
        if r.random() < 0.05:
            s[r.choice(["bp", "pct", "kind"])] = random_object(r)
        return s

    def _hostile_v(self) -> Any:
        """Another schema version than the service's, or a mistyped one."""
        other = [v for v in (0, 1, 2, 3) if v != msg.SCHEMA_VERSION]
        return self.rng.choice(
            [*other, -1, 255, _INT64_MAX, _INT64_MIN, _UINT64_MAX, "1", None, [1], 1.5, {"v": 1}]
        )

    def _to(self, target: str | None = None) -> str:
        return target or ("control" if self.rng.random() < 0.55 else "supervisor")

    def _timeout(self, body: Any, target: str) -> float:
        """The longest the service may take to answer ``body`` at ``target``, by its own
        rules (docs/service.md), plus the margin."""
        m = self.margin_s
        if target == "supervisor" or not isinstance(body, dict):
            return m
        op = body.get("op")
        if op == "status":
            return 0.8 + m
        if op in ("restart", "stop", "reload_book"):
            return 30.0 + m
        if op == "whatif":
            return 60.0 + m
        if op == "reprice":
            return 120.0 + m
        if op == "set_option":
            return 5.0 + m
        if op == "profile":
            s = body.get("seconds", 2.0)
            ok = isinstance(s, int | float) and math.isfinite(s)
            return (min(max(float(s), 0.1), 60.0) if ok else 60.0) + 5.0 + m
        return m

    def _req(
        self,
        kind: str,
        body: Any,
        target: str | None = None,
        *,
        expect: str = "any",
        defect: str | None = None,
    ) -> FuzzRequest:
        to = self._to(target)
        payload = pack(body)
        return FuzzRequest(kind, to, (payload,), self._timeout(body, to), expect, defect)

    # --- ops ------------------------------------------------------------------------------

    def _status(self) -> FuzzRequest:
        body: dict[str, Any] = {"op": "status"}
        r = self.rng.random()
        if r < 0.3:
            body["v"] = msg.SCHEMA_VERSION
        elif r < 0.45:
            body[self.rng.choice(["junk", "worker", "", "op2"])] = random_object(self.rng)
        to = self._to()  # relayed by the aggregator, a status may be "no reply in time" (0.8 s)
        return self._req("status", body, to, expect="ok" if to == "supervisor" else "any")

    def _positions(self) -> FuzzRequest:
        r = self.rng
        body: dict[str, Any] = {"op": "positions"}
        if r.random() < 0.7:
            body["asset_class"] = r.choice(
                [
                    "fx",
                    "rates",
                    "credit",
                    "equity",
                    None,
                    "FX",
                    "",
                    "nope",
                    "é" * 30,
                    7,
                    ["fx"],
                    "x" * 3000,
                ]
            )
        return self._req("positions", body, "control")

    def _aggregate(self) -> FuzzRequest:
        by, repeated = self._by()
        body: dict[str, Any] = {"op": "aggregate", "by": by}
        if self.rng.random() < 0.1:
            body["by"] = self.rng.choice(["desk", None, 1, {"desk": 1}])
            repeated = None
        return self._req(
            "aggregate", body, "control", defect="aggregate-repeated-by" if repeated else None
        )

    def _limits(self) -> FuzzRequest:
        return self._req("limits", {"op": "limits"}, "control")

    def _whatif(self) -> FuzzRequest:
        r = self.rng
        shocks = [self._shock() for _ in range(r.choice([0, 1, 1, 1, 2, 3, 8]))]
        body: dict[str, Any] = {"op": "whatif", "shocks": shocks}
        defect = None
        if r.random() < 0.5:
            by, repeated = self._by()
            body["by"] = by
            defect = "whatif-repeated-by" if repeated else None
        if r.random() < 0.05:
            body["shocks"] = r.choice([None, {}, "parallel", [1, 2]])
            defect = None
        return self._req("whatif", body, "control", defect=defect)

    def _profile(self) -> FuzzRequest:
        r = self.rng
        worker = self._name()
        seconds: Any = r.choice([*_HOSTILE_FLOATS, 0.1, 0.3, 61.0, "2", None, 1])
        body: dict[str, Any] = {"op": "profile", "worker": worker}
        if r.random() < 0.85:
            body["seconds"] = seconds
        s = body.get("seconds", 2.0)
        real = worker in self.workers
        long = isinstance(s, int | float) and s > (self.max_profile_s or math.inf)
        if real and long:  # NaN is not long: it stays
            body["seconds"] = min(self.max_profile_s or 0.2, 0.2)
        s = body.get("seconds", 2.0)
        nan = isinstance(s, float) and math.isnan(s)
        return self._req(
            "profile", body, "control", defect="profile-nan-seconds" if real and nan else None
        )

    def _set_option(self) -> FuzzRequest:
        r = self.rng
        option = r.choice(["spline_cache", "spline_cache", "fail_reprice", "nope", "", "x" * 300])
        value: Any = r.choice(
            [
                True,
                False,
                0,
                1,
                -1,
                _INT64_MAX,
                math.nan,
                math.inf,
                "",
                "on",
                "*",
                "fx:EUR*",
                "[",
                None,
                [1],
                {"a": 1},
            ]
        )
        body = {"op": "set_option", "worker": self._name(), "option": option, "value": value}
        return self._req("set_option", body, "control")

    def _restart(self) -> FuzzRequest:
        body: dict[str, Any] = {"op": "restart", "worker": self._name()}
        if self.rng.random() < 0.1:
            body["worker"] = random_object(self.rng)
        return self._req("restart", body, expect="error")

    def _reprice(self) -> FuzzRequest:
        body: dict[str, Any] = {"op": "reprice"}
        if self.rng.random() < 0.3:
            body["junk"] = random_object(self.rng)
        return self._req("reprice", body, "control")

    def _stop(self) -> FuzzRequest:
        """Never a real stop: always another schema version or a mistyped ``v``."""
        return self._req("stop", {"op": "stop", "v": self._hostile_v()}, expect="error")

    def _reload(self) -> FuzzRequest:
        r = self.rng
        paths = [
            "/nonexistent/book.parquet",
            "/",
            "/etc/hostname",
            "/proc/self/status",
            "book.parquet",
            "x" * 5000 + ".parquet",
            "\u00e9.csv",
            "/tmp",
            "*.parquet",
            "relative/../../etc/passwd.csv",
            *self.bad_files,
        ]
        path = r.choice(paths)
        defect = None
        if r.random() < 0.1:
            path = r.choice(paths) + "\x00.parquet"
            defect = "reload-nul-path"
        body: dict[str, Any] = {"op": "reload_book", "path": path}
        if r.random() < 0.05:
            body["path"] = r.choice([None, 1, ["a"]])
            defect = None
        return self._req("reload_book", body, expect="error", defect=defect)

    def _unknown_op(self) -> FuzzRequest:
        r = self.rng
        op = r.choice(
            [
                "nope",
                "STATUS",
                "Status",
                "status ",
                "",
                "\x00",
                "stats",
                "hb",
                "dirty",
                "risk",
                1,
                None,
                ["status"],
                "é" * 10,
                "x" * 2000,
            ]
        )
        body: dict[str, Any] = {"op": op}
        if r.random() < 0.5:
            body["v"] = msg.SCHEMA_VERSION
        return self._req("unknown_op", body, expect="error")

    def _worker_op(self) -> FuzzRequest:
        """Messages of the worker protocol and the notices, sent as control requests."""
        r = self.rng
        body = r.choice(
            [
                {"op": "stats"},
                {"op": "whatif", "shocks": [], "worker": "fx-0"},
                {"op": "hb", "role": "ingest", "pid": 1, "sent_ns": 0, "ready": True},
                {"op": "dirty", "gen": 1, "flushed_ns": 0, "quotes": [1, 2]},
            ]
        )
        return self._req("worker_op", body)

    def _version(self) -> FuzzRequest:
        good = self._valid_body()
        good["v"] = self._hostile_v()
        return self._req("version", good, expect="error")

    def _valid_body(self) -> dict[str, Any]:
        r = self.rng
        return r.choice(
            [
                {"op": "status"},
                {"op": "positions"},
                {"op": "aggregate", "by": ["desk"]},
                {"op": "limits"},
                {"op": "whatif", "shocks": [{"kind": "parallel", "bp": 1.0}]},
                {"op": "stop"},
                {"op": "reprice"},
                {"op": "reload_book"},
                {"op": "restart", "worker": r.choice(self.workers or ["fx-0"])},
                {"op": "profile", "worker": r.choice(self.workers or ["fx-0"]), "seconds": 0.1},
                {
                    "op": "set_option",
                    "worker": r.choice(self.workers or ["fx-0"]),
                    "option": "spline_cache",
                    "value": True,
                },
            ]
        )

    def _garbage(self) -> FuzzRequest:
        r = self.rng
        data = r.choice(
            [
                r.randbytes(r.randrange(1, 200)),
                b"\xc1",
                b"\xff" * 10,
                b"\x81\xa2op",
                b"\xdf\xff\xff\xff\xff",
                b"\xdd\xff\xff\xff\xff",
                b"\xdb\xff\xff\xff\xff",
                b'{"op": "status"}',
                b"\x00",
            ]
        )
        return FuzzRequest("garbage", self._to(), (data,), self.margin_s, "error")

    def _truncated(self) -> FuzzRequest:
        data = pack(self._valid_body())
        return FuzzRequest(
            "truncated",
            self._to(),
            (data[: self.rng.randrange(len(data))],),
            self.margin_s,
            "error",
        )

    def _bit_flip(self) -> FuzzRequest:
        body = self._valid_body()
        data = bit_flips(self.rng, pack(body), self.rng.randint(1, 4))
        to = self._to()
        return FuzzRequest("bit_flip", to, (data,), self._timeout(body, to) + 60.0)

    def _not_a_map(self) -> FuzzRequest:
        r = self.rng
        body = r.choice(
            [
                ["status"],
                "status",
                1,
                None,
                [],
                1.5,
                b"status",
                True,
                msgspec.msgpack.Ext(1, b"status"),
            ]
        )
        return FuzzRequest("not_a_map", self._to(), (pack(body),), self.margin_s, "error")

    def _random_map(self) -> FuzzRequest:
        r = self.rng
        body = random_object(r)
        body = body if isinstance(body, dict) else {"x": body}
        if r.random() < 0.5:
            body["op"] = r.choice(["status", "positions", "aggregate", "limits", "whatif"])
        return self._req("random_map", body)

    def _extra_frames(self) -> FuzzRequest:
        inner = self.rng.choice([self._status, self._aggregate, self._unknown_op])()
        extra = tuple(
            self.rng.choice([b"", b"x", b"\x00" * 64, pack({"op": "stop"})])
            for _ in range(self.rng.randint(1, 5))
        )
        return FuzzRequest(
            "extra_frames",
            inner.target,
            (*extra, *inner.frames),
            inner.timeout_s,
            inner.expect,
            inner.defect,
        )

    def _no_delimiter(self) -> FuzzRequest:
        inner = self.rng.choice([self._status, self._limits, self._garbage])()
        return FuzzRequest(
            "no_delimiter",
            inner.target,
            inner.frames,
            inner.timeout_s,
            inner.expect,
            inner.defect,
            delimiter=False,
        )

    def _empty(self) -> FuzzRequest:
        return FuzzRequest("empty", self._to(), (b"",), self.margin_s, "error")

    def _big(self) -> FuzzRequest:
        """Large payloads just under the size limit."""
        r = self.rng
        room = msg.MAX_CONTROL_BYTES - 64
        body: dict[str, Any] = r.choice(
            [
                {"op": "status", "junk": "x" * room},
                {"op": "positions", "asset_class": "é" * (room // 2)},
                {"op": "aggregate", "by": ["nope"] * (room // 6)},
                {"op": "restart", "worker": "w" * room},
                {"op": "reload_book", "path": "/" * room},
                {"op": "unknown", "x": list(range(room // 10))},
                {"op": "status", "deep": [[[[[[[[[[[[1]]]]]]]]]]]] * (room // 26)},
            ]
        )
        to = self._to()
        return FuzzRequest(
            "big",
            to,
            (pack(body),),
            self._timeout(body, to),
            "ok" if body["op"] == "status" else "any",
        )

    def _oversize(self) -> FuzzRequest:
        r = self.rng
        n = msg.MAX_CONTROL_BYTES + r.choice([1, 100, msg.MAX_CONTROL_BYTES])
        body = {"op": "status", "junk": "x" * (n - 20)}
        data = pack(body)
        return FuzzRequest(
            "oversize", self._to(), (data,), self.margin_s, "error", "oversize-unanswered"
        )

    def _slow_whatif(self) -> FuzzRequest:
        r = self.rng
        if r.random() < 0.5:
            shocks: list[dict[str, Any]] = [{"kind": "parallel", "bp": 1.0}] * 20_000
        else:
            shocks = [{"kind": "spot", "pct": 1.0, "pattern": "[" * 20_000}]
        return self._req(
            "slow_whatif", {"op": "whatif", "shocks": shocks}, "control", defect="slow-whatif"
        )

    # --- the stream -----------------------------------------------------------------------

    def safe(self, req: FuzzRequest) -> bool:
        """False for a request that would legitimately stop, restart or reload the service
        (decoded exactly as the service decodes it)."""
        try:
            decoded = msg.decode_request(req.frames[-1])
        except (msgspec.DecodeError, msg.VersionError):
            return True
        if isinstance(decoded, msg.StopRequest):
            return False
        if isinstance(decoded, msg.RestartRequest):
            return decoded.worker not in self.processes
        if isinstance(decoded, msg.ReloadBookRequest):
            path = decoded.path
            if path == "":
                return False  # the configured book, re-read
            if "\x00" in path:
                return True  # no file can have that name
            try:
                p = Path(path)
                if str(p.resolve()) in self.books:
                    return False
                a_book = p.suffix.lower() in (".csv", ".parquet", ".pq") and p.is_file()
            except (OSError, ValueError):
                return True
            return path in self.bad_files or not a_book
        return True

    def requests(self, n: int) -> Iterator[FuzzRequest]:
        """``n`` requests; triggers of ``skip_defects`` and unsafe requests are drawn again."""
        made = 0
        while made < n:
            op = self.rng.choices(self._ops, self._weights)[0]
            req: FuzzRequest = getattr(self, "_" + {"reload_book": "reload"}.get(op, op))()
            if not self.safe(req):
                self.skipped["unsafe"] += 1
                continue
            if req.defect in self.skip:
                self.skipped[req.defect] += 1
                continue
            made += 1
            yield req


# --- drivers --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Counts of one class of requests."""

    sent: int = 0
    answered: int = 0
    ok: int = 0
    error: int = 0
    bad_reply: int = 0
    unanswered: int = 0
    unexpected: int = 0
    slowest_s: float = 0.0


@dataclass
class RequestReport:
    """What :class:`RequestRunner` saw."""

    by_target: dict[str, Outcome] = field(default_factory=dict)
    by_kind: dict[str, Outcome] = field(default_factory=dict)
    unanswered: list[FuzzRequest] = field(default_factory=list)
    unexpected: list[tuple[FuzzRequest, str]] = field(default_factory=list)
    errors: dict[str, Counter[str]] = field(default_factory=dict)
    """Per kind, the error replies by their first words (the report's examples)."""
    seconds: float = 0.0
    abandoned: bool = False  # the service was gone before every request was sent

    @property
    def total(self) -> Outcome:
        out = Outcome()
        for o in self.by_target.values():
            for name in (
                "sent",
                "answered",
                "ok",
                "error",
                "bad_reply",
                "unanswered",
                "unexpected",
            ):
                setattr(out, name, getattr(out, name) + getattr(o, name))
            out.slowest_s = max(out.slowest_s, o.slowest_s)
        return out


class RequestRunner:
    """Sends requests to ``endpoints`` (target → address), each on a DEALER of its own, up to
    ``window`` in flight; one reply is expected per request before its ``timeout_s``."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], endpoints: Mapping[str, str], window: int = 8
    ) -> None:
        self.ctx = ctx
        self.endpoints = dict(endpoints)
        self.window = window

    def run(
        self, requests: Iterator[FuzzRequest], alive: Callable[[], bool] = lambda: True
    ) -> RequestReport:
        """Send every request; stop sending once ``alive()`` is false (checked each second:
        the service is gone), the ones in flight still get their time."""
        report = RequestReport()
        checked = time.monotonic()
        flight: dict[zmq.Socket[bytes], tuple[FuzzRequest, float]] = {}
        poller = zmq.Poller()
        t0 = time.monotonic()
        more = True

        def outcome(req: FuzzRequest) -> list[Outcome]:
            return [
                report.by_target.setdefault(req.target, Outcome()),
                report.by_kind.setdefault(req.kind, Outcome()),
            ]

        def done(sock: zmq.Socket[bytes]) -> None:
            poller.unregister(sock)
            sock.close(linger=0)
            del flight[sock]

        while more or flight:
            if more and time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                if not alive():
                    more = False
                    report.abandoned = True
            while more and len(flight) < self.window:
                req = next(requests, None)
                if req is None:
                    more = False
                    break
                sock: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.endpoints[req.target])
                frames = [b"", *req.frames] if req.delimiter else list(req.frames)
                sock.send_multipart(frames, copy=len(req.frames[-1]) < 65536)
                flight[sock] = (req, time.monotonic())
                poller.register(sock, zmq.POLLIN)
                for o in outcome(req):
                    o.sent += 1
            if not flight:
                continue
            now = time.monotonic()
            next_deadline = min(t + r.timeout_s for r, t in flight.values())
            events = dict(poller.poll(max(1, min(int((next_deadline - now) * 1000) + 1, 200))))
            now = time.monotonic()
            for sock in list(flight):
                req, sent = flight[sock]
                if sock in events:
                    parts = sock.recv_multipart()
                    self._answered(report, outcome(req), req, parts[-1], now - sent)
                    done(sock)
                elif now - sent > req.timeout_s:
                    for o in outcome(req):
                        o.unanswered += 1
                    report.unanswered.append(req)
                    done(sock)
        report.seconds = time.monotonic() - t0
        return report

    @staticmethod
    def _answered(
        report: RequestReport, outs: list[Outcome], req: FuzzRequest, raw: bytes, took: float
    ) -> None:
        try:
            reply = msg.reply_decoder.decode(raw)
            msg.check_version(reply)
        except (msgspec.DecodeError, msg.VersionError):
            for o in outs:
                o.answered += 1
                o.bad_reply += 1
            report.unexpected.append((req, "unreadable reply"))
            return
        got = "ok" if reply.ok else "error"
        if not reply.ok:
            words = " ".join(str(reply.error).split()[:6])[:70]
            report.errors.setdefault(req.kind, Counter())[words] += 1
        for o in outs:
            o.answered += 1
            setattr(o, got, getattr(o, got) + 1)
            o.slowest_s = max(o.slowest_s, took)
            if req.expect not in ("any", got):
                o.unexpected += 1
        if req.expect not in ("any", got):
            report.unexpected.append((req, f"{got}: {reply.error}"))


@dataclass
class TickReport:
    """What :func:`publish_ticks` sent and the model expects."""

    model: TickModel
    messages: int = 0
    frames: int = 0
    bytes: int = 0
    send_s: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    abandoned: bool = False  # the ingestion stopped counting before every frame was sent


def publish_ticks(
    pub: zmq.Socket[bytes],
    fuzzer: TickFuzzer,
    model: TickModel,
    n: int,
    offered: Callable[[], float],
    *,
    base: float,
    window: int = 100_000,
    give_up_s: float = 30.0,
) -> TickReport:
    """Send ``n`` frames on ``pub``; each goes through ``model`` too. Never more than ``window``
    frames ahead of the ingestion's ``offered()`` count (minus ``base``, what it had before):
    the PUB's own queue (SNDHWM 0, no limit) then holds at most that many, and the SUB's
    (1,000,000) never fills. Gives up (``abandoned``) when ``offered()`` has not moved for
    ``give_up_s`` while waiting (the ingestion or the supervisor is gone)."""
    report = TickReport(model)
    seen = 0.0
    t0 = time.monotonic()
    for kind, frames in fuzzer.messages(n):
        moved = time.monotonic()
        while report.frames - seen > window:
            now = offered() - base
            if now != seen:
                seen, moved = now, time.monotonic()
            elif time.monotonic() - moved > give_up_s:
                report.abandoned = True
                break
            if report.frames - seen > window:
                time.sleep(0.05)
        if report.abandoned:
            break
        pub.send_multipart(frames)
        for f in frames:
            model.handle(kind, f)
        report.messages += 1
        report.frames += len(frames)
        report.bytes += sum(len(f) for f in frames)
        report.kinds[kind] += len(frames)
    report.send_s = time.monotonic() - t0
    return report


def ingest_stats(status: Mapping[str, Any]) -> dict[str, float]:
    """The ingestion's counters in a :meth:`Client.status` answer (empty if absent)."""
    for p in status.get("processes", []):
        if p["name"] == "ingest":
            return dict(p.get("stats") or {})
    return {}


def processes(status: Mapping[str, Any]) -> dict[str, tuple[int, int, str]]:
    """Every process of a status answer: name → (pid, restarts, state); the standby too."""
    out = {
        p["name"]: (int(p["pid"] or 0), int(p["restarts"]), str(p["state"]))
        for p in status.get("processes", [])
    }
    sb = status.get("standby")
    if sb:
        out["standby"] = (int(sb["pid"]), 0, str(sb["state"]))
    out["supervisor"] = (int(status.get("pid", 0)), 0, str(status.get("answered_by", "")))
    return out


def log_problems(log: Path, since: int = 0) -> list[str]:
    """Lines of a service log (from byte ``since``) that tell of a defect: tracebacks and
    unplanned child exits."""
    try:
        text = log.read_bytes()[since:].decode(errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    out = []
    for k, line in enumerate(lines):
        if line.startswith("Traceback"):
            tail = next((x for x in lines[k + 1 :] if x and not x.startswith(" ")), "")
            out.append(f"traceback: {tail}")
        elif '"child_exited"' in line and '"planned": false' in line:
            out.append("unplanned exit: " + line.split('"msg": "', 1)[-1].split('"', 1)[0])
    return out


def check(
    before: Mapping[str, tuple[int, int, str]],
    after: Mapping[str, tuple[int, int, str]],
    ticks: TickReport,
    ingest_base: Mapping[str, float],
    ingest_end: Mapping[str, float],
    requests: RequestReport,
    problems: Sequence[str],
) -> list[tuple[str, bool, str]]:
    """The properties: (name, passed, detail)."""
    out: list[tuple[str, bool, str]] = []
    changed = {
        n: (before.get(n), after.get(n))
        for n in set(before) | set(after)
        if (before.get(n) or (0,))[0] != (after.get(n) or (0,))[0]
    }
    restarts = {n: a[1] for n, a in after.items() if a[1]}
    # a supervisor that did not answer: the status came from /proc (answered_by "client")
    dead = {n: a[2] for n, a in after.items() if a[2] in ("dead", "stopped", "down", "client")}
    bad = bool(changed or restarts or dead)
    detail = (
        f"{len(after)} processes"
        if not bad
        else f"pids changed: {changed}; restarts: {restarts}; not running: {dead}"
    )
    out.append(("no process exited (every pid unchanged, restarts 0)", not bad, detail))
    out.append(
        (
            "no traceback or unplanned exit in service.log",
            not problems,
            "; ".join(problems[:5]) or "none",
        )
    )
    delta = {k: ingest_end.get(k, 0.0) - ingest_base.get(k, 0.0) for k in ingest_end}
    offered = delta.get("offered", 0.0)
    rejected = sum(delta.get(f"rejected.{r}", 0.0) for r in REJECT_REASONS)
    accepted = delta.get("accepted", 0.0)
    out.append(
        (
            "offered == accepted + sum of rejected.*",
            offered == accepted + rejected,
            f"{offered:,.0f} == {accepted:,.0f} + {rejected:,.0f}",
        )
    )
    lost = ticks.frames - offered
    out.append(
        (
            "ingest offered == ticks delivered (no ZeroMQ drop)",
            lost == 0,
            f"sent {ticks.frames:,}, offered {offered:,.0f}, lost {lost:,.0f}",
        )
    )
    out.append(
        (
            "ingest received == offered",
            delta.get("received", 0.0) == offered,
            f"received {delta.get('received', 0.0):,.0f}",
        )
    )
    want = ticks.model.outcomes
    got = {"accepted": accepted, **{r: delta.get(f"rejected.{r}", 0.0) for r in REJECT_REASONS}}
    diff = {k: (want.get(k, 0), v) for k, v in got.items() if want.get(k, 0) != v}
    out.append(
        (
            "each outcome's count == the replayed model's",
            not diff,
            ", ".join(f"{k} {v:,.0f}" for k, v in got.items() if v)
            if not diff
            else f"(expected, counted): {diff}",
        )
    )
    total = requests.total
    out.append(
        (
            "every tick and request sent (the service stayed up)",
            not ticks.abandoned and not requests.abandoned,
            f"{ticks.frames:,} frames, {total.sent:,} requests"
            + (" (ticks given up: offered stopped moving)" if ticks.abandoned else "")
            + (" (requests given up: the supervisor is gone)" if requests.abandoned else ""),
        )
    )
    out.append(
        (
            "every request answered",
            total.unanswered == 0,
            f"{total.answered:,} of {total.sent:,}"
            + (
                f"; unanswered by kind: {dict(Counter(r.kind for r in requests.unanswered))}"
                if requests.unanswered
                else ""
            ),
        )
    )
    out.append(
        (
            "every reply readable and as expected (ok/error)",
            total.bad_reply == 0 and not requests.unexpected,
            f"{len(requests.unexpected)} unexpected"
            + (
                f": {[(r.kind, r.target, why[:80]) for r, why in requests.unexpected[:3]]}"
                if requests.unexpected
                else ""
            ),
        )
    )
    return out


# --- one whole run --------------------------------------------------------------------------


class Service(Protocol):
    """What a run needs of a started service (a :class:`workbench.Client` is one)."""

    endpoints: Any
    descriptor: Any

    def status(self, *, timeout_s: float = ...) -> dict[str, Any]: ...


@dataclass
class FuzzResult:
    """Everything one :func:`fuzz_service` run saw."""

    ticks: TickReport
    requests: RequestReport
    before: dict[str, tuple[int, int, str]]
    after: dict[str, tuple[int, int, str]]
    ingest_base: dict[str, float]
    ingest_end: dict[str, float]
    problems: list[str]
    drain_s: float
    skipped: Counter[str]
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Whether ``predicate()`` came true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def _settled(svc: Service, quiet_s: float = 1.2, timeout_s: float = 60.0) -> dict[str, float]:
    """The ingestion's counters once ``offered`` has not moved for ``quiet_s`` (heartbeats
    come every 0.5 s)."""
    last = ingest_stats(svc.status())
    since = time.monotonic()
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = ingest_stats(svc.status())
        if now.get("offered") != last.get("offered"):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    return last


def fuzz_service(
    svc: Service,
    pub: zmq.Socket[bytes],
    quote_ids: Sequence[str],
    values: Sequence[float],
    *,
    ticks: int,
    requests: int,
    seed: int,
    bad_files: Sequence[str | Path] = (),
    max_profile_s: float | None = None,
    skip_defects: frozenset[str] = frozenset(),
    window: int = 8,
    margin_s: float = 10.0,
    drain_timeout_s: float = 120.0,
    progress: Callable[[str], None] = lambda line: None,
) -> FuzzResult:
    """Fuzz a running service whose ingestion is connected to ``pub`` (a bound PUB socket with
    SNDHWM 0): ``ticks`` frames and ``requests`` control requests at the same time, then
    :func:`check`. The service keeps running (the caller stops it)."""
    config = svc.descriptor.config
    log = Path(config.run_dir) / "service.log"
    log_from = log.stat().st_size if log.exists() else 0
    wait_for(lambda: (svc.status().get("standby") or {}).get("state") == "ready", 120, 0.25)
    # the late joiner: unknown-id probes until the ingestion counts one, then quiet
    probe = pack(["FUZZ.PROBE", 1.0, 1, 0])
    for _ in range(600):
        pub.send(probe)
        if ingest_stats(svc.status()).get("offered", 0.0) >= 1:
            break
        time.sleep(0.1)
    base = _settled(svc)
    status = svc.status()
    before = processes(status)
    workers = [p["name"] for p in status["processes"] if str(p["role"]).startswith("worker:")]
    names = [p["name"] for p in status["processes"]]
    progress(
        f"baseline: ingest offered {base.get('offered', 0):.0f} (probes); "
        f"processes {sorted(before)}"
    )

    rfuzz = RequestFuzzer(
        seed + 1,
        workers=workers,
        processes=names,
        books=[config.book, config.frozen_book],
        bad_files=bad_files,
        margin_s=margin_s,
        max_profile_s=max_profile_s,
        skip_defects=skip_defects,
    )
    endpoints = {"control": svc.endpoints.control, "supervisor": svc.endpoints.supervisor}
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    runner = RequestRunner(ctx, endpoints, window=window)
    holder: dict[str, Any] = {}

    def alive() -> bool:
        return pid_alive(svc.descriptor.pid)

    def send_requests() -> None:
        try:
            holder["report"] = runner.run(rfuzz.requests(requests), alive)
        except BaseException as exc:  # reported by the caller
            holder["error"] = exc

    thread = threading.Thread(target=send_requests, name="fuzz-requests", daemon=True)
    thread.start()
    tfuzz = TickFuzzer(quote_ids, values, seed)
    model = TickModel(quote_ids, values)
    b = base.get("offered", 0.0)
    sent = publish_ticks(
        pub, tfuzz, model, ticks, lambda: ingest_stats(svc.status()).get("offered", 0.0), base=b
    )
    progress(f"ticks sent: {sent.frames:,} frames in {sent.send_s:.1f} s")
    t0 = time.monotonic()
    wait_for(
        lambda: ingest_stats(svc.status()).get("offered", 0.0) - b >= sent.frames or not alive(),
        drain_timeout_s,
        0.25,
    )
    drain_s = time.monotonic() - t0
    thread.join()
    ctx.term()
    if "error" in holder:
        raise RuntimeError("the request runner failed") from holder["error"]
    report: RequestReport = holder["report"]
    progress(f"requests done: {report.total.sent:,} in {report.seconds:.1f} s")
    end = _settled(svc)
    time.sleep(1.0)  # a child that died at the very end: let the supervisor see it
    after = processes(svc.status())
    result = FuzzResult(
        sent, report, before, after, base, end, log_problems(log, log_from), drain_s, rfuzz.skipped
    )
    result.checks = check(before, after, sent, base, end, report, result.problems)
    return result


def restore_options(svc: Any, workers: Sequence[str]) -> None:
    """Undo what fuzzed set_option requests may have set (fault injection, the spline cache)."""
    for w in workers:
        for option, value in (("fail_reprice", ""), ("spline_cache", True)):
            with contextlib.suppress(Exception):  # a worker gone: the checks have said so
                svc.request(
                    msg.SetOptionRequest(worker=w, option=option, value=value), timeout_s=10.0
                )


def not_books(folder: Path) -> list[Path]:
    """Files in ``folder`` that are not books (written now), for reload_book requests."""
    files = {
        "garbage.parquet": b"PAR1 this is not parquet",
        "empty.parquet": b"",
        "garbage.csv": b"a,b\n1,2,3\n\xff\xfe\n",
        "columns.csv": b"position_id,foo\n1,2\n",
        "empty.csv": b"",
    }
    out = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out
