"""The ``workbench`` command run as a real process: generate, price, and bad input.

Each run gets private ``HOME`` and ``NUMBA_CACHE_DIR`` folders. Bad input must end with exit
status 2 and one line on stderr naming the file (and row, column and value), no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from workbench.book.io import load_book
from workbench.book.reference import generate_reference_book
from workbench.market.io import load_market, market_to_dict
from workbench.market.reference import generate_reference_market

ASSET_CLASSES = ("credit", "equity", "fx", "rates")


def _run(args: list[str], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["HOME"] = str(home / "home")
    env["NUMBA_CACHE_DIR"] = str(home / "numba")
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "home").mkdir()
    (root / "numba").mkdir()
    return root


@pytest.fixture(scope="module")
def market_file(work: Path) -> Path:
    path = work / "out" / "market.json"
    done = _run(["market", "generate", "--out", str(path)], work)
    assert done.returncode == 0, done.stderr
    assert "14 curves" in done.stdout
    return path


@pytest.fixture(scope="module")
def book_file(work: Path, market_file: Path) -> Path:
    path = work / "out" / "book.parquet"
    done = _run(
        [
            "book",
            "generate",
            "--market",
            str(market_file),
            "--positions",
            "500",
            "--seed",
            "1",
            "--out",
            str(path),
        ],
        work,
    )
    assert done.returncode == 0, done.stderr
    assert "500 positions" in done.stdout
    return path


@pytest.fixture(scope="module")
def priced(work: Path, book_file: Path, market_file: Path) -> subprocess.CompletedProcess[str]:
    out = work / "out" / "risk.parquet"
    return _run(
        [
            "price",
            "--book",
            str(book_file),
            "--market",
            str(market_file),
            "--out",
            str(out),
            "--paths",
            "4096",
        ],
        work,
    )


def _assert_clean_failure(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("workbench: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_market_generate_writes_the_reference_market(market_file: Path) -> None:
    written = load_market(market_file)
    assert market_to_dict(written) == market_to_dict(generate_reference_market())


def test_book_generate_writes_the_reference_book(book_file: Path, market_file: Path) -> None:
    on_disk = pl.read_parquet(book_file)
    expected = generate_reference_book(load_market(market_file), positions=500, seed=1)
    assert on_disk.equals(expected.select(on_disk.columns))
    assert on_disk.height == 500


def test_price_writes_one_row_per_position(
    priced: subprocess.CompletedProcess[str], work: Path, book_file: Path, market_file: Path
) -> None:
    assert priced.returncode == 0, priced.stderr
    risk = pl.read_parquet(work / "out" / "risk.parquet")
    book = load_book(book_file)
    assert risk.height == len(book) == 500
    for column in (
        "position_id",
        "desk",
        "book",
        "currency",
        "product",
        "pv",
        "pv_ccy",
        "delta",
        "gamma",
        "vega",
        "theta",
    ):
        assert column in risk.columns, column
    assert risk["position_id"].to_list() == list(book.position_id)
    assert risk["product"].to_list() == book.product.values()
    for column in ("pv", "pv_ccy", "delta", "gamma", "vega", "theta"):
        assert risk[column].dtype == pl.Float64
        assert risk[column].is_finite().all(), column

    key_rates = pl.read_parquet(work / "out" / "risk_key_rates.parquet")
    assert key_rates.columns == ["position_id", "quote_id", "kr_dv01"]
    assert key_rates.height > 0
    swaps = set(risk.filter(pl.col("product") == "IRS")["position_id"].to_list())
    assert swaps <= set(key_rates["position_id"].to_list())
    assert set(key_rates["quote_id"].to_list()) <= set(load_market(market_file).quote_ids)


def test_price_key_rates_by_bump_or_by_the_jacobian(
    priced: subprocess.CompletedProcess[str], work: Path, book_file: Path, market_file: Path
) -> None:
    """``--key-rates jacobian`` writes the exact derivative, which sums to the DV01; the default
    file holds the ±1bp bumps, which differ from it under monotone convex (docs/greeks.md)."""
    assert priced.returncode == 0, priced.stderr
    out = work / "out" / "jacobian.parquet"
    args = ["price", "--book", str(book_file), "--market", str(market_file), "--out", str(out)]
    done = _run([*args, "--paths", "512", "--key-rates", "jacobian"], work)
    assert done.returncode == 0, done.stderr
    risk = pl.read_parquet(out).filter(pl.col("product") == "IRS")
    jac = pl.read_parquet(work / "out" / "jacobian_key_rates.parquet")
    bump = pl.read_parquet(work / "out" / "risk_key_rates.parquet")
    sums = jac.group_by("position_id").agg(pl.col("kr_dv01").sum()).join(risk, on="position_id")
    err = (sums["kr_dv01"] - sums["delta"]).abs()
    assert (err <= 1e-3 * sums["delta"].abs() + 1e-2 * sums["gamma"].abs() + 1.0).all()
    both = jac.join(bump, on=["position_id", "quote_id"], suffix="_bump")
    assert ((both["kr_dv01"] - both["kr_dv01_bump"]).abs() > 100.0).any()


def test_price_prints_a_summary_with_timings(priced: subprocess.CompletedProcess[str]) -> None:
    out = priced.stdout
    assert "500 positions priced" in out
    lines = out.splitlines()
    for cls in ASSET_CLASSES:
        assert any(line.startswith(cls) for line in lines), cls
        assert any(line.strip().startswith(cls) and line.rstrip().endswith(" s") for line in lines)
    for stage in ("load", "price", "write"):
        assert any(line.startswith(stage) and " s" in line for line in lines), stage
    assert priced.stderr == ""


def test_bad_book_rows_exit_2_naming_file_row_column_value(
    work: Path, market_file: Path, book_file: Path
) -> None:
    path = work / "bad.csv"
    pl.read_parquet(book_file).write_csv(path)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    for row, column, value in ((42, "notional", "12abc"), (300, "maturity", "2026-02-30")):
        cells = lines[row].split(",")  # line index == 1-based data row
        cells[header.index(column)] = value
        lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    out = work / "x.parquet"
    done = _run(
        ["price", "--book", str(path), "--market", str(market_file), "--out", str(out)], work
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "workbench: error: 2 problems in the book",
        f"{path}: row 42 (line 43), column 'notional', value '12abc': not a number",
        f"{path}: row 300 (line 301), column 'maturity', value '2026-02-30': "
        "not a date (expected YYYY-MM-DD)",
    ]
    assert not out.exists()


def test_one_bad_row_gives_one_line(work: Path, market_file: Path) -> None:
    path = work / "one_bad.csv"
    path.write_text(
        "position_id,product,desk,book,currency,underlying,option_type,maturity,notional,strike\n"
        "E1,EQ_OPTION,Equity Vol,EV-FLOW,USD,AAPL,C,2027-06-18,100,250\n"
        "E2,EQ_OPTION,Equity Vol,EV-FLOW,USD,AAPL,C,2027-06-18,1e400,250\n"
    )
    done = _run(
        ["price", "--book", str(path), "--market", str(market_file), "--out", str(work / "y.pq")],
        work,
    )
    _assert_clean_failure(
        done, str(path), "row 2 (line 3)", "column 'notional'", "value '1e400'", "overflow"
    )


def test_an_implausible_notional_is_refused_not_priced(
    work: Path, market_file: Path, book_file: Path
) -> None:
    """A 1e30 notional (priced to PVs near 1e29 before) exits 2 naming row, column and value;
    ``--max-notional`` moves the bound, per currency."""
    frame = pl.read_parquet(book_file)
    row = frame["product"].to_list().index("IRS")
    ccy = frame["currency"][row]
    (work / "sized").mkdir(exist_ok=True)
    given = "./sized/huge book.parquet"
    bad = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(1e30)
        .otherwise(pl.col("notional"))
        .alias("notional")
    )
    bad.write_parquet(work / given)
    out = work / "sized" / "risk.parquet"
    args = ["price", "--book", given, "--market", str(market_file), "--out", str(out)]
    done = _run([*args, "--paths", "512"], work, cwd=work)
    _assert_clean_failure(
        done, f"{given}: row {row + 1}, column 'notional', value '1e+30'", "implausible size"
    )
    assert not out.exists()
    small = frame.filter((pl.col("currency") == ccy) & (pl.col("product") == "IRS")).head(3)
    small.write_parquet(work / "sized" / "small.parquet")
    args[2] = "./sized/small.parquet"
    done = _run([*args, "--paths", "512", "--max-notional", f"{ccy}=1e3"], work, cwd=work)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "workbench: error: 3 problems in the book"
    assert all(line.startswith("./sized/small.parquet: row ") for line in lines[1:])
    assert all(f"above the bound of 1,000 {ccy}" in line for line in lines[1:])
    done = _run([*args, "--paths", "512", "--max-notional", f"{ccy}=1e12"], work, cwd=work)
    assert done.returncode == 0, done.stderr
    done = _run([*args, "--max-notional", f"{ccy}=-1"], work, cwd=work)
    assert done.returncode == 2
    assert "expected CCY=AMOUNT" in done.stderr


def test_outputs_that_would_overwrite_an_input_are_refused(
    work: Path, market_file: Path, book_file: Path
) -> None:
    (work / "inputs").mkdir(exist_ok=True)
    book = work / "inputs" / "b_key_rates.parquet"  # the key-rate file of --out b.parquet
    book.write_bytes(book_file.read_bytes())
    for out in (book, work / "inputs" / "b.parquet"):
        done = _run(
            ["price", "--book", str(book), "--market", str(market_file), "--out", str(out)], work
        )
        _assert_clean_failure(done, "would overwrite the input", str(book))
        assert book.read_bytes() == book_file.read_bytes()


def test_output_files_are_documented() -> None:
    """docs/pricing.md lists every column of both files, in order, and key_rates_path's names."""
    from workbench.batch import RISK_COLUMNS, key_rates_path

    text = (Path(__file__).resolve().parents[1] / "docs" / "pricing.md").read_text()
    section = text[text.index("## Output files") :]
    risk_part, kr_part = section.split("**The key-rate file**")
    documented = re.findall(r"^\| `(\w+)` \| (?:string|float64) \|", risk_part, re.M)
    assert tuple(documented) == RISK_COLUMNS
    kr_columns = re.findall(r"^\| `(\w+)` \| (?:string|float64) \|", kr_part, re.M)
    assert kr_columns == ["position_id", "quote_id", "kr_dv01"]  # as the file has them (above)
    names = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", section, re.M)
    assert len(names) == 4
    for out, kr in names:
        assert key_rates_path(Path(out)).as_posix() == kr


def test_missing_book_file(work: Path, market_file: Path) -> None:
    missing = work / "nope.parquet"
    done = _run(
        ["price", "--book", str(missing), "--market", str(market_file), "--out", str(work / "z")],
        work,
    )
    _assert_clean_failure(done, str(missing), "no such book file")


def test_missing_market_file(work: Path) -> None:
    missing = work / "nope.json"
    done = _run(
        ["book", "generate", "--market", str(missing), "--out", str(work / "b.csv")],
        work,
    )
    _assert_clean_failure(done, str(missing), "no such market file")


def test_corrupt_market_file(work: Path, market_file: Path, book_file: Path) -> None:
    corrupt = work / "corrupt.json"
    corrupt.write_text(market_file.read_text()[:5000])
    done = _run(
        ["price", "--book", str(book_file), "--market", str(corrupt), "--out", str(work / "z")],
        work,
    )
    _assert_clean_failure(done, str(corrupt), "not valid JSON at line")


def test_invalid_market_value(work: Path, market_file: Path, book_file: Path) -> None:
    text = market_file.read_text()
    key = '"FXVOL.EURUSD.1Y.25C": '
    start = text.index(key) + len(key)
    end = text.index(",", start)
    bad = work / "negvol.json"
    bad.write_text(text[:start] + "-0.08" + text[end:])
    done = _run(
        ["price", "--book", str(book_file), "--market", str(bad), "--out", str(work / "z")],
        work,
    )
    _assert_clean_failure(done, str(bad), "quotes.FXVOL.EURUSD.1Y.25C = -0.08", "positive")


def test_corrupt_parquet_book(work: Path, market_file: Path) -> None:
    junk = work / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not a parquet file")
    done = _run(
        ["price", "--book", str(junk), "--market", str(market_file), "--out", str(work / "z")],
        work,
    )
    _assert_clean_failure(done, str(junk), "not a readable Parquet")
