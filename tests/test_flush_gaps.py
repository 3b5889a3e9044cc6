"""When background work may take a core: between a flush's snapshot and the next conflation
instant (engine/processes/flush_gaps.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workbench.engine.processes.conflation import next_flush_ns
from workbench.engine.processes.flush_gaps import UNBOUNDED, FlushGaps
from workbench.engine.protocol.config import ConflationConfig

MS = 1_000_000
GRID = ConflationConfig()  # FX spot 200 ms, rates and equity 250, FX vol 500, credit phases


def test_the_next_instant_is_the_nearest_of_every_class_grid() -> None:
    at = [next_flush_ns(t * MS, GRID) // MS for t in (1_000, 1_100, 1_200, 1_250, 1_399)]
    assert at == [1_200, 1_200, 1_250, 1_400, 1_400]
    # credit alone closes at its phases (evenly spaced without other grids: 0, 0.5, 1, 1.5 s)
    credit = ConflationConfig(fx_spot_ms=0, fx_vol_ms=0, rates_ms=0, equity_ms=0)
    assert [next_flush_ns(t * MS, credit) // MS for t in (0, 200, 700, 1_700)] == [
        500, 500, 1_000, 2_000,
    ]  # fmt: skip
    # every window 0: a flush may come at any time
    zero = ConflationConfig(fx_spot_ms=0, fx_vol_ms=0, rates_ms=0, equity_ms=0, credit_ms=0)
    assert next_flush_ns(123, zero) == 123


@given(st.integers(min_value=0, max_value=10**13))
def test_no_instant_lies_between_now_and_the_next(now: int) -> None:
    nxt = next_flush_ns(now, GRID)
    assert now < nxt <= now + 200 * MS
    for window in (200 * MS, 250 * MS, 500 * MS):
        k = now // window + 1
        assert k * window >= nxt  # the class's own next instant is not earlier


def test_busy_from_a_flush_until_its_snapshot() -> None:
    gaps = FlushGaps(GRID, margin_ns=3 * MS)
    gaps.flushed(1_000 * MS, 1_001 * MS)
    assert gaps.busy(1_010 * MS)
    assert gaps.room_ns(1_010 * MS) == 0
    assert not gaps.may_start(1_010 * MS, 10 * MS)
    gaps.published(1_030 * MS)
    assert not gaps.busy(1_031 * MS)
    # the next instant is 1,200 ms: 169 ms to it less the 3-ms margin
    assert gaps.room_ns(1_031 * MS) == 166 * MS
    assert gaps.may_start(1_031 * MS, 100 * MS)
    assert not gaps.may_start(1_150 * MS, 100 * MS)  # would run into the 1,200-ms flush


def test_a_snapshot_from_before_the_flush_does_not_end_it() -> None:
    gaps = FlushGaps(GRID)
    gaps.published(999 * MS)
    gaps.flushed(1_000 * MS, 1_000 * MS)
    assert gaps.busy(1_020 * MS)


def test_a_flush_without_a_snapshot_is_busy_for_settle_only() -> None:
    gaps = FlushGaps(GRID, settle_ns=250 * MS)
    gaps.flushed(1_000 * MS, 1_000 * MS)
    assert gaps.busy(1_249 * MS)
    assert not gaps.busy(1_250 * MS)  # a worker down: the background work goes on


def test_idle_without_flushes() -> None:
    gaps = FlushGaps(GRID, idle_ns=1_000 * MS)
    assert gaps.idle(0)
    assert gaps.room_ns(0) == UNBOUNDED
    gaps.flushed(5_000 * MS, 5_000 * MS)
    assert not gaps.idle(5_500 * MS)
    assert gaps.room_ns(6_000 * MS) == UNBOUNDED


def test_a_step_longer_than_every_gap_starts_once_the_snapshot_is_out() -> None:
    gaps = FlushGaps(GRID, margin_ns=3 * MS)
    assert gaps.widest_ns == 200 * MS - 3 * MS  # 0.8 → 1.0 s and 0 → 0.2 s
    gaps.flushed(1_000 * MS, 1_000 * MS)
    assert not gaps.may_start(1_010 * MS, 400 * MS)
    gaps.published(1_020 * MS)
    assert gaps.may_start(1_021 * MS, 400 * MS)
    # one that fits a gap waits for it: 176 ms to the 1,200-ms instant is too short for 190
    assert not gaps.may_start(1_021 * MS, 190 * MS)
