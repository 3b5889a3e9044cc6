"""Run the end-of-day report headless: snapshot, papermill, HTML, summary, atomic publish.

Exit codes (see ``docs/eod.md``):

====  ========================================================================================
code  meaning
====  ========================================================================================
0     the report is published in ``<out>/<as-of>/``
2     bad input: unknown parameter, missing book or market, a market not dated ``as_of``
3     a cell failed; the partial notebook is in ``<out>/<as-of>/failed/``
4     the service is missing, not ready or stale (and ``--batch`` was not given)
5     the per-cell or the whole-run timeout expired
====  ========================================================================================

Nothing in ``<out>/<as-of>/`` changes unless the whole run succeeds: the run writes into a
staging folder beside it and swaps the two folders in one ``renameat2(RENAME_EXCHANGE)`` call
(two renames where that call is missing).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Final, TextIO

from workbench.reports.close import take_service
from workbench.reports.sections import RESULTS_FILE
from workbench.reports.snapshot import Snapshot, SnapshotError, SnapshotInputError, take_batch

EXIT_OK: Final = 0
EXIT_BAD_INPUT: Final = 2
EXIT_CELL_FAILED: Final = 3
EXIT_SERVICE: Final = 4
EXIT_TIMEOUT: Final = 5

NOTEBOOK: Final = Path(__file__).resolve().parents[2] / "notebooks" / "eod_report.ipynb"
"""The report notebook (in the source tree)."""

KERNEL_NAME: Final = "workbench"

RESERVED: Final[frozenset[str]] = frozenset(
    {"as_of", "source", "snapshot_dir", "output_dir", "book_path", "market_path"}
)
"""Parameters the runner sets itself; ``-p`` may not override them."""


class _Progress:
    """Stage lines on ``stream`` (or nowhere), with the seconds each stage took."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(f"eod: {text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.say(f"{name} …")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - t0
            self.say(f"{name} {self.timings[name]:.2f} s")


# --- kernel ------------------------------------------------------------------------------------


def write_kernelspec(folder: Path, *, python: str = sys.executable) -> Path:
    """A kernelspec called :data:`KERNEL_NAME` running ``python`` (this interpreter) in ``folder``.

    Returns the folder to give as ``kernel_dirs`` (``folder/kernels``).
    """
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Workbench (Python 3)",
        "language": "python",
        "env": {"MPLBACKEND": "agg"},
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return folder / "kernels"


def _manager_class(kernel_dirs: Path) -> type[Any]:
    """An ``AsyncKernelManager`` that finds kernelspecs only in ``kernel_dirs``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class _Manager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _spec_manager(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[str(kernel_dirs)])

    return _Manager


# --- parameters --------------------------------------------------------------------------------


def notebook_parameters(notebook: Path = NOTEBOOK) -> dict[str, str]:
    """Names and declared types of the notebook's papermill parameters."""
    import papermill  # type: ignore[import-untyped]

    found = papermill.inspect_notebook(str(notebook))
    return {name: str(p.get("inferred_type_name", "")) for name, p in found.items()}


def parse_value(text: str) -> object:
    """A ``-p key value`` value: an int, a float, ``true``/``false``/``none``, else the text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def find_previous(out_dir: Path, as_of: date) -> Path | None:
    """The snapshot of the latest published report dated before ``as_of``, if any."""
    best: tuple[date, Path] | None = None
    if not out_dir.is_dir():
        return None
    for child in out_dir.iterdir():
        try:
            day = date.fromisoformat(child.name)
        except ValueError:
            continue
        snap = child / "snapshot.parquet"
        if day < as_of and snap.is_file() and (best is None or day > best[0]):
            best = (day, snap)
    return None if best is None else best[1]


# --- publishing --------------------------------------------------------------------------------

_RENAME_EXCHANGE: Final = 2
_AT_FDCWD: Final = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is unavailable."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)


def publish(staging: Path, final: Path) -> None:
    """Put ``staging`` in place of ``final`` (a reader sees the old folder or the new one)."""
    if not final.exists():
        staging.rename(final)
        return
    if _exchange(staging, final):
        shutil.rmtree(staging)  # now holds the old report
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old)


def _keep_failure(staging: Path, final: Path, summary: dict[str, Any]) -> Path:
    """Move the partial notebook to ``final/failed/`` (the good report beside it is kept)."""
    failed = final / "failed"
    if failed.exists():
        shutil.rmtree(failed)
    failed.mkdir(parents=True)
    notebook = staging / "report.ipynb"
    if notebook.is_file():
        shutil.copy2(notebook, failed / "report.ipynb")
    (failed / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return failed


# --- the run -----------------------------------------------------------------------------------


def _export_html(notebook: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True)  # type: ignore[no-untyped-call]
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def _take_snapshot(
    *,
    as_of: date,
    service: str | None,
    batch: bool,
    book: Path | None,
    market: Path | None,
    n_paths: int,
    stale_after_s: float,
    timeout_s: float,
) -> Snapshot:
    if batch:
        if book is None or market is None:
            raise SnapshotInputError("--batch needs --book and --market")
        return take_batch(book_path=book, market_path=market, as_of=as_of, n_paths=n_paths)
    return take_service(service, as_of=as_of, stale_after_s=stale_after_s, timeout_s=timeout_s)


def run_eod(
    *,
    as_of: date,
    out_dir: Path,
    service: str | None,
    batch: bool,
    book: Path | None,
    market: Path | None,
    parameters: dict[str, object],
    cell_timeout_s: float = 600.0,
    run_timeout_s: float = 1800.0,
    stale_after_s: float = 300.0,
    progress: bool = True,
    notebook: Path = NOTEBOOK,
    stream: TextIO | None = None,
) -> int:
    """Produce the end-of-day report for ``as_of`` in ``out_dir/<as-of>/``; return an exit code.

    Parameters
    ----------
    as_of
        The report's date; the market (batch) or the service's market must be dated so.
    out_dir
        Reports go to ``out_dir/<as-of>/`` (``report.ipynb``, ``report.html``,
        ``summary.json`` and the snapshot files).
    service, batch
        Take the snapshot from the service called ``service`` (``None``: the only one running),
        or, with ``batch``, re-risk ``book`` against ``market``.
    parameters
        Extra notebook parameters (``limits_path``, ``book_filter``, ``previous_snapshot``,
        ``top_n``, ``n_paths``); ``previous_snapshot`` defaults to the latest earlier report.
    cell_timeout_s, run_timeout_s
        Seconds one cell, and the whole run, may take.
    stale_after_s
        A service whose heartbeats (or, with a feed, Greeks) are older is refused.
    progress
        Print stages and papermill's progress bar to ``stream`` (default ``sys.stderr``).

    Returns
    -------
    int
        One of the exit codes of the module docstring.
    """
    out = stream if stream is not None else sys.stderr
    log = _Progress(out if progress else None)
    started = time.perf_counter()
    deadline = time.monotonic() + run_timeout_s
    out_dir = out_dir.resolve()
    book = None if book is None else book.resolve()
    market = None if market is None else market.resolve()
    final = out_dir / as_of.isoformat()

    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(known))
    reserved = sorted(set(parameters) & RESERVED)
    if unknown or reserved:
        what = (
            f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            if unknown
            else f"parameter(s) {', '.join(reserved)} are set by the runner"
        )
        print(f"eod: error: {what}", file=out)
        return EXIT_BAD_INPUT
    if batch and service is not None:
        print("eod: error: give --service or --batch, not both", file=out)
        return EXIT_BAD_INPUT

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{as_of.isoformat()}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    summary: dict[str, Any] = {"as_of": as_of.isoformat(), "status": "failed"}
    try:
        n_paths = int(str(parameters.get("n_paths", 50_000)))
        try:
            with log.stage("snapshot"):
                snap = _take_snapshot(
                    as_of=as_of,
                    service=service,
                    batch=batch,
                    book=book,
                    market=market,
                    n_paths=n_paths,
                    stale_after_s=stale_after_s,
                    timeout_s=max(1.0, min(60.0, deadline - time.monotonic())),
                )
                snap.save(staging)
        except SnapshotError as exc:
            print(f"eod: error: {exc}", file=out)
            return EXIT_SERVICE
        except (SnapshotInputError, OSError, ValueError) as exc:  # bad book or market too
            print(f"eod: error: {exc}", file=out)
            return EXIT_BAD_INPUT
        summary["snapshot_id"] = snap.identity["snapshot_id"]
        if time.monotonic() > deadline:
            print(f"eod: error: run timeout ({run_timeout_s:.0f} s) during the snapshot", file=out)
            return EXIT_TIMEOUT

        previous = parameters.get("previous_snapshot")
        if previous is None:
            found = find_previous(out_dir, as_of)
            previous = "" if found is None else str(found)
        params: dict[str, object] = {
            **parameters,
            "as_of": as_of.isoformat(),
            "source": "batch" if batch else (service or ""),
            "book_path": "" if book is None else str(book),
            "market_path": "" if market is None else str(market),
            "snapshot_dir": str(staging),
            "output_dir": str(staging),
            "previous_snapshot": previous,
            "stale_after_s": stale_after_s,
        }
        code = _execute(notebook, staging, params, log, cell_timeout_s, deadline, out)
        if code != EXIT_OK:
            summary["exit_code"] = code
            summary["timings_s"] = dict(log.timings)
            failed = _keep_failure(staging, final, summary)
            print(f"eod: failed (exit {code}); partial notebook in {failed}", file=out)
            return code

        with log.stage("html"):
            _export_html(staging / "report.ipynb", staging / "report.html")
        results_path = staging / RESULTS_FILE
        summary = {**json.loads(results_path.read_text()), "status": "ok", "exit_code": EXIT_OK}
        results_path.unlink()
        summary["previous_snapshot"] = previous or None
        summary["timings_s"] = {**log.timings, "total": time.perf_counter() - started}
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        publish(staging, final)
        log.say(f"published {final} in {summary['timings_s']['total']:.1f} s")
        return EXIT_OK
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _execute(
    notebook: Path,
    staging: Path,
    params: dict[str, object],
    log: _Progress,
    cell_timeout_s: float,
    deadline: float,
    out: TextIO,
) -> int:
    """Run the notebook with papermill into ``staging/report.ipynb``; an exit code."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    def timeout_for(cell: object) -> int:
        left = deadline - time.monotonic()
        return max(1, math.ceil(min(cell_timeout_s, left)))

    with tempfile.TemporaryDirectory(prefix="workbench-kernel-") as kdir:
        kernel_dirs = write_kernelspec(Path(kdir))
        try:
            with log.stage("notebook"):
                papermill.execute_notebook(
                    str(notebook),
                    str(staging / "report.ipynb"),
                    parameters=params,
                    kernel_name=KERNEL_NAME,
                    progress_bar=log.stream is not None,
                    start_timeout=max(1, math.ceil(min(120.0, deadline - time.monotonic()))),
                    cwd=str(staging),
                    kernel_manager_class=_manager_class(kernel_dirs),
                    timeout_func=timeout_for,
                )
        except papermill.PapermillExecutionError as exc:
            print(f"eod: error: cell {exc.exec_count} raised {exc.ename}: {exc.evalue}", file=out)
            return EXIT_CELL_FAILED
        except (CellTimeoutError, TimeoutError, RuntimeError) as exc:
            timed_out = time.monotonic() >= deadline or isinstance(exc, CellTimeoutError)
            if isinstance(exc, DeadKernelError) or not timed_out:
                print(f"eod: error: the kernel failed: {exc}", file=out)
                return EXIT_CELL_FAILED
            print(f"eod: error: timeout: {exc}", file=out)
            return EXIT_TIMEOUT
    return EXIT_OK
