"""Fuzzing a live service through its real sockets (issue 12, point 9), at test size.

The generators and drivers are those of ``benchmarks/bench_fuzz.py`` (``benchmarks/_fuzz.py``):
20,000 random and mutated tick frames through a PUB socket the service's ingestion connects to,
and 500 random control requests to the aggregator's control socket and the supervisor's, at the
same time. The run fails if a process exits (a pid changes or a restart is counted), service.log
holds a traceback or an unplanned exit, a tick is not counted under exactly one outcome (the
ingestion's counters against the frames sent, and each outcome against the frames replayed
through the ingestion's own handler here), or a request goes unanswered.

The first runs found six requests that ended a process or went unanswered; each has a minimal
regression test below (the main run covers them too: ``_fuzz.KNOWN_DEFECTS`` is empty). A
defect found later gets a tag there, so the main run can leave it out, and a test here.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _fuzz import (
    KNOWN_DEFECTS,
    FuzzRequest,
    RequestFuzzer,
    RequestRunner,
    TickFuzzer,
    fuzz_service,
    log_problems,
    not_books,
    pack,
    processes,
)
from service_helpers import make_files, start

from workbench.client import Client
from workbench.engine.processes.conflation import REJECT_REASONS
from workbench.engine.protocol import messages as msg
from workbench.engine.transport.shm import pid_alive
from workbench.market.io import load_market

TICKS = 20_000
REQUESTS = 500
SEED = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture
def fed_service(files: tuple[Path, Path]) -> Iterator[tuple[Client, zmq.Socket[bytes]]]:
    """A service whose ingestion reads a PUB socket bound here (no send limit: SNDHWM 0)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        svc = start(files, "fuzz", feed=f"tcp://127.0.0.1:{port}")
        try:
            yield svc, pub
        finally:
            svc.stop()
    finally:
        pub.close()
        ctx.term()


def test_fuzzed_ticks_and_requests_through_the_real_sockets(
    fed_service: tuple[Client, zmq.Socket[bytes]], files: tuple[Path, Path], tmp_path: Path
) -> None:
    svc, pub = fed_service
    market = load_market(files[1])
    t0 = time.monotonic()
    result = fuzz_service(
        svc,
        pub,
        market.quote_ids,
        list(market.quotes),
        ticks=TICKS,
        requests=REQUESTS,
        seed=SEED,
        bad_files=not_books(tmp_path),
        max_profile_s=1.0,  # a profile of a real worker takes ≤ 1 s (the bench asks up to 60)
        skip_defects=frozenset(KNOWN_DEFECTS),
    )
    took = time.monotonic() - t0
    lines = [f"{'PASS' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in result.checks]
    assert result.passed, "\n".join(lines)
    total = result.requests.total
    assert result.ticks.frames == TICKS
    assert total.sent == REQUESTS
    assert set(result.requests.by_target) == {"control", "supervisor"}
    # the stream covers what it claims to: every outcome, the size limit from both sides
    outcomes = result.ticks.model.outcomes
    # every outcome a feed's tick can have ("outranked" befalls a polling source's value only)
    assert all(outcomes[r] > 0 for r in ("accepted", *REJECT_REASONS) if r != "outranked")
    assert result.ticks.kinds["size_sweep"] > 4096
    print(f"\nfuzz: {TICKS:,} ticks and {REQUESTS} requests in {took:.1f} s; " + "; ".join(lines))


def test_the_generators_are_deterministic_from_the_seed(files: tuple[Path, Path]) -> None:
    market = load_market(files[1])

    def ticks(seed: int) -> list[bytes]:
        clock = itertools.count(10**12)  # sent_ns: the one input that is not from the seed
        fuzzer = TickFuzzer(market.quote_ids, list(market.quotes), seed, clock=lambda: next(clock))
        return [f for _, frames in fuzzer.messages(5_000) for f in frames]

    def requests(seed: int) -> list[tuple[bytes, ...]]:
        fuzzer = RequestFuzzer(seed, workers=["fx-0", "rates-0"], processes=["ingest"])
        return [r.frames for r in fuzzer.requests(500)]

    assert ticks(3) == ticks(3) != ticks(4)
    assert len(ticks(3)) == 5_000
    assert requests(3) == requests(3) != requests(4)


# --- known defects: each fails until the service is fixed ------------------------------------


def _ask(ctx: zmq.Context[zmq.Socket[bytes]], svc: Client, req: FuzzRequest) -> bool:
    """Send one request on a DEALER of its own; whether it was answered in time."""
    endpoints = {"control": svc.endpoints.control, "supervisor": svc.endpoints.supervisor}
    report = RequestRunner(ctx, endpoints).run(iter([req]))
    return report.total.answered == 1


def _changed(
    svc: Client, before: dict[str, tuple[int, int, str]], seconds: float
) -> dict[str, object]:
    """The processes whose pid or restarts changed within ``seconds`` (returns at the first)."""
    deadline = time.monotonic() + seconds
    while True:
        if not pid_alive(svc.descriptor.pid):
            return {"supervisor": "exited"}
        after = processes(svc.status())
        changed = {
            n: (before[n], after.get(n))
            for n in before
            if n != "supervisor" and before[n][:2] != (after.get(n) or (0, 0))[:2]
        }
        if changed or time.monotonic() > deadline:
            return dict(changed)
        time.sleep(0.2)


def _defect_case(
    files: tuple[Path, Path],
    target: str,
    body: object,
    *,
    raw: bytes | None = None,
    watch_s: float = 3.0,
    answer: bool = True,
) -> None:
    svc = start(files, "fuzzdefect", feed="none", standby=False)
    log = Path(svc.descriptor.config.run_dir) / "service.log"
    since = log.stat().st_size  # the run folder is reused by the next test of this name
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    answered: bool | None = None
    try:
        before = processes(svc.status())
        payload = raw if raw is not None else pack(body)
        if answer:
            answered = _ask(ctx, svc, FuzzRequest("defect", target, (payload,), 10.0))
        else:  # fire and watch: the answer may take a minute by the service's rules
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(svc.endpoints.control if target == "control" else svc.endpoints.supervisor)
            sock.send_multipart([b"", payload])
        changed = _changed(svc, before, watch_s)
        problems = log_problems(log, since)
    finally:
        ctx.destroy(linger=0)
        svc.stop()
    assert not changed, f"processes exited: {changed}; service.log: {problems}"
    assert not problems, f"service.log: {problems}"
    assert answered is not False, "the request was never answered"


def test_reload_book_with_a_nul_in_the_path_is_refused(
    files: tuple[Path, Path],
) -> None:
    # was a defect, reload-nul-path (KNOWN_DEFECTS): the supervisor dies with ValueError 'embedded
    # null byte' (inputs.freeze → Path.read_bytes; reload_book catches only OSError), the
    # request is never answered, and every process of the service goes with it.
    _defect_case(files, "supervisor", {"op": "reload_book", "path": "/tmp/book\x00.parquet"})


def test_aggregate_by_a_repeated_column_is_refused(
    files: tuple[Path, Path],
) -> None:
    # was a defect, aggregate-repeated-by: ValueError 'group columns repeated' from
    # aggregation.rollup escapes Aggregator.handle_control; the aggregator exits with 1 and is
    # restarted, the request is never answered.
    _defect_case(files, "control", {"op": "aggregate", "by": ["desk", "desk"]})


def test_whatif_by_a_repeated_column_is_refused(files: tuple[Path, Path]) -> None:
    # was a defect, whatif-repeated-by: _check_by lets ("desk", "desk") through, the workers answer,
    # then polars DuplicateError in Aggregator._complete (group_by) kills the aggregator.
    body = {"op": "whatif", "shocks": [{"kind": "parallel", "bp": 1.0}], "by": ["desk", "desk"]}
    _defect_case(files, "control", body)


def test_profile_for_nan_seconds_is_refused(files: tuple[Path, Path]) -> None:
    # was a defect, profile-nan-seconds: min(max(nan, 0.1), 60.0) is nan, int(nan * 1e9) in
    # Aggregator._forward raises ValueError; the aggregator exits with 1.
    _defect_case(files, "control", {"op": "profile", "worker": "fx-0", "seconds": float("nan")})


def test_a_whatif_too_big_for_the_workers_is_refused(files: tuple[Path, Path]) -> None:
    # was a defect, slow-whatif: one what-if of 20 kB (a glob pattern of 20,000 '['; fnmatch's
    # translation is quadratic) keeps every worker in handle_request for minutes without a
    # heartbeat; the supervisor kills them all after heartbeat_timeout_s (5 s). (Thousands of
    # shocks do the same: ~0.45 ms each.)
    body = {"op": "whatif", "shocks": [{"kind": "spot", "pct": 1.0, "pattern": "[" * 20_000}]}
    _defect_case(files, "control", body, watch_s=12.0, answer=False)


def test_an_oversize_request_is_answered(files: tuple[Path, Path]) -> None:
    # was a defect, oversize-unanswered: past MAX_CONTROL_BYTES, ZMQ_MAXMSGSIZE made libzmq
    # drop the connection: no error reply, the client waited out its timeout.
    raw = pack({"op": "status", "junk": "x" * msg.MAX_CONTROL_BYTES})
    _defect_case(files, "control", None, raw=raw)
