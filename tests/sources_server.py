"""A quote server for the polling-source tests: a real HTTP server in its own process.

``python sources_server.py PORT`` serves ``GET /quotes`` in the polling format
(docs/ticks.md) and takes orders on ``POST /control`` (JSON): ``quotes`` ({id: [value, seq]}
replaces the quotes served), ``mode`` (``ok``, ``slow`` — wait ``delay_s`` first —, ``error``
— 503 —, ``missing`` — 404 —, ``large`` — 5 MiB —, ``garbage`` — not JSON —, ``shape`` — JSON
of the wrong shape —, ``partial`` — the first quote only and an entry without ``seq``) and
``delay_s``. ``GET /served`` answers how
many ``/quotes`` requests it has had. It prints ``ready`` once it listens. The test stops it
by pid and starts it again on the same port.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from workbench.engine.processes.lifetime import die_with_parent


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.quotes: dict[str, list[Any]] = {}
        self.mode = "ok"
        self.delay_s = 0.0
        self.served = 0


STATE = _State()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the poller gave up on a slow reply
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/served":
            self._reply(200, json.dumps({"served": STATE.served}).encode())
            return
        with STATE.lock:
            STATE.served += 1
            mode, delay, quotes = STATE.mode, STATE.delay_s, dict(STATE.quotes)
        entries = [{"id": q, "value": v, "seq": s} for q, (v, s) in quotes.items()]
        if mode == "slow":
            time.sleep(delay)
        if mode == "error":
            self._reply(503, b'{"error": "unavailable"}')
        elif mode == "garbage":
            self._reply(200, b"<html>Service Unavailable</html>")
        elif mode == "missing":
            self._reply(404, b'{"error": "no such page"}')
        elif mode == "large":
            self._reply(200, b'{"quotes": [], "pad": "' + b"x" * (5 << 20) + b'"}')
        elif mode == "shape":
            self._reply(200, b'{"quotes": {"CDX.IG.5Y": 0.0055}}')
        elif mode == "partial":
            body = {"quotes": [*entries[:1], {"id": "CDX.HY.5Y", "value": 0.03}]}
            self._reply(200, json.dumps(body).encode())
        else:
            self._reply(200, json.dumps({"quotes": entries}).encode())

    def do_POST(self) -> None:
        order = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with STATE.lock:
            if "quotes" in order:
                STATE.quotes = order["quotes"]
            STATE.mode = order.get("mode", STATE.mode)
            STATE.delay_s = float(order.get("delay_s", STATE.delay_s))
        self._reply(200, b"{}")


class QuoteServer:
    """The server process, seen from the test: start, order, stop, start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait for it to listen."""
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(self.port)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready"

    def order(self, **fields: Any) -> None:
        """Send ``fields`` to ``/control``."""
        httpx.post(f"{self.url}/control", json=fields, timeout=5.0).raise_for_status()

    def served(self) -> int:
        """``/quotes`` requests answered since this process started."""
        return int(httpx.get(f"{self.url}/served", timeout=5.0).json()["served"])

    def stop(self) -> None:
        """Stop the process (by pid) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def main(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until terminated (or the test process exits)."""
    die_with_parent()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
