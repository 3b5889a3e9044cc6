"""Shared by the service benchmarks: the reference market and book written to a folder, and a
service started on them with its own run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import workbench
from workbench.book.reference import generate_reference_book
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market


def reference_service(
    folder: Path, name: str, *, positions: int, rate: float
) -> tuple[workbench.Client, Path, MarketSnapshot]:
    """Write ``market.json`` and ``book.parquet`` (seed 1) in ``folder``, start a service on
    them (feed at ``rate`` ticks/s, run folder ``folder/run``) and return it when ready, with
    its run folder and the market."""
    market = generate_reference_market()
    save_market(market, folder / "market.json")
    generate_reference_book(market, positions=positions, seed=1).write_parquet(
        folder / "book.parquet"
    )
    root = folder / "run"
    svc = workbench.start(
        folder / "book.parquet", folder / "market.json", name=name, rate=rate, run_root=root
    )
    return svc, root, market


def service_parser(doc: str) -> argparse.ArgumentParser:
    """A parser for a service benchmark (description: the first line of ``doc``) with the
    options they all take: ``--positions`` (40,000) and ``--rate`` (5,000 ticks/s)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=5_000.0)
    return parser
