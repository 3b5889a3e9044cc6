"""Admission of control requests: what a request may ask before any process spends time on it.

A request that passes decoding can still ask for the impossible or the ruinous — a grouping
that repeats a column, a profile of NaN seconds, a what-if of 35,000 shocks, a glob pattern
of 20,000 ``[`` (whose translation is quadratic): each would have cost a process its life or
its heartbeat. :func:`admit` names what is wrong, so the request gets an error reply instead.
"""

from __future__ import annotations

import math
from typing import Final

from workbench.engine import messages as msg
from workbench.engine.aggregation import GROUP_COLUMNS

MAX_SHOCKS: Final = 256
"""Shocks in one what-if."""
MAX_PATTERN: Final = 64
"""Characters in a shock's glob pattern (``FX.EUR*``)."""
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


def _check_amount(what: str, value: float | None, bound: float) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value) or abs(value) > bound:
        return f"{what} {value!r}: expected a finite amount within ±{bound:g}"
    return None


def check_shock(shock: msg.AnyShock) -> str | None:
    """Why ``shock`` cannot be applied as given (an amount not finite or out of bounds, a
    pattern too long), or None."""
    kind = type(shock).__name__
    if isinstance(shock, msg.ParallelShock):
        return _check_amount(f"{kind} bp", shock.bp, MAX_BP)
    if isinstance(shock, msg.TwistShock):
        for name in ("short_bp", "long_bp"):
            error = _check_amount(f"{kind} {name}", getattr(shock, name), MAX_BP)
            if error:
                return error
        for name in ("short_years", "long_years"):
            error = _check_amount(f"{kind} {name}", getattr(shock, name), 100.0)
            if error:
                return error
        return None
    if isinstance(shock, msg.QuoteShock):
        if len(shock.quote_id) > 200:
            return f"{kind}: quote id of {len(shock.quote_id)} characters"
        return _check_amount(f"{kind} bp", shock.bp, MAX_BP) or _check_amount(
            f"{kind} value", shock.value, 1e12
        )
    if len(shock.pattern) > MAX_PATTERN:
        return f"{kind}: pattern of {len(shock.pattern)} characters (at most {MAX_PATTERN})"
    if isinstance(shock, msg.SpotShock):
        return _check_amount(f"{kind} pct", shock.pct, MAX_PCT)
    if isinstance(shock, msg.VolShock):
        return _check_amount(f"{kind} points", shock.points, MAX_POINTS)
    return _check_amount(f"{kind} bp", shock.bp, MAX_BP)


def admit(req: msg.ControlRequest, workers: dict[str, str]) -> str | None:
    """Why the service refuses ``req`` (to be the error reply), or None to serve it.
    ``workers``: the service's worker names (to addresses)."""
    if isinstance(req, msg.AggregateRequest | msg.WhatIfRequest):
        error = check_by(req.by)
        if error:
            return error
    if isinstance(req, msg.WhatIfRequest):
        if len(req.shocks) > MAX_SHOCKS:
            return f"what-if of {len(req.shocks)} shocks: at most {MAX_SHOCKS}"
        for shock in req.shocks:
            error = check_shock(shock)
            if error:
                return error
    if isinstance(req, msg.ProfileRequest | msg.SetOptionRequest | msg.RestartRequest):
        if isinstance(req, msg.RestartRequest):
            return None  # the supervisor knows every process it can restart
        if req.worker not in workers:
            known = ", ".join(sorted(workers))
            return f"unknown worker {req.worker!r} ({known})"
    if isinstance(req, msg.ProfileRequest) and not 0.0 < req.seconds <= MAX_PROFILE_S:
        return f"profile of {req.seconds!r} s: expected more than 0 and at most {MAX_PROFILE_S:g}"
    if isinstance(req, msg.ReloadBookRequest) and ("\0" in req.path or len(req.path) > 4096):
        return "reload_book: not a file path"
    return None
