"""What a browser test reads of the widgets: the bqplot figures of a page (points of each line,
bars drawn, axis tick labels as numbers), HTML tables, the widget messages a page receives on
its kernel websockets, and values in the kernel itself (through its connection file)."""

from __future__ import annotations

import ast
import bisect
import contextlib
import json
import math
import queue
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient
from procs import descendants

_FIGURES_JS = """() => Array.from(document.querySelectorAll('.bqplot.figure'), fig => ({
    title: (fig.querySelector('.mainheading') || {}).textContent || '',
    paths: Array.from(fig.querySelectorAll('path.line'))
        .filter(p => !p.closest('g[class*="legend"]'))
        .map(p => p.getAttribute('d') || ''),
    bars: Array.from(fig.querySelectorAll('rect.bar')).filter(r =>
        parseFloat(r.getAttribute('width') || '0') > 0 &&
        parseFloat(r.getAttribute('height') || '0') > 0).length,
    axes: Array.from(fig.querySelectorAll('g.axis'))
        .filter(a => a.querySelector('path.domain'))
        .map(a => ({
            vertical: /^M[^A-Za-z]*H/.test(a.querySelector('path.domain').getAttribute('d') || ''),
            ticks: Array.from(a.querySelectorAll('.tick text'), t => t.textContent || ''),
        })),
}))"""


def points(d: str) -> int:
    """Points of an SVG path ``d`` with finite coordinates (``M``/``L`` commands)."""
    n = 0
    for seg in re.split(r"[ML]", d)[1:]:
        xy = [float(v) for v in re.findall(r"-?[\d.]+(?:e[+-]?\d+)?|NaN", seg)[:2]]
        n += len(xy) == 2 and all(math.isfinite(v) for v in xy)
    return n


def charts(page: Any, title: str) -> list[dict[str, Any]]:
    """The bqplot figures whose title contains ``title``: ``points`` per line, ``bars`` drawn,
    ``axes`` (``vertical``, ``ticks`` text)."""
    found: list[dict[str, Any]] = page.evaluate(_FIGURES_JS)
    out = []
    for fig in found:
        if title in fig["title"]:
            fig["points"] = [points(d) for d in fig.pop("paths")]
            out.append(fig)
    return out


def least_points(page: Any, title: str) -> int:
    """Fewest points of any line of the figures titled ``title`` (0: none drawn or no figure)."""
    counts = [p for fig in charts(page, title) for p in fig["points"]]
    return min(counts) if counts else 0


_SI = {"y": -24, "z": -21, "a": -18, "f": -15, "p": -12, "n": -9, "µ": -6, "m": -3, "": 0,
       "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18, "Z": 21, "Y": 24}  # fmt: skip


def tick_number(text: str) -> float:
    """An axis tick label (``1.23M``, ``−45.6k``, ``1,200``, ``0.25``) as a float."""
    t = text.replace("\u2212", "-").replace(",", "").strip()
    m = re.fullmatch(r"(-?[\d.]+(?:e[+-]?\d+)?)([yzafpnµmkMGTPEZY]?)", t)
    assert m is not None, f"not a number: {text!r}"
    return float(m.group(1)) * 10.0 ** _SI[m.group(2)]


def value_ticks(fig: dict[str, Any]) -> list[float]:
    """The numbers of a figure's vertical axis (fails on a label that is not a number)."""
    (axis,) = [a for a in fig["axes"] if a["vertical"]]
    return [tick_number(t) for t in axis["ticks"]]


def assert_readable_ticks(fig: dict[str, Any], values: list[float]) -> None:
    """The vertical axis shows at least two distinct numbers, and ``values`` (the kernel's)
    lie within its ticks widened by one tick step."""
    ticks = value_ticks(fig)
    assert len(ticks) >= 2, (fig["title"], fig["axes"])
    assert len(set(ticks)) == len(ticks), f"{fig['title']}: repeated tick labels {ticks}"
    step = (max(ticks) - min(ticks)) / (len(ticks) - 1)
    lo, hi = min(ticks) - step, max(ticks) + step
    assert all(lo <= v <= hi for v in values), (fig["title"], ticks, min(values), max(values))


def kernel_message(payload: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and content of a kernel websocket frame: JSON text, the ``v1`` binary protocol
    (offsets as little-endian uint64, then channel, header, parent, metadata, content, buffers)
    or the older binary one (big-endian uint32 offsets, then the JSON message, buffers)."""
    if isinstance(payload, str):
        msg = json.loads(payload)
        return msg["header"], msg["content"]
    if payload[:1] != b"\0":
        n = int.from_bytes(payload[:8], "little")
        off = [int.from_bytes(payload[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(n)]
        return json.loads(payload[off[1] : off[2]]), json.loads(payload[off[4] : off[5]])
    n = int.from_bytes(payload[:4], "big")
    off = [int.from_bytes(payload[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(n)]
    msg = json.loads(payload[off[0] : off[1] if n > 1 else len(payload)])
    return msg["header"], msg["content"]


class CommLog:
    """The widget messages a page receives on its kernel websockets: each model's module and
    name (from its ``comm_open``, or the widget manager's ``update_states`` under Voila) and
    when the kernel sent each ``update`` of it (its header's date, wall clock, seconds)."""

    def __init__(self, page: Any) -> None:
        self.models: dict[str, tuple[str, str]] = {}
        self.sent: dict[str, list[float]] = {}
        page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        if "/channels" in ws.url:
            ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        header, content = kernel_message(payload)
        data = content.get("data") or {}
        if header.get("msg_type") == "comm_open":
            state = data.get("state") or {}
            self.models[content["comm_id"]] = (state.get("_model_module"), state.get("_model_name"))
        elif header.get("msg_type") == "comm_msg" and data.get("method") == "update":
            when = datetime.fromisoformat(header["date"]).timestamp()
            self.sent.setdefault(content["comm_id"], []).append(when)
        elif header.get("msg_type") == "comm_msg" and data.get("method") == "update_states":
            for model, st in (data.get("states") or {}).items():
                self.models[model] = (st.get("model_module"), st.get("model_name"))

    def chart_rates(self, since: float = 0.0) -> dict[str, int]:
        """Per chart model (bqplot marks, axes, figures, scales): most updates the kernel sent
        in any one second after ``since`` (wall clock, seconds)."""
        out: dict[str, int] = {}
        for model, times in self.sent.items():
            module, name = self.models.get(model, ("?", "?"))
            if module not in ("bqplot", "bqscales"):
                continue
            ts = sorted(t for t in times if t >= since)
            most = max((bisect.bisect_left(ts, t + 1.0) - i for i, t in enumerate(ts)), default=0)
            out[f"{name} {model[:8]}"] = most
        return out


def kernel_connection(parent_pid: int) -> Path:
    """The connection file of the one kernel ``parent_pid`` (Lab or Voila) runs."""
    files_: list[Path] = []
    for pid in descendants(parent_pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            if "ipykernel_launcher" in " ".join(argv) and "-f" in argv:
                files_.append(Path(argv[argv.index("-f") + 1]))
    assert len(files_) == 1, f"kernels of {parent_pid}: {files_}"
    return files_[0]


def in_kernel(connection: Path, expression: str, *, code: str = "", timeout_s: float = 60.0) -> Any:
    """The value of ``expression`` (JSON-serialisable) in a running kernel after ``code`` ran
    there, asked silently on its shell channel (the notebook's page shows nothing of it).

    Only the shell channel is opened: ``wait_for_ready`` drains IOPub until it is quiet for
    0.2 s, which a kernel whose widgets publish ten updates a second seldom is (minutes)."""
    kc = BlockingKernelClient()
    kc.load_connection_file(str(connection))
    kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        msg_id = kc.execute(
            code,
            silent=True,
            store_history=False,
            user_expressions={"v": f"__import__('json').dumps({expression})"},
        )
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no reply from the kernel of {connection} within {timeout_s} s"
            with contextlib.suppress(queue.Empty):
                reply = kc.get_shell_msg(timeout=left)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        assert reply["content"]["status"] == "ok", reply["content"]
        value = reply["content"]["user_expressions"]["v"]
        assert value["status"] == "ok", value
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))
    finally:
        kc.stop_channels()


def table_rows(page: Any, header: str) -> list[list[str]]:
    """Body rows (cell texts) of the tables whose header row has a cell ``header``."""
    rows: list[list[str]] = page.evaluate(
        """h => Array.from(document.querySelectorAll('table'))
            .filter(t => Array.from(t.querySelectorAll('th'), c => c.textContent).includes(h))
            .flatMap(t => Array.from(t.querySelectorAll('tr')).slice(1)
                .map(r => Array.from(r.children, c => c.textContent || '')))""",
        header,
    )
    return rows
