"""The layers import one way: the pure libraries load none of the service or the notebook."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SERVICE = ("zmq", "ipywidgets", "bqplot", "workbench.engine", "workbench.widgets")


_PROCESS = ("asyncio", "multiprocessing")
_NOT_PROTOCOL = ("zmq", "ipywidgets", "bqplot", "workbench.engine.processes",
                 "workbench.engine.transport", "workbench.client", "workbench.widgets")  # fmt: skip


def _loaded(module: str, banned: tuple[str, ...]) -> str:
    """The modules among ``banned`` (and their submodules) that ``import module`` loads."""
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {banned!r} "
        f"or any(m == s or m.startswith(s + '.') for s in {banned!r}))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(
    "module", ["workbench.pricing", "workbench.market", "workbench.book", "workbench.risk"]
)
def test_a_pure_library_loads_no_service_or_widget_code(module: str) -> None:
    assert _loaded(module, _SERVICE) == "", f"import {module} loaded service code"


def test_the_risk_layer_loads_no_event_loop_or_process_machinery() -> None:
    mods = "workbench.risk.aggregation, workbench.risk.cells, workbench.risk.limits, "
    mods += "workbench.risk.whatif, workbench.risk.recon"
    assert _loaded(mods, (*_SERVICE, *_PROCESS)) == ""


def test_the_protocol_loads_no_sockets_or_processes() -> None:
    mods = "workbench.engine.protocol.messages, workbench.engine.protocol.config, "
    mods += "workbench.engine.protocol.admission"
    assert _loaded(mods, _NOT_PROTOCOL) == ""


def test_the_client_names_still_load_from_the_package() -> None:
    import workbench

    assert workbench.start.__module__.startswith("workbench.client")
    assert workbench.RemoteConfig.__name__ == "RemoteConfig"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = workbench.nothing  # type: ignore[attr-defined]
