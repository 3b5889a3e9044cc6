"""The ScenarioRisk widget against a live service without a browser (what it holds equals the
client's answers) and notebooks/market_risk.ipynb run headless by papermill on a service it
starts itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from service_helpers import PATHS, make_files, start
from test_widgets import _kernelspec

from workbench.client import Client, LossConfig, ServiceError, connect
from workbench.widgets.scenario_risk import BINS, ScenarioRisk, firm_measures, money

NAME = "lossw"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("live_loss_widgets"))


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    svc = start(files, NAME, rate=500.0, loss=LossConfig(every_s=3.0, window=40))
    try:
        yield svc
    finally:
        svc.stop()


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{what} not within {timeout_s} s")
        await asyncio.sleep(0.1)


def test_the_widget_shows_the_clients_numbers(service: Client) -> None:
    service.var(wait_s=240)

    async def scenario() -> None:
        widget = ScenarioRisk(NAME, period_s=0.5)
        try:
            await _until(
                lambda: (
                    widget.var is not None
                    and widget.var.ready
                    and widget.stress is not None
                    and widget.stress.ready
                    and widget.explained is not None
                ),
                120,
                "a result drawn",
            )
            var = widget.var
            assert var is not None
            assert var.measures is not None
            _, _, firm_var, firm_es = firm_measures(var)
            assert f"<b>{money(firm_var)}</b>" in widget.summary.value
            assert f"<b>{money(firm_es)}</b>" in widget.summary.value
            desks = var.measures.filter(pl.col("group") != "Firm")
            assert list(widget.bars.x) == desks["group"].to_list()
            np.testing.assert_array_equal(np.asarray(widget.bars.y), desks["var_99"].to_numpy())
            np.testing.assert_array_equal(np.asarray(widget.es_bars.y), desks["es_97.5"].to_numpy())
            assert len(widget.histogram.y) == BINS
            assert float(np.sum(widget.histogram.y)) == var.scenarios
            assert float(np.asarray(widget.marks.x)[0][0]) == -firm_var
            assert np.asarray(widget.scatter.x).shape == (2, var.scenarios)
            assert str(var.worst["scenario"][0]) in widget.worst.value
            assert widget.stress is not None
            assert widget.stress.ready
            assert "rates +200bp" in widget.stresses.value
            assert 'class="n' in widget.stresses.value  # coloured cells
            assert "unexplained" in widget.explain.value
            # a run under way shows its progress
            await _until(lambda: widget.progress.layout.visibility == "visible", 60, "progress")
            assert widget.progress.max >= widget.progress.value
        finally:
            widget.close()

    asyncio.run(scenario())


def test_the_widget_says_when_the_service_has_no_loss_process(files: tuple[Path, Path]) -> None:
    svc = start(files, "lossless", feed="none", loss=LossConfig(enabled=False), standby=False)
    try:

        async def scenario() -> None:
            widget = ScenarioRisk("lossless")
            try:
                await _until(lambda: "without its loss process" in widget.summary.value, 30,
                             "the notice")  # fmt: skip
            finally:
                widget.close()

        asyncio.run(scenario())
        with pytest.raises(ServiceError):
            svc.explain(wait_s=0)
    finally:
        svc.stop()


def test_market_risk_notebook_runs_headless_on_a_service_it_starts(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    import papermill as pm

    out = tmp_path / "market_risk.ipynb"
    book, market = files
    try:
        pm.execute_notebook(
            str(NOTEBOOKS / "market_risk.ipynb"),
            str(out),
            parameters={
                "service": "mrisk",
                "book": str(book),
                "market": str(market),
                "n_paths": PATHS,
                "loss_every_s": 5.0,
                "loss_window": 30,
                "wait_s": 240.0,
                "run_for_s": 3.0,
                "close_when_done": True,
                "stop_when_done": True,
            },
            kernel_name=_kernelspec(tmp_path),
            cwd=str(tmp_path),
            progress_bar=False,
        )
    finally:  # a failed run leaves the service it started: stop it here
        with contextlib.suppress(ServiceError):
            connect("mrisk").stop()
    text = out.read_text()
    assert '"ename"' not in text
    assert "30 days at quote generation" in text
    assert "es_97.5" in text
    assert "unexplained" in text
    assert "scenario risk widget: live" in text
    with pytest.raises(ServiceError):
        connect("mrisk")  # the notebook stopped the service it started
