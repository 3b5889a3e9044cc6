"""The grid's traffic without a browser: its markup, one message per update, and the pacing by
the browser's receipts.

Widgets get a comm that records every message (opens, updates, closes) instead of a kernel's;
a browser's receipt is fed through ipywidgets' own entry point for a front-end message
(``Widget._handle_msg``), exactly as a kernel delivers it. The real browser is in
``tests/test_browser.py`` (``# --- grid in the browser ---``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import ipywidgets as w
import numpy as np
import polars as pl
import pytest

from workbench.widgets.delivery import Delivery
from workbench.widgets.grid import COLUMNS, UNITS, GreekGrid, GridModel

WIRE_BUDGET = 20_000
"""Bytes of one grid update on the wire, at most (the issue's budget per update)."""

ENVELOPE = 1_500
"""Bytes a Jupyter message adds around a comm message's data (header, parent, metadata), kept
free of the budget for the markup (about 600 to 900 in the browser)."""


class Wire:
    """Every comm message widgets send, in order: ``(kind, comm id, data)``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, Any]] = []

    def since(self, mark: int) -> list[tuple[str, str, Any]]:
        return self.log[mark:]


class TapComm:
    """A comm that records what a widget sends instead of sending it to a kernel."""

    kernel = "tap"
    wire: Wire

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = kwargs.get("comm_id") or f"c{id(self):x}"
        self.wire.log.append(("open", self.comm_id, kwargs.get("data")))

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.wire.log.append(("msg", self.comm_id, data))

    def close(self, *args: Any, **kwargs: Any) -> None:
        self.wire.log.append(("close", self.comm_id, None))


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    tap = Wire()
    monkeypatch.setattr(TapComm, "wire", tap, raising=False)
    monkeypatch.setattr(comm, "create_comm", lambda **kw: TapComm(**kw))
    return tap


def browser_takes(widget: w.Widget, value: str) -> None:
    """The browser's widget manager sets ``value`` on ``widget`` (a front-end update)."""
    widget._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"value": value}, "buffer_paths": []}
            },
            "buffers": [],
        }
    )


def _frame(rng: np.random.Generator, desks: list[str], ccys: list[str]) -> pl.DataFrame:
    """A roll-up by desk × currency: every pair, measures of sizes from 1 to 1e9 USD."""
    groups = pl.DataFrame({"desk": desks}).join(pl.DataFrame({"currency": ccys}), how="cross")
    n = groups.height
    measures = {c: rng.normal(0.0, 1e6, n) * 10.0 ** rng.integers(-3, 4, n) for c in COLUMNS}
    return groups.with_columns(
        pl.lit(10).alias("positions"),
        pl.lit(0, dtype=pl.Int64).alias("stale"),
        pl.Series("max_age_s", rng.uniform(0.0, 1.0, n)),
        *(pl.Series(c, v) for c, v in measures.items()),
    )


DESKS = [
    "Asia Equity Derivatives",
    "EU Equity Derivatives",
    "EUR FX Options",
    "Equity Vol",
    "G10 FX Forwards",
    "G10 FX Options",
    "JPY FX Options",
    "Rates Long End",
]
CCYS = ["AUD", "CAD", "CHF", "EUR", "GBP", "JPY", "USD"]


def cell_texts(markup: str) -> list[list[str]]:
    """The text of every cell of every body row of a table (tags stripped)."""
    body = markup.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = [r for r in re.split(r"<tr[^>]*>", body) if r]
    return [[re.sub(r"<[^>]+>", "", c) for c in re.split(r"<t[hd][^>]*>", r)[1:]] for r in rows]


# --- the table ------------------------------------------------------------------------------


def test_every_row_names_its_desk_and_currency_in_full_and_headers_carry_units() -> None:
    rng = np.random.default_rng(3)
    frame = _frame(rng, DESKS, CCYS).sample(fraction=1.0, shuffle=True, seed=1)
    firm = pl.DataFrame({c: [1.0] for c in COLUMNS} | {"max_age_s": [0.1], "stale": [0]})
    model = GridModel()
    model.render(frame, ("desk", "currency"), firm)
    markup = model.table_html(("desk", "currency"), "snapshot 7 · footer")
    rows = cell_texts(markup)
    assert rows[0][:2] == ["Firm", ""]
    labels = [(r[0], r[1]) for r in rows[1:]]
    assert labels == sorted(zip(frame["desk"], frame["currency"], strict=True))
    # the repeated desk is written in full (greyed), never left blank
    assert all(d in DESKS and c in CCYS for d, c in labels)
    assert markup.count("<th class=r>") == len(labels) - len(DESKS)
    head = markup.split("<thead>", 1)[1].split("</thead>", 1)[0]
    for col in COLUMNS:
        assert f"<small>{UNITS[col]}</small>" in head
    assert "<th class=l>desk<th class=l>currency<th>age<br><small>s</small>" in head
    # the numbers: 13 cells (age and the measures) after the two labels on every row
    assert all(len(r) == 2 + 1 + len(COLUMNS) for r in rows)
    assert "snapshot 7 · footer" in markup


def test_a_full_update_of_the_largest_grouping_fits_the_wire_budget() -> None:
    """56 rows by desk × currency (the reference book has about 50), every cell changed and
    flashing, eight-character numbers: the table as the comm message carries it."""
    rng = np.random.default_rng(4)
    frame = _frame(rng, DESKS, CCYS)
    model = GridModel()
    model.render(frame, ("desk", "currency"))
    moved = frame.with_columns(pl.col(c) * 1.7 for c in COLUMNS)
    changed = model.render(moved, ("desk", "currency"))
    assert len(changed) == frame.height
    markup = model.table_html(("desk", "currency"), "snapshot 123456 · 56 rows · 56 changed")
    data = {"method": "update", "state": {"value": markup, "placeholder": "123456"}}
    size = len(json.dumps(data, ensure_ascii=False).encode())  # as jupyter_client packs it
    print(f"\none desk × currency update of {frame.height} rows: {size} bytes of comm data")
    assert size <= WIRE_BUDGET - ENVELOPE


# --- pacing ---------------------------------------------------------------------------------


def test_delivery_is_unpaced_until_a_receipt_then_one_update_in_flight(wire: Wire) -> None:
    async def scenario() -> None:
        view = w.HTML()
        changes: list[bool] = []
        d = Delivery(view, pause_after_s=0.3, ack_every_s=0.0,
                     on_change=lambda: changes.append(d.paused))  # fmt: skip
        for _ in range(3):  # no browser yet: nothing to wait for
            await asyncio.wait_for(d.turn(), 0.05)
            view.placeholder = d.stamp()
        assert not d.paced
        assert d.sent == 3
        browser_takes(d.receipt, "3")
        assert d.paced
        assert d.received == 3
        assert not d.in_flight
        await asyncio.wait_for(d.turn(), 0.05)
        view.placeholder = d.stamp()
        assert d.in_flight
        waiter = asyncio.ensure_future(d.turn())
        await asyncio.sleep(0.1)
        assert not waiter.done()  # update 4 not taken yet
        browser_takes(d.receipt, "4")
        await asyncio.wait_for(waiter, 0.05)
        assert not d.paused
        assert changes == []
        # no receipt: paused after pause_after_s, resumed by the next receipt
        view.placeholder = d.stamp()
        t0 = time.monotonic()
        waiter = asyncio.ensure_future(d.turn())
        while not d.paused:
            await asyncio.sleep(0.01)
        assert 0.25 <= time.monotonic() - t0 < 0.6
        assert "paused: update 5 not taken" in d.describe()
        browser_takes(d.receipt, "5")
        await asyncio.wait_for(waiter, 0.05)
        assert changes == [True, False]
        assert d.describe() == "the browser took update 5 of 5"
        d.close()
        view.close()

    asyncio.run(scenario())


def test_a_browser_is_asked_for_one_receipt_per_ack_period(wire: Wire) -> None:
    """Once paced, only one update per ``ack_every_s`` gets a new number (so a receipt); the
    updates between go out without waiting; the numbered one waits for its receipt."""

    async def scenario() -> None:
        view = w.HTML()
        d = Delivery(view, pause_after_s=5.0, ack_every_s=0.3)
        view.placeholder = d.stamp()
        browser_takes(d.receipt, "1")  # a browser: paced from now on
        t0 = time.monotonic()
        numbers = []
        while time.monotonic() - t0 < 0.25:  # within the period: the same number, no wait
            await asyncio.wait_for(d.turn(), 0.05)
            numbers.append(d.stamp())
            await asyncio.sleep(0.02)
        assert set(numbers) == {"1"}
        assert len(numbers) >= 5
        await asyncio.sleep(0.3 - (time.monotonic() - t0))
        await asyncio.wait_for(d.turn(), 0.05)
        assert d.stamp() == "2"  # the period is over: a new number, in flight
        assert d.in_flight
        waiter = asyncio.ensure_future(d.turn())
        await asyncio.sleep(0.1)
        assert not waiter.done()  # the next update waits for the receipt of 2
        browser_takes(d.receipt, "2")
        await asyncio.wait_for(waiter, 0.05)
        assert d.receipts == 2
        d.close()
        view.close()

    asyncio.run(scenario())


def test_a_paused_delivery_renews_its_receipt_at_doubling_intervals(wire: Wire) -> None:
    """A closed tab: after the pause, only the receipt and its link are replaced (two closes,
    two opens each time), ever less often; a receipt on the new one resumes."""

    async def scenario() -> None:
        view = w.HTML()
        d = Delivery(view, pause_after_s=0.2, renew_max_s=0.8, ack_every_s=0.0)
        browser_takes(d.receipt, "")  # a browser created the link (no update yet)
        view.placeholder = d.stamp()
        mark = len(wire.log)
        first = d.receipt
        waiter = asyncio.ensure_future(d.turn())
        await asyncio.sleep(2.0)
        assert not waiter.done()
        traffic = wire.since(mark)
        # pause at 0.2 s, renewals at 0.4, 0.8, 1.6 s (waits 0.2, 0.4, 0.8)
        assert d.renewals == 3, d.renewals
        assert [k for k, _, _ in traffic].count("open") == 2 * d.renewals
        assert [k for k, _, _ in traffic].count("close") == 2 * d.renewals
        assert all(k in ("open", "close") for k, _, _ in traffic)  # no update, no status
        assert d.receipt is not first
        assert first.comm is None
        link_state = next(data for k, _, data in traffic[::-1] if k == "open")["state"]
        assert link_state["source"][1] == "placeholder"
        assert link_state["target"] == [f"IPY_MODEL_{d.receipt.model_id}", "value"]
        browser_takes(d.receipt, "1")
        await asyncio.wait_for(waiter, 0.05)
        assert not d.paused
        assert d.received == 1
        d.close()
        view.close()

    asyncio.run(scenario())


def test_one_grid_update_is_one_message(wire: Wire, tmp_path: Path) -> None:
    """GreekGrid.apply: the table and its number in one update of the body; the drill-down
    choices only when the rows change."""

    async def scenario() -> None:
        grid = GreekGrid("no-such-service", run_root=str(tmp_path))
        try:
            rng = np.random.default_rng(5)
            frame = _frame(rng, DESKS[:3], CCYS[:3])
            by = ("desk", "currency")
            mark = len(wire.log)
            grid.apply(grid.model.render(frame, by))
            first = wire.since(mark)
            body = [d for k, c, d in first if c == grid.body.comm.comm_id]
            assert len(body) == 1
            assert set(body[0]["state"]) == {"value", "placeholder"}
            assert body[0]["state"]["placeholder"] == "1"
            assert len(first) == 2  # and the drill-down's choices (new rows)
            assert ("EUR FX Options · CAD", ("EUR FX Options", "CAD")) in grid.pick.options
            mark = len(wire.log)
            grid.apply(grid.model.render(frame.with_columns(pl.col("pv") * 2.0), by))
            again = wire.since(mark)
            assert [(k, c) for k, c, _ in again] == [("msg", grid.body.comm.comm_id)]
            assert again[0][2]["state"]["placeholder"] == "2"
            assert grid.sent == 2
        finally:
            grid.close()

    asyncio.run(scenario())


def test_a_shut_gate_lets_only_the_newest_value_through() -> None:
    """throttled(gate=...): values that arrive while the gate is shut wait in the mailbox, where
    the newest replaces the others."""
    from workbench.widgets import Latest, throttled

    applied: list[int] = []

    async def scenario() -> None:
        box: Latest[int] = Latest()
        gate = asyncio.Event()
        gate.set()

        async def turn() -> None:
            await gate.wait()

        def send(value: int) -> None:  # as GreekGrid.apply: sent, and in flight until taken
            applied.append(value)
            gate.clear()

        task = asyncio.get_running_loop().create_task(
            throttled(box, send, max_hz=1000.0, gate=turn)
        )
        box.put(1)
        await asyncio.sleep(0.05)
        for i in range(2, 50):
            box.put(i)
            await asyncio.sleep(0.001)
        assert applied == [1]
        gate.set()
        await asyncio.sleep(0.05)
        task.cancel()
        assert box.skipped == 47

    asyncio.run(scenario())
    assert applied == [1, 49]
