"""What a worker's cProfile saw, as plain rows for the wire: a function table and a call tree.

:func:`profile_rows` is the flat table (one row per function). :func:`call_tree` is the icicle
(flame) chart's data, built the way snakeviz builds its icicle from ``pstats``: pstats keeps,
per function, ``stats[func] = (cc, nc, tt, ct, callers)`` with ``callers[caller] = (cc, nc, tt,
ct)`` — the calls and times of ``func`` when called from ``caller`` (edge totals). Inverting
``callers`` gives each function's callees; walking them from the roots gives the tree.

cProfile keeps caller → callee totals, not whole stacks. The roots and their direct callees are
exact (for a root only ever called from outside the profile); below that, a function reached
along several paths has its callees' time split among the paths in proportion to the time it
spent on each (as snakeviz and gprof do), so deeper widths are estimates: a callee that is slow
only when called from one caller shows up, scaled down, under every caller.

Every value is a plain ``str``/``int``/``float`` so the rows go into a msgpack reply as they are.
"""

from __future__ import annotations

import cProfile
import heapq
import os
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

Func: TypeAlias = tuple[str, int, str]
"""pstats' key of a function: (file, first line, name); built-ins have file ``~`` and line 0."""

Edge: TypeAlias = tuple[int, int, float, float]
"""pstats' caller entry: (primitive calls, calls, own s, cumulative s) of a callee."""

StatsTable: TypeAlias = Mapping[Func, tuple[int, int, float, float, Mapping[Func, Edge]]]
"""pstats' ``Stats.stats``: function → (primitive calls, calls, own s, cumulative s, callers)."""

MAX_DEPTH: Final = 12
"""Rows of the call tree (depth 0 … 11) kept by default."""

MIN_SHARE: Final = 0.005
"""Default smallest node kept, as a share of the roots' total time (0.5 %)."""

MAX_NODES: Final = 400
"""Default cap on the call tree's nodes (about 60 kB of msgpack)."""

TREE_COLUMNS: Final[dict[str, type]] = {
    "id": int,
    "parent": int,
    "function": str,
    "file": str,
    "line": int,
    "depth": int,
    "start_s": float,
    "cum_s": float,
    "own_s": float,
}
"""The fields of a call-tree node (:func:`tree_from_stats`) and their types."""

_EPSILON_S: Final = 1e-6


def _stats(profiler: cProfile.Profile) -> StatsTable:
    """The profiler's table in pstats' form (``pstats.Stats(profiler).stats``, which refuses an
    empty profile; this gives ``{}``)."""
    profiler.create_stats()
    return dict(profiler.stats)


def _is_profiler_frame(func: Func) -> bool:
    """The profiler's own frames (``cProfile``/``pstats`` code, ``Profile.disable``)."""
    file, _, name = func
    base = os.path.basename(file)
    return base in ("cProfile.py", "pstats.py") or "_lsprof.Profiler" in name


def profile_rows(profiler: cProfile.Profile, top: int = 40) -> list[dict[str, Any]]:
    """The ``top`` functions by own time: ``function``, ``file`` (base name), ``line``,
    ``calls``, ``primitive_calls`` (calls not made by recursion), ``tottime_s`` (own time,
    seconds) and ``cumtime_s`` (own time plus callees', seconds)."""
    rows: list[dict[str, Any]] = []
    for (file, line, func), (cc, nc, tt, ct, _) in _stats(profiler).items():
        rows.append(
            {
                "function": func,
                "file": os.path.basename(file),
                "line": line,
                "calls": nc,
                "primitive_calls": cc,
                "tottime_s": tt,
                "cumtime_s": ct,
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


def call_tree(
    profiler: cProfile.Profile,
    *,
    max_depth: int = MAX_DEPTH,
    min_share: float = MIN_SHARE,
    max_nodes: int = MAX_NODES,
) -> list[dict[str, Any]]:
    """The call tree of a (disabled) profiler as flat nodes, ready to draw as an icicle.

    See :func:`tree_from_stats`, which this calls on the profiler's pstats table.
    """
    return tree_from_stats(
        _stats(profiler), max_depth=max_depth, min_share=min_share, max_nodes=max_nodes
    )


def tree_from_stats(
    stats: StatsTable,
    *,
    max_depth: int = MAX_DEPTH,
    min_share: float = MIN_SHARE,
    max_nodes: int = MAX_NODES,
) -> list[dict[str, Any]]:
    """The call tree of a pstats table as flat nodes, parents before their children.

    Parameters
    ----------
    stats
        pstats' ``Stats.stats``. The profiler's own frames are left out.
    max_depth
        Rows kept (depth 0 … ``max_depth - 1``); deeper calls stay in their ancestor's ``own_s``.
    min_share
        Smallest node kept, as a share of the roots' total time; smaller callees stay in their
        parent's ``own_s``.
    max_nodes
        Most nodes returned; the heaviest are kept (a node always comes with its ancestors).

    Returns
    -------
    list of dict
        One dict per node: ``id`` (0, 1, … in depth-first order), ``parent`` (its parent's
        ``id``, -1 for a root), ``function``, ``file`` (base name), ``line``, ``depth`` (0 for a
        root), ``start_s`` (where the node starts, seconds from the left edge of the whole
        chart: the parent's ``start_s`` plus the ``cum_s`` of the siblings before it, heaviest
        first, so children lie side by side inside their parent's span), ``cum_s`` (seconds
        spent in this call path, callees included) and ``own_s`` (the part of ``cum_s`` not
        drawn as children: the function's own time plus callees too small, too deep or
        recursive). A renderer needs no tree logic: x = ``start_s`` / total, width = ``cum_s`` /
        total, row = ``depth``, where total is the sum of the roots' ``cum_s``.

    Notes
    -----
    Roots are the functions called from outside the profile (from frames that were already
    running when the profiler started, or by the profiler's own frames): a function's root time
    is its cumulative time less what its callers inside the profile account for. A node's time is
    the edge total ``stats[child][4][parent][3]`` scaled by the share of the parent function's
    cumulative time this path holds (1 for a root only called from outside, so it and its
    direct callees are exact), and children are scaled down together should they add up to more
    than their parent. A function already on the path to a node is not expanded again under it
    (recursion).

    Examples
    --------
    >>> stats = {
    ...     ("m.py", 1, "main"): (1, 1, 0.25, 1.0, {}),
    ...     ("m.py", 9, "work"): (2, 2, 0.75, 0.75, {("m.py", 1, "main"): (2, 2, 0.75, 0.75)}),
    ... }
    >>> [(n["function"], n["parent"], n["cum_s"], n["own_s"]) for n in tree_from_stats(stats)]
    [('main', -1, 1.0, 0.25), ('work', 0, 0.75, 0.75)]
    """
    funcs = {f: v for f, v in stats.items() if not _is_profiler_frame(f)}
    callees: dict[Func, dict[Func, float]] = {}
    from_inside: dict[Func, float] = {}
    for func, (_, _, _, _, callers) in funcs.items():
        for caller, edge in callers.items():
            if caller in funcs:
                callees.setdefault(caller, {})[func] = float(edge[3])
                if caller != func:
                    from_inside[func] = from_inside.get(func, 0.0) + float(edge[3])
    roots: dict[Func, float] = {}
    for func, (_, _, _, ct, _) in funcs.items():
        outside = float(ct) - from_inside.get(func, 0.0)
        if outside > _EPSILON_S:  # more than float noise between the same timer readings
            roots[func] = outside
    if not roots and funcs:  # every function called from inside: a cycle with no way in
        top = max(funcs, key=lambda f: (funcs[f][3], f))
        roots[top] = float(funcs[top][3])
    total = sum(roots.values())
    if total <= 0.0 or max_nodes <= 0 or max_depth <= 0:
        return []
    smallest = min_share * total

    # best first: the heaviest open node next, so the cap keeps the heaviest; children enter the
    # heap only once their parent is picked, so every node comes with its ancestors
    picked: list[tuple[int, Func, int, float]] = []  # (parent index, function, depth, seconds)
    heap: list[tuple[float, int, int, Func, int, tuple[Func, ...]]] = []
    seq = 0
    for func, secs in roots.items():
        if secs >= smallest:
            heap.append((-secs, seq, -1, func, 0, (func,)))
            seq += 1
    heapq.heapify(heap)
    while heap and len(picked) < max_nodes:
        neg, _, parent, func, depth, path = heapq.heappop(heap)
        secs = -neg
        index = len(picked)
        picked.append((parent, func, depth, secs))
        if depth + 1 >= max_depth:
            continue
        kids = {c: t for c, t in callees.get(func, {}).items() if c not in path and t > 0.0}
        func_ct = float(funcs[func][3])
        scale = secs / func_ct if func_ct > 0.0 else 0.0
        kid_total = sum(kids.values()) * scale
        if kid_total > secs > 0.0:
            scale *= secs / kid_total
        for child, edge_s in kids.items():
            child_s = edge_s * scale
            if child_s >= smallest:
                heapq.heappush(heap, (-child_s, seq, index, child, depth + 1, (*path, child)))
                seq += 1
    return _layout(picked)


def _layout(picked: list[tuple[int, Func, int, float]]) -> list[dict[str, Any]]:
    """Nodes in depth-first order with their offsets; siblings heaviest first."""
    children: dict[int, list[int]] = {}
    for i, (parent, _, _, _) in enumerate(picked):
        children.setdefault(parent, []).append(i)

    def order(i: int) -> tuple[float, str, int]:
        return (-picked[i][3], picked[i][1][2], i)

    nodes: list[dict[str, Any]] = []
    roots = sorted(children.get(-1, []), key=order)
    stack: list[tuple[int, int, float]] = []  # (picked index, parent node id, start s)
    start = 0.0
    for i in roots:
        stack.append((i, -1, start))
        start += picked[i][3]
    stack.reverse()
    while stack:
        i, parent_id, start_s = stack.pop()
        _, func, depth, secs = picked[i]
        node_id = len(nodes)
        kids = sorted(children.get(i, []), key=order)
        shown = sum(picked[k][3] for k in kids)
        nodes.append(
            {
                "id": node_id,
                "parent": parent_id,
                "function": func[2],
                "file": os.path.basename(func[0]),
                "line": func[1],
                "depth": depth,
                "start_s": start_s,
                "cum_s": secs,
                "own_s": max(secs - shown, 0.0),
            }
        )
        offsets = []
        at = start_s
        for k in kids:
            offsets.append((k, node_id, at))
            at += picked[k][3]
        stack.extend(reversed(offsets))
    return nodes
