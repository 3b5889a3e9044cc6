"""Notebook widgets without a browser: comm messages recorded, a real service, real notebooks.

Widgets get a recording comm (as ipywidgets' own tests do) so every message a view would send to
the browser is kept and measured. One small service (1,000 positions) serves every test; the
last test stops it and starts it again under the same name to check that widgets reconnect.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bqplot as bq
import comm
import ipywidgets as w
import numpy as np
import polars as pl
import pytest
from service_helpers import POSITIONS, make_files, start

from workbench.client import Client, SnapshotView
from workbench.engine.processes.market_view import pillar_frame
from workbench.risk.breaches import Breach
from workbench.risk.limits import LimitConfig
from workbench.widgets import (
    CurveShock,
    GreekGrid,
    GreekHistory,
    GridModel,
    Latest,
    LimitsPanel,
    Profiler,
    Telemetry,
    throttled,
)
from workbench.widgets.grid import COLUMNS, FIRM
from workbench.widgets.history import MAX_CHART_HZ, VALUE_TICKS
from workbench.widgets.profiler import busy_tree
from workbench.widgets.shocks import pillar_shocks, shape_bp
from workbench.widgets.telemetry import BUCKET_LABELS

NAME = "widgets"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


class RecordingComm:
    """A comm that keeps what a widget sends (the browser never sees it)."""

    kernel = "recording"

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = kwargs.get("comm_id") or f"c{id(self)}"
        self.sent: list[tuple[dict[str, Any], list[Any]]] = []
        SENT.append(self)

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.sent.append((data, list(buffers or [])))

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


SENT: list[RecordingComm] = []


def wire_bytes(messages: list[tuple[dict[str, Any], list[Any]]]) -> int:
    """JSON body plus binary buffers of comm messages (the Jupyter envelope not counted)."""
    return sum(
        len(json.dumps(d, default=str)) + sum(memoryview(b).nbytes for b in bufs)
        for d, bufs in messages
    )


def outlined(markup: str) -> int:
    """Cells of a grid row outlined as breached."""
    return len(re.findall(r'class="?(?:[pn]\d )?x"?>', markup))


def sent_since(mark: dict[int, int]) -> list[tuple[dict[str, Any], list[Any]]]:
    out = []
    for c in SENT:
        out.extend(c.sent[mark.get(id(c), 0) :])
    return out


def mark() -> dict[int, int]:
    return {id(c): len(c.sent) for c in SENT}


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comm, "create_comm", lambda **kw: RecordingComm(**kw))


async def until(pred: Callable[[], bool], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout_s} s")


# --- without a service ------------------------------------------------------------------------


def test_latest_value_wins_and_throttle_bounds_the_rate() -> None:
    applied: list[tuple[int, float]] = []
    burst = [0.0, 0.0]

    async def scenario() -> None:
        box: Latest[int] = Latest()
        task = asyncio.get_running_loop().create_task(
            throttled(box, lambda v: applied.append((v, time.monotonic())), max_hz=10.0)
        )
        burst[0] = time.monotonic()
        for i in range(200):  # a burst far faster than 10 Hz
            box.put(i)
            await asyncio.sleep(0.002)
        burst[1] = time.monotonic()
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    values = [v for v, _ in applied]
    assert values[-1] == 199  # the newest value is always applied
    assert values == sorted(values)
    # ≈ 10 Hz over the burst (however long a busy machine made it), not 200
    assert len(values) <= (burst[1] - burst[0]) / 0.1 + 3, (len(values), burst)
    gaps = np.diff([t for _, t in applied])
    assert gaps.min() >= 0.095


def test_debounce_sends_one_request_per_burst() -> None:
    applied: list[int] = []

    async def scenario() -> None:
        box: Latest[int] = Latest()
        task = asyncio.get_running_loop().create_task(
            throttled(box, applied.append, max_hz=100.0, debounce_s=0.1)
        )
        for i in range(30):
            box.put(i)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    assert applied == [29]


def _frame(rng: np.random.Generator, desks: list[str], ccys: list[str]) -> pl.DataFrame:
    n = len(desks) * len(ccys)
    data: dict[str, Any] = {
        "desk": [d for d in desks for _ in ccys],
        "currency": ccys * len(desks),
        "positions": np.full(n, 10),
        "stale": np.zeros(n, dtype=np.int64),
        "max_age_s": rng.uniform(0.0, 1.0, n),
    }
    for c in COLUMNS:
        data[c] = rng.normal(0.0, 1e6, n)
    return pl.DataFrame(data)


def test_grid_model_sends_only_changed_rows_and_marks_state() -> None:
    rng = np.random.default_rng(1)
    frame = _frame(rng, ["Rates", "FX", "Credit"], ["USD", "EUR"])
    by = ("desk", "currency")
    model = GridModel(stale_after_s=5.0)
    first = model.render(frame, by)
    assert len(first) == frame.height
    assert model.render(frame, by) == {}  # nothing changed, nothing to send
    moved = frame.with_columns(
        pl.when(pl.col("desk") == "FX").then(pl.col("pv") * 1.5).otherwise(pl.col("pv"))
    )
    changed = model.render(moved, by)
    assert set(changed) == {("FX", "USD"), ("FX", "EUR")}
    assert all("<b" in html for html in changed.values())  # the changed PV cell flashes
    # staleness greys a row; a breach outlines its cell
    old = moved.with_columns(
        pl.when(pl.col("desk") == "Rates")
        .then(60.0)
        .otherwise(pl.col("max_age_s"))
        .alias("max_age_s")
    )
    breach = Breach(scope="desk:Credit", measure="dv01", value=2.0, limit=1.0, since_ns=0)
    changed = model.render(old, by, breaches=[breach])
    assert all("wbg-s" in model.rows[k] for k in (("Rates", "USD"), ("Rates", "EUR")))
    assert "wbg-s" not in model.rows[("FX", "USD")]
    credit = model.rows[("Credit", "USD")]
    assert outlined(credit) == 1  # exactly the DV01 cell
    assert outlined(model.rows[("FX", "USD")]) == 0
    assert set(changed) == {
        ("Rates", "USD"),
        ("Rates", "EUR"),
        ("Credit", "USD"),
        ("Credit", "EUR"),
    }


def test_widget_state_round_trips() -> None:
    rng = np.random.default_rng(2)
    model = GridModel()
    rows = model.render(_frame(rng, ["A", "B"], ["USD"]), ("desk", "currency"))
    for markup in rows.values():
        src = w.HTML(value=markup)
        state = src.get_state()
        copy = w.HTML()
        copy.set_state(state)
        assert copy.value == src.value
        assert copy.get_state() == state
    dd = w.Dropdown(options=["desk", "book"], value="book")
    clone = w.Dropdown(options=["desk", "book"])
    clone.set_state({"index": dd.get_state()["index"]})
    assert clone.value == "book"


def test_pillar_shocks_shape() -> None:
    years = np.array([0.5, 2.0, 6.0, 10.0, 30.0])
    assert np.allclose(shape_bp(years, parallel=10.0), 10.0)
    twist = shape_bp(years, twist=20.0)
    assert twist[0] == twist[1] == -10.0
    assert twist[3] == twist[4] == 10.0
    fly = shape_bp(years, butterfly=8.0)
    assert fly[2] == 8.0
    assert fly[0] == fly[4] == -8.0
    from workbench.market.reference import generate_reference_market

    market = generate_reference_market()
    spec = market.curve("USD.SOFR")
    pillars = pillar_frame(market).filter(pl.col("curve") == "USD.SOFR")
    moves = pillar_shocks(pillars, parallel=5.0, key_rates={"10Y": 3.0})
    assert len(moves) == len(spec.instruments)
    ten = next(i.quote for i in spec.instruments if i.tenor == "10Y")
    assert moves[ten] == 8.0
    assert pillar_shocks(pillars) == {}


def _figures(node: Any) -> list[bq.Figure]:
    """The bqplot figures in a widget tree."""
    if isinstance(node, bq.Figure):
        return [node]
    return [f for child in getattr(node, "children", ()) for f in _figures(child)]


def test_chart_axes_name_their_format_and_redraws_are_capped(tmp_path: Path) -> None:
    # an axis left to guess its format keeps the one its first domain gave: with no ticks
    # then (one point, all values equal) bqplot formats every later tick as ".undefinedg"

    async def scenario() -> None:
        root = str(tmp_path)  # no service there: the widgets keep trying to connect
        widgets = [
            GreekHistory("nowhere", run_root=root),
            Telemetry("nowhere", run_root=root),
            CurveShock("nowhere", run_root=root),
            Profiler("nowhere", run_root=root),
        ]
        try:
            axes = [a for x in widgets for f in _figures(x.widget) for a in f.axes]
            linear = [a for a in axes if isinstance(a.scale, bq.LinearScale)]
            assert len(linear) == 6 + 7 + 5 + 1  # history, telemetry, curve shock, profiler
            assert [a.label for a in linear if not a.tick_format] == []
            with pytest.raises(ValueError, match="max_hz"):
                GreekHistory("nowhere", run_root=root, max_hz=MAX_CHART_HZ * 2)
            with pytest.raises(ValueError, match="max_hz"):
                Telemetry("nowhere", run_root=root, period_s=0.5 / MAX_CHART_HZ)
        finally:
            for x in widgets:
                x.close()

    asyncio.run(scenario())


def _firm(seq: int, made_ns: int, **values: float) -> SnapshotView:
    return SnapshotView(seq, made_ns, {"firm": pl.DataFrame(values)}, (), {})


def _bounds(widget: Any) -> list[tuple[Any, Any]]:
    """``(min, max)`` of every scale and the tick format of every axis of every figure in
    ``widget``'s tree: what no chart changes after it is built."""
    out = []
    for fig in _figures(widget):
        for mark in fig.marks:
            for scale in mark.scales.values():
                out.append((getattr(scale, "min", None), getattr(scale, "max", None)))
        out.extend((axis.label, axis.tick_format) for axis in fig.axes)
    return out


def test_history_sends_finite_points_and_never_moves_a_scale_bound(tmp_path: Path) -> None:
    # a bound changed while the browser still renders the line's view throws in bqplot's
    # update_line_xy ("Error setting state: Cannot read properties of undefined (reading 'x')")
    async def scenario() -> None:
        hist = GreekHistory("nowhere", measures=("pv", "vega"), run_root=str(tmp_path))
        try:
            built = _bounds(hist.widget)
            t0 = hist.t0_ns
            hist.record(_firm(7, t0 + 10**9, pv=2.0e6, vega=math.nan))
            hist._draw(True)  # one point: a flat domain
            pv, vega = hist.lines["pv"], hist.lines["vega"]
            assert pv.x.tolist() == [1.0]
            assert pv.x.dtype == pv.y.dtype == np.float64
            assert vega.x.size == vega.y.size == 0
            assert _bounds(hist.widget) == built
            hist.record(_firm(8, t0 + 2 * 10**9, pv=2.5e6, vega=3.0))
            hist._draw(True)
            assert pv.y.tolist() == [2.0e6, 2.5e6]
            assert vega.y.tolist() == [3.0]
            assert hist.seqs.tolist() == [7, 8]
            assert _bounds(hist.widget) == built
            # one value format for any span: enough digits to tell round ticks apart
            assert hist.value_axes["pv"].tick_format == VALUE_TICKS
        finally:
            hist.close()

    asyncio.run(scenario())


def test_telemetry_never_moves_a_scale_bound(tmp_path: Path) -> None:
    def status(ticks: int, rejects: int, counts: list[int]) -> dict[str, Any]:
        stats = {"accepted": ticks, "rejected": rejects, "latency_p99_us": 900.0}
        ingest = {"name": "ingest", "stats": stats, "histograms": {tel.boundary.value: counts}}
        return {"pid": 1, "positions": 10, "processes": [ingest]}

    tel: Any = None

    async def scenario() -> None:
        nonlocal tel
        tel = Telemetry("nowhere", run_root=str(tmp_path))
        try:
            built = _bounds(tel.widget)
            n = len(BUCKET_LABELS) + 1  # the wire form: counts, then their sum
            tel.update(status(0, 0, [0] * n), None, 1.0)  # one point, zero rates, no latencies
            assert _bounds(tel.widget) == built
            tel.update(status(500, 0, [0] * n), status(0, 0, [0] * n), 1.0)
            tel.update(status(900, 3, [1] * n), status(500, 0, [0] * n), 1.0)
            assert _bounds(tel.widget) == built
            assert sorted(line.x.size for line in tel.charts.values()) == [2, 2, 3]  # no rate first
        finally:
            tel.close()

    asyncio.run(scenario())


# --- with a service ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("widgets"))


class Holder:
    client: Client | None = None


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Holder]:
    holder = Holder()
    holder.client = start(
        files, NAME, rate=2_000.0, limits=(LimitConfig(measure="dv01", limit=1.0),)
    )
    try:
        yield holder
    finally:
        if holder.client is not None:
            holder.client.stop()


def test_grid_live_updates_are_small_and_drill_down(service: Holder) -> None:
    client = service.client
    assert client is not None

    async def scenario() -> dict[str, float]:
        grid = GreekGrid(client, grouping="desk")  # a grouping that comes with every snapshot
        try:
            await until(lambda: grid.updates >= 1, 30, "a first grid render")
            first = mark()
            n0 = grid.updates
            await until(lambda: grid.updates >= n0 + 5, 30, "five more grid updates")
            msgs = sent_since(first)
            per_update = wire_bytes(msgs) / (grid.updates - n0)
            assert grid.state == "live"
            assert "live" in grid.status.value
            # firm row = the snapshot's firm PV (as displayed)
            assert FIRM in grid.model.rows
            assert len(grid.model.rows) == 1 + grid.last_snapshot.tables["desk"].height  # type: ignore[union-attr]
            # the dv01 limit of 1 USD is breached: the firm DV01 cell is outlined
            assert outlined(grid.model.rows[FIRM]) == 1
            # only 'update' messages with row markup, no full re-send of the grid
            assert all(d.get("method") == "update" for d, _ in msgs)
            # a grouping of two columns: desk × currency
            grid.grouping.value = "desk × currency"
            await until(
                lambda: any(len(k) == 2 for k in grid.model.rows), 30, "desk × currency rows"
            )
            before = mark()
            n1 = grid.updates
            await until(lambda: grid.updates >= n1 + 3, 30, "three desk × currency updates")
            per_update_dc = wire_bytes(sent_since(before)) / (grid.updates - n1)
            key = next(k for k in grid.model.rows if k != FIRM)
            grid.drill_down(key)
            await until(lambda: hasattr(grid, "drilled"), 30, "a drill-down")
            drilled: pl.DataFrame = grid.drilled
            assert drilled.height > 0
            assert set(drilled["desk"].cast(pl.String)) == {key[0]}
            assert set(drilled["currency"].cast(pl.String)) == {key[1]}
            assert "position_id" in grid.drill.value
            return {"desk": per_update, "desk_ccy": per_update_dc, "hz": grid.updates}
        finally:
            grid.close()

    sizes = asyncio.run(scenario())
    print(f"\nbytes per grid update: by desk {sizes['desk']:.0f}, desk×ccy {sizes['desk_ccy']:.0f}")
    assert sizes["desk"] <= 20_000
    assert sizes["desk_ccy"] <= 20_000


def test_history_limits_and_telemetry_follow_the_service(service: Holder) -> None:
    client = service.client
    assert client is not None

    async def scenario() -> None:
        hist = GreekHistory(client, measures=("pv", "dv01"))
        lim = LimitsPanel(client)
        tel = Telemetry(client, period_s=0.5)
        try:
            await until(lambda: hist.t.size >= 3 and tel.refreshes >= 3, 30, "history, telemetry")
            await until(lambda: lim.last is not None, 30, "limits")
            assert np.all(np.diff(hist.t) > 0)
            assert np.isfinite(hist.values["pv"]).all()
            assert hist.lines["pv"].y.size >= 2
            assert "dv01" in lim.breaches.value
            assert "firm" in lim.breaches.value
            assert "utilisation" not in lim.breaches.value
            assert tel.rates["ticks_per_s"] > 0
            assert "ingest" in tel.table.value
            # the latency histograms of the process boundaries: table and distribution chart
            for boundary in ("feed_to_ingest", "ingest_to_worker", "flush_to_publish"):
                assert boundary in tel.latency_table.value
            assert sum(tel.histogram.y) == pytest.approx(100.0)  # flush_to_publish, in %
            tel.boundary.value = "reprice"
            assert sum(tel.histogram.y) == pytest.approx(100.0)
        finally:
            for x in (hist, lim, tel):
                x.close()

    asyncio.run(scenario())


def test_curve_shock_and_profiler(service: Holder) -> None:
    client = service.client
    assert client is not None

    async def scenario() -> dict[str, float]:
        shock = CurveShock(client, curve="all USD", grouping="desk")
        prof = Profiler(client, worker="fx-0")
        try:
            await asyncio.wait_for(shock._ready.wait(), 60)
            shock.parallel.value = 10.0
            t0 = time.monotonic()
            pnl = await shock.run()
            whatif_s = time.monotonic() - t0
            usd_rates = pnl.filter(pl.col("desk").cast(pl.String) == "USD Rates")["pnl"][0]
            assert usd_rates != 0.0
            # a rates shock moves the shocked zero curve by ~10bp
            y = shock.curve_lines.y
            assert np.allclose((y[1] - y[0]) * 100, 10.0, atol=1.5)
            assert list(shock.bars.x) == pnl["desk"].cast(pl.String).to_list()
            ladder = await shock.ladder([-10.0, 0.0, 10.0])
            assert ladder["pnl"][1] == 0.0
            # the same shock as the slider's; the live market ticks between the two requests
            assert math.isclose(ladder["pnl"][2], float(pnl["pnl"].sum()), rel_tol=0.05)
            assert ladder["pnl"][0] * ladder["pnl"][2] < 0  # the book is not flat in USD rates
            data = await prof.profile(1.0)
            assert data["functions"].height > 0
            assert len(prof.bars.y) > 0
            assert data["tree"].height > 0
            busy, idle_s = busy_tree(data["tree"])  # the waits on the sockets are left out
            assert prof.icicle.value.count('class="wb-icicle-node"') == busy.height
            assert 0.0 <= idle_s <= data["profiled_s"] * 1.05
            assert "idle, waiting for work" in prof.caches.value
            assert "spline cache" in prof.caches.value
            await prof.set_cache(False)
            assert client.profile("fx-0", 0.2)["spline_cache_enabled"] is False
            await prof.set_cache(True)
            return {"whatif_s": whatif_s}
        finally:
            shock.close()
            prof.close()

    out = asyncio.run(scenario())
    print(f"\nwhat-if on USD curves from the widget: {out['whatif_s'] * 1e3:.0f} ms")


def _kernelspec(run_dir: Path) -> str:
    import os

    kdir = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / "wbtest"
    kdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "workbench test",
        "language": "python",
    }
    (kdir / "kernel.json").write_text(json.dumps(spec))
    return "wbtest"


@pytest.mark.parametrize(
    ("notebook", "params"),
    [
        ("desk", {"run_for_s": 3.0}),
        ("spline_caching", {"profile_s": 0.5, "settle_s": 0.2}),
        ("what_if", {"run_for_s": 0.5, "ladder_bp": [-25.0, 0.0, 25.0]}),
    ],
)
def test_notebooks_run_headless(
    service: Holder, tmp_path: Path, run_dir: Path, notebook: str, params: dict[str, Any]
) -> None:
    import papermill as pm

    kernel = _kernelspec(run_dir)
    out = tmp_path / f"{notebook}.ipynb"
    t0 = time.monotonic()
    pm.execute_notebook(
        str(NOTEBOOKS / f"{notebook}.ipynb"),
        str(out),
        parameters={"service": NAME, "start_if_missing": False, "close_when_done": True, **params},
        kernel_name=kernel,
        cwd=str(tmp_path),
        progress_bar=False,
    )
    print(f"\n{notebook}: {time.monotonic() - t0:.1f} s headless")
    text = out.read_text()
    if notebook == "desk":
        assert "grid: " in text
        assert "state live" in text
    assert '"ename"' not in text


def test_widgets_show_a_stop_and_reconnect(service: Holder, files: tuple[Path, Path]) -> None:
    client = service.client
    assert client is not None

    async def scenario() -> None:
        grid = GreekGrid(NAME, grouping="desk")
        tel = Telemetry(NAME, period_s=0.5)
        try:
            await until(lambda: grid.updates >= 1 and grid.state == "live", 30, "grid live")
            old_pid = client.descriptor.pid
            await asyncio.to_thread(client.stop)
            service.client = None
            await until(lambda: grid.state == "stopped", 20, "grid shows the stop")
            assert "service widgets stopped — reconnecting" in grid.status.value
            await until(lambda: tel.state == "stopped", 20, "telemetry shows the stop")
            service.client = await asyncio.to_thread(start, files, NAME, rate=2_000.0)
            n = grid.updates
            await until(lambda: grid.state == "live" and grid.updates > n, 120, "grid reconnects")
            await until(lambda: tel.state == "live", 30, "telemetry reconnects")
            assert grid.conn.reconnects == 1
            assert service.client.descriptor.pid != old_pid
            assert grid.last_snapshot is not None
            assert grid.last_snapshot.stats["positions"] == POSITIONS
        finally:
            grid.close()
            tel.close()

    try:
        asyncio.run(scenario())
    finally:  # the restarted service belongs to this test: leave nothing behind
        if service.client is not None:
            service.client.stop()
            service.client = None
