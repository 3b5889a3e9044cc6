"""Vectorised scenario revaluation: every position's PV under a block of scenarios is the one
the per-scenario path (the live pricers, one scenario at a time) gives; group sums, blocks and
the count distributions agree; the Greeks' estimate of each scenario converges to it."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.history import save_history, validate_history
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.pricing.default_counts import thresholds, truncated_distributions
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import group_pnl_by_block
from workbench.pricing.scenario_book import ScenarioBook
from workbench.pricing.scenario_credit import scenario_count_distributions
from workbench.risk.explain import GreekMap
from workbench.risk.scenarios import historical_scenarios, quote_classes, stress_scenarios
from workbench.risk.shocks import ParallelShock
from workbench.risk.whatif import apply_shocks
from workbench.scenario_greeks import greeks_of
from workbench.scenario_risk import greeks_gap

Case = tuple[MarketSnapshot, Book, np.ndarray, list[str]]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """A 600-position book; today, ±25bp, 10 historical days and the stress library."""
    market = generate_reference_market()
    path = tmp_path_factory.mktemp("reval") / "book.parquet"
    generate_reference_book(market, positions=600, seed=4).write_parquet(path)
    book = load_book(path, market=market)
    hist = validate_history(generate_history(market, days=12, seed=3), market)
    scen = [historical_scenarios(hist, market, window=10), stress_scenarios(market)]
    today = np.asarray(market.quotes, np.float64)
    shocked = [np.asarray(apply_shocks(market, [ParallelShock(bp=b)]).quotes) for b in (25, -25)]
    values = np.vstack([today, *shocked, *(s.values(market) for s in scen)])
    names = ["today", "+25bp", "-25bp", *(n for s in scen for n in s.names)]
    return market, book, values, names


def test_every_position_is_priced_as_the_per_scenario_path_prices_it(case: Case) -> None:
    market, book, values, names = case
    pricer = PortfolioPricer(book, market)
    pricer.pv(market)
    want = np.stack([pricer.scenario_pv(market.with_quote_values(v)) for v in values])
    got = ScenarioBook(book, market).pv(values)
    assert got.shape == (len(names), len(book))
    assert np.isfinite(got).all()
    rel = np.abs(got - want) / np.abs(want)
    worst = np.unravel_index(np.argmax(np.where(want != 0.0, rel, 0.0)), rel.shape)
    assert np.all((got == want) | (rel <= 1e-10)), (
        names[worst[0]],
        book.product.values()[worst[1]],
        rel[worst],
    )
    for product in ("IRS", "FX_FWD", "FX_OPTION", "EQ_OPTION", "CDX_INDEX", "CDX_TRANCHE"):
        assert (book.product.codes == book.product.labels.index(product)).any(), product


def test_blocks_and_group_sums_do_not_change_the_numbers(case: Case) -> None:
    market, book, values, _ = case
    whole = ScenarioBook(book, market)
    all_at_once = whole.pv(values)
    one_by_one = np.vstack([whole.pv(values[s : s + 1]) for s in range(values.shape[0])])
    np.testing.assert_array_equal(all_at_once, one_by_one)
    codes, n = book.desk.codes, len(book.desk.labels)
    pnl = all_at_once - all_at_once[0]  # the first scenario is today's market
    want = np.stack([np.bincount(codes, weights=r, minlength=n) for r in pnl])
    for block in (1, 5, 64):
        got = group_pnl_by_block(whole, values, codes, n, block=block)
        np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-12 * np.abs(want).max())
    np.testing.assert_array_equal(got[0], np.zeros(n))  # today's market moves nothing
    with pytest.raises(ValueError, match="expected \\(scenarios, 2934\\)"):
        whole.pv(values[:, :10])


def test_pricers_side_by_side_give_the_same_numbers_to_the_last_bit(case: Case) -> None:
    import numba

    market, book, values, _ = case
    codes, n = book.desk.codes, len(book.desk.labels)
    one = ScenarioBook(book, market)
    two = ScenarioBook(book, market, threads=2)
    before = numba.get_num_threads()
    for _ in range(2):  # the second block starts the pricers in the order of the first's times
        np.testing.assert_array_equal(two.pv(values), one.pv(values))
        np.testing.assert_array_equal(
            group_pnl_by_block(two, values, codes, n, block=7),
            group_pnl_by_block(one, values, codes, n, block=7),
        )
    assert numba.get_num_threads() == before  # the caller's Numba threads untouched
    with pytest.raises(ValueError, match="threads must be at least 1"):
        ScenarioBook(book, market, threads=0)


def test_a_rebased_book_prices_as_one_set_up_on_the_new_quotes(case: Case) -> None:
    market, book, values, _ = case
    codes, n = book.desk.codes, len(book.desk.labels)
    later = market.with_quote_values(values[4])  # today's quotes moved as a historical day
    kept = ScenarioBook(book, market)
    kept.pv(values[:3])  # priced against the first today (its today's PVs kept)
    kept.rebase(later)
    fresh = ScenarioBook(book, later)
    np.testing.assert_array_equal(kept.pv(values), fresh.pv(values))
    np.testing.assert_array_equal(
        kept.group_pnl(values, codes, n), fresh.group_pnl(values, codes, n)
    )
    np.testing.assert_array_equal(kept.group_pnl(values[4:5], codes, n), np.zeros((1, n)))
    tomorrow = market.with_as_of(market.as_of + timedelta(days=1))
    with pytest.raises(ValueError, match="is not the book's"):
        kept.rebase(tomorrow)


def test_a_restarted_pricer_prices_as_a_new_one_to_the_last_bit(case: Case) -> None:
    market, book, values, _ = case
    later = market.with_quote_values(values[4])
    kept = PortfolioPricer(book, market, key_rates="jacobian")
    kept.risk(market)
    kept.restart(later)
    got = kept.risk(later)
    want = PortfolioPricer(book, later, key_rates="jacobian").risk(later)
    for name in ("pv", "delta", "gamma", "vega", "theta"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(got.key_rates.values, want.key_rates.values)


def test_a_greek_map_moved_to_other_greeks_predicts_as_a_new_one(case: Case) -> None:
    market, book, values, _ = case
    later = market.with_quote_values(values[4])
    first, then = (greeks_of(PortfolioPricer(book, m, key_rates="jacobian").risk(m))
                   for m in (market, later))  # fmt: skip
    moved = GreekMap(book, market, first).at(later, then)
    fresh = GreekMap(book, later, then)
    moves = values[5:9] - values[4]
    fx_change = np.full((moves.shape[0], len(book)), 0.01)
    got, want = moved.parts(moves, fx_change, 1.0), fresh.parts(moves, fx_change, 1.0)
    for name, part in want.items():
        np.testing.assert_array_equal(got[name], part, err_msg=name)


def test_blocks_as_a_caller_sizes_them_change_no_number(case: Case) -> None:
    market, book, values, _ = case
    codes, n = book.desk.codes, len(book.desk.labels)
    whole = ScenarioBook(book, market)
    asked: list[tuple[int, int]] = []

    def sizes(done: int, total: int) -> int:
        asked.append((done, total))
        return [2, 0, 1, 100][len(asked) - 1]  # 0 counts as 1, 100 as what is left

    got = group_pnl_by_block(whole, values, codes, n, sizes=sizes)
    want = group_pnl_by_block(whole, values, codes, n, block=values.shape[0])
    np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-12 * np.abs(want).max())
    assert asked[0] == (0, values.shape[0])
    assert [d for d, _ in asked] == [0, 2, 3, 4]


def test_count_distributions_of_a_block_are_each_scenarios_own() -> None:
    market = generate_reference_market()
    spec = next(c for c in market.credit_indices if c.id == "CDX.HY")
    times = np.linspace(0.25, 5.0, 20)
    rng = np.random.default_rng(3)
    spreads = market.quote(spec.spread_quote) * np.exp(rng.normal(0.0, 0.3, 6))
    rho = np.clip(market.quote(spec.correlation_quote) + rng.normal(0.0, 0.1, 6), 0.0, 0.99)
    dist, mean = scenario_count_distributions(spec, times, spreads, rho, 40)
    weights = np.asarray(spec.hazard_weights) / (1.0 - spec.recovery)
    for s in range(spreads.size):
        one = truncated_distributions(thresholds(weights * spreads[s], times)[None],
                                      rho[s : s + 1], 40)  # fmt: skip
        # Φ from the vectorised formula, not libm's erfc: the same probabilities to ~1e-16
        np.testing.assert_allclose(dist[s], one.probabilities[0], rtol=0.0, atol=1e-14)
        np.testing.assert_allclose(mean[s], one.mean[0], rtol=1e-13)
    np.testing.assert_allclose(dist.sum(axis=-1), 1.0, rtol=1e-12)


def _firm_gap_share(case: Case, quote_class: str, eps: float) -> tuple[float, pl.DataFrame]:
    """|full − Greeks| / |full| of the firm over the historical days, each day's move of one
    class of quotes scaled by ``eps``."""
    market, book, values, names = case
    if quote_class == "rates":  # credit positions have no rate Greeks (a first-order gap)
        credit = [book.product.labels.index(p) for p in ("CDX_INDEX", "CDX_TRANCHE")]
        book = book.take(np.flatnonzero(~np.isin(book.product.codes, credit)))
    today = np.asarray(market.quotes, np.float64)
    hist = values[3:13]
    on = np.array(quote_classes(market)) == quote_class
    scaled = today + eps * np.where(on, hist - today, 0.0)
    gap = greeks_gap(book, market, scaled, names[3:13], worst=50)
    firm = gap.by_desk.filter(pl.col("desk") == "Firm")
    share = np.abs(firm["gap"].to_numpy()).sum() / np.abs(firm["full"].to_numpy()).sum()
    return float(share), gap.worst


@pytest.mark.parametrize("quote_class", ["rates", "equity", "spread"])
def test_the_greeks_estimate_converges_to_full_revaluation_as_shocks_shrink(
    case: Case, quote_class: str
) -> None:
    big, worst = _firm_gap_share(case, quote_class, 0.3)
    small, _ = _firm_gap_share(case, quote_class, 0.03)
    assert small < max(big / 5.0, 2e-3), (big, small)
    assert worst.columns == ["position_id", "desk", "product", "scenario", "full", "greeks",
                             "gap"]  # fmt: skip
    assert worst.height == 50
    size = np.abs(worst["gap"].to_numpy())
    assert np.all(np.diff(size) <= 0.0)  # the worst first
    np.testing.assert_allclose(worst["gap"], worst["full"] - worst["greeks"], rtol=1e-12)


def test_workbench_var_greeks_writes_the_gap(tmp_path: Path) -> None:
    market = generate_reference_market()
    save_market(market, tmp_path / "market.json")
    generate_reference_book(market, positions=200, seed=6).write_parquet(tmp_path / "b.parquet")
    save_history(generate_history(market, days=8, seed=2), tmp_path / "h.parquet")
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "var", "--book", str(tmp_path / "b.parquet"),
         "--market", str(tmp_path / "market.json"), "--history", str(tmp_path / "h.parquet"),
         "--window", "6", "--in-process", "--greeks", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "by the Greeks" in done.stdout
    by_desk = pl.read_parquet(tmp_path / "out" / "greeks_pnl.parquet")
    assert by_desk.columns == ["scenario", "desk", "full", "greeks", "gap"]
    firm = by_desk.filter(pl.col("desk") == "Firm")
    assert firm.height == 6
    pnl = pl.read_parquet(tmp_path / "out" / "pnl.parquet").filter(pl.col("desk") == "Firm")
    np.testing.assert_allclose(firm["full"], pnl["pnl"], rtol=1e-9)
    gap = pl.read_parquet(tmp_path / "out" / "greeks_gap.parquet")
    assert gap.height == min(1000, 6 * 200)
    # the measures of the revalued PnL: ES ≥ VaR, the desks' component ES sum to the firm's
    table = pl.read_parquet(tmp_path / "out" / "measures.parquet")
    assert (table["es_97.5"] >= table["var_97.5"]).all()
    desks = table.filter(pl.col("group") != "Firm")
    firm = table.filter(pl.col("group") == "Firm").row(0, named=True)
    assert desks["component_es"].sum() == pytest.approx(firm["es_97.5"], rel=1e-12)
