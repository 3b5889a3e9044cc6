"""Admission of control requests: what a request may ask before any process spends time on it.

A request that passes decoding can still ask for the impossible or the ruinous — a grouping
that repeats a column, a profile of NaN seconds, a what-if of 35,000 shocks, a glob pattern
of 20,000 ``[`` (whose translation is quadratic): each would have cost a process its life or
its heartbeat. :func:`admit` names what is wrong, so the request gets an error reply instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, NamedTuple

import msgspec

from workbench.engine.protocol import messages as msg
from workbench.risk.aggregation import GROUP_COLUMNS
from workbench.risk.shocks import (
    AnyShock,
    ParallelShock,
    QuoteShock,
    SpotShock,
    SpreadShock,
    TwistShock,
    VolShock,
)

MAX_SHOCKS: Final = 256
"""Shocks in one what-if."""
MAX_PATTERN: Final = 64
"""Characters in a shock's glob pattern (``FX.EUR*``)."""
MAX_CURVES: Final = 64
"""Curves one market request may ask rates of."""
MAX_YEARS: Final = 1_000
"""Points on each curve one market request may ask for."""
MAX_YEARS_OUT: Final = 100.0
"""Longest maturity a market request may ask a curve's rate at, years."""
MAX_BP: Final = 1e5
"""Largest move of a rate or spread shock, basis points (1,000%)."""
MAX_PCT: Final = 1e4
"""Largest spot move, percent."""
MAX_POINTS: Final = 1e3
"""Largest vol move, vol points."""
MAX_PROFILE_S: Final = 60.0
"""Longest profile, seconds."""


def check_by(by: tuple[str, ...]) -> str | None:
    """Why grouping by ``by`` cannot be done (unknown or repeated columns), or None."""
    bad = [b for b in by if b not in GROUP_COLUMNS]
    if bad:
        return f"cannot group by {', '.join(bad)}: choose from {', '.join(GROUP_COLUMNS)}"
    if len(set(by)) != len(by):
        return f"cannot group by {', '.join(by)}: a column is repeated"
    return None


_BOUNDS: Final[dict[type, tuple[tuple[str, float], ...]]] = {
    ParallelShock: (("bp", MAX_BP),),
    TwistShock: (("short_bp", MAX_BP), ("long_bp", MAX_BP), ("short_years", 100.0),
                     ("long_years", 100.0)),
    QuoteShock: (("bp", MAX_BP), ("value", 1e12)),
    SpotShock: (("pct", MAX_PCT),),
    VolShock: (("points", MAX_POINTS),),
    SpreadShock: (("bp", MAX_BP),),
}  # fmt: skip
"""Each shock type's amounts and their largest magnitude (a None amount is not checked)."""


def check_shock(shock: AnyShock) -> str | None:
    """Why ``shock`` cannot be applied as given (an amount not finite or out of bounds, a
    pattern or quote id too long), or None."""
    kind = type(shock).__name__
    text = shock.quote_id if isinstance(shock, QuoteShock) else getattr(shock, "pattern", "")
    if len(text) > MAX_PATTERN:
        return f"{kind}: {len(text)} characters of pattern or id (at most {MAX_PATTERN})"
    for name, bound in _BOUNDS[type(shock)]:
        value = getattr(shock, name)
        if value is not None and not (math.isfinite(value) and abs(value) <= bound):
            return f"{kind} {name} {value!r}: expected a finite amount within ±{bound:g}"
    return None


def admit(req: msg.ControlRequest, workers: dict[str, str]) -> str | None:
    """Why the service refuses ``req`` (to be the error reply), or None to serve it.
    ``workers``: the service's worker names (to addresses)."""
    if isinstance(req, msg.AggregateRequest | msg.WhatIfRequest) and (error := check_by(req.by)):
        return error
    if isinstance(req, msg.WhatIfRequest):
        if len(req.shocks) > MAX_SHOCKS:
            return f"what-if of {len(req.shocks)} shocks: at most {MAX_SHOCKS}"
        return next(filter(None, map(check_shock, req.shocks)), None)
    if isinstance(req, msg.MarketRequest):
        if len(req.curves) > MAX_CURVES or len(req.years) > MAX_YEARS:
            return f"market: at most {MAX_CURVES} curves and {MAX_YEARS} points"
        if len(req.shocks) > MAX_SHOCKS:
            return f"market of {len(req.shocks)} shocks: at most {MAX_SHOCKS}"
        if not all(math.isfinite(t) and 0.0 < t <= MAX_YEARS_OUT for t in req.years):
            return f"market: every point in years must be within (0, {MAX_YEARS_OUT:g}]"
        return next(filter(None, map(check_shock, req.shocks)), None)
    if isinstance(req, msg.ProfileRequest | msg.SetOptionRequest) and req.worker not in workers:
        return f"unknown worker {req.worker!r} ({', '.join(sorted(workers))})"
    if isinstance(req, msg.ProfileRequest) and not 0.0 < req.seconds <= MAX_PROFILE_S:
        return f"profile of {req.seconds!r} s: expected more than 0 and at most {MAX_PROFILE_S:g}"
    if isinstance(req, msg.ReloadBookRequest) and ("\0" in req.path or len(req.path) > 4096):
        return "reload_book: not a file path"
    return None


class Refused(NamedTuple):
    """A request refused before it is served: its error reply, and what to count it as
    (``"bad"``: undecodable or not admitted; ``"version"``: another schema version)."""

    reply: msg.Reply
    counter: str


def take(payload: bytes, workers: Mapping[str, str]) -> msg.ControlRequest | Refused:
    """The control request in ``payload``, decoded and admitted (:func:`admit`), or why not."""
    try:
        req = msg.decode_request(payload)
    except msgspec.DecodeError as exc:
        return Refused(msg.error_reply(f"bad request: {exc}"), "bad")
    except msg.VersionError as exc:
        return Refused(msg.error_reply(str(exc)), "version")
    error = admit(req, dict(workers))
    if error:
        return Refused(msg.error_reply(error), "bad")
    return req
