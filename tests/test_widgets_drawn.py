"""Every chart widget drawn in a real browser: GreekHistory, LimitsPanel and Telemetry of the desk
notebook in JupyterLab and under Voila, CurveShock and Profiler in JupyterLab.

Each test fails on a chart with nothing drawn (points of every line and bars, read from the
SVG), on numbers that differ from the client API's (the kernel's values, read through the
kernel's own connection file, and the page's text), on any browser console error, and on a chart
model updated more often than ``CHART_HZ`` times a second (the widget messages the page receives
on its kernel websocket, by the kernel's send time). What is read lives in ``widget_probes``.
The fixtures are test_browser's (a JupyterLab server on a copy of the notebooks); the service is
this module's own, with two firm limits, one breached.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import test_browser as tb
from jupyter_client import BlockingKernelClient
from service_helpers import start, wait
from widget_probes import (
    CommLog,
    assert_readable_ticks,
    charts,
    in_kernel,
    kernel_connection,
    least_points,
    points,
    table_rows,
    tick_number,
    value_ticks,
)

from workbench.client import Client
from workbench.risk.limits import LimitConfig
from workbench.store.layout import STORE_FOLDER
from workbench.widgets.delivery import ACK_EVERY_S, PAUSE_AFTER_S
from workbench.widgets.shocks import GRID_T

pytestmark = [pytest.mark.slow]

# test_browser's fixtures, under their own names (pytest finds them as this module's)
files = tb.files
notebooks = tb.notebooks
kernelspec = tb.kernelspec
lab = tb.lab
chromium = tb.chromium
lab_page = tb.lab_page

LIMITS = (LimitConfig(measure="dv01", limit=1.0), LimitConfig(measure="pv", limit=1e11))
"""Firm limits: DV01 of 1 USD (always breached) and PV of 100B USD (never)."""

CHART_HZ = 5.0
"""The traffic budget: no chart redrawn more often than this, times a second."""

HISTORY = ("pv", "dv01", "vega")
"""The measures desk.ipynb charts (GreekHistory's titles: PV, DV01, Vega)."""


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    # tests/test_browser.py's service had the same name (the notebooks' kernel finds it by it):
    # its stored day would be GreekHistory's day too, sequence numbers 1, 2 … again
    stale = Path(os.environ["WORKBENCH_RUN_DIR"]) / tb.NAME / STORE_FOLDER
    shutil.rmtree(stale, ignore_errors=True)
    client = start(files, tb.NAME, rate=2_000.0, limits=LIMITS)
    try:
        yield client
    finally:
        client.stop()


# --- what each chart must show ----------------------------------------------------------------


def firm_by_seq(service: Client, n: int) -> dict[int, dict[str, float]]:
    """The firm measures of the next ``n`` snapshots published, by sequence number (USD)."""
    out: dict[int, dict[str, float]] = {}
    for _ in range(n):
        snap = service.latest(timeout_s=10.0)
        out[snap.seq] = {m: float(snap.tables["firm"][m][0]) for m in HISTORY}
    return out


_HISTORY_AT = (
    "{{str(int(s)): {{m: float(history.values[m][i]) for m in history.measures}}"
    " for i, s in enumerate(history.seqs) if int(s) in {seqs}}}"
)


def history_drawn(page: Any, errors: list[str], *, least: int) -> None:
    """Wait until GreekHistory's three charts show ``least`` points or more each (the console
    errors seen meanwhile in the failure)."""

    def drawn(measure: str) -> bool:
        figs = history_figs(page, measure)
        return len(figs) == 1 and min(figs[0]["points"], default=0) >= least

    for m in HISTORY:
        try:
            tb.wait_for(lambda m=m: drawn(m), 60, f"the {m} history with {least} points", page)
        except AssertionError as exc:
            got = [f["points"] for f in charts(page, "(firm, USD)")]
            raise AssertionError(f"{exc}: points {got}, console errors {errors[:3]}") from None


def check_history(page: Any, service: Client, connection: Path) -> None:
    """GreekHistory of the firm: its values those of the same snapshots read through the
    client, its axis numbers around them."""

    wanted = firm_by_seq(service, 5)
    deadline = time.monotonic() + 30
    while True:
        got = in_kernel(connection, _HISTORY_AT.format(seqs=sorted(wanted)))
        if len(got) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(got) >= 3, f"the kernel's history holds {len(got)} of the snapshots {sorted(wanted)}"
    for seq, values in got.items():
        assert values == wanted[int(seq)], (seq, values, wanted[int(seq)])
    # every value the kernel holds now is drawn within 1 s (redraws every 0.5 s, the domain
    # spans all points): the value axis then spans them all
    series = in_kernel(connection, "{m: history.values[m].tolist() for m in history.measures}")
    page.wait_for_timeout(1_000)
    for m in HISTORY:
        (fig,) = history_figs(page, m)
        assert_readable_ticks(fig, [v for v in series[m] if math.isfinite(v)])
    print(f"history: {len(got)} snapshots equal to the client's, seqs {sorted(got)}")


def history_figs(page: Any, measure: str) -> list[dict[str, Any]]:
    """GreekHistory's figure of ``measure`` (title ``<HEADER> (firm, USD)``)."""
    header = {"pv": "PV", "dv01": "DV01", "vega": "Vega"}[measure]
    return [f for f in charts(page, "(firm, USD)") if f["title"].startswith(f"{header} (")]


def check_limits(page: Any, service: Client) -> None:
    """LimitsPanel: one usage row per limit with the API's limit and |value| (three digits, 2%
    for the value, which moves with the market), the breach of the DV01 limit."""
    usage = tb.wait_for(lambda: table_rows(page, "used"), 30, "the limit usage table", page)
    api = service.limits()
    assert len(usage) == api.height, (usage, api)
    for row, want in zip(usage, api.iter_rows(named=True), strict=True):
        scope, measure, value, limit, used = row
        assert (scope, measure) == (want["scope"], want["measure"])
        assert tb.compact_value(limit) == pytest.approx(want["limit"], rel=5e-3)
        assert tb.compact_value(value) == pytest.approx(want["value"], rel=0.02)
        assert used.endswith("%")
    breaches = table_rows(page, "over by")
    assert [(r[0], r[1]) for r in breaches] == [("firm", "dv01")], breaches
    assert tb.compact_value(breaches[0][3]) == 1.0
    print(f"limits: {usage}")


def check_telemetry(page: Any, service: Client, *, least: int) -> None:
    """Telemetry: its three rate charts drawn with ``least`` points, the latency distribution's
    bars, and the process table and position count of the API's status."""
    for title in ("ticks accepted / s", "ticks rejected / s", "p99 latency (ms)"):
        tb.wait_for(lambda t=title: least_points(page, t) >= least, 60, f"'{title}'", page)
    (accepted,) = charts(page, "ticks accepted / s")
    rates = value_ticks(accepted)
    assert len(rates) >= 2
    assert all(v >= 0 for v in rates), rates
    tb.wait_for(lambda: charts(page, "latency distribution")[0]["bars"] > 0, 30, "bars", page)
    status = service.status()
    rows = tb.wait_for(lambda: table_rows(page, "hb age s"), 30, "the process table", page)
    shown = {r[0]: r for r in rows}
    assert set(shown) == {str(p["name"]) for p in status["processes"]}, (shown, status)
    for p in status["processes"]:
        assert int(shown[str(p["name"])][2]) == int(p.get("restarts", 0)), p
    summary = page.locator(".widget-html", has_text="ticks/s").first.text_content() or ""
    assert f"positions {status['positions']}" in summary, summary
    ticks = float(re.search(r"([\d,]+) ticks/s", summary).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert ticks > 0, summary


def check_rates(log: CommLog, *, since: float = 0.0) -> None:
    """No chart model updated more than CHART_HZ times in any second (after ``since``)."""
    rates = log.chart_rates(since)
    assert rates, f"no chart update seen ({len(log.sent)} models updated)"
    over = {k: v for k, v in rates.items() if v > CHART_HZ}
    assert not over, f"charts redrawn more than {CHART_HZ:g} times a second: {over}"
    print(f"chart updates, most in one second: {sorted(rates.values(), reverse=True)[:8]}")


def no_errors(errors: list[str]) -> None:
    assert not errors, f"{len(errors)} console errors, first: {errors[:3]}"


def check_desk(
    page: Any, service: Client, errors: list[str], log: CommLog, connection: Path, name: str
) -> None:
    """The charts and panels of desk.ipynb on ``page`` (its kernel's ``connection`` file, its
    widget messages in ``log``): drawn, equal to the API's numbers, within the redraw budget,
    with no console error; a screenshot ``name`` in ``ui-tests/``."""
    tb.wait_for(lambda: len(charts(page, "(firm, USD)")) == 3, 90, "the history charts", page)
    tb.wait_for(lambda: charts(page, "latency distribution"), 60, "telemetry", page)
    history_drawn(page, errors, least=10)
    check_history(page, service, connection)
    check_telemetry(page, service, least=5)
    check_limits(page, service)
    check_rates(log)
    tb.shot(page, name)
    no_errors(errors)


# --- JupyterLab -------------------------------------------------------------------------------


def run_in_lab(
    chromium: Any, lab_page: Callable[[str], Any], name: str
) -> tuple[Any, list[str], CommLog]:
    """Open notebook ``name`` in JupyterLab and run all its cells; the page, its console errors
    and its widget messages (both recorded from before the page opened)."""
    errors = tb.console_errors(chromium.pages[0])
    log = CommLog(chromium.pages[0])
    page = lab_page(name)
    tb.run_all(page)
    return page, errors, log


def closed_tab_traffic(lab: tb.Lab, page: Any, seconds: float) -> list[tuple[float, str]]:
    """Close ``page`` (the only tab on the lab's one kernel) and list the widget messages the
    kernel sends during ``seconds`` after: (seconds since the close, what changed — the state
    keys of an update, or ``open`` / ``close``)."""
    (kernel,) = lab.kernels()
    kc = BlockingKernelClient()
    kc.load_connection_file(Path(os.environ["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel['id']}.json")
    kc.start_channels(shell=False, iopub=True, stdin=False, hb=False, control=False)
    sent: list[tuple[float, str]] = []
    try:
        page.wait_for_timeout(1_000)  # the subscription joins
        with contextlib.suppress(queue.Empty):  # what came while the tab was open: not counted
            while True:
                kc.get_iopub_msg(timeout=0.05)
        page.close()
        closed = time.monotonic()
        while time.monotonic() - closed < seconds:
            with contextlib.suppress(queue.Empty):
                msg = kc.get_iopub_msg(timeout=0.5)
                kind = msg["msg_type"]
                if kind == "comm_msg":
                    state = msg["content"].get("data", {}).get("state", {})
                    sent.append((time.monotonic() - closed, ",".join(sorted(state))))
                elif kind in ("comm_open", "comm_close"):
                    sent.append((time.monotonic() - closed, kind.removeprefix("comm_")))
    finally:
        kc.stop_channels()
    return sent


def test_desk_charts_drawn_in_jupyterlab(
    service: Client, lab: tb.Lab, chromium: Any, lab_page: Callable[[str], Any]
) -> None:
    page, errors, log = run_in_lab(chromium, lab_page, "desk.ipynb")
    connection = kernel_connection(lab.proc.pid)
    check_desk(page, service, errors, log, connection, "lab-desk-charts")
    # the tab closes: every widget pauses once its last numbered redraw (one every
    # ACK_EVERY_S) goes without a receipt for PAUSE_AFTER_S, its status line saying so; after
    # that only receipts are renewed
    sent = closed_tab_traffic(lab, page, 14.0)
    quiet = ACK_EVERY_S + PAUSE_AFTER_S + 1.0
    redraws = [(round(t, 1), what) for t, what in sent if t > quiet and what not in STILL_SENT]
    print(f"tab closed 14 s: {len(sent)} widget messages; after 5 s: {redraws}")
    assert redraws == [], f"redraws sent to a closed tab: {redraws}"
    assert len(sent) <= 80, sent


STILL_SENT = {"open", "close"}
"""What a paused widget still sends: its receipt renewed (opens and closes)."""


def _notebook(cells: list[str]) -> dict[str, Any]:
    """Notebook JSON of code ``cells`` on the tests' kernel."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": tb.KERNEL, "display_name": "W", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_history_shown_at_its_first_point_keeps_drawing(
    service: Client, lab: tb.Lab, chromium: Any, lab_page: Callable[[str], Any]
) -> None:
    """A GreekHistory displayed while it holds one point (one x, a domain of no width) draws
    every later point, with no console error."""
    cells = [
        "import asyncio\nfrom IPython.display import display\nfrom workbench.widgets import "
        f"GreekHistory\nhistory = GreekHistory({tb.NAME!r}, measures={HISTORY!r}, day=False)",
        "while min(line.x.size for line in history.lines.values()) < 1:\n"
        "    await asyncio.sleep(0.005)\n"
        "display(history)\nprint('shown at', history.lines['pv'].x.size, 'point(s)')",
    ]
    (lab.root / "history_first_point.ipynb").write_text(json.dumps(_notebook(cells)))
    page, errors, log = run_in_lab(chromium, lab_page, "history_first_point.ipynb")
    shown = page.locator(".jp-OutputArea-output", has_text="shown at").first
    shown.wait_for(timeout=90_000)
    assert "shown at 1 point(s)" in (shown.text_content() or "")
    history_drawn(page, errors, least=10)
    check_history(page, service, kernel_connection(lab.proc.pid))
    check_rates(log)
    tb.shot(page, "lab-history-first-point")
    no_errors(errors)


def test_curve_shock_charts_drawn_in_jupyterlab(
    service: Client, lab: tb.Lab, chromium: Any, lab_page: Callable[[str], Any]
) -> None:
    page, errors, log = run_in_lab(chromium, lab_page, "what_if.ipynb")
    ladder = tb.wait_for(
        lambda: [f for f in charts(page, "ladder: all") if f["points"] and f["points"][0] > 0],
        120,
        "the ladder chart",
        page,
    )
    assert ladder[0]["points"] == [3], ladder  # the notebook's three shifts
    connection = kernel_connection(lab.proc.pid)
    kernel = in_kernel(  # the curves redrawn from the live market now, as the API reads it next
        connection,
        "{'title': shock.curve_fig.title, 'y': shock.curve_lines.y.tolist(), "
        "'ladder': shock.ladder_frame['pnl'].to_list()}",
        code="await shock.run()",
    )
    curve_id = kernel["title"].split(":")[0]
    (curves,) = charts(page, f"{curve_id}: zero and 3M forward")
    assert curves["points"] == [GRID_T.size] * 4, curves["points"]
    zeros = [v for row in kernel["y"] for v in row]
    assert_readable_ticks(curves, zeros)
    # the API's curves a moment later: the synthetic feed moves them between two reads, by up
    # to 0.02 (zero) and 0.2 (3M forward) percentage points as seen back to back
    base = service.market((curve_id,), (), GRID_T.tolist()).curves
    for col, row, tol in (("zero_pct", 0, 0.05), ("fwd3m_pct", 2, 0.5)):
        api = base[col].to_list()
        moved = max(abs(a - b) for a, b in zip(api, kernel["y"][row], strict=True))
        assert moved < tol, (col, moved)
    (bars,) = charts(page, "PnL by desk")
    assert bars["bars"] >= 3
    (ladder_fig,) = charts(page, "ladder: all")
    assert_readable_ticks(ladder_fig, kernel["ladder"])
    # two seconds of dragging the parallel slider (a new value every move): the charts follow
    # the last value, never more often than the budget
    dragged = time.time()
    slider = page.locator(".widget-slider", has_text="parallel bp").first
    slider.scroll_into_view_if_needed()
    box = slider.locator(".noUi-handle").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(40):
        page.mouse.move(x + (-25 if i % 2 else 25), y, steps=2)
        page.wait_for_timeout(50)
    page.mouse.up()
    tb.wait_for(
        lambda: any(log.chart_rates(dragged).values()), 30, "the charts redrawn by a drag", page
    )
    page.wait_for_timeout(1_000)
    check_rates(log)
    tb.shot(page, "lab-what-if-charts")
    no_errors(errors)


def test_profiler_chart_drawn_in_jupyterlab(
    service: Client, lab: tb.Lab, chromium: Any, lab_page: Callable[[str], Any]
) -> None:
    page, errors, log = run_in_lab(chromium, lab_page, "spline_caching.ipynb")
    tb.wait_for(
        lambda: tb.bars_in(page, "reprice time with the spline cache") >= 3, 120, "runs", page
    )
    n = tb.wait_for(
        lambda: max(tb.bars_in(page, "cumulative time per function"), 0), 30, "bars", page
    )
    kernel = in_kernel(
        kernel_connection(lab.proc.pid),
        "{'bars': len(prof.bars.y), 'cum': [float(v) for v in prof.bars.y], "
        "'top': prof.last['functions'].sort('cumtime_s', descending=True)"
        ".select('function', 'cumtime_s').head(3).rows()}",
    )
    assert n == kernel["bars"] >= 3, (n, kernel)
    (fig,) = charts(page, "cumulative time per function")
    horizontal = [a for a in fig["axes"] if not a["vertical"]]
    (seconds,) = [a for a in horizontal if a["ticks"]]
    ticks = [tick_number(t) for t in seconds["ticks"]]
    assert len(set(ticks)) == len(ticks) >= 2, ticks
    assert min(ticks) <= max(kernel["cum"]) <= max(ticks) + (ticks[1] - ticks[0]), ticks
    rows = table_rows(page, "cum s")
    for row, top in zip(rows, kernel["top"], strict=False):
        assert row[0][:20] == str(top[0])[:20], (row, top)
        assert float(row[4]) == pytest.approx(float(top[1]), abs=5e-4), (row, top)
    check_rates(log)
    tb.shot(page, "lab-profiler-chart")
    no_errors(errors)


# --- Voila ------------------------------------------------------------------------------------


def test_voila_dashboard_draws_every_chart(
    service: Client, kernelspec: str, chromium: Any, tmp_path: Path
) -> None:
    port = tb.free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.widgets.dashboard", "--name", tb.NAME,
         "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False

        wait(up, 60, "voila")
        page = chromium.pages[0] if chromium.pages else chromium.new_page()
        page.set_default_timeout(90_000)
        errors = tb.console_errors(page)
        widgets = CommLog(page)
        page.goto(f"http://127.0.0.1:{port}/")
        tb.wait_for(lambda: len(charts(page, "(firm, USD)")) == 3, 120, "the history", page)
        connection = kernel_connection(proc.pid)
        check_desk(page, service, errors, widgets, connection, "voila-desk-charts")
    finally:
        tb.stop_process(proc, signal.SIGTERM, 40)
        log.close()
    assert proc.returncode == 0, (tmp_path / "dashboard.log").read_text()


def test_tick_numbers_read_back() -> None:
    assert [tick_number(t) for t in ("1.23M", "\u221245.6k", "1,200", "0.25", "500µ")] == [
        1.23e6,
        -45.6e3,
        1200.0,
        0.25,
        pytest.approx(5e-4),
    ]
    assert points("M0,1L2,3L4,NaN") == 2
    assert points("") == 0


def test_in_kernel_answers_while_the_kernel_publishes(kernelspec: str, tmp_path: Path) -> None:
    """A kernel whose widgets publish all the time is asked within seconds (the probe once
    waited for 0.2 s of quiet on IOPub: minutes under Voila)."""
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name=kernelspec, connection_file=str(tmp_path / "kernel.json"))
    km.start_kernel()
    try:
        kc = km.blocking_client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        chatter = (
            "import threading, time\n"
            "def _chat():\n"
            "    while True:\n"
            "        print('update', flush=True)\n"
            "        time.sleep(0.05)\n"
            "threading.Thread(target=_chat, daemon=True).start()\n"
        )
        kc.execute_interactive(chatter, timeout=30, output_hook=lambda _msg: None)
        kc.stop_channels()
        answer: queue.Queue[Any] = queue.Queue()
        asking = threading.Thread(
            target=lambda: answer.put(in_kernel(Path(km.connection_file), "1 + 1")), daemon=True
        )
        asking.start()
        try:
            assert answer.get(timeout=20) == 2
        except queue.Empty:
            raise AssertionError("no answer in 20 s: the probe waits for IOPub's quiet") from None
    finally:
        km.shutdown_kernel(now=True)


class _Page:
    """Where a CommLog registers its websocket handler (no browser needed to read frames)."""

    def on(self, event: str, handler: Callable[[Any], None]) -> None:
        pass


def test_comm_log_reads_kernel_frames_and_counts_updates() -> None:
    from jupyter_server.services.kernels.connection.base import (
        serialize_binary_message,
        serialize_msg_to_ws_v1,
    )

    def msg(kind: str, content: dict[str, Any], at: float) -> dict[str, Any]:
        date = datetime.fromtimestamp(at, UTC).isoformat()
        return {"header": {"msg_type": kind, "date": date}, "parent_header": {},
                "metadata": {}, "content": content, "buffers": [b"xy"]}  # fmt: skip

    def v1(m: dict[str, Any]) -> bytes:
        parts = [json.dumps(m[k]).encode() for k in ("header", "parent_header", "metadata")]
        return serialize_msg_to_ws_v1([*parts, json.dumps(m["content"]).encode()], "iopub")

    log = CommLog(_Page())
    opened = {"comm_id": "line", "data": {"state": {"_model_module": "bqplot",
              "_model_name": "LinesModel"}}}  # fmt: skip
    log._frame(v1(msg("comm_open", opened, 100.0)))
    states = {"method": "update_states", "states": {"grid": {"model_module": "@jupyter-widgets/"
              "controls", "model_name": "HTMLModel"}}}  # fmt: skip
    text = {**msg("comm_msg", {"comm_id": "ctl", "data": states}, 100.0), "buffers": []}
    log._frame(json.dumps(text))
    for i in range(8):  # 8 updates of the line in 0.7 s, then one 5 s later; 8 of the grid
        update = {"comm_id": "line", "data": {"method": "update", "state": {}}}
        log._frame(serialize_binary_message(msg("comm_msg", update, 101.0 + i * 0.1)))
        grid = {"comm_id": "grid", "data": {"method": "update", "state": {}}}
        log._frame(v1(msg("comm_msg", grid, 101.0 + i * 0.1)))
    log._frame(v1(msg("comm_msg", update, 106.0)))
    assert log.models["grid"] == ("@jupyter-widgets/controls", "HTMLModel")
    assert log.chart_rates() == {"LinesModel line": 8}  # the grid is not a chart
    assert log.chart_rates(since=105.0) == {"LinesModel line": 1}
    with pytest.raises(AssertionError, match="more than 5 times a second"):
        check_rates(log)
