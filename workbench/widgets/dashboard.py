"""``workbench dashboard``: the desk notebook served by Voila, outputs only, for desk heads.

Voila runs the notebook in a fresh kernel for every visitor and shows its outputs (the live
widgets) with no code (``--strip_sources=True``), on 127.0.0.1 only. The notebook is served from
a temporary copy whose parameters name the service to attach to (``start_if_missing=False``: a
dashboard attaches, it never starts a service). The kernel is the installed ``workbench``
kernelspec if there is one, else a kernelspec for the Python running this command.

Wiring into ``workbench.cli.build_parser``: ``add_dashboard_parser(sub)``; the parser's ``func``
is :func:`cmd_dashboard`, whose return value is the exit code (``docs/dashboard.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from workbench.client import running

DESK_NOTEBOOK: Final = Path(__file__).resolve().parents[2] / "notebooks" / "desk.ipynb"
"""The desk notebook of a source checkout (``notebooks/desk.ipynb``)."""

TEMPLATES: Final = Path(__file__).resolve().parent
"""A Jupyter data folder holding ``voila/templates/desk``: Voila's lab template without the
two Font Awesome stylesheets it links from a CDN (its bundle carries Font Awesome already)."""
TEMPLATE: Final = "desk"

KERNEL: Final = "workbench"
"""The kernelspec the notebooks name; used when installed (``make kernel``)."""

FALLBACK_KERNEL: Final = "workbench-dashboard"
"""Name of the kernelspec written for the current Python when ``workbench`` is not installed."""

STOP_TIMEOUT_S: Final = 20.0
"""How long Voila gets to shut its kernels down after an interrupt, seconds."""


def _service_name(service: str | None) -> str:
    """The name of the running service to attach to (``service``, or the only one running)."""
    found = [d.name for d in running()]
    if service is not None:
        if service not in found:
            raise LookupError(f"no running workbench service {service!r} (running: {found})")
        return service
    if len(found) != 1:
        what = "no workbench service is running" if not found else f"several are: {found}"
        raise LookupError(f"pass --name: {what}")
    return found[0]


def _installed_kernels() -> set[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    return set(KernelSpecManager().find_kernel_specs())


def parameterize(nb: dict[str, Any], values: dict[str, Any], *, kernel: str) -> dict[str, Any]:
    """A copy of notebook JSON ``nb`` with ``values`` assigned after its ``parameters`` cell.

    The assignments go in a new code cell tagged ``injected-parameters`` (as papermill does),
    right after the cell tagged ``parameters`` (or first, if there is none); the kernelspec
    becomes ``kernel``.

    Examples
    --------
    >>> nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]},
    ...                  "source": "x = 1", "outputs": [], "execution_count": None}],
    ...       "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    >>> out = parameterize(nb, {"x": 2, "s": "desk"}, kernel="python3")
    >>> out["cells"][1]["source"]
    "x = 2\\ns = 'desk'\\n"
    >>> out["metadata"]["kernelspec"]["name"]
    'python3'
    """
    out: dict[str, Any] = json.loads(json.dumps(nb))
    cells: list[dict[str, Any]] = out["cells"]
    at = next(
        (
            i + 1
            for i, c in enumerate(cells)
            if "parameters" in c.get("metadata", {}).get("tags", [])
        ),
        0,
    )
    source = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    cell: dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": ["injected-parameters"]},
        "outputs": [],
        "source": source,
    }
    if out.get("nbformat", 4) >= 4 and out.get("nbformat_minor", 0) >= 5:
        cell["id"] = "injected-parameters"
    cells.insert(at, cell)
    out.setdefault("metadata", {})["kernelspec"] = {
        "name": kernel,
        "display_name": "Workbench" if kernel == KERNEL else f"Python ({sys.executable})",
        "language": "python",
    }
    return out


def _fallback_kernelspec(folder: Path) -> None:
    """A kernelspec for this Python under ``folder/kernels`` (put ``folder`` on JUPYTER_PATH)."""
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
    }
    kdir = folder / "kernels" / FALLBACK_KERNEL
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps(spec))


def voila_command(notebook: Path, *, port: int, open_browser: bool) -> list[str]:
    """The Voila command line: outputs only, loopback only, exactly ``port``."""
    return [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        "--strip_sources=True",
        "--show_tracebacks=False",
        f"--template={TEMPLATE}",
        f"--Voila.open_browser={open_browser}",
    ]


def serve_dashboard(
    notebook: Path, *, port: int, service: str | None, open_browser: bool = False
) -> int:
    """Serve ``notebook`` with Voila, attached to a running service, until interrupted.

    Parameters
    ----------
    notebook
        The notebook to serve (the desk view: :data:`DESK_NOTEBOOK`).
    port
        TCP port on 127.0.0.1 (no other port is tried).
    service
        Name of the running service; None: the only one running.
    open_browser
        Open the dashboard in the default web browser.

    Returns
    -------
    int
        The exit code: Voila's own, 0 after an interrupt (Ctrl-C or SIGTERM), 2 when the
        notebook is missing or no matching service is running.
    """
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        print(f"workbench dashboard: error: no notebook {notebook}", file=sys.stderr)
        return 2
    try:
        name = _service_name(service)
    except LookupError as exc:
        print(f"workbench dashboard: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="workbench-dashboard-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ)
        env["WORKBENCH_WIDGET_PACING"] = "0"  # Voila holds back the receipts (widgets/_live.py)
        # the desk template (no CDN stylesheets) is found under <TEMPLATES>/voila/templates
        env["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(TEMPLATES), os.environ.get("JUPYTER_PATH")) if p
        )
        kernel = KERNEL
        if KERNEL not in _installed_kernels():
            kernel = FALLBACK_KERNEL
            _fallback_kernelspec(folder / "jupyter")
            env["JUPYTER_PATH"] = os.pathsep.join((str(folder / "jupyter"), env["JUPYTER_PATH"]))
        # no cell awaits under Voila: an awaiting cell holds back the browser's receipts
        values = {"service": name, "start_if_missing": False, "close_when_done": False,
                  "wait_drawn_s": 0.0}  # fmt: skip
        nb = parameterize(json.loads(notebook.read_text()), values, kernel=kernel)
        served = folder / "served" / notebook.name
        served.parent.mkdir()
        served.write_text(json.dumps(nb, indent=1))
        print(
            f"dashboard of service {name!r}: http://127.0.0.1:{port}/ "
            f"({notebook.name}, kernel {kernel}); Ctrl-C stops it",
            flush=True,
        )
        return _run(voila_command(served, port=port, open_browser=open_browser), env=env)


def _run(cmd: list[str], *, env: dict[str, str]) -> int:
    """Run Voila in the foreground; an interrupt or SIGTERM stops it and its kernels."""
    proc = subprocess.Popen(cmd, env=env)
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return _stop(proc)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """Interrupt Voila (it shuts its kernels down), then kill it if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0


def add_dashboard_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``dashboard`` command to ``subparsers`` (from ``add_subparsers``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="serve the desk notebook with Voila (no code shown)",
        description="Serve the desk view (notebooks/desk.ipynb) with Voila on 127.0.0.1, "
        "outputs only, attached to a running service. Ctrl-C stops it.",
    )
    parser.add_argument("--name", default=None, help="service name (default: the only one)")
    parser.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (8866)")
    parser.add_argument(
        "--notebook", type=Path, default=DESK_NOTEBOOK, help="notebook to serve (desk.ipynb)"
    )
    parser.add_argument(
        "--open", action="store_true", dest="open_browser", help="open it in a web browser"
    )
    parser.set_defaults(func=cmd_dashboard)
    return parser


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Run ``workbench dashboard``; returns the exit code."""
    return serve_dashboard(
        args.notebook, port=args.port, service=args.name, open_browser=args.open_browser
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.widgets.dashboard [--name N] [--port P]`` (the same options)."""
    parser = argparse.ArgumentParser(prog="workbench")
    add_dashboard_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboard", *(sys.argv[1:] if argv is None else argv)])
    return cmd_dashboard(args)


if __name__ == "__main__":
    raise SystemExit(main())
