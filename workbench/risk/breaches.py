"""A limit breached, or a reconciliation that failed: what the desk is told, as data."""

from __future__ import annotations

import msgspec


class Breach(msgspec.Struct, frozen=True, kw_only=True):
    """A limit breached: ``measure`` of ``scope`` (``firm`` or ``desk:<name>``) over ``limit``."""

    scope: str
    measure: str
    value: float
    limit: float
    since_ns: int
    detail: str = ""
    """What a reader needs beyond the numbers (a recon: the positions added, removed and
    changed, the first few by id)."""
