"""Scenarios as data: historical 1-day changes and named stresses, applied to today's market."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.market.history import MarketHistory, validate_history
from workbench.market.model import MarketError, MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.risk.scenarios import (
    DEFAULT_WINDOW,
    historical_scenarios,
    quote_classes,
    stress_library,
    stress_scenarios,
)


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_reference_market()


@pytest.fixture(scope="module")
def history(market: MarketSnapshot) -> MarketHistory:
    return validate_history(generate_history(market, days=DEFAULT_WINDOW + 20, seed=11), market)


def test_a_historical_scenario_replays_its_day_on_the_day_before(
    market: MarketSnapshot, history: MarketHistory
) -> None:
    """Applied to the market of day t−1, the scenario of day t gives day t's quotes: absolute
    changes for rates and correlations, log changes for spots, vols and spreads."""
    sc = historical_scenarios(history, market)
    assert len(sc) == DEFAULT_WINDOW
    assert sc.names[-1] == str(history.dates[-1])
    assert sc.names[0] == str(history.dates[-DEFAULT_WINDOW])
    classes = np.array(quote_classes(market))
    assert set(classes[sc.relative]) == {"fx", "equity", "fx_vol", "equity_vol", "spread"}
    n = history.values.shape[0]
    for s in (0, 123, DEFAULT_WINDOW - 1):
        t = n - DEFAULT_WINDOW + s
        before = market.with_quote_values(history.values[t - 1])
        np.testing.assert_allclose(sc.values(before)[s], history.values[t], rtol=1e-12,
                                   atol=1e-15)  # fmt: skip
    # on today's market: rates move by the day's difference, spots by its ratio
    today = sc.values(market)
    k_rate = list(market.quote_ids).index("USD.SOFR.OIS.5Y")
    k_spot = list(market.quote_ids).index("EQ.AAPL")
    end, start = history.values[n - DEFAULT_WINDOW + 7], history.values[n - DEFAULT_WINDOW + 6]
    rate = market.quote("USD.SOFR.OIS.5Y") + end[k_rate] - start[k_rate]
    spot = market.quote("EQ.AAPL") * end[k_spot] / start[k_spot]
    assert today[7, k_rate] == pytest.approx(rate, abs=1e-15)
    assert today[7, k_spot] == pytest.approx(spot, rel=1e-13)


def test_how_each_class_moves_is_configurable_and_bad_windows_are_refused(
    market: MarketSnapshot, history: MarketHistory
) -> None:
    sc = historical_scenarios(history, market, window=10, kinds={"fx": "absolute"})
    k = list(market.quote_ids).index("FX.USDJPY")
    v = history.values[-11:, k]
    np.testing.assert_allclose(sc.shifts[:, k], v[1:] - v[:-1], rtol=1e-14)
    assert not sc.relative[k]
    # rates can be negative (CHF here): a relative change of them is refused, naming the day
    with pytest.raises(MarketError, match=r"CHF\..* is -.* on .*: a relative change needs"):
        historical_scenarios(history, market, kinds={"rates": "relative"})
    with pytest.raises(MarketError, match="a window of 600 changes needs 601 days"):
        historical_scenarios(history, market, window=600)
    with pytest.raises(MarketError, match="unknown quote class 'bonds'"):
        historical_scenarios(history, market, kinds={"bonds": "relative"})  # type: ignore[dict-item]
    zero = history.values.copy()
    k_ig = list(market.quote_ids).index("CDX.IG.5Y")
    zero[-3, k_ig] = 0.0
    bad = MarketHistory(history.dates, history.quote_ids, zero, {})
    with pytest.raises(MarketError, match=r"CDX\.IG\.5Y is 0\.0 on .*values > 0"):
        historical_scenarios(bad, market, window=10)


def test_the_stress_library_does_what_each_stress_says(market: MarketSnapshot) -> None:
    sc = stress_scenarios(market)
    assert len(sc) >= 8
    assert len(sc.descriptions) == len(sc)
    assert all(sc.descriptions)
    assert sc.names == tuple(s["name"] for s in stress_library())
    ids = list(market.quote_ids)
    v = {name: dict(zip(ids, row, strict=True)) for name, row in
         zip(sc.names, sc.values(market), strict=True)}  # fmt: skip
    q = market.quote
    rates = [i.quote for c in market.curves for i in c.instruments]
    for r in rates:
        assert v["rates +200bp"][r] == pytest.approx(q(r) + 0.02, abs=1e-15)
        assert v["rates -200bp"][r] == pytest.approx(q(r) - 0.02, abs=1e-15)
    assert v["steepener"]["USD.SOFR.OIS.1Y"] == pytest.approx(q("USD.SOFR.OIS.1Y") - 0.005)
    assert v["steepener"]["USD.TERMSOFR3M.IRS.30Y"] == pytest.approx(
        q("USD.TERMSOFR3M.IRS.30Y") + 0.005
    )
    assert v["flattener"]["EUR.ESTR.OIS.1Y"] == pytest.approx(q("EUR.ESTR.OIS.1Y") + 0.005)
    usd = v["USD strength"]
    assert usd["FX.EURUSD"] == pytest.approx(q("FX.EURUSD") * 0.9)
    assert usd["FX.USDJPY"] == pytest.approx(q("FX.USDJPY") * 1.1)
    assert usd["FX.EURGBP"] == q("FX.EURGBP")
    crash = v["equity crash"]
    for eq in market.equities:
        assert crash[eq.spot_quote] == pytest.approx(q(eq.spot_quote) * 0.75)
        corner = eq.vol_quotes[0][0]
        assert crash[corner] == pytest.approx(q(corner) + 0.15)
    credit = v["credit widening"]
    assert credit["CDX.HY.5Y"] == pytest.approx(q("CDX.HY.5Y") + 0.035)
    assert credit["ITRAXX.MAIN.5Y.CORR"] == pytest.approx(q("ITRAXX.MAIN.5Y.CORR") + 0.10)
    eur = v["EUR break-up"]
    assert eur["EQ.SAP"] == pytest.approx(q("EQ.SAP") * 0.7)
    assert eur["EQ.AAPL"] == q("EQ.AAPL")
    assert eur["EUR.ESTR.OIS.5Y"] == pytest.approx(q("EUR.ESTR.OIS.5Y") + 0.015)
    assert eur["USD.SOFR.OIS.5Y"] == q("USD.SOFR.OIS.5Y")
    assert eur["FX.EURUSD"] == pytest.approx(q("FX.EURUSD") * 0.8)
    off = v["risk-off day"]
    assert off["FX.USDJPY"] == pytest.approx(q("FX.USDJPY") * 0.97)
    assert off["FX.EURUSD"] == q("FX.EURUSD")


def _stress_file(tmp_path: Path, scenarios: list[dict[str, object]]) -> Path:
    path = tmp_path / "stresses.json"
    path.write_text(json.dumps({"scenarios": scenarios}))
    return path


def test_a_bad_stress_file_is_refused_naming_file_scenario_and_field(
    market: MarketSnapshot, tmp_path: Path
) -> None:
    ok = {"name": "a", "shocks": [{"kind": "parallel", "bp": 10}]}
    cases = [
        ([ok, {"name": "b", "shocks": [{"kind": "warp", "bp": 1}]}], "Invalid value 'warp'"),
        ([{"name": "b", "shock": []}], "unknown field `shock`"),
        ([ok, {"name": "a"}], "scenarios[1] ('a'): the name is given twice"),
        ([{"name": "c", "quotes": {"EQ.NOPE": {"pct": 1}}}],
         "scenarios[0] ('c'): quotes.EQ.NOPE: not a quote of the market"),
        ([{"name": "d", "quotes": {"EQ.AAPL": {"pct": 1, "bp": 2}}}],
         "quotes.EQ.AAPL: give exactly one of bp, pct, points, value"),
        ([{"name": "e", "shocks": [{"kind": "spot", "pattern": "ZZZ", "pct": 1}]}],
         "scenarios[0] ('e'): SpotShock: pattern 'ZZZ' matches no quote"),
    ]  # fmt: skip
    for scenarios, expected in cases:
        path = _stress_file(tmp_path, scenarios)
        with pytest.raises(MarketError) as err:
            stress_scenarios(market, path)
        assert str(err.value).startswith(str(path)), err.value
        assert expected in str(err.value), err.value
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(MarketError, match=r"broken\.json: not JSON"):
        stress_scenarios(market, path)


def test_applied_values_stay_usable(market: MarketSnapshot, tmp_path: Path) -> None:
    path = _stress_file(tmp_path, [
        {"name": "vol crush", "shocks": [{"kind": "vol", "points": -80}]},
        {"name": "corr to one", "shocks": [{"kind": "correlation", "points": 90}]},
        {"name": "tight", "quotes": {"CDX.IG.5Y": {"value": -0.01}}},
    ])  # fmt: skip
    sc = stress_scenarios(market, path)
    v = sc.values(market)
    classes = np.array(quote_classes(market))
    assert v[0, (classes == "fx_vol") | (classes == "equity_vol")].min() >= 1e-4
    assert v[1, classes == "correlation"].max() <= 0.99
    assert v[2, list(market.quote_ids).index("CDX.IG.5Y")] == 1e-6
