"""Processes seen from /proc, for the leak checks (no workbench import: conftest loads this
before it points the caches at the test run's folders)."""

from __future__ import annotations

from pathlib import Path


def parents() -> dict[int, int]:
    """Every live (non-zombie) process's parent pid, from /proc (no extra dependency)."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent_of[int(stat.parent.name)] = int(fields[1])
    return parent_of


def descendants(pid: int, parent_of: dict[int, int] | None = None) -> set[int]:
    """Pids of ``pid``'s live (non-zombie) descendants (``parent_of``: :func:`parents`)."""
    if parent_of is None:
        parent_of = parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parent_of.items() if pp in frontier} - found
        found |= frontier
    return found
