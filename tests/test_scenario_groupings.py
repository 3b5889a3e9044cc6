"""VaR by any grouping: one revaluation summed by cell gives each grouping's PnL and measures;
the desks still sum to the firm, each grouping's component ES to the firm's ES."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench import scenario_risk
from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.book.schema import ASSET_CLASS, Book
from workbench.market.history import load_history, save_history
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market
from workbench.market.reference_history import generate_history
from workbench.pricing.scenario_book import ScenarioBook
from workbench.risk.groupings import GROUP_COLUMNS, cells, grouping, parse_by, sum_cells
from workbench.risk.scenarios import historical_scenarios

Files = tuple[MarketSnapshot, Book, Path]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("groupings")
    market = generate_reference_market()
    generate_reference_book(market, positions=500, seed=6).write_parquet(folder / "book.parquet")
    save_market(market, folder / "market.json")
    save_history(generate_history(market, days=41, seed=2), folder / "history.parquet")
    return market, load_book(folder / "book.parquet", market=market), folder


def _direct(book: Book, column: str) -> tuple[list[str], np.ndarray]:
    """Each position's group label, straight from the book."""
    if column == "asset_class":
        values = [ASSET_CLASS[p] for p in book.product.values()]
    else:
        values = getattr(book, column).values()
    labels = sorted(set(values))
    return labels, np.array([labels.index(v) for v in values])


def test_cells_sum_to_each_grouping_as_the_positions_do(files: Files) -> None:
    _, book, _ = files
    rng = np.random.default_rng(3)
    pnl = rng.normal(size=(7, len(book))) * 1e5
    groupings = [grouping(book, c) for c in ("desk", "asset_class", "currency", "underlying")]
    cut = cells(groupings)
    assert cut.n < np.prod([len(g.labels) for g in groupings])  # only the combinations held
    by_cell = np.stack([np.bincount(cut.codes, weights=r, minlength=cut.n) for r in pnl])
    for g, of in zip(groupings, cut.groups, strict=True):
        got = sum_cells(by_cell, of, len(g.labels))
        labels, codes = _direct(book, g.column)
        assert sorted(g.labels) == labels  # the labels the book holds, no empty group
        want = np.stack([np.bincount(codes, weights=r, minlength=len(labels)) for r in pnl])
        order = [labels.index(x) for x in g.labels]
        np.testing.assert_allclose(got, want[:, order], rtol=1e-12, atol=1e-6)


def test_grouping_names_are_checked() -> None:
    assert parse_by("desk, currency,desk") == ("desk", "currency")
    assert parse_by(["asset_class"]) == ("asset_class",)
    with pytest.raises(ValueError, match=r"'strike'.*one or more of desk"):
        parse_by("desk,strike")
    with pytest.raises(ValueError, match="nothing"):
        parse_by(" , ")
    assert set(GROUP_COLUMNS) >= {"desk", "asset_class", "currency"}


def test_var_by_several_groupings_in_one_run(files: Files) -> None:
    market, book, folder = files
    paths = (folder / "book.parquet", folder / "market.json", folder / "history.parquet")
    where = scenario_risk.Where(in_process=True)
    plain = scenario_risk.historical(*paths, window=40, where=where)
    result = scenario_risk.historical(*paths, window=40, where=where,
                                      by=("asset_class", "desk", "currency"))  # fmt: skip
    assert [g.column for g in result.by] == ["desk", "asset_class", "currency"]
    # the desks, now summed from cells, are the run's without groupings
    a, b = plain.pnl["pnl"].to_numpy(), result.pnl["pnl"].to_numpy()
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()
    firm = result.pnl.filter(pl.col("desk") == "Firm")["pnl"].to_numpy()
    desks = result.pnl.filter(pl.col("desk") != "Firm").group_by("scenario", maintain_order=True)
    assert np.abs(desks.agg(pl.col("pnl").sum())["pnl"].to_numpy() - firm).max() <= (
        1e-9 * np.abs(firm).max()
    )
    # each grouping's PnL is its positions' full-revaluation PnL, and sums to the firm
    hist = load_history(paths[2], market)
    values = historical_scenarios(hist, market, window=40).values(market)
    sb = ScenarioBook(book, market)
    per_position = sb.pv(values) - sb.pv(np.asarray(market.quotes, np.float64)[None, :])
    for g in result.by:
        wide = g.pnl.pivot(on="group", index="scenario", values="pnl")
        got = wide.drop("scenario").to_numpy()
        labels, codes = _direct(book, g.column)
        want = np.stack([np.bincount(codes, weights=r, minlength=len(labels))
                         for r in per_position])  # fmt: skip
        want = want[:, [labels.index(c) for c in wide.columns[1:]]]
        floor = 1e-12 * np.abs(want).max()
        assert (np.abs(got - want) / np.maximum(np.abs(want), floor)).max() <= 1e-9, g.column
        assert np.abs(got.sum(axis=1) - firm).max() <= 1e-9 * np.abs(firm).max()
        assert g.measures is not None
        table = g.measures.filter(pl.col("group") != "Firm")
        total = g.measures.filter(pl.col("group") == "Firm")
        assert table["group"].to_list() == list(grouping(book, g.column).labels)
        assert table["component_es"].sum() == pytest.approx(total["es_97.5"].item(), rel=1e-12)
        assert (g.measures["es_97.5"] >= g.measures["var_97.5"]).all()
        # the firm is the firm whatever the grouping
        assert result.measures is not None
        firm_var = result.measures.filter(pl.col("group") == "Firm")["var_99"].item()
        assert total["var_99"].item() == pytest.approx(firm_var, rel=1e-12)


def test_workbench_var_and_stress_by_from_the_command_line(files: Files) -> None:
    _, _, folder = files
    base = [sys.executable, "-m", "workbench.cli"]
    common = ["--book", str(folder / "book.parquet"), "--market", str(folder / "market.json")]
    out = folder / "var-by"
    done = subprocess.run([*base, "var", *common, "--history", str(folder / "history.parquet"),
                           "--window", "30", "--in-process", "--by", "asset_class,currency",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "by asset_class:" in done.stdout
    assert "by currency:" in done.stdout
    table = pl.read_parquet(out / "measures_by.parquet")
    assert table.columns[:2] == ["grouping", "group"]
    assert set(table["grouping"]) == {"desk", "asset_class", "currency"}
    for _, rows in table.group_by("grouping"):
        firm = rows.filter(pl.col("group") == "Firm")["es_97.5"].item()
        parts = rows.filter(pl.col("group") != "Firm")["component_es"].sum()
        assert parts == pytest.approx(firm, rel=1e-12)
    pnl = pl.read_parquet(out / "pnl_by.parquet")
    assert pnl.columns == ["grouping", "scenario", "group", "pnl"]
    assert pnl.filter(pl.col("grouping") == "currency")["scenario"].n_unique() == 30

    out = folder / "stress-by"
    done = subprocess.run([*base, "stress", *common, "--by", "underlying", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (out / "measures_by.parquet").exists()
    assert set(pl.read_parquet(out / "pnl_by.parquet")["grouping"]) == {"desk", "underlying"}

    done = subprocess.run([*base, "var", *common, "--history", str(folder / "history.parquet"),
                           "--by", "desk,maturity", "--out", str(folder / "bad")],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "'maturity'" in done.stderr
    assert "asset_class" in done.stderr
