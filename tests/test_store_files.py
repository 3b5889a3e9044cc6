"""The risk store's files without a service: the writer's files, merges, retention, the
queries by time range, grouping and measure, and their refusals."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import msgspec
import polars as pl
import pytest

from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import ServiceConfig, StoreConfig
from workbench.risk.breaches import Breach
from workbench.store import breaches, history, positions, store_root
from workbench.store.layout import file_name, files, partition, utc_date
from workbench.store.query import as_utc_ns
from workbench.store.rows import AGGREGATE_MEASURES, GROUPINGS, POSITIONS_SCHEMA
from workbench.store.writer import StoreWriter

DESKS = ("FX Options", "USD Rates")
CLASSES = ("fx", "rates")
DAY_NS = 86_400 * 10**9
T0 = 1_796_342_400 * 10**9  # 2026-12-04 00:00 UTC


def _table(keys: dict[str, list[str]], n: int, base: float) -> pl.DataFrame:
    cols: dict[str, object] = dict(keys)
    for i, m in enumerate(AGGREGATE_MEASURES):
        if m in ("positions", "stale", "unpriced"):
            cols[m] = pl.Series([7 + i] * n, dtype=pl.Int64)
        else:
            cols[m] = pl.Series([base + i + 0.25 * j for j in range(n)], dtype=pl.Float64)
    return pl.DataFrame(cols)


def snapshot(seq: int, made_ns: int, *, breached: bool = False) -> msg.Snapshot:
    """A snapshot of two desks and two asset classes whose numbers depend on ``seq``."""
    tables = {
        "firm": _table({}, 1, seq * 100.0),
        "desk": _table({"desk": list(DESKS)}, 2, seq * 10.0),
        "asset_class": _table({"asset_class": list(CLASSES)}, 2, seq * 20.0),
        "desk,currency": _table({"desk": list(DESKS), "currency": ["EUR", "USD"]}, 2, seq * 1.0),
        "book": _table({"book": ["B1"]}, 1, 0.0),
    }
    found = (
        (Breach(scope="firm", measure="dv01", value=2.0, limit=1.0, since_ns=made_ns - 5),)
        if breached
        else ()
    )
    return msg.Snapshot(
        seq=seq,
        made_ns=made_ns,
        tables={k: msg.frame_to_bytes(v) for k, v in tables.items()},
        breaches=found,
    )


def position_frame(n: int, value: float) -> pl.DataFrame:
    cols = {c: [] for c in POSITIONS_SCHEMA if c not in ("made_ns", "seq")}
    frame = pl.DataFrame(cols, schema={c: POSITIONS_SCHEMA[c] for c in cols})
    fills = {pl.Float64: value, pl.Boolean: False}
    rows = {c: [fills.get(dtype, "x")] * n for c, dtype in frame.schema.items()}
    rows["position_id"] = [f"P{i}" for i in range(n)]
    return pl.DataFrame(rows, schema=frame.schema)


def fill(root: Path, seqs: range, *, step_ns: int = 10**9, **kw: int) -> StoreWriter:
    """A writer that stored snapshot ``seq`` made at ``T0 + seq * step_ns``, a file per 3."""
    writer = StoreWriter(root, interval_s=0.0, **kw)  # type: ignore[arg-type]
    writer.open(now_ns=0, today=utc_date(T0))
    for seq in seqs:
        writer.add_snapshot(snapshot(seq, seq * step_ns, breached=seq % 2 == 0), wall_offset_ns=T0)
        if seq % 3 == 0:
            writer.flush(seq)
    writer.flush(0)
    return writer


def test_history_by_time_range_grouping_and_measure(tmp_path: Path) -> None:
    fill(tmp_path, range(1, 11))
    firm = history(tmp_path)
    assert firm["seq"].to_list() == list(range(1, 11))
    assert firm["made_ns"].to_list() == [T0 + s * 10**9 for s in range(1, 11)]
    assert firm.columns == ["made_ns", "seq", *AGGREGATE_MEASURES]
    assert firm["pv"].to_list() == [
        s * 100.0 + AGGREGATE_MEASURES.index("pv") for s in range(1, 11)
    ]

    part = history(tmp_path, start_ns=T0 + 3 * 10**9, end_ns=T0 + 6 * 10**9, grouping="desk",
                   measures=["dv01", "pv"])  # fmt: skip
    assert part.columns == ["made_ns", "seq", "desk", "dv01", "pv"]
    assert part["seq"].to_list() == [3, 3, 4, 4, 5, 5]  # [start, end)
    assert part["desk"].to_list() == list(DESKS) * 3
    want = snapshot(4, 0)
    desk = msg.bytes_to_frame(want.tables["desk"])
    got = part.filter(pl.col("seq") == 4).select("desk", "dv01", "pv")
    assert got.equals(desk.select("desk", "dv01", "pv"))

    pairs = history(tmp_path, grouping="desk,currency", measures=["pv_gross"])
    assert pairs.columns == ["made_ns", "seq", "desk", "currency", "pv_gross"]
    assert pairs.height == 20
    classes = history(tmp_path, grouping="asset_class", measures=["positions"])
    assert classes["asset_class"].unique().sort().to_list() == list(CLASSES)
    assert classes["positions"].dtype == pl.Int64


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"grouping": "book"}, "grouping 'book' is not stored"),
        ({"grouping": "desk, currency"}, "grouping 'desk, currency' is not stored"),
        ({"measures": ["pv", "delta"]}, "measure 'delta' is not stored"),
        ({"measures": "pv"}, "got the string 'pv'"),
    ],
)
def test_a_bad_grouping_or_measure_is_a_clear_value_error(
    tmp_path: Path, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        history(tmp_path, **kw)  # type: ignore[arg-type]


def test_an_empty_store_answers_empty_frames_with_their_columns(tmp_path: Path) -> None:
    assert history(tmp_path / "none", grouping="desk").columns[:3] == ["made_ns", "seq", "desk"]
    assert breaches(tmp_path).height == 0
    assert positions(tmp_path).columns == list(POSITIONS_SCHEMA)


def test_breaches_are_kept_per_snapshot_with_utc_times(tmp_path: Path) -> None:
    fill(tmp_path, range(1, 7))
    found = breaches(tmp_path)
    assert found["seq"].to_list() == [2, 4, 6]
    assert found["since_ns"].to_list() == [T0 + s * 10**9 - 5 for s in (2, 4, 6)]
    assert set(found["scope"]) == {"firm"}


def test_positions_are_the_copy_stored_last_before_a_time(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, interval_s=0.0)
    for i in range(3):
        writer.add_positions(position_frame(4, float(i)), made_ns=T0 + i * 60 * 10**9, seq=i)
        writer.flush(0)
    assert positions(tmp_path)["pv"].to_list() == [2.0] * 4
    at = positions(tmp_path, at_ns=T0 + 90 * 10**9)
    assert at["pv"].to_list() == [1.0] * 4
    assert at["position_id"].to_list() == ["P0", "P1", "P2", "P3"]
    assert positions(tmp_path, at_ns=T0 - 1).height == 0


def test_rows_across_midnight_go_to_two_dates(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, interval_s=0.0)
    for seq, made in ((1, DAY_NS - 10**9), (2, DAY_NS + 10**9)):
        writer.add_snapshot(snapshot(seq, made), wall_offset_ns=T0)
    writer.flush(0)
    day1, day2 = utc_date(T0), utc_date(T0 + DAY_NS)
    assert len(files(tmp_path, "aggregates")) == 2
    assert [p.parent.name for p in files(tmp_path, "aggregates")] == [
        f"date={day1}",
        f"date={day2}",
    ]
    assert history(tmp_path, start_ns=T0 + DAY_NS)["seq"].to_list() == [2]


def test_merged_files_replace_their_parts_and_readers_never_count_a_row_twice(
    tmp_path: Path,
) -> None:
    one = tmp_path / "one"
    merged = tmp_path / "merged"
    fill(one, range(1, 31), merge_files=10**6)
    writer = fill(merged, range(1, 31), merge_files=4)
    assert writer.counters.files_merged >= 8
    assert history(merged).equals(history(one))
    assert history(merged, grouping="desk,currency").equals(history(one, grouping="desk,currency"))
    assert breaches(merged).equals(breaches(one))
    assert len(files(merged, "aggregates")) < len(files(one, "aggregates"))
    # a reader that lists the folder between the merge and the deletion of its parts
    folder = files(one, "aggregates")[0].parent
    target = partition(merged, "aggregates", utc_date(T0))
    for part in folder.glob("*.parquet"):
        shutil.copy(part, target / part.name)
    assert history(merged).equals(history(one))


def test_retention_deletes_older_dates_and_a_killed_writers_temporaries(tmp_path: Path) -> None:
    today = dt.date(2026, 12, 4)
    for kind in ("aggregates", "positions"):
        for days in (0, 1, 2, 10):
            folder = partition(tmp_path, kind, today - dt.timedelta(days=days))
            folder.mkdir(parents=True)
            pl.DataFrame({"made_ns": [1]}).write_parquet(folder / file_name(kind, 1, 1))
    tmp = partition(tmp_path, "aggregates", today) / ".aggregates-5-6.parquet.tmp"
    tmp.write_bytes(b"PAR1 half a file")
    writer = StoreWriter(tmp_path, retention_days=2)
    writer.open(now_ns=0, today=today)
    kept = sorted({p.parent.name for k in ("aggregates", "positions") for p in files(tmp_path, k)})
    assert kept == [f"date={today - dt.timedelta(days=1)}", f"date={today}"]
    assert not tmp.exists()
    assert writer.counters.dates_expired == 4
    # once a day: the next day deletes the day before yesterday
    writer.expire(today + dt.timedelta(days=1))
    kept = sorted({p.parent.name for p in files(tmp_path, "aggregates")})
    assert kept == [f"date={today}"]
    # 0 keeps every day
    StoreWriter(tmp_path, retention_days=0).open(now_ns=0, today=today + dt.timedelta(days=900))
    assert len(files(tmp_path, "aggregates")) == 1


def test_store_root_follows_the_configuration(tmp_path: Path) -> None:
    run_dir = tmp_path / "svc"
    run_dir.mkdir()
    assert store_root(run_dir) == run_dir / "store"
    cfg = ServiceConfig(name="svc", run_dir=str(run_dir), book="b", market="m")
    assert store_root(cfg) == run_dir / "store"
    elsewhere = msg_replace(cfg, StoreConfig(root=str(tmp_path / "kept")))
    assert store_root(elsewhere) == tmp_path / "kept"
    relative = msg_replace(cfg, StoreConfig(root="history"))
    assert store_root(relative) == run_dir / "history"
    from workbench.engine.protocol.config import encode_config

    (run_dir / "config.json").write_text(encode_config(elsewhere))
    assert store_root(run_dir) == tmp_path / "kept"


def msg_replace(cfg: ServiceConfig, store: StoreConfig) -> ServiceConfig:
    return msgspec.structs.replace(cfg, store=store)


def test_times_are_taken_as_utc() -> None:
    assert as_utc_ns(dt.datetime(2026, 12, 4)) == T0
    assert as_utc_ns(dt.datetime(2026, 12, 4, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == T0
    assert as_utc_ns(T0 + 1) == T0 + 1
    assert as_utc_ns(None) is None
    assert set(GROUPINGS) == {"firm", "desk", "asset_class", "desk,currency"}


def test_greek_history_puts_the_stored_day_first_and_skips_what_it_already_has(
    tmp_path: Path,
) -> None:
    import asyncio

    from workbench.client.views import SnapshotView
    from workbench.widgets.history import GreekHistory, day_start

    async def scenario() -> None:
        hist = GreekHistory("nowhere", measures=("pv",), run_root=str(tmp_path), max_points=104)
        try:
            opened = hist.opened_ns
            made = [opened - (30 - i) * 10**9 for i in range(30)]  # a point a second
            frame = pl.DataFrame({"made_ns": made, "seq": list(range(1, 31)),
                                  "pv": [float(i) for i in range(30)]})  # fmt: skip
            later = pl.DataFrame({"made_ns": [opened + 10**9], "seq": [31], "pv": [9.0]})
            hist.preload(pl.concat([frame, later]))  # thinned to 4, nothing after opening
            assert hist.stored == 4
            assert hist.seqs.tolist() == [6, 14, 22, 30]  # every 8th, the last kept
            assert hist.t.tolist() == [-25.0, -17.0, -9.0, -1.0]

            def live(seq: int, ago_s: float) -> SnapshotView:
                firm = pl.DataFrame({"pv": [float(seq)]})
                return SnapshotView(seq, hist.t0_ns - int(ago_s * 1e9), {"firm": firm}, (), {})

            hist.record(live(30, 1.0))  # the stored snapshot 30, seen live: not twice
            hist.record(live(22, -3.0))  # seq 22 of a service restarted since: kept
            hist.record(live(32, -4.0))
            assert hist.seqs.tolist() == [6, 14, 22, 30, 22, 32]
            assert day_start(opened) <= opened < day_start(opened) + 86_400 * 10**9
        finally:
            hist.close()

    asyncio.run(scenario())


def test_the_reports_intraday_section_reads_high_low_close_and_a_breach_timeline(
    tmp_path: Path,
) -> None:
    from workbench.reports.intraday import plot_timeline, read_day, timeline_text

    writer = StoreWriter(tmp_path, interval_s=0.0)
    for seq in range(1, 11):
        made = seq * 10**9
        found: tuple[Breach, ...] = ()
        if 3 <= seq <= 6:  # one breach over four snapshots (its UTC start jitters), then another
            since = 3 * 10**9 + seq * 1_000
            found = (Breach(scope="firm", measure="dv01", value=-seq, limit=1.0, since_ns=since),)
        elif seq >= 8:
            found = (Breach(scope="desk:USD Rates", measure="pv", value=seq, limit=5.0,
                            since_ns=8 * 10**9),)  # fmt: skip
        snap = msgspec.structs.replace(snapshot(seq, made), breaches=found)
        writer.add_snapshot(snap, wall_offset_ns=T0)
    writer.flush(0)
    ident = {"source": "service", "service": "gone", "store": str(tmp_path),
             "taken_at_utc": "2026-12-04T00:00:08+00:00"}  # fmt: skip
    day = read_day(ident)
    assert day is not None
    assert day.snapshots == 8  # the snapshots up to the moment taken
    pv = day.firm.filter(pl.col("measure") == "pv").row(0, named=True)
    at = AGGREGATE_MEASURES.index("pv")
    assert (pv["high"], pv["low"], pv["close"]) == (800.0 + at, 100.0 + at, 800.0 + at)
    usd = day.desks.filter((pl.col("desk") == "USD Rates") & (pl.col("measure") == "dv01"))
    dv01 = AGGREGATE_MEASURES.index("dv01")
    assert usd.select("high", "low", "close").row(0) == (80.0 + dv01 + 0.25, 10.25 + dv01,
                                                          80.25 + dv01)  # fmt: skip
    tl = day.timeline
    assert tl.select("scope", "measure", "snapshots", "worst").rows() == [
        ("firm", "dv01", 4, -6.0),
        ("desk:USD Rates", "pv", 1, 8.0),
    ]
    assert timeline_text(tl)["start"].to_list() == ["00:00:03", "00:00:08"]
    assert timeline_text(tl)["last_seen"].to_list() == ["00:00:06", "00:00:08"]
    assert plot_timeline(tl, day.start, day.end).axes[0].get_yticklabels()
    assert read_day({**ident, "taken_at_utc": "2026-12-03T23:59:00+00:00"}) is None
    assert read_day({"source": "batch", "taken_at_utc": ident["taken_at_utc"]}) is None


def test_the_polars_and_duckdb_examples_of_the_docs_run(tmp_path: Path) -> None:
    import re

    doc = (Path(__file__).parents[1] / "docs" / "store.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "run_dir" in b]
    assert len(blocks) == 3  # workbench.store, Polars, DuckDB
    run_dir = tmp_path / "desk1"
    fill(run_dir / "store", range(1, 11))
    for block in blocks:
        scope: dict[str, object] = {"run_dir": run_dir}
        exec(compile(block, "docs/store.md", "exec"), scope)
        if "day" in scope:
            day = scope["day"]
            assert isinstance(day, pl.DataFrame)
            assert day.height == 2  # two desks, one date
            assert (
                day["pv_close"].to_list()
                == history(run_dir / "store", grouping="desk")
                .filter(pl.col("seq") == 10)["pv"]
                .to_list()
            )
        if "firm" in scope:
            assert scope["firm"]["seq"].to_list() == list(range(1, 11))  # type: ignore[index]
        if "timeline" in scope:
            assert scope["timeline"].rows() == [("firm", "dv01", T0 + 2 * 10**9, T0 + 10**10, 5)]  # type: ignore[attr-defined]
