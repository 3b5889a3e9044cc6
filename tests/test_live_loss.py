"""The live loss process in a real service: VaR/ES and stresses equal to the batch API on the
same quote values, their age, snapshots flowing while it runs, VaR/ES limits breaching, and the
intraday PnL explain adding up (docs/var.md, "Live")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from service_helpers import make_files, start, wait

from workbench import scenario_risk
from workbench.client import Client, LossConfig, ServiceError
from workbench.client.views import LossResult
from workbench.market.io import load_market, save_market
from workbench.risk.explain import COMPONENTS
from workbench.risk.limits import LOSS_MEASURES, LimitConfig, LimitMonitor
from workbench.scenario_risk import Where

WINDOW = 40
EVERY_S = 3.0
RTOL = 1e-12
"""Limits and heartbeat figures: the same numbers as the result they come from."""
SCALE_TOL = 1e-11
"""Live against batch: each number within this fraction of its column's largest magnitude
(measured up to 2.1e-12: PnLs are differences of PVs computed in two processes whose curve
solves start from different places, equal to the solvers' tolerance, not to the bit)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("live_loss"))


@pytest.fixture(scope="module")
def service(files: tuple[Path, Path]) -> Iterator[Client]:
    """A service whose loss process runs every 3 s on 40 days, with a firm VaR limit it
    always breaches and a desk ES limit it never does."""
    svc = start(
        files,
        "liveloss",
        rate=200.0,  # small moves: the Greeks explain most of them
        loss=LossConfig(every_s=EVERY_S, window=WINDOW),
        limits=(
            LimitConfig(measure="dv01", limit=1.0),
            LimitConfig(measure="var_99", limit=1.0),
            LimitConfig(measure="es_97.5", limit=1e15, desk="USD Rates"),
        ),
    )
    try:
        yield svc
    finally:
        svc.stop()


def _batch_market(result: LossResult, files: tuple[Path, Path], folder: Path) -> Path:
    """A market file holding the quote values a live result ran on."""
    market = load_market(files[1])
    assert result.quotes["quote_id"].to_list() == list(market.quote_ids)
    path = folder / f"market-{result.generation}.json"
    save_market(market.with_quote_values(result.quotes["value"].to_numpy()), path)
    return path


def _close(live: pl.DataFrame, batch: pl.DataFrame, keys: list[str]) -> None:
    """Equal keys, and every number within :data:`SCALE_TOL` of its column's largest
    magnitude."""
    assert live.columns == batch.columns
    assert live.select(keys).equals(batch.select(keys))
    for col in live.columns:
        if live.schema[col] == pl.Float64:
            want = batch[col].to_numpy()
            scale = float(np.abs(want).max()) if want.size else 0.0
            np.testing.assert_allclose(live[col].to_numpy(), want, rtol=0.0,
                                       atol=SCALE_TOL * scale)  # fmt: skip


def test_var_equals_the_batch_api_on_the_same_quotes(
    service: Client, files: tuple[Path, Path], tmp_path: Path
) -> None:
    live = service.var(wait_s=240)
    assert live.ready
    assert live.scenarios == WINDOW
    assert live.measures is not None
    run_dir = Path(service.descriptor.config.run_dir)
    batch = scenario_risk.historical(
        service.descriptor.config.frozen_book,
        _batch_market(live, files, tmp_path),
        run_dir / "loss" / "history.parquet",
        window=WINDOW,
        where=Where(in_process=True),
        greeks=True,
    )
    assert batch.measures is not None
    assert batch.greeks is not None
    assert live.greeks is not None
    _close(live.pnl, batch.pnl, ["scenario", "desk"])
    _close(live.measures, batch.measures, ["group"])
    _close(live.worst, batch.worst, ["rank", "scenario"])
    _close(live.greeks.by_desk, batch.greeks.by_desk, ["scenario", "desk"])
    firm = live.measures.filter(pl.col("group") == "Firm")
    assert firm["es_97.5"][0] >= firm["var_97.5"][0] > 0.0


def test_stress_equals_the_batch_api_on_the_same_quotes(
    service: Client, files: tuple[Path, Path], tmp_path: Path
) -> None:
    live = service.stress(wait_s=240)
    assert live.ready
    assert live.measures is None
    assert live.scenarios > 0
    batch = scenario_risk.stress(
        service.descriptor.config.frozen_book, _batch_market(live, files, tmp_path)
    )
    _close(live.pnl, batch.pnl, ["scenario", "desk"])
    _close(live.worst, batch.worst, ["rank", "scenario"])


def test_the_age_grows_then_a_new_run_replaces_the_result(service: Client) -> None:
    first = service.var(wait_s=240)
    time.sleep(0.5)
    again = service.var(wait_s=0)
    if again.made_ns == first.made_ns:  # the same result, older
        assert again.age_s > first.age_s
    wait(lambda: service.var(wait_s=0).made_ns > first.made_ns, 120, "a new VaR run")
    newer = service.var(wait_s=0)
    assert newer.generation >= first.generation
    assert 0.0 <= newer.age_s < first.age_s + 120
    assert newer.every_s == EVERY_S


def test_the_last_result_rides_with_the_snapshots_with_its_age(service: Client) -> None:
    first = service.var(wait_s=240)

    def riding() -> bool:
        stats = service.latest(timeout_s=2.0).stats
        return stats.get("loss.var_generation", -1.0) >= first.generation

    wait(riding, 30, "the VaR summary in a snapshot")
    stats = service.latest(timeout_s=2.0).stats
    made = service.var(wait_s=0)  # the result whose summary the snapshot carries
    assert stats["loss.var_generation"] == made.generation
    mine = (
        made.measures.filter(made.measures["group"] == "Firm")
        if made.measures is not None
        else None
    )
    assert mine is not None
    assert stats["loss.var:Firm"] == pytest.approx(float(mine[mine.columns[1]][0]), rel=1e-12)
    assert stats["loss.es:Firm"] == pytest.approx(float(mine["es_97.5"][0]), rel=1e-12)
    assert stats["loss.age_s"] == pytest.approx(made.age_s, abs=2.0)
    age = stats["loss.age_s"]
    time.sleep(1.5)
    later = service.latest(timeout_s=2.0).stats
    if later["loss.var_generation"] == stats["loss.var_generation"]:  # the same result, older
        assert later["loss.age_s"] > age + 1.0


def test_snapshots_keep_coming_while_it_runs(service: Client) -> None:
    service.var(wait_s=240)
    wait(lambda: service.var(wait_s=0).computing != "", 120, "a run under way")
    seqs, p99 = [], []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        snap = service.latest(timeout_s=2.0)
        seqs.append(snap.seq)
        p99.append(snap.stats.get("flush_to_publish_p99_ms", float("nan")))
    assert len(seqs) >= 5
    assert seqs == sorted(seqs)
    print(f"flush → publish p99 while the loss process runs: {np.nanmax(p99):.1f} ms")


def test_var_and_es_limits_breach_live(service: Client) -> None:
    service.var(wait_s=240)
    usage = service.limits()
    rows = {(r["scope"], r["measure"]): r for r in usage.iter_rows(named=True)}
    assert rows[("firm", "dv01")]["breached"]
    assert rows[("firm", "var_99")]["breached"]
    assert rows[("firm", "var_99")]["value"] > 1.0
    assert not rows[("desk:USD Rates", "es_97.5")]["breached"]
    live = service.var(wait_s=0)
    firm = live.measures.filter(pl.col("group") == "Firm") if live.measures is not None else None
    assert firm is not None
    assert rows[("firm", "var_99")]["value"] == pytest.approx(abs(firm["var_99"][0]), rel=RTOL)
    assert [(b.scope, b.measure) for b in live.breaches] == [("firm", "var_99")]
    for _ in range(50):  # the heartbeat of the same run (a run every 3 s: one may end between)
        live = service.var(wait_s=0)
        loss = next(p for p in service.status()["processes"] if p["name"] == "loss")
        if loss["stats"].get("var_generation") == float(live.generation):
            break
        time.sleep(0.2)
    assert loss["stats"].get("var_generation") == float(live.generation)
    assert live.measures is not None
    firm = live.measures.filter(pl.col("group") == "Firm")
    assert loss["stats"]["breaches"] == 1.0
    assert loss["restarts"] == 0
    assert loss["stats"]["var:Firm"] == pytest.approx(firm["var_99"][0], rel=RTOL)


def test_runs_revalue_in_the_gaps_between_flushes(service: Client) -> None:
    """The run's blocks follow the hot path: it reads the flushes and snapshots and sizes
    its blocks by them (docs/var.md, "Live"; what that spares the snapshots is measured in
    docs/benchmarks.md, not here)."""
    service.var(wait_s=240)
    loss = next(p for p in service.status()["processes"] if p["name"] == "loss")
    stats = loss["stats"]
    assert stats["flushes_seen"] > 0
    assert stats["snapshots_seen"] > 0
    assert stats["blocks"] >= stats["runs"] * 3  # VaR, the Greeks' gap and the stresses
    assert stats["late_blocks"] <= stats["blocks"]


def test_explain_adds_up_and_its_residual_is_small(service: Client) -> None:
    service.var(wait_s=240)
    time.sleep(1.0)
    view = service.explain()
    assert view.components == COMPONENTS
    frame = view.by_desk
    parts = frame.select(pl.sum_horizontal([*COMPONENTS, "unexplained"])).to_series()
    np.testing.assert_allclose(parts.to_numpy(), frame["actual"].to_numpy(), rtol=1e-9,
                               atol=1e-6)  # fmt: skip
    firm = frame.filter(pl.col("desk") == "Firm").row(0, named=True)
    assert view.generation >= view.base_generation
    assert view.made_ns >= view.base_ns
    gross = float(view.positions["actual"].abs().sum())
    assert abs(firm["unexplained"]) <= 0.1 * gross + 1.0, (firm, gross)
    later = service.explain(since=time.time_ns())  # the latest kept copy: the day's first here
    assert later.base_ns <= time.time_ns()

    # priced between the flushes: the Greeks at the base and the PVs now, stage by stage, each
    # in a gap of the hot path (curves, then each asset class)
    def stages() -> float:
        loss = next(p for p in service.status()["processes"] if p["name"] == "loss")
        return float(loss["stats"]["explain_stages"])

    wait(lambda: stages() >= 2 * 5 + 5, 5.0, "the explains' stages in the heartbeats")


def test_the_async_twins_answer_the_same(service: Client) -> None:
    sync = service.var(wait_s=240)

    async def both() -> tuple[LossResult, LossResult]:
        return await service.avar(wait_s=0), await service.astress(wait_s=240)

    got, stress = asyncio.run(both())
    assert got.ready
    assert stress.ready
    assert got.made_ns >= sync.made_ns
    view = asyncio.run(service.aexplain())
    assert view.by_desk.height > 1
    loss = next(p for p in service.status()["processes"] if p["name"] == "loss")
    assert loss["restarts"] == 0  # explains priced beside runs, one at a time


def test_a_service_without_it_says_so(files: tuple[Path, Path]) -> None:
    svc = start(files, "nolossproc", feed="none", loss=LossConfig(enabled=False), standby=False)
    try:
        assert "loss" not in {p["name"] for p in svc.status()["processes"]}
        with pytest.raises(ServiceError, match="without its loss process"):
            svc.var(wait_s=0)
        assert svc.limits().height == 0
    finally:
        svc.stop()


def test_a_limit_monitor_keeps_to_its_own_measures() -> None:
    limits = (LimitConfig(measure="dv01", limit=1.0), LimitConfig(measure="var_99", limit=2.0))
    assert [x.measure for x in LimitMonitor(limits).limits] == ["dv01"]
    own = LimitMonitor(limits, measures=LOSS_MEASURES)
    assert [x.measure for x in own.limits] == ["var_99"]
    with pytest.raises(ValueError, match="unknown measure 'var_95'"):
        LimitMonitor((LimitConfig(measure="var_95", limit=1.0),))
