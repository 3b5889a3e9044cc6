"""Starting and ending whole services: kill -9 of everything then reap, and the CLI's
serve --detach / status / stop.

Kept apart from ``test_service.py`` so that its long-lived ticking service is gone before these
start: two services on a 2-core machine starve each other's start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from service_helpers import PATHS, make_files, start, wait

import workbench
from workbench.client import ServiceError


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_files(tmp_path_factory.mktemp("lifecycle"))


def test_kill_9_the_whole_service_leaves_orphans_that_are_reaped(
    files: tuple[Path, Path],
) -> None:
    svc = start(files, "doomed", feed="none")
    pids = [p["pid"] for p in svc.status()["processes"]] + [svc.descriptor.pid]
    segments = list(svc.descriptor.config.segments.values())
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert svc._process is not None
    svc._process.wait(10)
    svc.close()
    for pid in pids:  # spawn children are reparented; wait for them to be gone
        wait(lambda pid=pid: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, f"{pid}")
    assert all(Path("/dev/shm", s).exists() for s in segments)
    out = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "reap"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(s in out.stdout for s in segments), out.stdout
    assert not any(Path("/dev/shm", s).exists() for s in segments)
    with pytest.raises(ServiceError, match="no running workbench service"):
        workbench.connect("doomed")


def test_recon_raises_a_breach_when_the_booking_file_changes(tmp_path: Path) -> None:
    """The recon job on its timer: nothing while the file matches the engine's book, a
    ``recon`` breach in the snapshots once a notional on file differs, cleared again when the
    file is put back."""
    book, market = make_files(tmp_path)
    original = book.read_bytes()
    svc = start((book, market), "recon", feed="none", recon_s=0.5)
    try:

        def breaches() -> list[str]:
            return [b.measure for b in svc.latest(timeout_s=5.0).breaches]

        time.sleep(2.0)  # several recon rounds on the unchanged file
        assert not any(m.startswith("recon") for m in breaches())
        frame = pl.read_parquet(book)
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 7)
            .then(pl.col("notional") * 2.0)
            .otherwise(pl.col("notional"))
            .alias("notional")
        )
        frame.write_parquet(book)
        wait(lambda: "recon" in breaches(), 30, "a recon breach")
        book.write_bytes(original)
        wait(lambda: "recon" not in breaches(), 30, "the recon breach cleared")
    finally:
        svc.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_cli_serve_status_stop(files: tuple[Path, Path]) -> None:
    book, market = files
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "workbench.cli"]
    out = subprocess.run(
        [*cmd, "serve", "--book", str(book), "--market", str(market), "--name", "cli",
         "--feed", "none", "--paths", str(PATHS), "--detach"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    try:
        st = subprocess.run(
            [*cmd, "status", "--name", "cli"], capture_output=True, text=True, timeout=60
        )
        assert st.returncode == 0, st.stderr
        assert "rates-0" in st.stdout
        assert "ready" in st.stdout
    finally:
        stop = subprocess.run(
            [*cmd, "stop", "--name", "cli"], capture_output=True, text=True, timeout=60
        )
    assert stop.returncode == 0, stop.stderr
    # the supervisor was started detached (not our child): wait for its segments to go
    wait(lambda: not any(p.name.endswith("_cli_risk") for p in Path("/dev/shm").iterdir()), 20,
          "segments unlinked")  # fmt: skip
    missing = subprocess.run([*cmd, "status", "--name", "cli"], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "no running workbench service" in missing.stderr
