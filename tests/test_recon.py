"""Recon of the engine's positions against the booking file: changed notionals, missing and
duplicated positions, tolerance, and a round trip through a real book file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.book.io import load_book, save_book
from workbench.book.reference import generate_reference_book
from workbench.market.reference import generate_reference_market
from workbench.risk.aggregation import static_frame
from workbench.risk.recon import (
    DUPLICATE_IN_FILE,
    MISSING_IN_ENGINE,
    MISSING_IN_FILE,
    NOTIONAL_DIFFERS,
    recon,
    recon_breach,
)


def positions(ids: list[str], notionals: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"position_id": ids, "notional": notionals})


FILE = positions(["a", "b", "c", "d"], [1e6, -2e6, 3e9, 4.5])


def test_everything_agrees_gives_an_empty_frame() -> None:
    out = recon(FILE, FILE.reverse())
    assert out.height == 0
    assert out.columns == ["position_id", "file_notional", "engine_notional", "reason"]
    assert recon_breach(out, now_ns=1) is None


def test_a_changed_notional_and_missing_positions_are_found() -> None:
    engine = positions(["a", "b", "d", "e"], [1e6, -2.5e6, 4.5, 7.0])
    out = recon(FILE, engine)
    assert out.rows() == [
        ("b", -2e6, -2.5e6, NOTIONAL_DIFFERS),
        ("c", 3e9, None, MISSING_IN_ENGINE),
        ("e", None, 7.0, MISSING_IN_FILE),
    ]
    breach = recon_breach(out, now_ns=42)
    assert breach is not None
    assert (breach.scope, breach.measure, breach.value, breach.since_ns) == ("firm", "recon", 3, 42)


def test_tolerance_is_absolute_in_the_position_currency() -> None:
    engine = positions(["a", "b", "c", "d"], [1e6 + 0.5, -2e6, 3e9, 4.5])
    assert recon(FILE, engine).height == 1  # tol = 0: any difference
    assert recon(FILE, engine, tol=0.5).height == 0
    assert recon(FILE, engine, tol=0.49)["position_id"].to_list() == ["a"]
    with pytest.raises(ValueError, match="tol"):
        recon(FILE, engine, tol=-1.0)


def test_nan_and_duplicates_are_mismatches() -> None:
    engine = positions(["a", "b", "c", "d"], [float("nan"), -2e6, 3e9, 4.5])
    assert recon(FILE, engine)["reason"].to_list() == [NOTIONAL_DIFFERS]
    doubled = pl.concat([FILE, positions(["c"], [3e9])])
    out = recon(doubled, FILE)
    assert out["position_id"].to_list() == ["c", "c"]
    assert out["reason"].to_list() == [DUPLICATE_IN_FILE] * 2


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="book file frame: missing column 'notional'"):
        recon(FILE.drop("notional"), FILE)
    with pytest.raises(ValueError, match="engine static frame: missing column 'position_id'"):
        recon(FILE, FILE.drop("position_id"))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    changed=st.sets(st.integers(0, 39)),
    dropped=st.sets(st.integers(0, 39)),
)
def test_recon_reports_exactly_what_changed(n: int, changed: set[int], dropped: set[int]) -> None:
    ids = [f"P{i:03d}" for i in range(n)]
    file = positions(ids, [1000.0 * (i + 1) for i in range(n)])
    changed = {i for i in changed if i < n} - dropped
    dropped = {i for i in dropped if i < n}
    engine = positions(
        [ids[i] for i in range(n) if i not in dropped],
        [1000.0 * (i + 1) + (1.0 if i in changed else 0.0) for i in range(n) if i not in dropped],
    )
    out = recon(file, engine)
    expected = {ids[i]: NOTIONAL_DIFFERS for i in changed} | {
        ids[i]: MISSING_IN_ENGINE for i in dropped
    }
    assert dict(zip(out["position_id"], out["reason"], strict=True)) == expected
    assert out["position_id"].to_list() == sorted(expected)


def test_reference_book_file_against_the_engine(tmp_path: Path) -> None:
    market = generate_reference_market()
    path = tmp_path / "book.parquet"
    save_book(generate_reference_book(market, positions=2000, seed=1), path)
    engine = static_frame(load_book(path, market=market))
    from_file = pl.read_parquet(path)
    assert recon(from_file, engine).height == 0

    # a trader amends one notional in the file and books a new trade; one position is cancelled
    amended = from_file.with_columns(
        pl.when(pl.col("position_id") == from_file["position_id"][7])
        .then(pl.col("notional") * 2)
        .otherwise(pl.col("notional"))
        .alias("notional")
    )
    cancelled = from_file["position_id"][11]
    amended = pl.concat(
        [
            amended.filter(pl.col("position_id") != cancelled),
            amended.head(1).with_columns(pl.lit("NEW-000001").alias("position_id")),
        ]
    )
    out = recon(amended, engine)
    assert out["position_id"].to_list() == sorted(
        [from_file["position_id"][7], cancelled, "NEW-000001"]
    )
    by_id = out.rows_by_key("position_id", named=True, unique=True)
    first = by_id[from_file["position_id"][7]]
    assert first["reason"] == NOTIONAL_DIFFERS
    assert first["file_notional"] == 2 * first["engine_notional"]
    assert by_id[cancelled]["reason"] == MISSING_IN_FILE
    assert by_id["NEW-000001"]["reason"] == MISSING_IN_ENGINE
