"""Loss measures (VaR, ES, their allocation) and full revaluation under scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import Book
from workbench.market.history import save_history
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.pricing.portfolio import PortfolioPricer
from workbench.pricing.revaluation import scenario_pnl, scenario_pvs
from workbench.risk.loss import (
    expected_shortfall,
    group_pnl,
    measures,
    tail_size,
    var,
    worst_scenarios,
)
from workbench.risk.shocks import ParallelShock
from workbench.risk.whatif import apply_shocks

# --- the measures ------------------------------------------------------------------------------


def test_the_tail_rule_var_and_es_on_a_known_vector() -> None:
    assert tail_size(500, 0.99) == 5
    assert tail_size(500, 0.975) == 13  # 12.5 rounds up
    assert tail_size(250, 0.975) == 7
    assert tail_size(100, 0.99) == 1
    rng = np.random.default_rng(1)
    pnl = -rng.permutation(np.arange(1.0, 101.0))  # losses 1 … 100
    assert var(pnl, 0.99) == 100.0
    assert expected_shortfall(pnl, 0.99) == 100.0
    assert var(pnl, 0.975) == 98.0
    assert expected_shortfall(pnl, 0.975) == 99.0
    top = worst_scenarios(pnl, [f"d{i}" for i in range(100)], n=3)
    assert top["pnl"].to_list() == [-100.0, -99.0, -98.0]
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        var(pnl, 1.0)


def test_es_is_at_least_var_and_components_sum_to_the_firm() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        by_desk = rng.standard_t(4, (500, 6)) * rng.uniform(0.5, 3.0, 6)
        table = measures(by_desk, [f"desk{g}" for g in range(6)])
        firm = table.filter(table["group"] == "Firm").row(0, named=True)
        desks = table.filter(table["group"] != "Firm")
        assert firm["es_97.5"] >= firm["var_97.5"]
        assert (desks["es_97.5"] >= desks["var_97.5"]).all()
        assert desks["component_es"].sum() == pytest.approx(firm["es_97.5"], rel=1e-12)
        one = by_desk[:, 2]
        rest = by_desk.sum(axis=1) - one
        row = desks.row(2, named=True)
        assert row["incremental_var"] == pytest.approx(
            var(by_desk.sum(axis=1), 0.99) - var(rest, 0.99)
        )
    codes = np.array([0, 1, 0, 2, 1])
    pnl = np.arange(10.0).reshape(2, 5)
    np.testing.assert_array_equal(group_pnl(pnl, codes, 3), [[2.0, 5.0, 3.0], [12.0, 15.0, 8.0]])


# --- full revaluation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def priced(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[MarketSnapshot, Book, PortfolioPricer]:
    market = generate_reference_market()
    path = tmp_path_factory.mktemp("loss") / "book.parquet"
    generate_reference_book(market, positions=600, seed=4).write_parquet(path)
    book = load_book(path, market=market)
    return market, book, PortfolioPricer(book, market)


def test_a_scenario_of_today_changes_nothing_and_a_1bp_move_is_the_dv01(
    priced: tuple[MarketSnapshot, Book, PortfolioPricer],
) -> None:
    market, book, pricer = priced
    today = np.asarray(market.quotes, dtype=np.float64)
    up = np.asarray(apply_shocks(market, [ParallelShock(bp=1.0)]).quotes)
    down = np.asarray(apply_shocks(market, [ParallelShock(bp=-1.0)]).quotes)
    pnl, base, seconds = scenario_pnl(pricer, market, np.stack([today, up, down]))
    assert seconds > 0.0
    np.testing.assert_array_equal(pnl[0], np.zeros(len(book)))
    risk = pricer.risk(market)
    # the same PVs, each to the curve solve's 1e-12 per unit of notional (a warm start)
    np.testing.assert_array_less(np.abs(base - risk.pv), 1e-11 * np.abs(book.notional) + 1e-9)
    swaps = book.product.codes == book.product.labels.index("IRS")
    central = (pnl[1] - pnl[2]) / 2.0
    # both are differences of PVs on curves solved to ~1e-12 per unit notional (from different
    # starts): equal to 1e-8 of the DV01
    np.testing.assert_allclose(central[swaps], risk.delta[swaps], rtol=1e-8)
    with pytest.raises(ValueError, match="expected \\(scenarios, 2934\\)"):
        scenario_pvs(pricer, market, today[None, :10])


# --- the commands ------------------------------------------------------------------------------


def test_workbench_var_and_stress_write_their_tables_and_refuse_bad_input(tmp_path: Path) -> None:
    folder = tmp_path
    market = generate_reference_market()
    save_market(market, folder / "market.json")
    generate_reference_book(market, positions=300, seed=6).write_parquet(folder / "book.parquet")
    save_history(generate_history(market, days=12, seed=2), folder / "history.parquet")
    base = [sys.executable, "-m", "workbench.cli"]
    files = ["--book", str(folder / "book.parquet"), "--market", str(folder / "market.json")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=300,
                              check=False)  # fmt: skip

    done = cli("var", *files, "--history", str(folder / "history.parquet"), "--window", "10",
               "--out", str(folder / "var"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "10 scenarios revalued" in done.stdout
    table = pl.read_parquet(folder / "var" / "measures.parquet")
    firm = table.filter(pl.col("group") == "Firm").row(0, named=True)
    assert firm["es_97.5"] >= firm["var_97.5"] > 0.0
    pnl = pl.read_parquet(folder / "var" / "pnl.parquet")
    assert pnl.height == 10 * (table.height)  # every desk and the firm, per scenario
    assert "10/10 scenarios" in done.stderr  # the progress bar
    done = cli("stress", *files, "--out", str(folder / "stress"))
    assert done.returncode == 0, done.stderr
    stress = pl.read_parquet(folder / "stress" / "pnl.parquet")
    assert stress["scenario"].n_unique() >= 8
    # bad input: one line, exit 2
    missing = folder / "nope.parquet"
    done = cli("var", *files, "--history", str(missing), "--out", str(folder / "x"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"workbench: error: {missing}: no such file"]
    bad = folder / "bad.json"
    bad.write_text(json.dumps({"scenarios": [{"name": "x", "quotes": {"EQ.NOPE": {"pct": 1}}}]}))
    done = cli("stress", *files, "--scenarios", str(bad), "--out", str(folder / "y"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"workbench: error: {bad}: scenarios[0] ('x'): quotes.EQ.NOPE: not a quote of the market"
    ]


# --- PnL explain -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explain_case(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, MarketSnapshot, np.ndarray]:
    """A 500-position book, its market, and one historical day's quote moves."""
    folder = tmp_path_factory.mktemp("explain")
    market = generate_reference_market()
    generate_reference_book(market, positions=500, seed=8).write_parquet(folder / "b.parquet")
    save_market(market, folder / "m0.json")
    hist = generate_history(market, days=3, seed=13)
    day = hist.filter(pl.col("date") == hist["date"].min())["value"].to_numpy()
    return folder, market, day - np.asarray(market.quotes, np.float64)


def _unexplained_share(
    case: tuple[Path, MarketSnapshot, np.ndarray], quote_class: str | None, eps: float
) -> tuple[float, pl.DataFrame]:
    from workbench.risk.scenarios import quote_classes
    from workbench.scenario_risk import explain

    folder, market, move = case
    if quote_class is not None:
        move = np.where(np.array(quote_classes(market)) == quote_class, move, 0.0)
    moved = market.with_quote_values(np.asarray(market.quotes, np.float64) + eps * move)
    save_market(moved, folder / "m1.json")
    positions, by_desk = explain(folder / "b.parquet", folder / "m0.json", folder / "m1.json")
    firm = by_desk.filter(pl.col("desk") == "Firm").row(0, named=True)
    parts = sum(firm[c] for c in ("rates", "fx", "equity", "vol", "credit", "carry"))
    assert firm["actual"] == pytest.approx(parts + firm["unexplained"], rel=1e-12, abs=1e-6)
    share = abs(firm["unexplained"]) / abs(firm["actual"]) if firm["actual"] else 0.0
    return share, positions


def test_pnl_explain_of_no_move_is_exactly_nothing(
    explain_case: tuple[Path, MarketSnapshot, np.ndarray],
) -> None:
    _, positions = _unexplained_share(explain_case, None, 0.0)
    assert positions.height == 500
    assert np.abs(positions["actual"].to_numpy()).max() < 1e-6
    assert np.abs(positions["unexplained"].to_numpy()).max() < 1e-6


@pytest.mark.parametrize("quote_class", ["rates", "equity", "spread"])
def test_pnl_explain_converges_as_moves_shrink(
    explain_case: tuple[Path, MarketSnapshot, np.ndarray], quote_class: str
) -> None:
    """What the Greeks leave unexplained shrinks with the move (second order: at least ~5× for
    a 10× smaller move, or already at the numbers' noise)."""
    big, _ = _unexplained_share(explain_case, quote_class, 0.1)
    small, _ = _unexplained_share(explain_case, quote_class, 0.01)
    assert small < max(big / 5.0, 2e-3), (big, small)


@pytest.mark.xfail(strict=True, reason="known gaps: the vol component uses the mean move of the "
                   "underlying's vol quotes, not the option's own vol; FX moves leave a ~6% "
                   "first-order residual not yet explained; corr01 is a one-sided +1% "
                   "difference (a ~1% first-order bias)")  # fmt: skip
@pytest.mark.parametrize("quote_class", ["fx", "fx_vol", "equity_vol", "correlation"])
def test_pnl_explain_of_fx_and_vol_moves_converges_too(
    explain_case: tuple[Path, MarketSnapshot, np.ndarray], quote_class: str
) -> None:
    big, _ = _unexplained_share(explain_case, quote_class, 0.1)
    small, _ = _unexplained_share(explain_case, quote_class, 0.01)
    assert small < max(big / 5.0, 2e-3), (big, small)


def test_workbench_explain_writes_by_desk_and_by_position(tmp_path: Path) -> None:
    market = generate_reference_market()
    generate_reference_book(market, positions=200, seed=3).write_parquet(tmp_path / "b.parquet")
    save_market(market, tmp_path / "m0.json")
    save_market(market.with_quote_values(np.asarray(market.quotes) * 1.001), tmp_path / "m1.json")
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "explain", "--book", str(tmp_path / "b.parquet"),
         "--from", str(tmp_path / "m0.json"), "--to", str(tmp_path / "m1.json"),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
        check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pl.read_parquet(tmp_path / "out" / "explain.parquet")
    assert table.columns == ["desk", "actual", "rates", "fx", "equity", "vol", "credit", "carry",
                             "unexplained"]  # fmt: skip
    assert pl.read_parquet(tmp_path / "out" / "explain_positions.parquet").height == 200
