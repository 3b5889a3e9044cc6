"""GreekHistory where the store ends and the live points begin: a service whose store writes a
file every 4 s (the writer holds the snapshots of the current interval in memory), and a widget
opened 1.5 s after a file was written. Every snapshot the store holds before the widget's first
live point is on the widget's line once the store has written it: none is lost between the
store's last file at opening and the live subscription.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from service_helpers import make_files, start, wait

from workbench.client import Client
from workbench.engine.protocol.config import StoreConfig
from workbench.store import history, store_root
from workbench.store.layout import files

INTERVAL_S = 4.0
SCOPE_DESK = "USD Rates"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    book_files = make_files(tmp_path_factory.mktemp("store-gap"))
    store = StoreConfig(interval_s=INTERVAL_S, position_interval_s=60.0, merge_files=1000)
    svc = start(book_files, "storegap", rate=1_000.0, store=store)
    try:
        yield svc
    finally:
        svc.stop()


def _written(root: Path) -> int:
    return len(files(root, "aggregates"))


def test_greek_history_has_no_hole_between_the_store_and_the_live_points(
    service: Client,
) -> None:
    from workbench.widgets import GreekHistory

    root = store_root(service.descriptor)
    wait(lambda: _written(root) >= 2, 60, "two store files")
    n = _written(root)
    wait(lambda: _written(root) > n, 3 * INTERVAL_S, "a new store file")
    time.sleep(1.5)  # the writer now holds ~1.5 s of snapshots not yet in a file

    async def scenario() -> None:
        hist = GreekHistory(
            service, measures=("pv", "dv01"), scope=f"desk:{SCOPE_DESK}", max_points=100_000
        )
        try:
            deadline = time.monotonic() + 3 * INTERVAL_S + 30
            while hist.filled == 0:  # the store has written the first live point's file
                assert time.monotonic() < deadline, (hist.stored, hist.t.size)
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            t, seqs = hist.t.copy(), hist.seqs.tolist()
            pv, dv01 = hist.values["pv"].tolist(), hist.values["dv01"].tolist()
            cut = hist.stored + hist.filled
        finally:
            hist.close()
        assert hist.stored > 0
        assert np.all(np.diff(t) > 0)
        assert len(set(seqs)) == len(seqs)  # no seq twice
        first_live = seqs[cut]
        stored = history(root, grouping="desk", measures=["pv", "dv01"]).filter(
            (pl.col("desk") == SCOPE_DESK) & (pl.col("seq") < first_live)
        )
        want = stored.sort("made_ns").select("seq", "pv", "dv01").rows()
        assert len(want) >= 5
        # every stored snapshot before the first live point, in order, none missing
        assert list(zip(seqs[:cut], pv[:cut], dv01[:cut], strict=True)) == want

    asyncio.run(scenario())
