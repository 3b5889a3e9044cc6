"""The market snapshot file: JSON, schema ``workbench.market/1`` (see ``docs/formats.md``).

Loading validates once at the boundary; every error names the file, the JSON path and the
value (``market.json: curves[3].instruments[5].tenor = '5X': bad tenor …``).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from workbench.market.model import (
    Calendar,
    CreditIndex,
    CurveInstrument,
    CurveSpec,
    EquitySpec,
    FxPair,
    FxVolSurface,
    MarketError,
    MarketSnapshot,
)
from workbench.market.schedules import is_business_day, parse_tenor

SCHEMA = "workbench.market/1"
_TOP = (
    "schema",
    "as_of",
    "version",
    "base_currency",
    "calendars",
    "quotes",
    "curves",
    "fx_pairs",
    "fx_vol_surfaces",
    "equities",
    "credit_indices",
)


def market_to_dict(market: MarketSnapshot) -> dict[str, Any]:
    """The snapshot as plain JSON-ready data."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, date):
            return obj.isoformat()
        if isinstance(obj, tuple | list):
            return [plain(x) for x in obj]
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        return obj

    return {
        "schema": SCHEMA,
        "as_of": market.as_of.isoformat(),
        "version": market.version,
        "base_currency": market.base_currency,
        "calendars": {
            c.id: {"weekend": list(c.weekend), "holidays": [d.isoformat() for d in c.holidays]}
            for c in market.calendars.values()
        },
        "quotes": dict(zip(market.quote_ids, market.quotes.tolist(), strict=True)),
        "curves": [plain(asdict(c)) for c in market.curves],
        "fx_pairs": [plain(asdict(p)) for p in market.fx_pairs],
        "fx_vol_surfaces": [plain(asdict(s)) for s in market.fx_vol_surfaces],
        "equities": [plain(asdict(e)) for e in market.equities],
        "credit_indices": [plain(asdict(i)) for i in market.credit_indices],
    }


def save_market(market: MarketSnapshot, path: str | Path) -> None:
    """Write the snapshot as JSON (floats at full precision)."""
    Path(path).write_text(json.dumps(market_to_dict(market), indent=1, allow_nan=False))


def load_market(path: str | Path) -> MarketSnapshot:
    """Read and validate a snapshot file."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise MarketError(f"{p}: no such market file") from None
    except json.JSONDecodeError as exc:
        raise MarketError(
            f"{p}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return market_from_dict(obj, source=str(p))


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, value: Any, why: str) -> MarketError:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return MarketError(f"{self.source}: {where} = {shown}: {why}")

    def obj(self, value: Any, where: str, cls: type) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, value, "expected an object")
        names = {f.name for f in fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise self.fail(
                f"{where}.{sorted(unknown)[0]}", value[sorted(unknown)[0]], "unknown key"
            )
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, value, "expected a number")
        out = float(value)
        if not math.isfinite(out):
            raise self.fail(where, value, "not a finite number")
        return out

    def day(self, value: Any, where: str) -> date:
        try:
            return date.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.fail(where, value, "expected a date YYYY-MM-DD") from None

    def tenor(self, value: Any, where: str) -> str:
        try:
            parse_tenor(value)
        except (ValueError, AttributeError):
            raise self.fail(where, value, "bad tenor (expected ON, nD, nW, nM or nY)") from None
        return str(value)


def _build(r: _Reader, cls: type, raw: Any, where: str, **convert: Any) -> Any:
    data = dict(r.obj(raw, where, cls))
    for f in fields(cls):
        if f.name not in data and f.default is MISSING and f.init:
            raise r.fail(f"{where}.{f.name}", None, "missing key")
    for key, fn in convert.items():
        if key in data:
            data[key] = fn(data[key], f"{where}.{key}")
    return cls(**data)


def market_from_dict(obj: Any, *, source: str = "<market>") -> MarketSnapshot:
    """Validate plain data (as read from JSON) and build the snapshot."""
    r = _Reader(source)
    if not isinstance(obj, dict):
        raise r.fail("(top)", obj, "expected an object")
    for key in obj:
        if key not in _TOP:
            raise r.fail(key, obj[key], "unknown key")
    for key in ("schema", "as_of", "quotes", "curves", "calendars"):
        if key not in obj:
            raise r.fail(key, None, "missing key")
    if obj["schema"] != SCHEMA:
        raise r.fail("schema", obj["schema"], f"expected {SCHEMA!r}")
    as_of = r.day(obj["as_of"], "as_of")
    version = obj.get("version", 1)
    if not isinstance(version, int) or version < 0:
        raise r.fail("version", version, "expected a non-negative integer")

    calendars: dict[str, Calendar] = {}
    for cid, raw in _mapping(r, obj["calendars"], "calendars").items():
        where = f"calendars.{cid}"
        cal = _mapping(r, raw, where)
        weekend = cal.get("weekend", [5, 6])
        if not isinstance(weekend, list) or any(d not in range(7) for d in weekend):
            raise r.fail(f"{where}.weekend", weekend, "expected a list of weekdays 0 (Mon)…6 (Sun)")
        hol = tuple(
            r.day(d, f"{where}.holidays[{i}]") for i, d in enumerate(cal.get("holidays", []))
        )
        calendars[cid] = Calendar(cid, tuple(weekend), tuple(sorted(hol)))

    quotes_raw = _mapping(r, obj["quotes"], "quotes")
    quote_ids = tuple(quotes_raw)
    values = np.array([r.number(v, f"quotes.{k}") for k, v in quotes_raw.items()], dtype=np.float64)
    known = set(quote_ids)

    def quote_ref(value: Any, where: str) -> str:
        if value not in known:
            raise r.fail(where, value, "quote id not in the quote table")
        return str(value)

    def positive_quote(value: Any, where: str, what: str) -> str:
        q = quote_ref(value, where)
        if quotes_raw[q] <= 0:
            raise r.fail(f"quotes.{q}", quotes_raw[q], f"{what} must be positive")
        return q

    def cal_ref(value: Any, where: str) -> str:
        if value not in calendars:
            raise r.fail(where, value, "unknown calendar id")
        return str(value)

    curves: list[CurveSpec] = []
    for i, raw in enumerate(_list(r, obj["curves"], "curves")):
        where = f"curves[{i}]"
        insts = tuple(
            _build(
                r, CurveInstrument, x, f"{where}.instruments[{j}]", quote=quote_ref, tenor=r.tenor
            )
            for j, x in enumerate(
                _list(r, r.obj(raw, where, CurveSpec).get("instruments"), f"{where}.instruments")
            )
        )
        for j, inst in enumerate(insts):
            if inst.kind not in ("deposit", "ois", "irs"):
                raise r.fail(
                    f"{where}.instruments[{j}].kind", inst.kind, "expected deposit, ois or irs"
                )
        spec = _build(r, CurveSpec, {**raw, "instruments": insts}, where, calendar=cal_ref)
        if spec.kind not in ("ois", "term"):
            raise r.fail(f"{where}.kind", spec.kind, "expected ois or term")
        curves.append(spec)
    ids = [c.id for c in curves]
    for i, spec in enumerate(curves):
        if ids.count(spec.id) > 1:
            raise r.fail(f"curves[{i}].id", spec.id, "duplicate curve id")
        if spec.kind == "term":
            disc = next((c for c in curves if c.id == spec.discount_curve), None)
            if disc is None or disc.kind != "ois" or disc.currency != spec.currency:
                raise r.fail(
                    f"curves[{i}].discount_curve",
                    spec.discount_curve,
                    "a term curve needs an OIS discount curve of its currency",
                )

    pairs = tuple(
        _build(
            r,
            FxPair,
            x,
            f"fx_pairs[{i}]",
            calendar=cal_ref,
            spot_quote=lambda v, w: positive_quote(v, w, "an FX spot"),
        )
        for i, x in enumerate(_list(r, obj.get("fx_pairs", []), "fx_pairs"))
    )
    surfaces = []
    for i, x in enumerate(_list(r, obj.get("fx_vol_surfaces", []), "fx_vol_surfaces")):
        s = _build(r, FxVolSurface, x, f"fx_vol_surfaces[{i}]")
        grid = tuple(
            tuple(
                positive_quote(q, f"fx_vol_surfaces[{i}].quotes[{a}][{b}]", "a vol")
                for b, q in enumerate(row)
            )
            for a, row in enumerate(s.quotes)
        )
        surfaces.append(FxVolSurface(s.pair, tuple(s.expiries), tuple(s.deltas), grid))
    equities = []
    for i, x in enumerate(_list(r, obj.get("equities", []), "equities")):
        e = _build(
            r,
            EquitySpec,
            x,
            f"equities[{i}]",
            spot_quote=lambda v, w: positive_quote(v, w, "an equity spot"),
            dividend_yield=r.number,
        )
        grid = tuple(
            tuple(
                positive_quote(q, f"equities[{i}].vol_quotes[{a}][{b}]", "a vol")
                for b, q in enumerate(row)
            )
            for a, row in enumerate(e.vol_quotes)
        )
        equities.append(
            EquitySpec(
                e.id,
                e.currency,
                e.spot_quote,
                e.dividend_yield,
                tuple(e.vol_expiries),
                tuple(float(m) for m in e.vol_moneyness),
                grid,
            )
        )
    indices = []
    for i, x in enumerate(_list(r, obj.get("credit_indices", []), "credit_indices")):
        where = f"credit_indices[{i}]"
        c = _build(
            r,
            CreditIndex,
            x,
            where,
            maturity=r.day,
            calendar=cal_ref,
            spread_quote=lambda v, w: positive_quote(v, w, "a credit spread"),
            correlation_quote=quote_ref,
            recovery=r.number,
            coupon=r.number,
        )
        rho = quotes_raw[c.correlation_quote]
        if not 0.0 < rho < 1.0:
            raise r.fail(f"quotes.{c.correlation_quote}", rho, "a correlation must be in (0, 1)")
        if not 0.0 <= c.recovery < 1.0:
            raise r.fail(f"{where}.recovery", c.recovery, "recovery must be in [0, 1)")
        w = np.asarray(c.hazard_weights, dtype=np.float64)
        if w.size != len(c.names) or w.size == 0 or abs(w.mean() - 1.0) > 1e-9 or np.any(w <= 0):
            raise r.fail(
                f"{where}.hazard_weights",
                f"{w.size} weights, mean {w.mean() if w.size else 0}",
                "need one positive weight per name, averaging 1",
            )
        indices.append(
            CreditIndex(
                c.id,
                c.currency,
                c.maturity,
                c.coupon,
                c.recovery,
                c.spread_quote,
                c.correlation_quote,
                tuple(c.names),
                tuple(float(v) for v in w),
                c.calendar,
            )
        )
    base = obj.get("base_currency", "USD")
    if base in calendars and not is_business_day(as_of, calendars[base]):
        raise r.fail("as_of", obj["as_of"], f"not a business day of the {base} calendar")
    return MarketSnapshot(
        as_of=as_of,
        version=version,
        calendars=calendars,
        quote_ids=quote_ids,
        quotes=values,
        curves=tuple(curves),
        fx_pairs=pairs,
        fx_vol_surfaces=tuple(surfaces),
        equities=tuple(equities),
        credit_indices=tuple(indices),
        base_currency=base,
    )


def _mapping(r: _Reader, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise r.fail(where, value, "expected an object")
    return value


def _list(r: _Reader, value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise r.fail(where, value, "expected a list")
    return value
