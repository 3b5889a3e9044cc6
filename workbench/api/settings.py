"""What an API server is started with: the service it follows, its tokens and its bounds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from workbench.api.tokens import TokenBook

MAX_ROWS: Final = 50_000
"""Most rows one answer may hold, by default."""
MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body accepted (bytes)."""
MAX_QUERY_BYTES: Final = 4 * 1024
"""Longest query string accepted (bytes, after the ``?``)."""
MAX_SUBSCRIBERS: Final = 200
"""Most live streams open at once."""


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """An API server's settings.

    Parameters
    ----------
    service
        Name of the service to follow.
    run_root
        Where the service's run directory is (None: the default run root).
    tokens
        The accepted bearer tokens; None: no token is asked (loopback only).
    store
        The risk store's folder (None: ``store`` in the service's run directory).
    max_rows
        Most rows in one answer; more gives 413.
    max_body_bytes, max_query_bytes
        Largest request body and query string (bytes); more gives 413 and 414.
    max_subscribers
        Most live streams at once; more gives 503.
    silence_s
        Seconds without a snapshot after which the service counts as away.
    """

    service: str
    run_root: Path | None = None
    tokens: TokenBook | None = None
    store: Path | None = None
    max_rows: int = MAX_ROWS
    max_body_bytes: int = MAX_BODY_BYTES
    max_query_bytes: int = MAX_QUERY_BYTES
    max_subscribers: int = MAX_SUBSCRIBERS
    silence_s: float = 5.0
