"""Every published roll-up from per-cell sums: one compiled pass over the positions per snapshot.

A cell is one distinct combination of every group column of :data:`risk.aggregation.GROUP_COLUMNS`
present in the book (desk, book, currency, asset class, product, underlying; the product
decides the asset class and whether the position is a tranche). Within a cell each measure of
:mod:`risk.aggregation` is one raw risk column (``dv01`` is the ``delta`` of the rates cells,
``corr01`` the ``vega`` of the tranche cells, …), so any grouping of those columns — the firm,
desk and asset-class tables, the desk limits and every grouping a grid offers — is a sum of
cells. A snapshot sums the raw columns per cell in one compiled pass (reading the shared columns
in place), maps them into measures per cell, and reduces each grouping from the cells (540 for
the 40,000-position reference book) in a second compiled pass. The result equals
``rollup(risk_frame(...), by)`` (tested): no per-position frame is built, no column copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from workbench.risk.aggregation import (
    DELTA_BY_CLASS,
    GAMMA_BY_CLASS,
    GROUP_COLUMNS,
    rollup_columns,
)

_RAW = ("pv", "delta", "gamma", "vega", "theta", "pv_ccy")
"""The float64 risk columns the pass sums (NaN left out), with ``stale`` and ``updated_ns``."""
_COUNTS = ("positions", "stale", "unpriced")
_COLUMNS = tuple(c for c in rollup_columns(local_pv=True) if c != "max_age_s")
"""The summed columns of a roll-up, in its order (``max_age_s`` is a maximum, kept apart)."""
# rows of the pass's sums: the net sums of _RAW, then gross pv and delta, stale, unpriced
_ROW = {name: i for i, name in enumerate(_RAW)} | {
    "pv_gross": 6,
    "delta_gross": 7,
    "stale": 8,
    "unpriced": 9,
    "positions": 10,  # appended from the book's counts
}


@dataclass(frozen=True)
class CellValues:
    """The roll-up columns of every cell at one time.

    Attributes
    ----------
    sums
        Shape (len(columns), cells): each summed column of :func:`risk.aggregation.rollup`
        (counts as float64, measures in USD, ``pv_ccy`` in the cell's currency), in the order
        of :attr:`CellSums.columns`.
    max_age_s
        Shape (cells,): the worst age of each cell in seconds (+inf if a position of it was
        never written).
    """

    sums: np.ndarray
    max_age_s: np.ndarray


@dataclass(frozen=True)
class _Grouping:
    """A grouping's fixed parts: its group of each cell and its group columns, labelled."""

    group: np.ndarray
    n_groups: int
    labels: tuple[pl.Series, ...]
    local_pv: bool


class CellSums:
    """Per-cell sums of a book's risk columns, and the roll-ups built from them.

    Parameters
    ----------
    static
        :func:`risk.aggregation.static_frame` of the book, in risk-table row order.
    """

    columns = _COLUMNS
    """The rows of :attr:`CellValues.sums`."""

    def __init__(self, static: pl.DataFrame) -> None:
        for name in GROUP_COLUMNS:
            if name not in static.columns:
                raise ValueError(f"static frame: missing column {name!r} (use static_frame)")
            if not isinstance(static.schema[name], pl.Enum):
                raise ValueError(f"static frame: {name!r} must be an Enum (use static_frame)")
        self.dtypes = {name: static.schema[name] for name in GROUP_COLUMNS}
        self.size = static.height
        codes = np.stack(
            [static[c].to_physical().to_numpy().astype(np.int64) for c in GROUP_COLUMNS], axis=1
        ).reshape(self.size, len(GROUP_COLUMNS))
        if self.size:
            keys, cell = np.unique(codes, axis=0, return_inverse=True)
        else:
            keys, cell = codes, np.zeros(0, dtype=np.int64)
        self.keys: np.ndarray = keys.reshape(-1, len(GROUP_COLUMNS))
        """The group columns' codes of each cell (cells × :data:`GROUP_COLUMNS`), sorted."""
        self.cell: np.ndarray = cell.reshape(-1).astype(np.int64)
        """The cell of each position."""
        self.n_cells = len(self.keys)
        self.positions = np.bincount(self.cell, minlength=self.n_cells).astype(np.float64)
        klass = self._labels("asset_class")[self.keys[:, GROUP_COLUMNS.index("asset_class")]]
        product = self._labels("product")[self.keys[:, GROUP_COLUMNS.index("product")]]
        # where each summed column comes from in the pass's rows, and the cells it applies to
        source: list[int] = []
        where: list[np.ndarray] = []
        everywhere = np.ones(self.n_cells, dtype=bool)
        for name in _COLUMNS:
            measure = name.removesuffix("_gross")
            suffix = "_gross" if name != measure else ""
            raw, applies = measure, everywhere
            for cls, delta in DELTA_BY_CLASS.items():
                if measure == delta:
                    raw, applies = "delta", klass == cls
            for cls, gamma in GAMMA_BY_CLASS.items():
                if measure == gamma:
                    raw, applies = "gamma", klass == cls
            if measure == "vega":
                raw, applies = "vega", np.isin(klass, ("fx", "equity"))
            if measure == "corr01":
                raw, applies = "vega", product == "CDX_TRANCHE"
            source.append(_ROW[raw + suffix])
            where.append(applies)
        self._source = np.array(source, dtype=np.int64)
        self._where = np.stack(where).reshape(len(_COLUMNS), self.n_cells)
        self._groupings: dict[tuple[str, ...], _Grouping] = {}
        self._plans: dict[tuple[tuple[str, ...], ...], tuple[np.ndarray, list[int]]] = {}

    def _categories(self, name: str) -> list[str]:
        dtype = self.dtypes[name]
        assert isinstance(dtype, pl.Enum)
        return dtype.categories.to_list()

    def _labels(self, name: str) -> np.ndarray:
        return np.array(self._categories(name), dtype=object)

    def cells(self, cols: Mapping[str, np.ndarray], now_ns: int) -> CellValues:
        """Every column of :func:`risk.aggregation.rollup` per cell, from ``cols`` as for
        :func:`risk.aggregation.risk_frame` (``now_ns`` on the clock of ``updated_ns``): one
        compiled pass over the positions, reading the columns in place (so they may be live
        shared-memory views under :meth:`engine.transport.shm.RiskTable.consistent`)."""
        for name in (*_RAW, "stale", "updated_ns"):
            if name not in cols:
                raise ValueError(f"risk columns: missing column {name!r}")
            if cols[name].shape != (self.size,):
                raise ValueError(
                    f"risk columns: column {name!r} has shape {cols[name].shape}, "
                    f"expected ({self.size},)"
                )
        raw, worst = _cell_pass(
            self.cell, self.n_cells, cols["pv"], cols["delta"], cols["gamma"], cols["vega"],
            cols["theta"], cols["pv_ccy"], cols["stale"], cols["updated_ns"], now_ns,
        )  # fmt: skip
        raw[_ROW["positions"]] = self.positions
        return CellValues(np.where(self._where, raw[self._source], 0.0), worst)

    def rollups(
        self, cols: Mapping[str, np.ndarray], now_ns: int, groupings: Sequence[Sequence[str]]
    ) -> list[pl.DataFrame]:
        """:func:`risk.aggregation.rollups` of the risk frame of ``cols`` (one frame per
        grouping of :data:`~risk.aggregation.GROUP_COLUMNS`: a row per group present, sorted
        by the grouping)."""
        for by in groupings:
            self._grouping(by)  # refuse a bad grouping before the pass
        return self.grouped(self.cells(cols, now_ns), groupings)

    def grouped(self, cells: CellValues, groupings: Sequence[Sequence[str]]) -> list[pl.DataFrame]:
        """The roll-up of :meth:`cells` for each grouping, as :func:`risk.aggregation.rollup`
        makes it: the group columns (the book's Enums), ``positions``, ``stale``, ``unpriced``
        (Int64), ``max_age_s`` (seconds), each measure and gross sum (USD) and, grouped by
        ``currency``, ``pv_ccy``. One compiled pass over the cells for every grouping, one
        frame of every group's row, sliced per grouping."""
        gs = [self._grouping(by) for by in groupings]
        if not gs:
            return []
        key = tuple(tuple(by) for by in groupings)
        plan = self._plans.get(key)
        if plan is None:
            first = np.cumsum([0, *(g.n_groups for g in gs)])
            index = np.stack([g.group + start for g, start in zip(gs, first[:-1], strict=True)])
            plan = (index.reshape(len(gs), self.n_cells), [int(x) for x in first])
            self._plans[key] = plan
        index, starts = plan
        by_group, worst = _group_pass(
            np.ascontiguousarray(cells.sums.T), cells.max_age_s, index, starts[-1]
        )
        sums = np.ascontiguousarray(by_group.T)
        series: list[pl.Series] = []
        for i, name in enumerate(_COLUMNS[:-1]):  # all but pv_ccy, the last
            if name in _COUNTS:
                series.append(pl.Series(name, sums[i].round().astype(np.int64)))
            else:
                series.append(pl.Series(name, sums[i]))
            if name == "unpriced":
                series.append(pl.Series("max_age_s", np.where(worst == -np.inf, np.nan, worst)))
        every = pl.DataFrame(series)
        with_pv_ccy = every.clone()  # the same buffers, and the local PV (inserting is cheap,
        with_pv_ccy.insert_column(every.width, pl.Series("pv_ccy", sums[-1]))  # dropping not)
        out: list[pl.DataFrame] = []
        for g, start in zip(gs, starts[:-1], strict=True):
            table = (with_pv_ccy if g.local_pv else every).slice(start, g.n_groups)
            for j, labels in enumerate(g.labels):
                table.insert_column(j, labels)
            out.append(table)
        return out

    def _grouping(self, by: Sequence[str]) -> _Grouping:
        if isinstance(by, str):
            raise ValueError(f"by: expected a sequence of column names, got the string {by!r}")
        key = tuple(by)
        known = self._groupings.get(key)
        if known is not None:
            return known
        for name in key:
            if name not in GROUP_COLUMNS:
                raise ValueError(f"unknown group column {name!r} (expected any of {GROUP_COLUMNS})")
        if len(set(key)) != len(key):
            raise ValueError(f"group columns repeated: {list(key)}")
        idx = [GROUP_COLUMNS.index(c) for c in key]
        if key and self.n_cells:
            codes, group = np.unique(self.keys[:, idx], axis=0, return_inverse=True)
            codes = codes.reshape(-1, len(key))
        else:  # one firm-wide row (or no group for an empty book)
            codes = np.zeros((0 if key else 1, len(key)), dtype=np.int64)
            group = np.zeros(self.n_cells, dtype=np.int64)
        labels = tuple(
            pl.Series(name, self._categories(name), dtype=self.dtypes[name]).gather(codes[:, j])
            for j, name in enumerate(key)
        )
        grouping = _Grouping(
            group.reshape(-1).astype(np.int64), len(codes), labels, "currency" in key
        )
        self._groupings[key] = grouping
        return grouping


@numba.njit(cache=True, nogil=True)
def _cell_pass(
    cell: np.ndarray,
    n_cells: int,
    pv: np.ndarray,
    delta: np.ndarray,
    gamma: np.ndarray,
    vega: np.ndarray,
    theta: np.ndarray,
    pv_ccy: np.ndarray,
    stale: np.ndarray,
    updated: np.ndarray,
    now_ns: int,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per cell: net sums of pv, delta, gamma, vega, theta, pv_ccy (NaN left out), gross sums
    of pv and delta, stale and unpriced counts (rows 0–9; row 10 left for the positions), and
    the worst age in seconds (+inf if a position was never written, −inf for an empty cell)."""
    sums = np.zeros((11, n_cells))
    worst = np.full(n_cells, -np.inf)
    for i in range(cell.size):
        c = cell[i]
        v = pv[i]
        if v == v:
            sums[0, c] += v
            sums[6, c] += abs(v)
        else:
            sums[9, c] += 1.0
        v = delta[i]
        if v == v:
            sums[1, c] += v
            sums[7, c] += abs(v)
        v = gamma[i]
        if v == v:
            sums[2, c] += v
        v = vega[i]
        if v == v:
            sums[3, c] += v
        v = theta[i]
        if v == v:
            sums[4, c] += v
        v = pv_ccy[i]
        if v == v:
            sums[5, c] += v
        if stale[i] != 0.0:
            sums[8, c] += 1.0
        age = (now_ns - updated[i]) / 1e9 if updated[i] > 0 else np.inf
        if age > worst[c]:
            worst[c] = age
    return sums, worst


@numba.njit(cache=True, nogil=True)
def _group_pass(
    sums: np.ndarray, worst: np.ndarray, index: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per group: the sums of its cells' rows of ``sums`` (cells × columns) and the worst of
    their ``worst``; ``index[k, c]`` is the group of cell ``c`` in grouping ``k`` (groups
    numbered across groupings)."""
    out = np.zeros((n_groups, sums.shape[1]))
    out_worst = np.full(n_groups, -np.inf)
    for k in range(index.shape[0]):
        for c in range(index.shape[1]):
            g = index[k, c]
            for r in range(sums.shape[1]):
                out[g, r] += sums[c, r]
            if worst[c] > out_worst[g]:
                out_worst[g] = worst[c]
    return out, out_worst
