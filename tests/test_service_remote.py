"""Remote access: CurveZMQ listeners admit clients with an authorized key and no one else; a
remote listener without keys is refused before anything starts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq
from service_helpers import make_files, start

import workbench
from workbench.client import (
    AsyncClient,
    Client,
    LossConfig,
    ParallelShock,
    RemoteConfig,
    ServiceError,
    generate_keys,
)
from workbench.engine.protocol import messages as msg
from workbench.engine.protocol.config import Endpoints
from workbench.risk.limits import LimitConfig
from workbench.widgets import CurveShock


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("remote"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    _, server_secret = generate_keys(root / "server", "server")
    alice_public, alice_secret = generate_keys(root / "clients", "alice")
    _, mallory_secret = generate_keys(root / "strangers", "mallory")
    allowed = root / "authorized"
    allowed.mkdir()
    (allowed / alice_public.name).write_bytes(alice_public.read_bytes())
    assert oct(server_secret.stat().st_mode & 0o777) == "0o600"
    return {
        "server_secret": server_secret,
        "server_public": root / "server" / "server.key",
        "allowed": allowed,
        "alice": alice_secret,
        "mallory": mallory_secret,
    }


def test_a_remote_listener_without_keys_is_refused(
    files: tuple[Path, Path], keys: dict[str, Path], tmp_path: Path
) -> None:
    missing = RemoteConfig(host="0.0.0.0", server_key=str(tmp_path / "nope.key_secret"),
                           authorized_keys=str(keys["allowed"]))  # fmt: skip
    with pytest.raises(ServiceError, match=r"server key file .*nope.key_secret does not exist"):
        start(files, "refused", feed="none", remote=missing)
    public_only = RemoteConfig(host="0.0.0.0", server_key=str(keys["server_public"]),
                               authorized_keys=str(keys["allowed"]))  # fmt: skip
    with pytest.raises(ServiceError, match="holds no secret key"):
        start(files, "refused", feed="none", remote=public_only)
    nobody = RemoteConfig(host="0.0.0.0", server_key=str(keys["server_secret"]),
                          authorized_keys=str(tmp_path))  # fmt: skip
    with pytest.raises(ServiceError, match="has no client public key"):
        start(files, "refused", feed="none", remote=nobody)
    assert not [d for d in workbench.running() if d.name == "refused"]
    book, market = files
    out = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "serve", "--book", str(book), "--market",
         str(market), "--feed", "none", "--remote-host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--remote-host needs --remote-key and --authorized-keys" in out.stderr


def curve_shock_works(client: Client) -> None:
    """The CurveShock widget on ``client``: base and shocked curves drawn, a what-if PnL."""

    async def scenario() -> None:
        shock = CurveShock(client, curve="USD.SOFR", grouping="desk")
        try:
            await asyncio.wait_for(shock._ready.wait(), 60)
            shock.parallel.value = 10.0
            pnl = await shock.run()
            assert float(pnl["pnl"].abs().sum()) > 0.0
            y = shock.curve_lines.y
            assert np.allclose((y[1] - y[0]) * 100, 10.0, atol=1.5)
        finally:
            shock.close()

    asyncio.run(scenario())


def async_client_works(ep: Endpoints, keys: dict[str, Path]) -> None:
    """The awaited client over CurveZMQ: alice gets answers and snapshots, mallory none."""

    async def scenario() -> None:
        alice = workbench.connect_remote(
            ep.remote_control, ep.remote_snapshots, server_key=keys["server_public"],
            client_key=keys["alice"], timeout_s=20, asynchronous=True,
        )  # fmt: skip
        assert isinstance(alice, AsyncClient)
        assert not alice.local
        async with alice:
            st = await alice.status()
            assert st["name"] == "remote"
            by_class = await alice.aggregate(("asset_class",))
            assert by_class["positions"].sum() == st["positions"]
            assert (await alice.latest(timeout_s=15)).seq >= 1
        mallory = workbench.connect_remote(
            ep.remote_control, ep.remote_snapshots, server_key=ep.server_public_key,
            client_key=keys["mallory"], timeout_s=3, asynchronous=True,
        )  # fmt: skip
        with pytest.raises(ServiceError, match="no reply"):
            await mallory.status()

    asyncio.run(scenario())


def test_only_authorized_clients_get_in(files: tuple[Path, Path], keys: dict[str, Path]) -> None:
    remote = RemoteConfig(host="127.0.0.1", server_key=str(keys["server_secret"]),
                          authorized_keys=str(keys["allowed"]))  # fmt: skip
    svc = start(files, "remote", feed="none", remote=remote)
    try:
        ep = svc.descriptor.config.endpoints
        assert ep is not None
        assert ep.remote_control.startswith("tcp://127.0.0.1:")
        assert len(ep.server_public_key) == 40
        alice = workbench.connect_remote(
            ep.remote_control, ep.remote_snapshots,
            server_key=keys["server_public"], client_key=keys["alice"], timeout_s=20,
        )  # fmt: skip
        try:
            st = alice.status()
            assert st["name"] == "remote"
            assert st["ready"]
            assert st["remote"]["control"] == ep.remote_control
            assert alice.aggregate(("asset_class",))["positions"].sum() == st["positions"]
            assert alice.latest(timeout_s=15).seq >= 1  # snapshots through the XPUB relay
            view = alice.market(("USD.SOFR",), (ParallelShock(bp=10.0, currency="USD"),))
            assert view.quotes.height == st["quotes"]
            assert view.pillars.height > 0
            moved = (view.curves["zero_shocked_pct"] - view.curves["zero_pct"]).to_numpy()
            assert np.allclose(moved * 100, 10.0, atol=1.5)
            curve_shock_works(alice)
            with pytest.raises(ServiceError, match="runs without its loss process"):
                alice.var(wait_s=0)  # the gateway answers for a service without one
            assert alice.limits().height == 0
        finally:
            alice.close()
        mallory = workbench.connect_remote(
            ep.remote_control, ep.remote_snapshots,
            server_key=ep.server_public_key, client_key=keys["mallory"], timeout_s=3,
        )  # fmt: skip
        try:
            with pytest.raises(ServiceError, match="no reply"):
                mallory.status()
        finally:
            mallory.close()
        async_client_works(ep, keys)
        # a client without CurveZMQ cannot even complete the handshake
        ctx = zmq.Context()
        plain = ctx.socket(zmq.REQ)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(ep.remote_control)
        plain.send(msg.encode(msg.StatusRequest()))
        assert plain.poll(2000) == 0
        plain.close(linger=0)
        ctx.term()
        assert svc.status()["ready"]  # the local client is unaffected
    finally:
        svc.stop()


def test_a_remote_client_reads_the_live_loss_measures(
    files: tuple[Path, Path], keys: dict[str, Path]
) -> None:
    """VaR/ES, stress, explain and the VaR limits over CurveZMQ: the loss process's own
    results, relayed by the gateway."""
    remote = RemoteConfig(host="127.0.0.1", server_key=str(keys["server_secret"]),
                          authorized_keys=str(keys["allowed"]))  # fmt: skip
    svc = start(files, "remoteloss", rate=200.0, remote=remote,
                loss=LossConfig(every_s=3.0, window=40),
                limits=(LimitConfig(measure="var_99", limit=1.0),))  # fmt: skip
    try:
        ep = svc.descriptor.config.endpoints
        assert ep is not None
        alice = workbench.connect_remote(
            ep.remote_control, ep.remote_snapshots,
            server_key=keys["server_public"], client_key=keys["alice"], timeout_s=20,
        )  # fmt: skip
        try:
            far = alice.var(wait_s=240)
            assert far.ready
            assert far.measures is not None
            near = svc.var(wait_s=0)
            if near.made_ns == far.made_ns:  # the same run: the same numbers, bit for bit
                assert near.measures is not None
                assert far.measures.equals(near.measures)
            stress = alice.stress(wait_s=240)
            assert stress.ready
            assert stress.pnl.height > 0
            view = alice.explain(wait_s=60)
            assert view.by_desk.height > 1
            assert "var_99" in alice.limits()["measure"].to_list()

            async def awaited() -> bool:
                async with workbench.connect_remote(
                    ep.remote_control, ep.remote_snapshots, server_key=keys["server_public"],
                    client_key=keys["alice"], timeout_s=20, asynchronous=True,
                ) as twin:  # fmt: skip
                    return (await twin.var(wait_s=0)).ready

            assert asyncio.run(awaited())
        finally:
            alice.close()
        relay = svc.status()["remote"]["relay"]
        assert relay["request_dropped"] == 0
    finally:
        svc.stop()
