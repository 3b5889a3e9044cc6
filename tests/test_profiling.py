"""The profile's call tree (icicle data) from a real cProfile over a known call graph, the
synthetic cases it must get exactly right, and its HTML rendering."""

from __future__ import annotations

import cProfile
import html
import itertools
import re
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest

from workbench.client.views import profile_frames as _profile_frames
from workbench.engine.protocol import messages as msg
from workbench.engine.telemetry.profiling import (
    MAX_NODES,
    TREE_COLUMNS,
    call_tree,
    profile_rows,
    tree_from_stats,
)
from workbench.widgets.profiler import busy_tree, file_colour, icicle_html

TOL_S = 1e-9  # float sums of the same timer readings


# --- a known call graph: outer → a, a, b; b → a; each sleeps ------------------------------


def a() -> None:
    time.sleep(0.03)


def b() -> None:
    time.sleep(0.01)
    a()


def outer() -> None:
    a()
    a()
    b()


def rec(n: int) -> None:
    time.sleep(0.004)
    if n:
        rec(n - 1)


def ping(n: int) -> None:
    time.sleep(0.003)
    if n:
        pong(n - 1)


def pong(n: int) -> None:
    time.sleep(0.002)
    if n:
        ping(n - 1)


def profiled(*calls: Callable[[], None]) -> cProfile.Profile:
    profiler = cProfile.Profile()
    profiler.enable()
    for call in calls:
        call()
    profiler.disable()
    return profiler


@pytest.fixture(scope="module")
def known() -> tuple[cProfile.Profile, list[dict[str, Any]]]:
    profiler = profiled(outer)
    return profiler, call_tree(profiler)


def children_of(tree: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    kids: dict[int, list[dict[str, Any]]] = {}
    for n in tree:
        kids.setdefault(n["parent"], []).append(n)
    return kids


def path_of(tree: list[dict[str, Any]], node: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Functions from the root down to ``node``."""
    by_id = {n["id"]: n for n in tree}
    path = []
    while True:
        path.append((node["file"], node["function"], node["line"]))
        if node["parent"] == -1:
            return path[::-1]
        node = by_id[node["parent"]]


def check_shape(tree: list[dict[str, Any]], *, tol: float = TOL_S) -> None:
    """Parents before children, depths, spans, own time: what every tree must satisfy."""
    assert [n["id"] for n in tree] == list(range(len(tree)))
    by_id = {n["id"]: n for n in tree}
    for n in tree:
        assert set(n) == set(TREE_COLUMNS)
        for key, kind in TREE_COLUMNS.items():
            assert isinstance(n[key], kind), (key, n)
        assert n["cum_s"] > 0.0
        assert -tol <= n["own_s"] <= n["cum_s"] + tol
        if n["parent"] == -1:
            assert n["depth"] == 0
        else:
            parent = by_id[n["parent"]]
            assert parent["id"] < n["id"]
            assert n["depth"] == parent["depth"] + 1
            # inside the parent's span
            assert n["start_s"] >= parent["start_s"] - tol
            assert n["start_s"] + n["cum_s"] <= parent["start_s"] + parent["cum_s"] + tol
    for parent_id, kids in children_of(tree).items():
        ordered = sorted(kids, key=lambda k: k["start_s"])
        for left, right in itertools.pairwise(ordered):
            assert left["start_s"] + left["cum_s"] <= right["start_s"] + tol  # no overlap
        if parent_id != -1:
            parent = by_id[parent_id]
            shown = sum(k["cum_s"] for k in kids)
            assert shown <= parent["cum_s"] + tol
            assert parent["own_s"] == pytest.approx(parent["cum_s"] - shown, abs=tol)
    roots = sorted(children_of(tree).get(-1, []), key=lambda r: r["start_s"])
    assert roots
    assert roots[0]["start_s"] == 0.0


def test_known_call_graph(known: tuple[cProfile.Profile, list[dict[str, Any]]]) -> None:
    profiler, tree = known
    check_shape(tree)
    kids = children_of(tree)
    roots = kids[-1]
    # the profiler's own disable() is not a root; outer is the only one
    assert [r["function"] for r in roots] == ["outer"]
    assert not any("disable" in n["function"] for n in tree)
    root = roots[0]
    assert root["file"] == "test_profiling.py"
    assert root["cum_s"] >= 0.1  # 3 × a (30 ms) + b's 10 ms
    under_outer = {k["function"]: k for k in kids[root["id"]]}
    assert set(under_outer) == {"a", "b"}
    a_top, b_top = under_outer["a"], under_outer["b"]
    assert a_top["start_s"] == 0.0  # heaviest first: a (2 calls) before b
    assert b_top["start_s"] == pytest.approx(a_top["cum_s"], abs=TOL_S)
    under_b = {k["function"]: k for k in kids[b_top["id"]]}
    assert set(under_b) == {"a", "<built-in method time.sleep>"}
    a_in_b = under_b["a"]
    # a's three calls: two from outer, one from b; together exactly a's cumulative time
    a_stats = next(r for r in profile_rows(profiler) if r["function"] == "a")
    assert a_stats["calls"] == 3
    assert a_top["cum_s"] + a_in_b["cum_s"] == pytest.approx(a_stats["cumtime_s"], abs=1e-6)
    assert a_top["cum_s"] / a_in_b["cum_s"] == pytest.approx(2.0, rel=0.25)
    # a's sleep on this path: a's whole sleep scaled to the path's share of a's time
    sleep_in_a_top = next(k for k in kids[a_top["id"]] if "sleep" in k["function"])
    assert sleep_in_a_top["cum_s"] <= a_top["cum_s"] + TOL_S
    assert sleep_in_a_top["cum_s"] == pytest.approx(a_top["cum_s"], rel=0.02)
    assert sleep_in_a_top["depth"] == 2


def test_profile_rows_and_tree_of_an_empty_profiler() -> None:
    empty = cProfile.Profile()
    assert profile_rows(empty) == []
    assert call_tree(empty) == []
    frames = _profile_frames({"functions": [], "tree": []})
    assert frames["functions"].height == 0
    assert frames["tree"].height == 0
    assert frames["tree"].columns == list(TREE_COLUMNS)
    assert icicle_html(frames["tree"]) == "<i>no samples</i>"
    assert _profile_frames({})["tree"].columns == list(TREE_COLUMNS)  # an older worker


def recursion() -> None:
    rec(6)
    ping(7)


def test_recursion_terminates_and_no_function_repeats_on_a_path() -> None:
    profiler = profiled(recursion)
    tree = call_tree(profiler, max_depth=50, min_share=0.0)
    check_shape(tree)
    for n in tree:
        path = path_of(tree, n)
        assert len(path) == len(set(path)), path
    depth_of = {n["function"]: n["depth"] for n in tree if n["function"] != "recursion"}
    assert (depth_of["rec"], depth_of["ping"], depth_of["pong"]) == (1, 1, 2)
    rec_node = next(n for n in tree if n["function"] == "rec")
    rec_stats = next(r for r in profile_rows(profiler) if r["function"] == "rec")
    assert rec_stats["calls"] == 7  # recursion happened, drawn once
    assert rec_node["cum_s"] == pytest.approx(rec_stats["cumtime_s"], abs=1e-6)
    assert rec_node["cum_s"] >= 7 * 0.004


def test_caps_depth_share_and_node_count(
    known: tuple[cProfile.Profile, list[dict[str, Any]]],
) -> None:
    profiler, full = known
    shallow = call_tree(profiler, max_depth=2)
    check_shape(shallow)
    assert max(n["depth"] for n in full) >= 2
    assert max(n["depth"] for n in shallow) == 1
    assert all(n["own_s"] == n["cum_s"] for n in shallow if n["depth"] == 1)
    few = call_tree(profiler, max_nodes=3)
    check_shape(few)
    assert len(few) == 3
    # the heaviest kept: outer, a (2 calls) and a's sleep or b; never a lighter grandchild alone
    top3 = sorted(full, key=lambda n: -n["cum_s"])[:3]
    assert sorted(n["cum_s"] for n in few) == pytest.approx(sorted(n["cum_s"] for n in top3))
    half = call_tree(profiler, min_share=0.4)
    total = sum(n["cum_s"] for n in half if n["depth"] == 0)
    assert all(n["cum_s"] >= 0.4 * total for n in half)
    assert len(half) < len(full)


def stats_entry(
    ct: float, callers: dict[tuple[str, int, str], float], tt: float = 0.0
) -> tuple[int, int, float, float, dict[tuple[str, int, str], tuple[int, int, float, float]]]:
    return (1, 1, tt, ct, {c: (1, 1, 0.0, s) for c, s in callers.items()})


def fn(name: str) -> tuple[str, int, str]:
    return ("/src/pkg/mod.py", len(name), name)


def test_deeper_levels_split_a_function_among_its_callers() -> None:
    # r1 and r2 both call f (0.2 s and 0.8 s of f's 1 s); f calls g for 0.5 s in all
    stats = {
        fn("r1"): stats_entry(1.0, {}),
        fn("r2"): stats_entry(1.0, {}),
        fn("f"): stats_entry(1.0, {fn("r1"): 0.2, fn("r2"): 0.8}),
        fn("g"): stats_entry(0.5, {fn("f"): 0.5}),
        fn("tiny"): stats_entry(0.001, {fn("r1"): 0.001}),
    }
    tree = tree_from_stats(stats)
    check_shape(tree)
    got = {tuple(p[1] for p in path_of(tree, n)): n for n in tree}
    assert set(got) == {("r1",), ("r2",), ("r1", "f"), ("r2", "f"), ("r1", "f", "g"),
                        ("r2", "f", "g")}  # fmt: skip
    assert got[("r1", "f", "g")]["cum_s"] == pytest.approx(0.1)
    assert got[("r2", "f", "g")]["cum_s"] == pytest.approx(0.4)
    # tiny (0.05 % of 2 s) is folded into r1's own time
    assert got[("r1",)]["own_s"] == pytest.approx(0.8)
    # roots side by side, heaviest first, then by name
    assert [got[("r1",)]["start_s"], got[("r2",)]["start_s"]] == [0.0, 1.0]
    assert got[("r2", "f")]["start_s"] == pytest.approx(1.0)


def test_roots_include_time_from_outside_the_profile() -> None:
    # h is called by p (0.3 s) and, for 0.6 s more, from frames the profiler never saw; x is
    # called by the profiler's own code, which is left out (as is Profile.disable)
    runctx = ("/usr/lib/python3.11/cProfile.py", 100, "runctx")
    disable = ("~", 0, "<method 'disable' of '_lsprof.Profiler' objects>")
    stats = {
        runctx: stats_entry(2.0, {}),
        disable: stats_entry(0.5, {fn("p"): 0.5}),
        fn("p"): stats_entry(1.0, {}),
        fn("h"): stats_entry(0.9, {fn("p"): 0.3}),
        fn("x"): stats_entry(0.2, {runctx: 0.2}),
        fn("loop"): stats_entry(0.8, {fn("loop"): 0.7}),  # recursive, first called from outside
    }
    tree = tree_from_stats(stats)
    check_shape(tree)
    assert {n["function"] for n in tree} == {"p", "h", "x", "loop"}
    roots = {n["function"]: n for n in tree if n["depth"] == 0}
    assert set(roots) == {"p", "h", "x", "loop"}
    assert roots["loop"]["cum_s"] == pytest.approx(0.8)
    assert roots["loop"]["own_s"] == pytest.approx(0.8)  # its own recursion is not expanded
    assert roots["h"]["cum_s"] == pytest.approx(0.6)
    assert roots["p"]["cum_s"] == pytest.approx(1.0)
    assert roots["p"]["own_s"] == pytest.approx(0.7)  # the profiler's 0.5 s stays in p
    assert roots["x"]["cum_s"] == pytest.approx(0.2)


def test_node_cap_and_wire_size() -> None:
    root = fn("root")
    stats: dict[Any, Any] = {root: stats_entry(100.0, {})}
    for i in range(1_000):
        name = f"function_with_a_rather_long_name_{i:04d}"
        stats[fn(name)] = stats_entry(0.05 + i * 1e-4, {root: 0.05 + i * 1e-4})
    tree = tree_from_stats(stats, min_share=0.0)
    check_shape(tree)
    assert len(tree) == MAX_NODES
    kept = {n["function"] for n in tree if n["depth"] == 1}
    assert "function_with_a_rather_long_name_0999" in kept  # the heaviest stay
    assert "function_with_a_rather_long_name_0000" not in kept
    body = msg.encode(msg.Reply(ok=True, data={"tree": tree, "functions": []}))
    assert len(body) < msg.MAX_CONTROL_BYTES // 8
    back = msg.reply_decoder.decode(body)
    assert back.data["tree"] == tree
    # the widget's HTML of a full tree stays small too (one comm message per profile)
    drawn = icicle_html(_profile_frames({"tree": tree})["tree"])
    assert drawn.count('class="wb-icicle-node"') == MAX_NODES
    assert len(drawn) < 250 * MAX_NODES


def test_icicle_html_one_box_per_node_placed_and_escaped(
    known: tuple[cProfile.Profile, list[dict[str, Any]]],
) -> None:
    _, nodes = known
    tree = _profile_frames({"tree": nodes})["tree"]
    assert tree.schema["cum_s"] == pl.Float64
    out = icicle_html(tree, width_px=600, row_px=20)
    assert out.count('class="wb-icicle-node"') == tree.height == len(nodes)
    total = sum(n["cum_s"] for n in nodes if n["depth"] == 0)
    boxes = re.findall(
        r'class="wb-icicle-node" title="([^"]*)" style="left:([\d.]+)px;top:(\d+)px;'
        r"width:([\d.]+)px;",
        out,
    )
    assert len(boxes) == len(nodes)
    for (title, left, top, width), n in zip(boxes, nodes, strict=True):
        assert float(left) == pytest.approx(n["start_s"] / total * 600, abs=0.06)
        assert float(width) == pytest.approx(n["cum_s"] / total * 600, abs=0.06)
        assert int(top) == n["depth"] * 20
        assert "<" not in title
        assert ">" not in title
        assert html.unescape(title).startswith(f"{n['function']} {n['file']}:{n['line']} — ")
    # a built-in's name has angle brackets: escaped in the text and the title
    assert "&lt;built-in method time.sleep&gt;" in out
    assert "<built-in" not in out


def test_icicle_html_escapes_and_fits_names() -> None:
    tree = pl.DataFrame(
        {
            "id": [0, 1, 2],
            "parent": [-1, 0, 0],
            "function": ["<module>", '<lambda>"&', "x" * 200],
            "file": ["a.py", "b.py", "c.py"],
            "line": [1, 2, 3],
            "depth": [0, 1, 1],
            "start_s": [0.0, 0.0, 0.5],
            "cum_s": [1.0, 0.5, 0.5],
            "own_s": [0.0, 0.5, 0.5],
        }
    )
    out = icicle_html(tree, width_px=400)
    assert out.count('class="wb-icicle-node"') == 3
    assert "<module>" not in out
    assert "<lambda>" not in out
    assert "&lt;lambda&gt;&quot;&amp;" in out
    assert f">{'x' * 28}…</div>" in out  # cut to its 200 px box (the tooltip has it all)
    assert f"{'x' * 200} c.py:3" in html.unescape(out)
    assert "(50.0%)" in html.unescape(out)
    assert file_colour("a.py") == file_colour("a.py") != file_colour("~")
    assert len({file_colour(f"m{i}.py") for i in range(40)}) > 3


def test_idle_waits_are_cut_from_the_icicle_and_the_rest_laid_out_again() -> None:
    # roots: work A (0–0.2 s), the worker's poll (0.2–0.9 s, with a child), work B (0.9–1.0 s)
    tree = pl.DataFrame(
        {
            "id": [0, 1, 2, 3, 4, 5],
            "parent": [-1, 0, -1, 2, -1, 4],
            "function": ["poll_quotes", "update", "poll", "_poll", "handle_request", "whatif"],
            "file": ["worker.py", "repricing.py", "poll.py", "poll.py", "worker.py", "r.py"],
            "line": [1, 2, 3, 4, 5, 6],
            "depth": [0, 1, 0, 1, 0, 1],
            "start_s": [0.0, 0.05, 0.2, 0.2, 0.9, 0.9],
            "cum_s": [0.2, 0.15, 0.7, 0.6, 0.1, 0.08],
            "own_s": [0.05, 0.15, 0.1, 0.6, 0.02, 0.08],
        }
    )
    busy, idle = busy_tree(tree)
    assert idle == pytest.approx(0.7)
    assert busy["id"].to_list() == [0, 1, 4, 5]  # the poll and its child are gone
    starts = dict(zip(busy["id"].to_list(), busy["start_s"].to_list(), strict=True))
    assert starts[0] == pytest.approx(0.0)
    assert starts[1] == pytest.approx(0.05)
    assert starts[4] == pytest.approx(0.2)
    assert starts[5] == pytest.approx(0.2)
    assert icicle_html(busy).count('class="wb-icicle-node"') == 4
    untouched, none = busy_tree(tree.filter(pl.col("function") != "poll"))
    assert none == 0.0
    assert untouched.height == 5
