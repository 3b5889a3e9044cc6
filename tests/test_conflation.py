"""The conflation state machine: validation, de-duplication, windows, counters.

The machine has no clock and no I/O, so every test feeds it ticks and times and checks what
it answers. The Hypothesis tests compare it with a plain per-quote model of the rules.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.engine.processes.conflation import (
    CORR,
    CREDIT,
    QUOTE_CLASSES,
    REJECT_REASONS,
    Conflator,
    classify,
    credit_phase_instants,
    window_ns,
)
from workbench.engine.protocol.config import ConflationConfig

settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "expensive", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

MS = 1_000_000
IDS = (
    "FX.EURUSD",
    "FXVOL.EURUSD.1Y.25C",
    "EQ.AAPL",
    "EQVOL.AAPL.1Y.100",
    "CDX.IG.5Y",
    "CDX.IG.5Y.CORR",
    "USD.SOFR.OIS.5Y",
    "CHF.SARON.DEP.1W",
)
INITIAL = (1.08, 0.09, 260.0, 0.25, 0.0055, 0.32, 0.04, -0.0005)
CONFIG = ConflationConfig(
    fx_spot_ms=200.0, fx_vol_ms=500.0, rates_ms=250.0, equity_ms=300.0, credit_ms=2_000.0
)


def _conflator(**kw: float) -> Conflator:
    return Conflator(IDS, INITIAL, CONFIG, **kw)  # type: ignore[arg-type]


def _i(quote_id: str) -> int:
    return IDS.index(quote_id)


# --- classes and windows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quote_id", "expected"),
    [
        ("FX.EURUSD", "fx_spot"),
        ("FX.USDJPY", "fx_spot"),
        ("FXVOL.EURUSD.1Y.25C", "fx_vol"),
        ("EQ.7203", "eq_spot"),
        ("EQVOL.AAPL.1Y.100", "eq_vol"),
        ("CDX.HY.5Y", "credit"),
        ("ITRAXX.XOVER.5Y", "credit"),
        ("ITRAXX.MAIN.5Y.CORR", "corr"),
        ("CDX.IG.5Y.CORR", "corr"),
        ("USD.SOFR.OIS.5Y", "rate"),
        ("EUR.EURIBOR6M.IRS.10Y", "rate"),
        ("FXX.EURUSD", "rate"),
    ],
)
def test_quote_class_from_the_id(quote_id: str, expected: str) -> None:
    assert QUOTE_CLASSES[classify(quote_id)] == expected


def test_windows_per_class_come_from_the_config() -> None:
    expected = {
        "fx_spot": 200,
        "fx_vol": 500,
        "eq_spot": 300,
        "eq_vol": 300,
        "credit": 2_000,
        "corr": 2_000,
        "rate": 250,
    }
    for code, name in enumerate(QUOTE_CLASSES):
        assert window_ns(code, CONFIG) == expected[name] * MS
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="conflation window"):
            Conflator(IDS, INITIAL, ConflationConfig(rates_ms=bad))


def test_initial_values_must_match_the_ids() -> None:
    with pytest.raises(ValueError, match="shape"):
        Conflator(IDS, INITIAL[:-1], CONFIG)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quote_id", "value", "reason"),
    [
        ("FX.EURUSD", math.nan, "nan"),
        ("USD.SOFR.OIS.5Y", math.nan, "nan"),
        ("CDX.IG.5Y.CORR", math.nan, "nan"),
        ("FX.EURUSD", -1.08, "non_positive"),
        ("FX.EURUSD", 0.0, "non_positive"),
        ("EQ.AAPL", -260.0, "non_positive"),
        ("FXVOL.EURUSD.1Y.25C", 0.0, "non_positive"),
        ("EQVOL.AAPL.1Y.100", -0.2, "non_positive"),
        ("CDX.IG.5Y", -0.0001, "non_positive"),
        ("FX.EURUSD", math.inf, "out_of_range"),
        ("FX.EURUSD", 1.08 * 1.51, "out_of_range"),  # a jump of more than 50%
        ("FX.EURUSD", 1.08 * 0.49, "out_of_range"),
        ("EQ.AAPL", 260.0 * 1.6, "out_of_range"),
        ("FXVOL.EURUSD.1Y.25C", 5.01, "out_of_range"),
        ("EQVOL.AAPL.1Y.100", math.inf, "out_of_range"),
        ("CDX.IG.5Y", 1.5, "out_of_range"),
        ("CDX.IG.5Y.CORR", 0.0, "out_of_range"),
        ("CDX.IG.5Y.CORR", 1.0, "out_of_range"),
        ("CDX.IG.5Y.CORR", -0.3, "out_of_range"),
        ("USD.SOFR.OIS.5Y", 1.2, "out_of_range"),
        ("USD.SOFR.OIS.5Y", -0.25, "out_of_range"),
        ("USD.SOFR.OIS.5Y", -math.inf, "out_of_range"),
    ],
)
def test_bad_values_are_rejected_with_their_reason(
    quote_id: str, value: float, reason: str
) -> None:
    c = _conflator()
    assert c.offer(_i(quote_id), value, 1, 0) == reason
    assert c.rejected[reason] == 1
    assert c.accepted == 0
    assert c.pending == 0
    # the rejected tick did not take the sequence number: a good one with it is accepted
    assert c.offer(_i(quote_id), INITIAL[_i(quote_id)], 1, 0) is None


@pytest.mark.parametrize(
    ("quote_id", "value"),
    [
        ("USD.SOFR.OIS.5Y", -0.0075),  # negative rates are fine
        ("CHF.SARON.DEP.1W", 0.0),
        ("USD.SOFR.OIS.5Y", 0.999),
        ("FX.EURUSD", 1.08 * 1.49),
        ("EQ.AAPL", 260.0 * 0.51),
        ("FXVOL.EURUSD.1Y.25C", 4.99),
        ("CDX.IG.5Y", 0.9),
        ("CDX.IG.5Y.CORR", 0.999),
    ],
)
def test_valid_values_at_the_edges_are_accepted(quote_id: str, value: float) -> None:
    c = _conflator()
    assert c.offer(_i(quote_id), value, 1, 0) is None
    idx, values, seqs = c.due(10_000 * MS)
    assert idx.tolist() == [_i(quote_id)]
    assert values.tolist() == [value]
    assert seqs.tolist() == [1]


def test_duplicates_and_out_of_order_by_sequence_number() -> None:
    c = _conflator()
    i = _i("USD.SOFR.OIS.5Y")
    assert c.offer(i, 0.040, 10, 0) is None
    assert c.offer(i, 0.041, 10, 1) == "duplicate"
    assert c.offer(i, 0.039, 9, 2) == "out_of_order"
    assert c.offer(i, 0.039, -5, 2) == "out_of_range"
    assert c.offer(i, 0.039, 2**63, 2) == "out_of_range"
    assert c.offer(i, 0.042, 11, 3) is None
    # sequence numbers are per quote
    assert c.offer(_i("CHF.SARON.DEP.1W"), -0.001, 0, 4) is None
    _, values, seqs = c.due(10_000 * MS)
    assert sorted(zip(seqs.tolist(), values.tolist(), strict=True)) == [(0, -0.001), (11, 0.042)]
    assert c.rejected["duplicate"] == 1
    assert c.rejected["out_of_order"] == 1
    assert c.rejected["out_of_range"] == 2


def test_a_confirmed_jump_is_accepted_and_an_unconfirmed_one_is_not() -> None:
    c = _conflator(jump_confirm=3)
    i = _i("FX.EURUSD")
    assert c.offer(i, 2.0, 1, 0) == "out_of_range"
    assert c.offer(i, 2.1, 2, 0) == "out_of_range"
    assert c.offer(i, 2.05, 3, 0) is None  # third consistent jump: the new level
    assert c.offer(i, 2.06, 4, 0) is None  # and it is now the reference
    assert c.offer(i, 1.0, 5, 0) == "out_of_range"
    # inconsistent jumps (each far from the one before) never confirm
    c = _conflator(jump_confirm=3)
    for seq, value in enumerate((2.0, 4.0, 2.0, 4.0, 2.0, 4.0), start=1):
        assert c.offer(i, value, seq, 0) == "out_of_range"
    # a good tick in between resets the count
    c = _conflator(jump_confirm=2)
    assert c.offer(i, 2.0, 1, 0) == "out_of_range"
    assert c.offer(i, 1.09, 2, 0) is None
    assert c.offer(i, 2.0, 3, 0) == "out_of_range"
    assert c.offer(i, 2.0, 4, 0) is None
    # confirmation off: a jumped spot stays rejected
    c = _conflator(jump_confirm=0)
    assert all(c.offer(i, 2.0, s, 0) == "out_of_range" for s in range(1, 20))


def test_bad_payloads_and_unknown_ids_are_counted() -> None:
    c = _conflator()
    c.reject("bad_payload")
    c.reject("unknown_id")
    c.reject("unknown_id")
    assert c.offered == 3
    assert c.rejected_total == 3
    stats = c.stats()
    assert stats["rejected.bad_payload"] == 1.0
    assert stats["rejected.unknown_id"] == 2.0
    assert set(stats) >= {f"rejected.{r}" for r in REJECT_REASONS}


# --- windows --------------------------------------------------------------------------------


def test_latest_value_wins_within_a_window_that_closes_on_the_class_grid() -> None:
    c = _conflator()
    fx, rate = _i("FX.EURUSD"), _i("USD.SOFR.OIS.5Y")
    t0 = 1_000 * MS  # a multiple of both windows (fx 200 ms, rates 250 ms)
    assert c.offer(fx, 1.081, 1, t0) is None
    assert c.offer(rate, 0.0401, 1, t0 + 10 * MS) is None
    assert c.offer(fx, 1.082, 2, t0 + 150 * MS) is None
    assert c.offer(fx, 1.083, 3, t0 + 199 * MS) is None
    assert c.due(t0 + 199 * MS)[0].size == 0
    assert c.next_flush_ns(t0 + 199 * MS) == t0 + 200 * MS  # the flusher wakes at the fx line
    idx, values, seqs = c.due(t0 + 200 * MS)  # the fx grid line after the first update
    assert (idx.tolist(), values.tolist(), seqs.tolist()) == ([fx], [1.083], [3])
    assert c.pending == 1
    assert c.offer(fx, 1.084, 4, t0 + 201 * MS) is None  # opens a new window, closing at 400
    idx, values, _ = c.due(t0 + 260 * MS)  # the rates grid line at t0 + 250 has passed
    assert (idx.tolist(), values.tolist()) == ([rate], [0.0401])
    assert c.due(t0 + 399 * MS)[0].size == 0
    idx, values, _ = c.due(t0 + 400 * MS)
    assert (idx.tolist(), values.tolist()) == ([fx], [1.084])
    assert c.due(t0 + 10_000 * MS)[0].size == 0
    assert c.flushed == 3
    assert c.accepted == 5
    assert c.conflation_ratio == pytest.approx(5 / 3)
    assert c.pending == 0


def test_zero_window_flushes_at_the_next_due() -> None:
    c = Conflator(IDS, INITIAL, ConflationConfig(fx_spot_ms=0.0))
    fx = _i("FX.EURUSD")
    assert c.offer(fx, 1.09, 1, 5) is None
    assert c.due(5)[0].tolist() == [fx]


def test_quotes_with_one_window_flush_at_the_same_instant() -> None:
    c = _conflator()
    a, b = _i("EQ.AAPL"), _i("EQVOL.AAPL.1Y.100")  # both 300 ms (equity_ms)
    assert c.offer(a, 261.0, 1, 1_010 * MS) is None
    assert c.offer(b, 0.26, 1, 1_190 * MS) is None  # 180 ms later, same window
    idx, _, _ = c.due(1_200 * MS)
    assert sorted(idx.tolist()) == sorted([a, b])  # one batch, at most one window late


def _credit_closes(config: ConflationConfig) -> tuple[Conflator, dict[str, int], list[str]]:
    """Offer a move of every credit quote at 2.1 s; when (ms) each one closes."""
    indices = ("CDX.IG", "CDX.HY", "ITRAXX.MAIN", "ITRAXX.XOVER", "CDX.EM")
    ids = ["FX.EURUSD"] + [f"{i}.5Y{s}" for i in indices for s in ("", ".CORR")]
    initial = [1.08] + [0.01, 0.3] * 5
    c = Conflator(ids, initial, config)
    for k in range(1, len(ids)):
        assert c.offer(k, initial[k] * 1.01, 1, 2_100 * MS) is None
    closes = {}
    for t in range(2_100, 6_001, 50):
        idx, _, _ = c.due(t * MS)
        for i in idx.tolist():
            closes[ids[i]] = t
    return c, closes, ids


def test_credit_indices_close_on_the_lightest_flushes_of_their_grid() -> None:
    """With the test windows (FX spot 200 ms, FX vol 500 ms, rates 250 ms; equity's 300 ms does
    not repeat within 2 s), the instants where one other class closes are picked evenly: 0.2,
    0.6, 1.2 and 1.6 s past each 2 s, never 0.5 or 1 s where several close at once."""
    _, closes, _ = _credit_closes(CONFIG)
    assert closes["CDX.HY.5Y"] == closes["CDX.HY.5Y.CORR"] == 2_600  # spread and corr together
    assert closes["ITRAXX.MAIN.5Y"] == 3_200
    assert closes["ITRAXX.XOVER.5Y"] == 3_600
    assert closes["CDX.IG.5Y"] == 2_200  # the first phase, 0.2 s past each 2 s
    assert closes["CDX.EM.5Y.CORR"] == 2_200  # the fifth index wraps to the first phase
    assert all(t - 2_100 <= 2_000 for t in closes.values())  # never more than a window late
    for t in closes.values():  # each joins exactly one other class's flush
        assert sum(t % g == 0 for g in (200, 500, 250)) == 1
    assert [t // MS for t in credit_phase_instants(CONFIG)] == [200, 600, 1200, 1600]


def test_credit_phases_are_even_when_no_other_grid_repeats_in_their_window() -> None:
    config = ConflationConfig(
        fx_spot_ms=300.0, fx_vol_ms=700.0, rates_ms=900.0, equity_ms=300.0, credit_ms=2_000.0
    )
    _, closes, ids = _credit_closes(config)  # phases 0, 0.5, 1, 1.5 s
    assert closes["CDX.HY.5Y"] == 2_500
    assert closes["ITRAXX.MAIN.5Y"] == 3_000
    assert closes["ITRAXX.XOVER.5Y"] == 3_500
    assert closes["CDX.IG.5Y"] == closes["CDX.EM.5Y.CORR"] == 4_000
    # the flusher's next wake-up knows the phases (FX's grid would say 2.7 s)
    initial = [1.08] + [0.01, 0.3] * 5
    again = Conflator(ids, initial, config)
    again.offer(3, 0.0101, 1, 2_100 * MS)  # CDX.HY
    assert again.next_flush_ns(2_450 * MS) == 2_500 * MS


def test_credit_phases_one_flushes_every_index_together() -> None:
    _, closes, ids = _credit_closes(ConflationConfig(credit_phases=1))
    assert set(closes.values()) == {2_200}  # the one phase: the first FX-spot-only instant
    with pytest.raises(ValueError, match="credit_phases"):
        Conflator(ids, [1.0] * len(ids), ConflationConfig(credit_phases=0))


# --- properties -----------------------------------------------------------------------------

VALUES = st.sampled_from([math.nan, -1.0, 0.0, 0.3, 0.5, 0.04, 1.1, 7.0, math.inf])


@dataclass
class _Model:
    """Per-quote rules written plainly: what should be flushed and when."""

    windows: list[int]
    phases: list[int]  # where in its window a quote's grid sits (credit indices: not at 0)
    last_seq: dict[int, int] = field(default_factory=dict)
    opened: dict[int, int] = field(default_factory=dict)  # quote -> window start
    latest: dict[int, tuple[float, int]] = field(default_factory=dict)

    def accept(self, i: int, value: float, seq: int, now: int) -> None:
        self.last_seq[i] = seq
        self.opened.setdefault(i, now)
        self.latest[i] = (value, seq)

    def closes(self, i: int, opened: int) -> int:
        """The grid line after ``opened`` of quote ``i``'s class window."""
        w, phase = self.windows[i], self.phases[i]
        return ((opened - phase) // w + 1) * w + phase if w else opened

    def due(self, now: int) -> dict[int, tuple[float, int]]:
        out = {i: self.latest[i] for i, t in self.opened.items() if self.closes(i, t) <= now}
        for i in out:
            del self.opened[i]
        return out


@given(
    events=st.lists(
        st.tuples(
            st.integers(0, len(IDS) - 1),
            VALUES,
            st.integers(0, 12),  # seq: small so duplicates and reorders are common
            st.integers(0, 120 * MS),  # time step before this event
            st.booleans(),  # call due() after the event
        ),
        max_size=200,
    )
)
def test_nothing_lost_latest_wins_counters_add_up(
    events: list[tuple[int, float, int, int, bool]],
) -> None:
    c = _conflator(jump_confirm=0)
    windows = [window_ns(classify(q), CONFIG) for q in IDS]
    credit = [q.removesuffix(".CORR") for q in IDS if classify(q) in (CREDIT, CORR)]
    order = list(dict.fromkeys(credit))  # the k-th credit index takes the k-th phase
    instants = credit_phase_instants(CONFIG)
    phases = [
        instants[order.index(q.removesuffix(".CORR")) % len(instants)]
        if classify(q) in (CREDIT, CORR)
        else 0
        for q in IDS
    ]
    model = _Model(windows, phases)
    now = 0
    flushed_total = 0
    for i, value, seq, step, flush in events:
        now += step
        reason = c.offer(i, value, seq, now)
        last = model.last_seq.get(i)
        if reason is None:
            assert last is None or seq > last, "accepted a duplicate or an older seq"
            model.accept(i, value, seq, now)
        elif reason == "duplicate":
            assert seq == last
        elif reason == "out_of_order":
            assert last is not None
            assert seq < last
        else:
            assert reason in ("nan", "non_positive", "out_of_range")
        if flush:
            idx, values, seqs = c.due(now)
            got = {
                int(k): (float(v), int(s))
                for k, v, s in zip(idx.tolist(), values.tolist(), seqs.tolist(), strict=True)
            }
            assert len(got) == idx.size, "a quote flushed twice in one call"
            expected = model.due(now)
            assert got.keys() == expected.keys()
            assert got == expected
            flushed_total += idx.size
        assert c.offered == c.accepted + c.rejected_total
    idx, _, _ = c.due(now + 10_000 * MS)
    flushed_total += idx.size
    assert set(idx.tolist()) == set(model.due(now + 10_000 * MS))
    assert c.pending == 0
    assert c.flushed == flushed_total
    assert c.offered == len(events)
    assert c.accepted >= c.flushed
    if c.flushed:
        assert c.conflation_ratio == pytest.approx(c.accepted / c.flushed)


@given(
    seqs=st.lists(st.integers(0, 50), min_size=1, max_size=100),
    values=st.lists(st.floats(0.9, 1.2), min_size=100, max_size=100),
)
def test_accepted_sequence_numbers_strictly_increase(seqs: list[int], values: list[float]) -> None:
    c = _conflator()
    i = _i("FX.EURUSD")
    accepted: list[int] = []
    for n, seq in enumerate(seqs):
        if c.offer(i, values[n], seq, n) is None:
            accepted.append(seq)
    assert accepted == sorted(set(accepted))
    # exactly the running maxima are accepted
    running = np.maximum.accumulate(np.asarray(seqs))
    firsts = [s for k, s in enumerate(seqs) if k == 0 or s > running[k - 1]]
    assert accepted == firsts
    assert c.rejected["duplicate"] + c.rejected["out_of_order"] == len(seqs) - len(accepted)
