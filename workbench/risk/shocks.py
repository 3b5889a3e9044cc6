"""What-if market shocks: the moves a user asks for, as data (msgspec structs that travel as
msgpack). :func:`workbench.risk.whatif.apply_shocks` applies them to a market."""

from __future__ import annotations

from typing import Literal

import msgspec


class Shock(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True):
    """Base of the what-if market shocks."""


class ParallelShock(Shock, frozen=True, tag="parallel"):
    """Every rate quote of ``currency`` (all currencies if None) moved by ``bp`` basis points."""

    bp: float
    currency: str | None = None


class TwistShock(Shock, frozen=True, tag="twist"):
    """Rate quotes moved linearly in tenor from ``short_bp`` (≤ pivot_short) to ``long_bp``."""

    short_bp: float
    long_bp: float
    currency: str | None = None
    short_years: float = 2.0
    long_years: float = 10.0


class QuoteShock(Shock, frozen=True, tag="quote"):
    """One quote moved by ``bp`` basis points (a key-rate node shock) or to ``value``."""

    quote_id: str
    bp: float | None = None
    value: float | None = None


class SpotShock(Shock, frozen=True, tag="spot"):
    """FX (``FX.EURUSD``) or equity (``EQ.AAPL``) spots matching ``pattern`` moved by ``pct``%
    (only FX or only equity spots with ``asset``)."""

    pct: float
    pattern: str = "*"
    asset: Literal["fx", "equity"] | None = None


class VolShock(Shock, frozen=True, tag="vol"):
    """Vol quotes (``FXVOL.*``, ``EQVOL.*``) matching ``pattern`` moved by ``points`` vol points
    (only FX or only equity vols with ``asset``)."""

    points: float
    pattern: str = "*"
    asset: Literal["fx", "equity"] | None = None


class SpreadShock(Shock, frozen=True, tag="spread"):
    """Credit index spread quotes matching ``pattern`` moved by ``bp`` basis points."""

    bp: float
    pattern: str = "*"


class CorrelationShock(Shock, frozen=True, tag="correlation"):
    """Credit index correlation quotes (``CDX.IG.5Y.CORR``) matching ``pattern`` (on the index
    id, ``CDX.IG``) moved by ``points`` correlation points (0.01)."""

    points: float
    pattern: str = "*"


AnyShock = (
    ParallelShock | TwistShock | QuoteShock | SpotShock | VolShock | SpreadShock | CorrelationShock
)
