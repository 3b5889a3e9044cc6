"""The one line every benchmark prints about where it ran."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import numpy as np


def machine(*extra: str) -> str:
    """CPU model, cores, memory, kernel, Python and NumPy, then ``extra`` (other versions,
    settings), comma-separated."""
    cpu = platform.processor() or "unknown CPU"
    mem = "? GiB"
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB"
    parts = [
        cpu,
        f"{os.cpu_count()} cores",
        mem,
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
        f"NumPy {np.__version__}",
        *extra,
    ]
    return ", ".join(parts)
