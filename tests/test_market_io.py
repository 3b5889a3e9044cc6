"""Market snapshot files: exact round trips, the documented example, and errors that name the place.

Every bad-file case starts from the reference snapshot as plain data, breaks one thing, writes a
real file and loads it; the error must name the file, the JSON path and the value.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.book.io import load_book
from workbench.market.io import SCHEMA, load_market, market_from_dict, market_to_dict, save_market
from workbench.market.model import MarketError, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.pricing.portfolio import PortfolioPricer

DOC = Path(__file__).resolve().parents[1] / "docs" / "formats.md"


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def plain(market: MarketSnapshot) -> dict[str, Any]:
    return market_to_dict(market)


def _doc_example() -> dict[str, Any]:
    match = re.search(r"## Worked example.*?```json\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, "docs/formats.md has no worked example"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def _assert_same_market(a: MarketSnapshot, b: MarketSnapshot) -> None:
    assert a.as_of == b.as_of
    assert a.version == b.version
    assert a.base_currency == b.base_currency
    assert dict(a.calendars) == dict(b.calendars)
    assert a.quote_ids == b.quote_ids
    assert a.quotes.tobytes() == b.quotes.tobytes()  # bit for bit
    assert a.curves == b.curves
    assert a.fx_pairs == b.fx_pairs
    assert a.fx_vol_surfaces == b.fx_vol_surfaces
    assert a.equities == b.equities
    assert a.credit_indices == b.credit_indices


# --- round trips ------------------------------------------------------------------------------


def test_reference_market_round_trips(market: MarketSnapshot, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "market.json"
    save_market(market, path)
    loaded = load_market(path)
    _assert_same_market(market, loaded)
    assert loaded.quotes.dtype == np.float64
    assert not loaded.quotes.flags.writeable


def test_round_trip_after_a_tick_keeps_version_and_full_precision(
    market: MarketSnapshot, tmp_path: Path
) -> None:
    ticked = market.with_quotes({"USD.SOFR.OIS.5Y": 0.1 + 0.2, "FX.EURUSD": 1.0842000000000001})
    save_market(ticked, tmp_path / "m.json")
    loaded = load_market(tmp_path / "m.json")
    assert loaded.version == market.version + 1
    assert loaded.quote("USD.SOFR.OIS.5Y") == 0.1 + 0.2
    _assert_same_market(ticked, loaded)


def test_snapshot_equality_operator(market: MarketSnapshot, tmp_path: Path) -> None:
    """A loaded snapshot compares equal to the saved one with ``==`` (it is a frozen dataclass)."""
    save_market(market, tmp_path / "m.json")
    assert load_market(tmp_path / "m.json") == market


def test_reference_market_contents(market: MarketSnapshot) -> None:
    assert len(market.curves) == 14
    assert len(market.fx_pairs) == 10
    assert len(market.equities) == 50
    assert [len(c.names) for c in market.credit_indices] == [125] * 4
    for qid in ("USD.SOFR.OIS.5Y", "FX.EURUSD", "FXVOL.EURUSD.1Y.25C", "EQ.AAPL", "CDX.IG.5Y"):
        assert np.isfinite(market.quote(qid)), qid


# --- the documentation ------------------------------------------------------------------------


def test_documented_example_loads_and_prices(tmp_path: Path) -> None:
    data = _doc_example()
    example = market_from_dict(data, source="docs/formats.md")
    assert example.as_of.isoformat() == data["as_of"]
    assert len(example.quote_ids) == len(data["quotes"])
    assert [c.id for c in example.curves] == ["USD.SOFR", "USD.TERMSOFR3M", "EUR.ESTR"]
    assert example.curve("USD.TERMSOFR3M").interpolation == "log_linear"
    assert example.fx_vol_surfaces[0].quotes[1][2] == "FXVOL.EURUSD.1Y.25C"
    # the example is a usable market, not only a parseable one
    path = tmp_path / "book.csv"
    path.write_text(
        "position_id,product,desk,book,currency,underlying,option_type,start,maturity,notional,"
        "fixed_rate,strike,attach,detach,coupon\n"
        "A,IRS,R,R1,USD,USD.TERMSOFR3M,,2026-11-26,2031-11-26,1e8,0.04,,,,\n"
        "B,FX_OPTION,F,F1,USD,EURUSD,C,,2027-05-26,1e7,,1.09,,,\n"
        "C,EQ_OPTION,E,E1,USD,AAPL,P,,2027-05-26,1000,,220,,,\n"
        "D,CDX_TRANCHE,C,C1,USD,CDX.IG,,,2031-12-20,1e7,,,0.0,0.5,0.01\n"
    )
    book = load_book(path, market=example)
    risk = PortfolioPricer(book, example, n_paths=1024, tranche_method="recursion").risk(example)
    assert np.isfinite(risk.pv).all()
    assert np.all(risk.pv != 0.0)


def test_every_key_is_documented(plain: dict[str, Any]) -> None:
    text = DOC.read_text()
    keys = set(plain)
    for section in ("curves", "fx_pairs", "fx_vol_surfaces", "equities", "credit_indices"):
        keys |= set(plain[section][0])
    keys |= set(plain["curves"][0]["instruments"][0])
    keys |= set(next(iter(plain["calendars"].values())))
    for key in sorted(keys):
        assert f"| `{key}` |" in text, key


# --- errors -----------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: Any) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        target: Any = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


def _drop(path: tuple[str | int, ...]) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        target: Any = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return apply


def _reverse(path: tuple[str | int, ...]) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        target: Any = obj
        for key in path:
            target = target[key]
        target.reverse()

    return apply


BAD = [
    # id, mutation, JSON path named, value shown, words in the message
    ("missing top key", _drop(("as_of",)), "as_of", "None", "missing key"),
    ("missing curve key", _drop(("curves", 2, "id")), "curves[2].id", "None", "missing key"),
    ("unknown key", _set(("curves", 0, "colour"), "red"), "curves[0].colour", "'red'", "unknown"),
    ("wrong schema", _set(("schema",), "other/1"), "schema", "'other/1'", SCHEMA),
    (
        "quote as text",
        _set(("quotes", "FX.EURUSD"), "1.08"),
        "quotes.FX.EURUSD",
        "'1.08'",
        "number",
    ),
    ("quote as bool", _set(("quotes", "EQ.AAPL"), True), "quotes.EQ.AAPL", "True", "number"),
    ("quote NaN", _set(("quotes", "CDX.IG.5Y"), float("nan")), "quotes.CDX.IG.5Y", "nan", "finite"),
    (
        "spot lag as text",
        _set(("curves", 0, "spot_lag"), "2"),
        "curves[0].spot_lag",
        "'2'",
        "whole number",
    ),
    ("currency as number", _set(("curves", 0, "currency"), 5), "curves[0].currency", "5", "string"),
    (
        "instruments not a list",
        _set(("curves", 0, "instruments"), {}),
        "curves[0].instruments",
        "{}",
        "a list",
    ),
    (
        "unknown day count",
        _set(("curves", 1, "day_count"), "ACT/999"),
        "curves[1].day_count",
        "'ACT/999'",
        "ACT/365F",
    ),
    (
        "unknown instrument kind",
        _set(("curves", 0, "instruments", 3, "kind"), "fra"),
        "curves[0].instruments[3].kind",
        "'fra'",
        "deposit",
    ),
    (
        "bad tenor",
        _set(("curves", 0, "instruments", 5, "tenor"), "5X"),
        "curves[0].instruments[5].tenor",
        "'5X'",
        "bad tenor",
    ),
    (
        "curve tenors not increasing",
        _reverse(("curves", 3, "instruments")),
        "curves[3].instruments[1].tenor",
        "'25Y'",
        "increase",
    ),
    (
        "unknown calendar",
        _set(("curves", 0, "calendar"), "XXX"),
        "curves[0].calendar",
        "'XXX'",
        "unknown calendar",
    ),
    (
        "unknown calendar of a pair",
        _set(("fx_pairs", 2, "calendar"), "TARGET"),
        "fx_pairs[2].calendar",
        "'TARGET'",
        "unknown calendar",
    ),
    (
        "unknown calendar of an index",
        _set(("credit_indices", 1, "calendar"), "NYC"),
        "credit_indices[1].calendar",
        "'NYC'",
        "unknown calendar",
    ),
    (
        "term curve without OIS",
        _set(("curves", 1, "discount_curve"), "EUR.ESTR"),
        "curves[1].discount_curve",
        "'EUR.ESTR'",
        "OIS discount curve",
    ),
    (
        "negative FX vol",
        _set(("quotes", "FXVOL.EURUSD.1Y.25C"), -0.1),
        "quotes.FXVOL.EURUSD.1Y.25C",
        "-0.1",
        "vol must be positive",
    ),
    (
        "negative equity vol",
        _set(("quotes", "EQVOL.AAPL.1Y.100"), -0.2),
        "quotes.EQVOL.AAPL.1Y.100",
        "-0.2",
        "vol must be positive",
    ),
    (
        "unknown quote id in a surface",
        _set(("fx_vol_surfaces", 0, "quotes", 6, 3), "FXVOL.EURUSD.1Y.30C"),
        "fx_vol_surfaces[0].quotes[6][3]",
        "'FXVOL.EURUSD.1Y.30C'",
        "not in the quote table",
    ),
    (
        "unknown quote id of a curve",
        _set(("curves", 0, "instruments", 1, "quote"), "USD.SOFR.OIS.1MM"),
        "curves[0].instruments[1].quote",
        "'USD.SOFR.OIS.1MM'",
        "not in the quote table",
    ),
    (
        "surface expiries not increasing",
        _reverse(("fx_vol_surfaces", 0, "expiries")),
        "fx_vol_surfaces[0].expiries[1]",
        "'3Y'",
        "increase",
    ),
    (
        "equity expiries not increasing",
        _reverse(("equities", 0, "vol_expiries")),
        "equities[0].vol_expiries[1]",
        "'2Y'",
        "increase",
    ),
    (
        "moneyness not increasing",
        _reverse(("equities", 0, "vol_moneyness")),
        "equities[0].vol_moneyness[1]",
        "1.2",
        "increase",
    ),
    (
        "unknown delta pillar",
        _set(("fx_vol_surfaces", 0, "deltas", 2), "50D"),
        "fx_vol_surfaces[0].deltas[2]",
        "'50D'",
        "ATM",
    ),
    (
        "surface row too short",
        _drop(("fx_vol_surfaces", 0, "quotes", 4, 4)),
        "fx_vol_surfaces[0].quotes[4]",
        "['FXVOL.EURUSD.6M.10P'",
        "expected 5 quote ids",
    ),
    (
        "surface of an unknown pair",
        _set(("fx_vol_surfaces", 0, "pair"), "EURSEK"),
        "fx_vol_surfaces[0].pair",
        "'EURSEK'",
        "no such pair",
    ),
    ("bad as-of date", _set(("as_of",), "2026-02-30"), "as_of", "'2026-02-30'", "YYYY-MM-DD"),
    ("as-of on a weekend", _set(("as_of",), "2026-11-22"), "as_of", "'2026-11-22'", "business"),
    (
        "bad holiday",
        _set(("calendars", "USD", "holidays", 0), "2025-1-1"),
        "calendars.USD.holidays[0]",
        "'2025-1-1'",
        "YYYY-MM-DD",
    ),
    (
        "holidays not a list",
        _set(("calendars", "EUR", "holidays"), "2026-12-25"),
        "calendars.EUR.holidays",
        "'2026-12-25'",
        "a list",
    ),
    (
        "bad weekday",
        _set(("calendars", "JPY", "weekend"), [5, 7]),
        "calendars.JPY.weekend[1]",
        "7",
        "weekday",
    ),
    (
        "bad index maturity",
        _set(("credit_indices", 0, "maturity"), 20311220),
        "credit_indices[0].maturity",
        "20311220",
        "YYYY-MM-DD",
    ),
    (
        "recovery of 1",
        _set(("credit_indices", 2, "recovery"), 1.0),
        "credit_indices[2].recovery",
        "1.0",
        "[0, 1)",
    ),
    (
        "correlation of 1",
        _set(("quotes", "CDX.HY.5Y.CORR"), 1.0),
        "quotes.CDX.HY.5Y.CORR",
        "1.0",
        "(0, 1)",
    ),
    (
        "hazard weight as text",
        _set(("credit_indices", 0, "hazard_weights", 7), "1.0"),
        "credit_indices[0].hazard_weights[7]",
        "'1.0'",
        "number",
    ),
    (
        "names not a list",
        _set(("credit_indices", 3, "names"), 125),
        "credit_indices[3].names",
        "125",
        "a list",
    ),
    (
        "negative FX spot",
        _set(("quotes", "FX.USDJPY"), -151.35),
        "quotes.FX.USDJPY",
        "-151.35",
        "spot must be positive",
    ),
    ("version as bool", _set(("version",), True), "version", "True", "whole number"),
    ("duplicate curve", _set(("curves", 2, "id"), "USD.SOFR"), "curves[2]", "'USD.SOFR'", "dupl"),
]


@pytest.mark.parametrize(
    ("mutate", "where", "shown", "words"), [pytest.param(*case[1:], id=case[0]) for case in BAD]
)
def test_bad_market_names_file_path_and_value(
    mutate: Mutation,
    where: str,
    shown: str,
    words: str,
    plain: dict[str, Any],
    tmp_path: Path,
) -> None:
    data = copy.deepcopy(plain)
    mutate(data)
    path = tmp_path / "market.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MarketError) as info:
        load_market(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where} = {shown}"), message
    assert words in message
    assert "\n" not in message


def test_unchanged_plain_data_loads(plain: dict[str, Any], market: MarketSnapshot) -> None:
    """The bad-market cases above fail only because of their one change."""
    _assert_same_market(market_from_dict(copy.deepcopy(plain)), market)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such market file"),
        ('{"schema": "workbench.market/1", "as_of": ', "not valid JSON at line 1, column"),
        (b"\xff\xfe\x00", "not a UTF-8 text file"),
        ("[1, 2, 3]", "(top) = [1, 2, 3]: expected an object"),
    ],
)
def test_unreadable_market_file(content: str | bytes | None, words: str, tmp_path: Path) -> None:
    path = tmp_path / "market.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(MarketError) as info:
        load_market(path)
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)
