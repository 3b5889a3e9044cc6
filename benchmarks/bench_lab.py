"""The live desk as users run it: flush → snapshot published with JupyterLab, the desk notebook
and a Chromium tab attached, against the service alone, in the same run.

Setting (printed with the machine and its load): ``make lab``'s processes — the service on the
reference book (40,000 positions) with the synthetic feed (``--rate``, 5,000 ticks/s) and a
JupyterLab server on a copy of ``notebooks/`` — and headless Chromium showing ``desk.ipynb`` in
JupyterLab with every cell run (GreekGrid, GreekHistory, LimitsPanel and Telemetry live in the
notebook's kernel), all on the machine's two cores.

Each round measures ``--seconds`` (60) twice, back to back:

* **lab**: the desk notebook open and running in the browser, as a desk runs it;
* **alone**: the tab closed and the notebook's kernel shut down; the JupyterLab server stays
  up, idle (its CPU is printed), so only the service works.

Per window: flush → snapshot published from the aggregator's own histogram (the difference of
its cumulative bucket counts at the window's two ends): the share of flushes published within
25 ms and within 50 ms (both bucket bounds: exact), p50 and p99 (the bucket that holds them and
a linear interpolation inside it); flushes per second; the CPU of every process in % of one
core, by group (each service process, the JupyterLab server, the kernel, Chromium); browser
console errors. Then, over the rounds, the median and min–max of each setting and the ratio of
the lab's medians to the alone's.

Goals (issue "the live desk as users run it"): p99 ≤ 25 ms at 5,000 ticks/s with the desk
attached, ≤ 50 ms at 20,000 ticks/s (``--rate 20000``). Exit 1 when the lab's median p99 (the
upper bound of its bucket) misses the goal of the rate.

Run: ``python benchmarks/bench_lab.py [--rounds 3] [--seconds 60] [--rate 5000]``
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from _machine import machine
from _probes import bucket_quantile, cpu_seconds, service_pids, status_proc, stop_service
from _reference import CHROMIUM, reference_service, service_options, service_parser
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import workbench
from workbench.client import BUCKETS_MS, LossConfig
from workbench.engine.transport.endpoints import free_port
from workbench.widgets.dashboard import parameterize

NAME = "lab"
SERVICE_ROLES = ("feed", "ingest", "aggregator", "rates", "fx", "credit", "equity")
KERNEL = "workbench-bench"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


@dataclass
class Window:
    """One measured window."""

    setting: str
    seconds: float
    flushes: int
    within_25: float
    within_50: float
    p50: tuple[float, float, float]
    p99: tuple[float, float, float]
    cpu: dict[str, float]
    console_errors: int = 0
    notes: list[str] = field(default_factory=list)


# --- the processes ------------------------------------------------------------------------


class Lab:
    """A JupyterLab server on a parameterised copy of the notebooks, its kernels attaching to
    the service ``NAME`` under run folder ``run_root``."""

    def __init__(self, folder: Path, run_root: Path) -> None:
        self.folder = folder
        nbs = folder / "notebooks"
        nbs.mkdir()
        for src in NOTEBOOKS.glob("*.ipynb"):
            nb = json.loads(src.read_text())
            values = {"service": NAME, "start_if_missing": False}
            (nbs / src.name).write_text(json.dumps(parameterize(nb, values, kernel=KERNEL)))
        self.env = {
            **os.environ,
            "HOME": str(folder),
            "JUPYTER_CONFIG_DIR": str(folder / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(folder / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(folder / "jupyter-runtime"),
            "IPYTHONDIR": str(folder / "ipython"),
            "WORKBENCH_RUN_DIR": str(run_root),
            "NUMBA_CACHE_DIR": str(folder / "numba-cache"),
        }
        kdir = folder / "jupyter-data" / "kernels" / KERNEL
        kdir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Workbench",
            "language": "python",
            "env": {"WORKBENCH_SERVICE": NAME, "WORKBENCH_RUN_DIR": str(run_root)},
        }
        (kdir / "kernel.json").write_text(json.dumps(spec))
        settings = folder / "user-settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (folder / "lab.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
             "--port", str(self.port), f"--IdentityProvider.token={self.token}",
             "--ServerApp.allow_root=True", "--ServerApp.terminals_enabled=False",
             f"--ServerApp.root_dir={nbs}", "--ServerApp.port_retries=0",
             f"--LabApp.user_settings_dir={settings}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=nbs, env=self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterlab exited: see {self.log.name}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api", timeout=2).ok:
                    return
            time.sleep(0.5)
        raise RuntimeError("jupyterlab did not answer in 120 s")

    def api(self, method: str, path: str) -> Any:
        r = requests.request(method, f"{self.url}/api/{path}", timeout=30,
                             headers={"Authorization": f"token {self.token}"})  # fmt: skip
        r.raise_for_status()
        return r.json() if r.content else None

    def kernel_pids(self) -> list[int]:
        """The pids of the server's kernels (its ipykernel children)."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == self.proc.pid and b"ipykernel" in cmd:
                out.append(int(entry.name))
        return out

    def shutdown_kernels(self) -> None:
        """Delete every session and kernel."""
        for _ in range(20):
            try:
                kernels = [k["id"] for k in self.api("GET", "kernels")]
            except requests.HTTPError:
                time.sleep(0.5)
                continue
            if not kernels:
                return
            for s in self.api("GET", "sessions"):
                with contextlib.suppress(requests.HTTPError):
                    self.api("DELETE", f"sessions/{s['id']}")
            for k in kernels:
                with contextlib.suppress(requests.HTTPError):
                    self.api("DELETE", f"kernels/{k}")

    def stop(self) -> None:
        with contextlib.suppress(requests.RequestException):
            self.shutdown_kernels()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def desk_tab(lab: Lab) -> Iterator[tuple[Page, list[str]]]:
    """desk.ipynb open in JupyterLab in headless Chromium, every cell run and the grid drawn;
    yields the page and the console errors seen. Closes the browser and shuts the kernel down."""
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(180_000)
            page.goto(f"{lab.url}/lab/tree/desk.ipynb?reset&token={lab.token}")
            page.locator(".jp-Notebook").first.wait_for()
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for()
            run_all(page)
            page.locator(".wbg-r").first.wait_for()
            page.wait_for_timeout(5_000)  # every widget's first draws
            yield page, errors
        finally:
            browser.close()
            lab.shutdown_kernels()


def run_all(page: Page, attempts: int = 3) -> None:
    """Run → Run All Cells, again if no cell has started 20 s later: a click that comes while
    JupyterLab is still connecting its kernel runs nothing (seen once in three runs)."""
    for _ in range(attempts):
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        with contextlib.suppress(PlaywrightTimeout):
            page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]")).first.wait_for(
                timeout=20_000
            )
            return
    raise RuntimeError(f"Run All started no cell in {attempts} attempts")


# --- measuring ----------------------------------------------------------------------------


def _histogram(svc: workbench.Client) -> np.ndarray:
    agg = status_proc(svc.status(), "aggregator")
    wire = (agg or {}).get("histograms", {}).get("flush_to_publish")
    if not wire:
        raise RuntimeError("the aggregator reports no flush_to_publish histogram")
    return np.asarray(wire, dtype=np.float64)


def _chromium_pids() -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(b"/usr/lib/chromium/"):
                    out.append(int(entry.name))
    return out


def _groups(svc: workbench.Client, lab: Lab) -> dict[str, list[int]]:
    """Process groups whose CPU is counted: each service process, JupyterLab, kernel, browser."""
    groups = {name: [pid] for name, pid in service_pids(svc).items()}
    groups["jupyterlab server"] = [lab.proc.pid]
    groups["notebook kernel"] = lab.kernel_pids()
    groups["chromium"] = _chromium_pids()
    groups["this benchmark"] = [os.getpid()]
    return groups


def measure(svc: workbench.Client, lab: Lab, setting: str, seconds: float) -> Window:
    """One window of ``seconds``: the flushes published meanwhile and every group's CPU."""
    groups = _groups(svc, lab)
    cpu0 = {p: cpu_seconds(p) for pids in groups.values() for p in pids}
    h0, t0 = _histogram(svc), time.monotonic()
    time.sleep(seconds)
    h1, t1 = _histogram(svc), time.monotonic()
    cpu1 = {p: cpu_seconds(p) for pids in groups.values() for p in pids}
    elapsed = t1 - t0
    cpu = {}
    for name, pids in groups.items():
        used = sum((cpu1[p] or 0.0) - (cpu0[p] or 0.0) for p in pids
                   if cpu0[p] is not None and cpu1[p] is not None)  # fmt: skip
        cpu[name] = used / elapsed * 100.0
    diff = h1 - h0
    counts = diff[:-1]
    if np.any(counts < 0):  # the aggregator restarted: its counts began again
        counts = h1[:-1]
    n = float(counts.sum())
    edges = list(BUCKETS_MS)
    within = {b: float(counts[: edges.index(b) + 1].sum()) / n if n else float("nan")
              for b in (25.0, 50.0)}  # fmt: skip
    return Window(setting, elapsed, int(n), within[25.0], within[50.0],
                  bucket_quantile(counts, 0.5), bucket_quantile(counts, 0.99), cpu)  # fmt: skip


def _q(q: tuple[float, float, float]) -> str:
    lo, hi, inside = q
    return f"({lo:g}, {hi:g}] ms ≈{inside:.1f}"


def _loss(loss: LossConfig) -> str:
    """The loss process as the setting line says it."""
    if not loss.enabled:
        return "off"
    return f"every {loss.every_s:g} s, " + (
        "between the flushes" if loss.between_flushes else "any time"
    )


def _print(w: Window) -> None:
    busy = sorted(w.cpu.items(), key=lambda kv: -kv[1])
    total = sum(v for k, v in w.cpu.items() if k != "this benchmark")
    print(f"  {w.setting:<5} {w.seconds:.0f} s: {w.flushes / w.seconds:.1f} flushes/s, "
          f"≤ 25 ms {w.within_25:.1%}, ≤ 50 ms {w.within_50:.1%}, p50 {_q(w.p50)}, "
          f"p99 {_q(w.p99)}" + (f", console errors {w.console_errors}" if w.console_errors
                                else ""))  # fmt: skip
    print(f"        CPU, % of one core (all counted: {total:.0f}%): "
          + ", ".join(f"{k} {v:.0f}" for k, v in busy if v >= 0.5))  # fmt: skip
    rate = w.flushes / w.seconds
    if rate > 0:
        service = [k for k in w.cpu if k in SERVICE_ROLES or k.split("-")[0] in SERVICE_ROLES]
        per = ", ".join(f"{k} {w.cpu[k] * 10.0 / rate:.1f}" for k in sorted(service))
        print(f"        CPU per flush, ms: {per}")


def _summary(windows: list[Window], setting: str) -> dict[str, float]:
    ws = [w for w in windows if w.setting == setting]
    out = {
        "p99": statistics.median(w.p99[2] for w in ws),
        "p99_hi": statistics.median(w.p99[1] for w in ws),
        "p50": statistics.median(w.p50[2] for w in ws),
        "within_25": statistics.median(w.within_25 for w in ws),
    }

    def span(values: list[float], fmt: str) -> str:
        return f"median {fmt.format(statistics.median(values))}, min–max " \
               f"{fmt.format(min(values))}–{fmt.format(max(values))}"  # fmt: skip

    print(f"  {setting:<5} (n={len(ws)}): p99 ≈ {span([w.p99[2] for w in ws], '{:.1f}')} ms "
          f"(bucket upper bound {span([w.p99[1] for w in ws], '{:g}')}); p50 ≈ "
          f"{span([w.p50[2] for w in ws], '{:.1f}')} ms; ≤ 25 ms "
          f"{span([w.within_25 for w in ws], '{:.1%}')}")  # fmt: skip
    return out


def main() -> int:
    parser = service_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    options = service_options(args)
    goal_ms = 25.0 if args.rate <= 5_000 else 50.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    windows: list[Window] = []
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        folder = Path(tmp)
        svc: workbench.Client | None = None
        lab: Lab | None = None
        try:
            t0 = time.monotonic()
            svc, root, _ = reference_service(folder, NAME, positions=args.positions,
                                             rate=args.rate, **options)  # fmt: skip
            lab = Lab(folder, root)
            print(f"setting: the service ({args.positions:,} positions, synthetic feed at "
                  f"{args.rate:,.0f} ticks/s, workers {svc.descriptor.config.workers}, "
                  f"service_nice {svc.descriptor.config.service_nice}, live VaR "
                  f"{_loss(svc.descriptor.config.loss)}) and "
                  f"JupyterLab ready after {time.monotonic() - t0:.1f} s; machine: "
                  f"{machine()}")  # fmt: skip
            for r in range(1, args.rounds + 1):
                print(f"round {r}/{args.rounds}:")
                with desk_tab(lab) as (_page, errors):
                    n_err = len(errors)
                    w = measure(svc, lab, "lab", args.seconds)
                    w.console_errors = len(errors) - n_err
                    windows.append(w)
                    _print(w)
                time.sleep(5.0)  # the kernel gone, the service's queues drained
                w = measure(svc, lab, "alone", args.seconds)
                windows.append(w)
                _print(w)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"over {args.rounds} rounds (load average at the end {load}):")
            with_desk = _summary(windows, "lab")
            alone = _summary(windows, "alone")
            print(f"  ratio lab / alone of the medians: p99 {with_desk['p99'] / alone['p99']:.2f}×,"
                  f" p50 {with_desk['p50'] / alone['p50']:.2f}×")  # fmt: skip
        finally:
            if lab is not None:
                lab.stop()
            forced = stop_service(svc)
            if forced:
                print(f"clean-up by force: {'; '.join(forced)}")
    ok = with_desk["p99_hi"] <= goal_ms
    print(f"{'PASS' if ok else 'FAIL'}: p99 flush → publish ≤ {goal_ms:g} ms at "
          f"{args.rate:,.0f} ticks/s with the desk attached (median of the rounds' bucket "
          f"upper bounds: {with_desk['p99_hi']:g} ms)")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
