"""Loaded at start-up by every Python process of a service under test (through ``PYTHONPATH``).

While the file named by ``WB_TEST_WALL_SHIFT_FILE`` holds a number, ``time.time()`` and
``time.time_ns()`` return the real wall-clock time shifted by that many seconds — what an
operator's ``date -s`` or an NTP step does to the wall clock. ``time.monotonic`` is left alone,
as the kernel leaves ``CLOCK_MONOTONIC`` alone on such a jump.
"""

from __future__ import annotations

import os
import time

_PATH = os.environ.get("WB_TEST_WALL_SHIFT_FILE")

if _PATH:
    _real_time = time.time
    _real_time_ns = time.time_ns

    def _shift_s() -> float:
        try:
            with open(_PATH) as f:
                return float(f.read().strip() or 0.0)
        except (OSError, ValueError):
            return 0.0

    def _time() -> float:
        return _real_time() + _shift_s()

    def _time_ns() -> int:
        return _real_time_ns() + int(_shift_s() * 1e9)

    time.time = _time
    time.time_ns = _time_ns
