"""Typed reading of plain JSON data, each failure naming the source, the JSON path and the value.

``market.json: curves[3].instruments[5].tenor = '5X': bad tenor …``: the market loader
(:mod:`workbench.market.io`) reads every field through a :class:`JsonReader`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, fields
from datetime import date
from typing import Any

from workbench.market.model import MarketError
from workbench.market.schedules import parse_tenor, tenor_days


class JsonReader:
    """Typed access to plain JSON data; every failure names source, JSON path and value.

    Each method takes the value and its JSON path (``where``, e.g. ``curves[3].tenor``) and
    returns the value typed, or raises the :class:`MarketError` of :meth:`fail`.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, value: Any, why: str) -> MarketError:
        """The error for ``value`` at ``where``: ``source: where = value: why`` (the value's
        repr cut to 80 characters)."""
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return MarketError(f"{self.source}: {where} = {shown}: {why}")

    def obj(
        self, value: Any, where: str, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Any]:
        """An object whose keys are among ``allowed`` and include every one of ``required``."""
        if not isinstance(value, dict):
            raise self.fail(where, value, "expected an object")
        names = set(allowed)
        prefix = "" if where == "(top)" else f"{where}."
        for key in value:
            if key not in names:
                raise self.fail(f"{prefix}{key}", value[key], "unknown key")
        for key in required:
            if key not in value:
                raise self.fail(f"{prefix}{key}", None, "missing key")
        return value

    def fields_of(self, value: Any, where: str, cls: type) -> dict[str, Any]:
        """An object with exactly the keys of dataclass ``cls`` (defaults may be left out)."""
        fs = [f for f in fields(cls) if f.init]
        required = [f.name for f in fs if f.default is MISSING and f.default_factory is MISSING]
        return self.obj(value, where, [f.name for f in fs], required)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        """An object with any keys."""
        if not isinstance(value, dict):
            raise self.fail(where, value, "expected an object")
        return value

    def items(self, value: Any, where: str) -> list[Any]:
        """A list."""
        if not isinstance(value, list):
            raise self.fail(where, value, "expected a list")
        return value

    def text(self, value: Any, where: str) -> str:
        """A string that is not blank."""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, value, "expected a non-empty string")
        return value

    def choice(self, value: Any, where: str, options: tuple[str, ...]) -> str:
        """One of ``options``."""
        if value not in options:
            raise self.fail(where, value, f"expected one of {', '.join(options)}")
        return str(value)

    def integer(self, value: Any, where: str, minimum: int) -> int:
        """A whole number (not a bool) of at least ``minimum``."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, value, "expected a whole number")
        if value < minimum:
            raise self.fail(where, value, f"must be at least {minimum}")
        return value

    def number(self, value: Any, where: str) -> float:
        """A finite number (not a bool), as a float."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, value, "expected a number")
        out = float(value)
        if not math.isfinite(out):
            raise self.fail(where, value, "not a finite number")
        return out

    def day(self, value: Any, where: str) -> date:
        """A calendar date written ``YYYY-MM-DD``."""
        if not isinstance(value, str) or len(value) != 10:
            raise self.fail(where, value, "expected a date YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise self.fail(where, value, "expected a date YYYY-MM-DD") from None

    def tenor(self, value: Any, where: str) -> str:
        """A tenor: ``ON``, or a count and ``D``, ``W``, ``M`` or ``Y`` (``6M``)."""
        try:
            parse_tenor(value)
        except (ValueError, AttributeError):
            raise self.fail(where, value, "bad tenor (expected ON, nD, nW, nM or nY)") from None
        return str(value)

    def tenors(self, value: Any, where: str) -> tuple[str, ...]:
        """A non-empty list of tenors, strictly increasing."""
        out = tuple(self.tenor(t, f"{where}[{i}]") for i, t in enumerate(self.items(value, where)))
        if not out:
            raise self.fail(where, value, "expected at least one tenor")
        self.increasing(out, lambda i: f"{where}[{i}]")
        return out

    def increasing(self, tenors: Sequence[str], where_of: Callable[[int], str]) -> None:
        """Refuse tenors that do not increase in length (:func:`tenor_days`); ``where_of(i)`` is
        the JSON path of ``tenors[i]``."""
        for i in range(1, len(tenors)):
            if tenor_days(tenors[i]) <= tenor_days(tenors[i - 1]):
                raise self.fail(
                    where_of(i), tenors[i], f"tenors must increase (follows {tenors[i - 1]!r})"
                )

    def unique(self, ids: list[str], where: str, what: str) -> None:
        """Refuse a repeated id (``what`` names it in the message)."""
        seen: set[str] = set()
        for i, x in enumerate(ids):
            if x in seen:
                raise self.fail(f"{where}[{i}]", x, f"duplicate {what}")
            seen.add(x)


__all__ = ["JsonReader"]
