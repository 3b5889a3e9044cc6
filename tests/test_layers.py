"""The layers import one way: the pure libraries load none of the service or the notebook."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import workbench

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
    assert workbench.start.__module__.startswith("workbench.client")
    assert workbench.RemoteConfig.__name__ == "RemoteConfig"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = workbench.nothing  # type: ignore[attr-defined]


def _imports(path: Path) -> set[str]:
    """Every ``workbench…`` module a source file imports (at any depth of its code)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "workbench"}


def _outside(package: str, allowed: tuple[str, ...]) -> list[str]:
    """``file: module`` for every workbench import in ``workbench/<package>`` not under
    ``allowed``."""
    folder = Path(workbench.__file__).parent / package
    return sorted(
        f"{path.name}: {module}"
        for path in sorted(folder.glob("*.py"))
        for module in _imports(path)
        if not any(module == a or module.startswith(a + ".") for a in allowed)
    )


def test_widgets_use_only_the_client_and_the_risk_types() -> None:
    bad = _outside("widgets", ("workbench.client", "workbench.risk", "workbench.widgets"))
    assert not bad, f"widgets reach past the client: {bad}"


_ABOVE_DATA = ("workbench.pricing", "workbench.risk", "workbench.engine", "workbench.client",
               "workbench.widgets", "workbench.reports", "workbench.batch",
               "workbench.cli")  # fmt: skip


def _every_module(package: str) -> str:
    """``package`` and each of its modules, as one ``import`` list (found on disk, not imported)."""
    path = Path(workbench.__file__).parent / package.split(".", 1)[1]
    names = sorted(p.stem for p in path.glob("*.py") if p.stem != "__init__")
    return ", ".join([package, *(f"{package}.{n}" for n in names)])


@pytest.mark.parametrize("package", ["workbench.book", "workbench.market"])
def test_the_data_layers_load_no_pricing_or_anything_above(package: str) -> None:
    mods = _every_module(package)
    assert "reference" in mods  # the generators are among what is imported
    assert _loaded(mods, _ABOVE_DATA) == "", f"{package} reaches above the data layer"


def test_pricing_loads_no_risk_engine_or_client() -> None:
    mods = _every_module("workbench.pricing")
    assert _loaded(mods, tuple(m for m in _ABOVE_DATA if m != "workbench.pricing")) == ""


def test_the_cli_and_widgets_import_nothing_of_the_engine() -> None:
    package = Path(workbench.__file__).parent
    sources = [package / "cli.py", *sorted((package / "widgets").glob("*.py"))]
    bad = {
        f"{path.relative_to(package)}: {module}"
        for path in sources
        for module in _imports(path)
        if module == "workbench.engine" or module.startswith("workbench.engine.")
    }
    assert not bad, f"reaching past workbench.client into the engine: {sorted(bad)}"


def test_reports_use_only_the_client_the_risk_types_and_the_batch_door() -> None:
    allowed = ("workbench.client", "workbench.risk", "workbench.batch", "workbench.reports",
               "workbench.scenario_risk")  # fmt: skip
    bad = _outside("reports", allowed)
    assert not bad, f"reports reach past the client and the batch door: {bad}"


def _calls(path: Path) -> set[str]:
    """The names every call in a source file goes to (``Heartbeat``, ``signal.signal`` …)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            out.add(ast.unparse(node.func).rsplit(".", 1)[-1])
    return out


def test_processes_on_the_shell_hold_no_shell_of_their_own() -> None:
    processes = Path(workbench.__file__).parent / "engine" / "processes"
    shell_calls = {"Heartbeat", "signal", "add_signal_handler", "die_with_parent", "getppid"}
    for name in (
        "feed.py",
        "ingest.py",
        "aggregator.py",
        "control.py",
        "tickstreams.py",
        "worker.py",
        "worker_requests.py",
    ):
        own = _calls(processes / name) & shell_calls
        assert not own, f"{name} does itself what engine/processes/shell.py does: {sorted(own)}"
        imports = _imports(processes / name)
        assert "workbench.engine.processes.lifetime" not in imports, name
    # one latency-histogram type: no process keeps its own bucket edges or percentile window
    for path in sorted(processes.glob("*.py")):
        assert "geomspace" not in path.read_text(), f"{path.name} builds its own buckets"
    assert "percentile" not in (processes / "aggregator.py").read_text()


def test_the_store_loads_no_sockets_processes_or_widgets() -> None:
    # readers in any process (a notebook, the HTTP API, a report) import the store's files
    # layer without the service: no ZeroMQ, no process machinery, no widget
    banned = (*_NOT_PROTOCOL, *_PROCESS, "workbench.engine.telemetry")
    assert _loaded(_every_module("workbench.store"), banned) == ""


def test_the_store_writer_is_a_body_on_the_shell() -> None:
    path = Path(workbench.__file__).parent / "engine" / "processes" / "store_writer.py"
    shell_calls = {"Heartbeat", "signal", "add_signal_handler", "die_with_parent", "getppid"}
    calls = _calls(path)
    assert not calls & shell_calls
    assert {"start", "run_polling", "Shell"} <= calls  # shell.start, shell.run_polling …
    # reports reach the store through the client's door only
    reports = Path(workbench.__file__).parent / "reports"
    assert not any(
        m.startswith("workbench.store") for p in reports.glob("*.py") for m in _imports(p)
    )


def test_quote_failover_and_fallback_counts_are_pure_state() -> None:
    """The failover, the conflator and the per-group fallback counts: no sockets, no HTTP, no
    event loop; only the polling modules talk to the network."""
    for module in ("engine/processes/failover.py", "engine/processes/conflation.py",
                   "risk/fallback.py"):  # fmt: skip
        tree = ast.parse((Path(workbench.__file__).parent / module).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        bad = {m for m in names if m.split(".")[0] in ("zmq", "httpx", "asyncio", "socket")}
        assert not bad, f"{module} imports {bad}"


def test_the_api_uses_only_the_client_and_the_risk_types() -> None:
    bad = _outside(
        "api", ("workbench.client", "workbench.risk", "workbench.store", "workbench.api")
    )
    assert not bad, f"the API reaches past the client: {bad}"


def test_the_command_line_loads_no_web_framework() -> None:
    assert _loaded("workbench.cli", ("fastapi", "uvicorn", "starlette")) == ""


def test_the_loss_process_loads_no_cluster_or_widget_code() -> None:
    """The live loss process revalues in its own process and thread: no Dask, no widgets."""
    loaded = _loaded(
        "workbench.engine.processes.loss_runner",
        ("dask", "distributed", "ipywidgets", "bqplot", "workbench.widgets"),
    )
    assert loaded == ""
