"""The notebook side on the reference book: what-if latency, kernel responsiveness, grid rate.

Targets (docs/benchmarks.md), 2 cores, the service on the 40,000-position book with the
synthetic feed at 5,000 ticks/s:

- a what-if on one curve returns in ≤ 500 ms (client round trip: shock, reprice on the
  workers, PnL by desk);
- the kernel answers a new cell within 100 ms while the widgets run (a real IPython kernel with
  GreekGrid, GreekHistory and Telemetry live on its event loop; a cell sent by jupyter_client
  every 0.2 s, timed to the kernel's execute_reply);
- the grid sends ≥ 5 updates a second with no backlog, each ≤ 20 KB (counted in the kernel:
  the comm messages the grid emits, which is what a browser receives).

Run: ``python benchmarks/bench_notebook.py [--positions 40000] [--rate 5000] [--seconds 60]``
"""

from __future__ import annotations

import ast
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _reference import reference_service, service_options, service_parser
from jupyter_client.manager import start_new_kernel

from workbench.risk.shocks import ParallelShock, QuoteShock

_KERNEL_SETUP = """
import json, sys
from comm.base_comm import BaseComm as Comm
from workbench.widgets import GreekGrid, GreekHistory, Telemetry

_sizes = []
_send = Comm.send
def _counting(self, data=None, metadata=None, buffers=None):
    _sizes.append(len(json.dumps(data, default=str)) + sum(len(b) for b in buffers or []))
    return _send(self, data=data, metadata=metadata, buffers=buffers)
Comm.send = _counting

grid = GreekGrid({name!r}, run_root={root!r})
hist = GreekHistory({name!r}, run_root={root!r})
tel = Telemetry({name!r}, run_root={root!r})
"""

_KERNEL_READ = (
    "json.dumps({'updates': grid.updates, 'sizes': _sizes[:], 'age': grid.last_update_s})"
)


def _stats_ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"median {statistics.median(ordered):.1f} ms, min {ordered[0]:.1f}, "
        f"p99 {p99:.1f}, max {ordered[-1]:.1f} (n={len(ordered)})"
    )


def _execute(kc: Any, code: str, timeout: float = 30.0) -> tuple[float, str]:
    """Run one cell; seconds from send to the reply, and what it printed."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))

    t0 = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    dt = time.perf_counter() - t0
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    return dt, "".join(out)


def _answer_ms(kc: Any, code: str, timeout: float = 30.0) -> float:
    """Milliseconds from sending a cell to the kernel's ``execute_reply`` on the shell channel.

    The widgets' messages on IOPub (hundreds a second) are left unread here (a subscriber that
    does not read drops them; the kernel never waits for it): this times the kernel, not how
    fast this script can decode their traffic.
    """
    t0 = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    dt = (time.perf_counter() - t0) * 1e3
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    return dt


def _kernel_value(kc: Any, expression: str, timeout: float = 60.0) -> str:
    """The value of ``expression`` in the kernel, read from the execute_reply (the shell
    channel), not from IOPub, where the widgets' traffic is left unread."""
    msg_id = kc.execute("", silent=True, user_expressions={"v": expression})
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    value = reply["content"]["user_expressions"]["v"]
    if value.get("status") != "ok":
        raise RuntimeError(f"{expression}: {value}")
    return str(ast.literal_eval(value["data"]["text/plain"]))


def main() -> None:
    parser = service_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        svc, root, market = reference_service(
            folder, "nb", positions=args.positions, rate=args.rate, **service_options(args)
        )
        print(f"service_nice {svc.descriptor.config.service_nice}")
        try:
            time.sleep(5.0)
            usd_sofr = [i.quote for i in market.curve("USD.SOFR").instruments]
            one_curve = [QuoteShock(quote_id=q, bp=1.0) for q in usd_sofr]
            for label, shocks in (
                ("one curve (USD.SOFR, every pillar +1bp)", one_curve),
                ("every USD curve (+1bp parallel)", [ParallelShock(bp=1.0, currency="USD")]),
                ("every curve (+1bp parallel)", [ParallelShock(bp=1.0)]),
            ):
                times = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    svc.whatif(shocks, by=("desk",))
                    times.append((time.perf_counter() - t0) * 1e3)
                print(f"what-if, {label}: {_stats_ms(times)}")

            km, kc = start_new_kernel(kernel_name="python3")
            try:
                _execute(kc, _KERNEL_SETUP.format(name="nb", root=str(root)), timeout=120)
                time.sleep(5.0)  # the widgets connect and start updating
                first = _kernel_value(kc, _KERNEL_READ)
                t_first = time.monotonic()
                cells = []
                deadline = time.monotonic() + args.seconds
                while time.monotonic() < deadline:
                    cells.append(_answer_ms(kc, "pass"))
                    time.sleep(0.2)
                last = _kernel_value(kc, _KERNEL_READ)
                elapsed = time.monotonic() - t_first
                a, b = json.loads(first), json.loads(last)
                rate = (b["updates"] - a["updates"]) / elapsed
                sizes = b["sizes"][len(a["sizes"]) :]
                print(f"kernel answers a new cell with the widgets live: {_stats_ms(cells)}")
                print(f"grid updates: {rate:.1f} per second over {elapsed:.0f} s; the last took "
                      f"{b['age'] * 1e3:.1f} ms in the kernel")  # fmt: skip
                if sizes:
                    big = sorted(sizes)
                    median_kb = statistics.median(big) / 1e3
                    print(f"comm messages of the widgets: {len(sizes)}, median "
                          f"{median_kb:.1f} KB, max {big[-1] / 1e3:.1f} KB")  # fmt: skip
            finally:
                kc.stop_channels()
                km.shutdown_kernel(now=True)
        finally:
            svc.stop()


if __name__ == "__main__":
    main()
