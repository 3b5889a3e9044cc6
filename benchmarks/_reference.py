"""Shared by the service benchmarks: the reference market and book written to a folder, a
service started on them with its own run folder, and its desk dashboard open in a browser."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

import workbench
from workbench.book.reference import generate_reference_book
from workbench.client import ConflationConfig, LossConfig
from workbench.engine.transport.endpoints import free_port
from workbench.market.io import save_market
from workbench.market.model import MarketSnapshot
from workbench.market.reference import generate_reference_market


def reference_service(
    folder: Path, name: str, *, positions: int, rate: float, **options: Any
) -> tuple[workbench.Client, Path, MarketSnapshot]:
    """Write ``market.json`` and ``book.parquet`` (seed 1) in ``folder``, start a service on
    them (feed at ``rate`` ticks/s, run folder ``folder/run``) and return it when ready, with
    its run folder and the market. ``options``: service configuration (``workbench.start``)."""
    market = generate_reference_market()
    save_market(market, folder / "market.json")
    generate_reference_book(market, positions=positions, seed=1).write_parquet(
        folder / "book.parquet"
    )
    root = folder / "run"
    svc = workbench.start(
        folder / "book.parquet",
        folder / "market.json",
        name=name,
        rate=rate,
        run_root=root,
        **options,
    )
    return svc, root, market


def service_parser(doc: str) -> argparse.ArgumentParser:
    """A parser for a service benchmark (description: the first line of ``doc``) with the
    options they all take: ``--positions`` (40,000), ``--rate`` (5,000 ticks/s) and
    ``--service-nice``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=5_000.0)
    parser.add_argument("--service-nice", type=int, default=None, dest="service_nice",
                        help="the service session's nice value (default: its own)")  # fmt: skip
    parser.add_argument("--loss-every", type=float, default=None, dest="loss_every",
                        help="seconds between the live VaR runs (default the service's, 60; "
                        "0: no loss process)")  # fmt: skip
    parser.add_argument("--loss-anytime", action="store_true", dest="loss_anytime",
                        help="the loss process revalues whenever its priority lets it, not "
                        "only between the flushes (loss.between_flushes False)")  # fmt: skip
    parser.add_argument("--windows", default=None,
                        help="conflation windows, ms, e.g. rates=200,fx_vol=400 (fields of "
                        "ConflationConfig less _ms; default the service's)")  # fmt: skip
    return parser


def service_options(args: argparse.Namespace) -> dict[str, Any]:
    """The service configuration the common options ask for (``--service-nice``,
    ``--loss-every``)."""
    out: dict[str, Any] = {}
    if args.service_nice is not None:
        out["service_nice"] = args.service_nice
    every = getattr(args, "loss_every", None)
    anytime = bool(getattr(args, "loss_anytime", False))
    if every is not None or anytime:
        out["loss"] = LossConfig(enabled=every is None or every > 0, every_s=every or 60.0,
                                 between_flushes=not anytime)  # fmt: skip
    windows = getattr(args, "windows", None)
    if windows:
        pairs = (item.split("=") for item in windows.split(","))
        out["conflation"] = ConflationConfig(**{f"{k.strip()}_ms": float(v) for k, v in pairs})
    return out


CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def desk_in_browser(folder: Path, root: Path, name: str) -> Iterator[Page]:
    """The desk dashboard (``workbench dashboard``, Voila) of service ``name`` (run folder
    ``root``) open in headless Chromium, its grid drawn; yields the page. Stops both."""
    port = free_port()
    env = {**os.environ, "WORKBENCH_RUN_DIR": str(root), "HOME": str(folder)}
    log = (folder / "voila.log").open("wb")
    voila = subprocess.Popen(
        [sys.executable, "-m", "workbench.widgets.dashboard", "--name", name, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(180_000)
                page.goto(f"http://127.0.0.1:{port}/")
                page.locator(".wbg-r.wbg-t").wait_for()
                page.locator(".widget-html-content", has_text="snapshot ").first.wait_for()
                yield page
            finally:
                browser.close()
    finally:
        voila.send_signal(signal.SIGTERM)
        try:
            voila.wait(60)
        except subprocess.TimeoutExpired:
            voila.kill()
        log.close()
