"""The API's interactive page (``/docs``) in headless Chromium with no way out of the machine:
Swagger UI draws every operation from files this server sends, with no console error and no
request to another host.

The API follows a service that is not running (the page does not need one), started with
``--nice 3``: it runs 3 nicer than the tests.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import playwright.sync_api as playwright_sync
import pytest
from service_helpers import wait
from test_api_support import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip

assert CHROMIUM.exists(), f"{CHROMIUM} is missing: .ci/run installs it with apt-get"
pytestmark = [pytest.mark.slow]


NICE = 3


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``workbench api --nice 3`` on a free loopback port, following no running service: its
    URL and pid."""
    folder = tmp_path_factory.mktemp("api-docs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "api.log"
    env = {**os.environ, "HOME": str(folder), "WORKBENCH_RUN_DIR": str(folder / "run")}
    env.pop("WORKBENCH_API_TOKENS", None)  # no tokens: loopback only
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "api", "--service", "nosuchservice",
             "--port", str(port), "--nice", str(NICE)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
        return False

    try:
        wait(up, 60, "the API answers")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_api_runs_at_the_niceness_asked(api: tuple[str, int]) -> None:
    assert os.getpriority(os.PRIO_PROCESS, api[1]) == min(os.nice(0) + NICE, 19)


def test_docs_draw_every_operation_offline(api: tuple[str, int], tmp_path: Path) -> None:
    api_url = api[0]
    operations = {
        (method.upper(), path)
        for path, item in httpx.get(f"{api_url}/openapi.json").json()["paths"].items()
        for method in item
    }
    assert len(operations) >= 10, operations
    host = urlsplit(api_url).netloc
    outside: list[str] = []
    errors: list[str] = []
    with playwright_sync.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:

            def route(r: Any) -> None:
                if urlsplit(r.request.url).netloc == host or r.request.url.startswith("data:"):
                    r.continue_()
                else:  # the machine has no way out: a request leaving it fails
                    outside.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            page.goto(f"{api_url}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            drawn = page.eval_on_selector_all(
                ".opblock",
                "els => els.map(e => [e.querySelector('.opblock-summary-method').textContent,"
                " e.querySelector('.opblock-summary-path').getAttribute('data-path')])",
            )
            title = page.text_content(".information-container .title") or ""
        finally:
            context.close()
    assert not outside, f"requests leaving the host: {outside}"
    assert not errors, f"console errors: {errors[:3]}"
    assert "workbench risk API" in title
    assert {(m.upper(), p) for m, p in drawn} == operations
