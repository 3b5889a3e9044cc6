"""The market snapshot file: JSON, schema ``workbench.market/1`` (see ``docs/formats.md``).

Loading validates once at the boundary; every error names the file, the JSON path and the
value (``market.json: curves[3].instruments[5].tenor = '5X': bad tenor …``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from workbench.market.model import (
    FX_DELTA_PILLARS,
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
from workbench.market.reader import JsonReader
from workbench.market.schedules import is_business_day

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
    """Write the snapshot as JSON (floats at full precision, so a load gives equal quotes)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(market_to_dict(market), indent=1, allow_nan=False))


def load_market(path: str | Path) -> MarketSnapshot:
    """Read and validate a snapshot file.

    Raises
    ------
    MarketError
        If the file is missing, unreadable, not JSON, or breaks any rule of ``docs/formats.md``;
        the message names the file, the JSON path and the value.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MarketError(f"{p}: no such market file") from None
    except UnicodeDecodeError as exc:
        raise MarketError(f"{p}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise MarketError(f"{p}: cannot read the market file: {exc.strerror}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MarketError(
            f"{p}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return market_from_dict(obj, source=str(p))


def market_from_dict(obj: Any, *, source: str = "<market>") -> MarketSnapshot:
    """Validate plain data (as read from JSON) and build the snapshot.

    Every rule of ``docs/formats.md`` is checked here, once; the first broken rule raises a
    :class:`MarketError` naming ``source``, the JSON path and the value.
    """
    r = JsonReader(source)
    if not isinstance(obj, dict):
        raise r.fail("(top)", obj, "expected an object")
    r.obj(obj, "(top)", _TOP, ("schema", "as_of", "quotes", "curves", "calendars"))
    if obj["schema"] != SCHEMA:
        raise r.fail("schema", obj["schema"], f"expected {SCHEMA!r}")
    as_of = r.day(obj["as_of"], "as_of")
    version = r.integer(obj.get("version", 1), "version", 0)
    base = r.text(obj.get("base_currency", "USD"), "base_currency")

    calendars: dict[str, Calendar] = {}
    for cid, raw in r.mapping(obj["calendars"], "calendars").items():
        where = f"calendars.{cid}"
        cal = r.obj(raw, where, ("weekend", "holidays"))
        weekend = r.items(cal.get("weekend", [5, 6]), f"{where}.weekend")
        for i, d in enumerate(weekend):
            if isinstance(d, bool) or d not in range(7):
                raise r.fail(f"{where}.weekend[{i}]", d, "expected a weekday 0 (Mon)…6 (Sun)")
        if len(set(weekend)) == 7:
            raise r.fail(f"{where}.weekend", weekend, "every day of the week is a weekend day")
        hol = tuple(
            r.day(d, f"{where}.holidays[{i}]")
            for i, d in enumerate(r.items(cal.get("holidays", []), f"{where}.holidays"))
        )
        calendars[cid] = Calendar(cid, tuple(sorted(set(weekend))), tuple(sorted(set(hol))))

    quotes_raw = r.mapping(obj["quotes"], "quotes")
    quote_ids = tuple(quotes_raw)
    for qid in quote_ids:
        r.text(qid, f"quotes.{qid}")
    values = np.array([r.number(v, f"quotes.{k}") for k, v in quotes_raw.items()], dtype=np.float64)
    known = set(quote_ids)

    def quote_ref(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in known:
            raise r.fail(where, value, "quote id not in the quote table")
        return value

    def positive_quote(value: Any, where: str, what: str) -> str:
        q = quote_ref(value, where)
        if quotes_raw[q] <= 0:
            raise r.fail(f"quotes.{q}", quotes_raw[q], f"{what} must be positive")
        return q

    def cal_ref(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in calendars:
            raise r.fail(where, value, "unknown calendar id")
        return value

    def grid(
        value: Any, where: str, rows: int, cols: int, what: str
    ) -> tuple[tuple[str, ...], ...]:
        raw_rows = r.items(value, where)
        if len(raw_rows) != rows:
            raise r.fail(where, f"{len(raw_rows)} rows", f"expected {rows} rows (one per expiry)")
        out = []
        for a, row in enumerate(raw_rows):
            cells = r.items(row, f"{where}[{a}]")
            if len(cells) != cols:
                raise r.fail(f"{where}[{a}]", cells, f"expected {cols} quote ids")
            out.append(
                tuple(positive_quote(q, f"{where}[{a}][{b}]", what) for b, q in enumerate(cells))
            )
        return tuple(out)

    curves = [
        _curve(r, raw, f"curves[{i}]", quote_ref, cal_ref)
        for i, raw in enumerate(r.items(obj["curves"], "curves"))
    ]
    r.unique([c.id for c in curves], "curves", "curve id")
    for i, spec in enumerate(curves):
        where = f"curves[{i}]"
        r.unique([x.quote for x in spec.instruments], f"{where}.instruments", "instrument quote")
        if spec.kind == "ois" and spec.discount_curve not in (None, spec.id):
            raise r.fail(
                f"{where}.discount_curve", spec.discount_curve, "an OIS curve discounts itself"
            )
        if spec.kind == "term":
            disc = next((c for c in curves if c.id == spec.discount_curve), None)
            if disc is None or disc.kind != "ois" or disc.currency != spec.currency:
                raise r.fail(
                    f"{where}.discount_curve",
                    spec.discount_curve,
                    "a term curve needs an OIS discount curve of its currency",
                )

    pairs: list[FxPair] = []
    for i, raw in enumerate(r.items(obj.get("fx_pairs", []), "fx_pairs")):
        where = f"fx_pairs[{i}]"
        d = r.fields_of(raw, where, FxPair)
        pair = FxPair(
            pair=r.text(d["pair"], f"{where}.pair"),
            base_ccy=r.text(d["base_ccy"], f"{where}.base_ccy"),
            quote_ccy=r.text(d["quote_ccy"], f"{where}.quote_ccy"),
            spot_quote=positive_quote(d["spot_quote"], f"{where}.spot_quote", "an FX spot"),
            calendar=cal_ref(d["calendar"], f"{where}.calendar"),
            spot_lag=r.integer(d.get("spot_lag", 2), f"{where}.spot_lag", 0),
        )
        if pair.pair != pair.base_ccy + pair.quote_ccy or pair.base_ccy == pair.quote_ccy:
            raise r.fail(
                f"{where}.pair", pair.pair, "expected base_ccy followed by quote_ccy (EURUSD)"
            )
        pairs.append(pair)
    r.unique([p.pair for p in pairs], "fx_pairs", "FX pair")
    pair_ids = {p.pair for p in pairs}

    surfaces: list[FxVolSurface] = []
    for i, raw in enumerate(r.items(obj.get("fx_vol_surfaces", []), "fx_vol_surfaces")):
        where = f"fx_vol_surfaces[{i}]"
        d = r.fields_of(raw, where, FxVolSurface)
        pair_id = r.text(d["pair"], f"{where}.pair")
        if pair_id not in pair_ids:
            raise r.fail(f"{where}.pair", pair_id, "no such pair in fx_pairs")
        expiries = r.tenors(d["expiries"], f"{where}.expiries")
        deltas = tuple(
            r.choice(x, f"{where}.deltas[{j}]", FX_DELTA_PILLARS)
            for j, x in enumerate(r.items(d["deltas"], f"{where}.deltas"))
        )
        if len(deltas) < 2:
            raise r.fail(f"{where}.deltas", list(deltas), "expected at least two delta pillars")
        r.unique(list(deltas), f"{where}.deltas", "delta pillar")
        quotes = grid(d["quotes"], f"{where}.quotes", len(expiries), len(deltas), "a vol")
        surfaces.append(FxVolSurface(pair_id, expiries, deltas, quotes))
    r.unique([s.pair for s in surfaces], "fx_vol_surfaces", "surface for the pair")

    equities: list[EquitySpec] = []
    for i, raw in enumerate(r.items(obj.get("equities", []), "equities")):
        where = f"equities[{i}]"
        d = r.fields_of(raw, where, EquitySpec)
        expiries = r.tenors(d["vol_expiries"], f"{where}.vol_expiries")
        moneyness = tuple(
            r.number(m, f"{where}.vol_moneyness[{j}]")
            for j, m in enumerate(r.items(d["vol_moneyness"], f"{where}.vol_moneyness"))
        )
        if not moneyness:
            raise r.fail(f"{where}.vol_moneyness", [], "expected at least one moneyness")
        for j, m in enumerate(moneyness):
            if m <= 0.0 or (j and m <= moneyness[j - 1]):
                raise r.fail(
                    f"{where}.vol_moneyness[{j}]", m, "moneyness must be positive and increase"
                )
        currency = r.text(d["currency"], f"{where}.currency")
        if currency not in calendars:
            raise r.fail(f"{where}.currency", currency, "no calendar with this currency's id")
        equities.append(
            EquitySpec(
                id=r.text(d["id"], f"{where}.id"),
                currency=currency,
                spot_quote=positive_quote(d["spot_quote"], f"{where}.spot_quote", "an equity spot"),
                dividend_yield=r.number(d["dividend_yield"], f"{where}.dividend_yield"),
                vol_expiries=expiries,
                vol_moneyness=moneyness,
                vol_quotes=grid(
                    d["vol_quotes"], f"{where}.vol_quotes", len(expiries), len(moneyness), "a vol"
                ),
            )
        )
    r.unique([e.id for e in equities], "equities", "equity id")

    indices: list[CreditIndex] = []
    for i, raw in enumerate(r.items(obj.get("credit_indices", []), "credit_indices")):
        indices.append(
            _credit_index(
                r,
                raw,
                f"credit_indices[{i}]",
                as_of,
                quotes_raw,
                quote_ref,
                positive_quote,
                cal_ref,
            )
        )
    r.unique([c.id for c in indices], "credit_indices", "credit index id")

    if base not in calendars:
        raise r.fail("base_currency", base, "no calendar with this currency's id")
    if not is_business_day(as_of, calendars[base]):
        raise r.fail("as_of", obj["as_of"], f"not a business day of the {base} calendar")
    return MarketSnapshot(
        as_of=as_of,
        version=version,
        calendars=calendars,
        quote_ids=quote_ids,
        quotes=values,
        curves=tuple(curves),
        fx_pairs=tuple(pairs),
        fx_vol_surfaces=tuple(surfaces),
        equities=tuple(equities),
        credit_indices=tuple(indices),
        base_currency=base,
    )


_Ref = Callable[[Any, str], str]


def _curve(r: JsonReader, raw: Any, where: str, quote_ref: _Ref, cal_ref: _Ref) -> CurveSpec:
    d = r.fields_of(raw, where, CurveSpec)
    kinds: tuple[str, ...] = ("deposit", "ois", "irs")
    insts = []
    for j, x in enumerate(r.items(d["instruments"], f"{where}.instruments")):
        w = f"{where}.instruments[{j}]"
        e = r.fields_of(x, w, CurveInstrument)
        insts.append(
            CurveInstrument(
                quote=quote_ref(e["quote"], f"{w}.quote"),
                kind=r.choice(e["kind"], f"{w}.kind", kinds),  # type: ignore[arg-type]
                tenor=r.tenor(e["tenor"], f"{w}.tenor"),
            )
        )
    if not insts:
        raise r.fail(f"{where}.instruments", [], "a curve needs at least one instrument")
    r.increasing([x.tenor for x in insts], lambda j: f"{where}.instruments[{j}].tenor")
    day_counts: tuple[str, ...] = ("ACT/360", "ACT/365F", "30/360")
    disc = d.get("discount_curve")
    if disc is not None:
        r.text(disc, f"{where}.discount_curve")
    return CurveSpec(
        id=r.text(d["id"], f"{where}.id"),
        currency=r.text(d["currency"], f"{where}.currency"),
        kind=r.choice(d["kind"], f"{where}.kind", ("ois", "term")),  # type: ignore[arg-type]
        calendar=cal_ref(d["calendar"], f"{where}.calendar"),
        instruments=tuple(insts),
        spot_lag=r.integer(d.get("spot_lag", 2), f"{where}.spot_lag", 0),
        day_count=r.choice(  # type: ignore[arg-type]
            d.get("day_count", "ACT/360"), f"{where}.day_count", day_counts
        ),
        fixed_day_count=r.choice(  # type: ignore[arg-type]
            d.get("fixed_day_count", "ACT/360"), f"{where}.fixed_day_count", day_counts
        ),
        fixed_frequency_months=r.integer(
            d.get("fixed_frequency_months", 12), f"{where}.fixed_frequency_months", 1
        ),
        float_frequency_months=r.integer(
            d.get("float_frequency_months", 12), f"{where}.float_frequency_months", 1
        ),
        business_day=r.choice(  # type: ignore[arg-type]
            d.get("business_day", "MF"), f"{where}.business_day", ("F", "MF", "P", "U")
        ),
        discount_curve=disc,
        interpolation=r.choice(  # type: ignore[arg-type]
            d.get("interpolation", "monotone_convex"),
            f"{where}.interpolation",
            ("monotone_convex", "log_linear"),
        ),
    )


def _credit_index(
    r: JsonReader,
    raw: Any,
    where: str,
    as_of: date,
    quotes_raw: dict[str, Any],
    quote_ref: _Ref,
    positive_quote: Callable[[Any, str, str], str],
    cal_ref: _Ref,
) -> CreditIndex:
    d = r.fields_of(raw, where, CreditIndex)
    maturity = r.day(d["maturity"], f"{where}.maturity")
    if maturity <= as_of:
        raise r.fail(f"{where}.maturity", d["maturity"], f"not after as_of {as_of}")
    coupon = r.number(d["coupon"], f"{where}.coupon")
    if coupon < 0.0:
        raise r.fail(f"{where}.coupon", coupon, "a coupon cannot be negative")
    recovery = r.number(d["recovery"], f"{where}.recovery")
    if not 0.0 <= recovery < 1.0:
        raise r.fail(f"{where}.recovery", recovery, "recovery must be in [0, 1)")
    spread_q = positive_quote(d["spread_quote"], f"{where}.spread_quote", "a credit spread")
    corr_q = quote_ref(d["correlation_quote"], f"{where}.correlation_quote")
    rho = quotes_raw[corr_q]
    if not 0.0 < rho < 1.0:
        raise r.fail(f"quotes.{corr_q}", rho, "a correlation must be in (0, 1)")
    names = tuple(
        r.text(x, f"{where}.names[{j}]")
        for j, x in enumerate(r.items(d["names"], f"{where}.names"))
    )
    r.unique(list(names), f"{where}.names", "name")
    weights = [
        r.number(x, f"{where}.hazard_weights[{j}]")
        for j, x in enumerate(r.items(d["hazard_weights"], f"{where}.hazard_weights"))
    ]
    w = np.asarray(weights, dtype=np.float64)
    if w.size != len(names) or w.size == 0 or abs(w.mean() - 1.0) > 1e-9 or np.any(w <= 0):
        raise r.fail(
            f"{where}.hazard_weights",
            f"{w.size} weights for {len(names)} names, mean {w.mean() if w.size else 0}",
            "need one positive weight per name, averaging 1",
        )
    return CreditIndex(
        id=r.text(d["id"], f"{where}.id"),
        currency=r.text(d["currency"], f"{where}.currency"),
        maturity=maturity,
        coupon=coupon,
        recovery=recovery,
        spread_quote=spread_q,
        correlation_quote=corr_q,
        names=names,
        hazard_weights=tuple(float(v) for v in w),
        calendar=cal_ref(d.get("calendar", "USD"), f"{where}.calendar"),
    )
