"""ScenarioRisk in a real browser: notebooks/market_risk.ipynb in JupyterLab draws its charts
(bars and lines read from the SVG, the scatter's dots), shows the client's numbers (the firm's
VaR and ES, the desk × stress table) and logs no console error. The fixtures are test_browser's;
the service is this module's own, with a loss process whose result stays 30 s between runs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import test_browser as tb
from service_helpers import start
from widget_probes import charts

from workbench.client import Client, LossConfig
from workbench.widgets.scenario_risk import firm_measures, money

pytestmark = [pytest.mark.slow]

files = tb.files
notebooks = tb.notebooks
kernelspec = tb.kernelspec
lab = tb.lab
chromium = tb.chromium
lab_page = tb.lab_page


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    client = start(files, tb.NAME, rate=500.0, loss=LossConfig(every_s=30.0, window=40))
    try:
        yield client
    finally:
        client.stop()


def widget_rows(page: Any, header: str) -> list[list[str]]:
    """Body rows (cell texts) of the widget's tables (``table.wbg``) with a header ``header``
    (the notebook's own frames, also shown, are not these)."""
    rows: list[list[str]] = page.evaluate(
        """h => Array.from(document.querySelectorAll('table.wbg'))
            .filter(t => Array.from(t.querySelectorAll('th'), c => c.textContent).includes(h))
            .flatMap(t => Array.from(t.querySelectorAll('tbody tr'))
                .map(r => Array.from(r.children, c => c.textContent || '')))""",
        header,
    )
    return rows


def _bars(page: Any, title: str) -> int:
    return max((f["bars"] for f in charts(page, title)), default=0)


def _summary_numbers(page: Any) -> tuple[str, str]:
    text = page.locator(".widget-html", has_text="Firm var").first.text_content() or ""
    found = re.search(r"Firm var 99%: ([-\d,]+) · es 97\.5%: ([-\d,]+)", text)
    return (found.group(1), found.group(2)) if found else ("", "")


def test_scenario_risk_drawn_in_jupyterlab(
    service: Client, chromium: Any, lab_page: Callable[[str], Any]
) -> None:
    errors = tb.console_errors(chromium.pages[0])
    page = lab_page("market_risk.ipynb")
    tb.run_all(page)
    try:
        tb.wait_for(lambda: _bars(page, "VaR and ES by desk") > 0, 300, "the VaR/ES bars", page)
    except AssertionError:
        drawn = [(f["title"], f["bars"], f["points"]) for f in charts(page, "")]
        raise AssertionError(f"figures drawn: {drawn}; console errors {errors[:3]}") from None
    tb.wait_for(lambda: _bars(page, "firm PnL over the days") > 0, 60, "the histogram", page)
    (hist,) = charts(page, "firm PnL over the days")
    assert hist["points"] == [2, 2], hist["points"]  # VaR and ES marked
    var = service.var(wait_s=0)

    def same() -> bool:
        nonlocal var
        var = service.var(wait_s=0)
        _, _, firm_var, firm_es = firm_measures(var)
        return _summary_numbers(page) == (money(firm_var), money(firm_es))

    tb.wait_for(same, 60, "the firm's VaR and ES of the client", page)
    n = var.scenarios
    tb.wait_for(lambda: [f["points"] for f in charts(page, "Greeks against full")] == [[n, n]],
                60, "the Greeks against full revaluation", page)  # fmt: skip
    assert var.measures is not None
    desks = var.measures.filter(pl.col("group") != "Firm")
    nonzero = int((desks["var_99"] != 0).sum() + (desks["es_97.5"] != 0).sum())
    assert _bars(page, "VaR and ES by desk") == nonzero
    stress = service.stress(wait_s=0)
    wide = stress.pnl.pivot(on="scenario", index="desk", values="pnl")
    rows = tb.wait_for(lambda: widget_rows(page, "rates +200bp"), 60, "the stress table", page)
    want = [[str(r[0]), *(money(float(v)) for v in r[1:])] for r in wide.iter_rows()]
    assert rows == want
    worst = widget_rows(page, "day")
    assert [r[1] for r in worst] == var.worst["scenario"].to_list()
    explain = tb.wait_for(lambda: widget_rows(page, "unexplained"), 60, "the explain", page)
    assert explain[-1][0] == "Firm"
    tb.shot(page, "lab-scenario-risk")
    assert not errors, f"console errors: {errors[:3]}"
