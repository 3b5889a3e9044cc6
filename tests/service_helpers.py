"""Helpers shared by the service tests: small reference files, start, wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import workbench
from workbench.book.reference import generate_reference_book
from workbench.client import Client, LossConfig
from workbench.market.io import save_market
from workbench.market.reference import generate_reference_market

POSITIONS = 1_000
PATHS = 4_096


def make_files(folder: Path) -> tuple[Path, Path]:
    """A reference market and a small reference book in ``folder``."""
    market = generate_reference_market()
    save_market(market, folder / "market.json")
    generate_reference_book(market, positions=POSITIONS, seed=5).write_parquet(
        folder / "book.parquet"
    )
    return folder / "book.parquet", folder / "market.json"


def start(files: tuple[Path, Path], name: str, **kw: object) -> Client:
    """Start a service on the files and wait until it is ready; without the live loss process
    unless ``loss`` is given (its VaR runs are tested on their own, tests/test_live_loss*.py)."""
    book, market = files
    kw.setdefault("loss", LossConfig(enabled=False))
    return workbench.start(book, market, name=name, n_paths=PATHS, timeout_s=240, **kw)  # type: ignore[arg-type]


def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` holds; fails the test after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout_s} s")
