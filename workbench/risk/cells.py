"""The published roll-ups from per-cell sums: one compiled pass over the positions per snapshot.

Every table the aggregator publishes (firm, desk, asset class) and every limit (firm or desk)
is a sum over cells of desk × asset class × tranche-or-not: within a cell, each measure of
:mod:`risk.aggregation` is one raw risk column (``dv01`` is the ``delta`` of the rates
cells, ``corr01`` the ``vega`` of the tranche cells, …). So a snapshot sums the raw columns
per cell in one compiled pass (0.2 ms for 40,000 positions, reading the shared columns in
place), and each grouping adds the cells up along the other axes. The result equals
``rollups(risk_frame(...))`` (tested) for a fraction of the time: no per-position frame is
built, no column copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numba
import numpy as np
import polars as pl

from workbench.risk.aggregation import (
    ASSET_CLASSES,
    DELTA_BY_CLASS,
    GAMMA_BY_CLASS,
    MEASURES,
    NETTED,
    rollup_columns,
)

_AXES = {"desk": 0, "asset_class": 1}
_RAW = ("pv", "delta", "gamma", "vega", "theta")
_COUNTS = ("positions", "stale", "unpriced")
_COLUMNS = tuple(rollup_columns())
_CLASS_LABELS = pl.Series(ASSET_CLASSES)


class CellSums:
    """Per-cell sums of a book's risk columns, and the roll-ups built from them.

    Parameters
    ----------
    static
        :func:`risk.aggregation.static_frame` of the book, in risk-table row order.
    """

    def __init__(self, static: pl.DataFrame) -> None:
        for name in ("desk", "asset_class", "product"):
            if name not in static.columns:
                raise ValueError(f"static frame: missing column {name!r} (use static_frame)")
        self.desk_type = static.schema["desk"]
        self.class_type = static.schema["asset_class"]
        if not isinstance(self.desk_type, pl.Enum):
            raise ValueError("static frame: 'desk' must be an Enum (use static_frame)")
        self.desks = pl.Series(self.desk_type.categories)
        desk = static["desk"].to_physical().to_numpy().astype(np.int64)
        klass = static["asset_class"].to_physical().to_numpy().astype(np.int64)
        tranche = (static["product"].cast(pl.String) == "CDX_TRANCHE").to_numpy()
        self.shape = (len(self.desks), len(ASSET_CLASSES), 2)
        self.cell = np.ravel_multi_index((desk, klass, tranche.astype(np.int64)), self.shape)
        self.n_cells = int(np.prod(self.shape))
        self.positions = np.bincount(self.cell, minlength=self.n_cells).reshape(self.shape)
        self.size = static.height
        # where each measure applies, per cell: (class, tranche) masks broadcast over desks
        klass_axis = np.array(ASSET_CLASSES)[None, :, None]
        tranche_axis = np.array([False, True])[None, None, :]
        self.applies: dict[str, tuple[str, np.ndarray]] = {}
        for m in MEASURES:
            source, where = m, np.ones((1, 1, 1), dtype=bool)  # pv, theta
            for cls, name in DELTA_BY_CLASS.items():
                if m == name:
                    source, where = "delta", klass_axis == cls
            for cls, name in GAMMA_BY_CLASS.items():
                if m == name:
                    source, where = "gamma", klass_axis == cls
            if m == "vega":
                source, where = "vega", np.isin(klass_axis, ("fx", "equity"))
            if m == "corr01":
                source, where = "vega", tranche_axis
            self.applies[m] = (source, np.broadcast_to(where, self.shape))

    def cells(self, cols: Mapping[str, np.ndarray], now_ns: int) -> dict[str, np.ndarray]:
        """Every column of :func:`risk.aggregation.rollup` per cell, shaped (desk, asset
        class, tranche), from ``cols`` as for :func:`risk.aggregation.risk_frame`: one
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
        sums, worst = _cell_pass(
            self.cell, self.n_cells, cols["pv"], cols["delta"], cols["gamma"], cols["vega"],
            cols["theta"], cols["stale"], cols["updated_ns"], now_ns,
        )  # fmt: skip
        net = dict(zip(_RAW, (x.reshape(self.shape) for x in sums[:5]), strict=True))
        gross = {"pv": sums[5].reshape(self.shape), "delta": sums[6].reshape(self.shape)}
        out = {
            "positions": self.positions.astype(np.float64),
            "stale": sums[7].reshape(self.shape),
            "unpriced": sums[8].reshape(self.shape),
            "max_age_s": worst.reshape(self.shape),
        }
        for m in MEASURES:
            source, where = self.applies[m]
            out[m] = np.where(where, net[source], 0.0)
            if m in NETTED:
                out[f"{m}_gross"] = np.where(where, gross[source], 0.0)
        return out

    def rollups(
        self, cols: Mapping[str, np.ndarray], now_ns: int, groupings: Sequence[Sequence[str]]
    ) -> list[pl.DataFrame]:
        """:func:`risk.aggregation.rollups` of the risk frame of ``cols`` for groupings of
        ``desk`` and ``asset_class`` (one row per group present, sorted by the grouping)."""
        for by in groupings:
            other = [c for c in by if c not in _AXES]
            if other:
                raise ValueError(f"cell roll-ups group by desk and asset_class only, not {other}")
            if len(set(by)) != len(by):
                raise ValueError(f"group columns repeated: {list(by)}")
        return self.grouped(self.cells(cols, now_ns), groupings)

    def grouped(
        self, cells: dict[str, np.ndarray], groupings: Sequence[Sequence[str]]
    ) -> list[pl.DataFrame]:
        """The roll-ups of :meth:`cells` for each grouping of ``desk`` and ``asset_class``."""
        return [self._grouped(cells, list(by)) for by in groupings]

    def _grouped(self, cells: dict[str, np.ndarray], group: list[str]) -> pl.DataFrame:
        keep = [_AXES[c] for c in group]
        drop = tuple(a for a in range(3) if a not in keep)
        to_group_order = np.argsort(np.argsort(keep))

        def reduce(name: str) -> np.ndarray:
            x = cells[name]
            r = x.max(axis=drop) if name == "max_age_s" else x.sum(axis=drop)
            return np.transpose(r, to_group_order).ravel() if keep else r.ravel()

        positions = reduce("positions")
        present = positions > 0 if group else np.ones(1, dtype=bool)
        kept_shape = tuple(self.shape[a] for a in keep)
        codes = np.unravel_index(np.flatnonzero(present), kept_shape) if group else ()
        series: list[pl.Series] = []
        for name, code in zip(group, codes, strict=True):
            labels = self.desks if name == "desk" else _CLASS_LABELS
            dtype = self.desk_type if name == "desk" else self.class_type
            series.append(pl.Series(name, labels.gather(code), dtype=dtype))
        for name in _COLUMNS:
            values = reduce(name)[present]
            if name in _COUNTS:
                series.append(pl.Series(name, values.round().astype(np.int64), dtype=pl.Int64))
            elif name == "max_age_s":
                series.append(pl.Series(name, np.where(values == -np.inf, np.nan, values)))
            else:
                series.append(pl.Series(name, values, dtype=pl.Float64))
        return pl.DataFrame(series)


@numba.njit(cache=True, nogil=True)
def _cell_pass(
    cell: np.ndarray,
    n_cells: int,
    pv: np.ndarray,
    delta: np.ndarray,
    gamma: np.ndarray,
    vega: np.ndarray,
    theta: np.ndarray,
    stale: np.ndarray,
    updated: np.ndarray,
    now_ns: int,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per cell: net sums of pv, delta, gamma, vega, theta (NaN left out), gross sums of pv and
    delta, stale and unpriced counts (rows 0–8), and the worst age in seconds (+inf if a
    position was never written, −inf for an empty cell)."""
    sums = np.zeros((9, n_cells))
    worst = np.full(n_cells, -np.inf)
    for i in range(cell.size):
        c = cell[i]
        v = pv[i]
        if v == v:
            sums[0, c] += v
            sums[5, c] += abs(v)
        else:
            sums[8, c] += 1.0
        v = delta[i]
        if v == v:
            sums[1, c] += v
            sums[6, c] += abs(v)
        v = gamma[i]
        if v == v:
            sums[2, c] += v
        v = vega[i]
        if v == v:
            sums[3, c] += v
        v = theta[i]
        if v == v:
            sums[4, c] += v
        if stale[i] != 0.0:
            sums[7, c] += 1.0
        age = (now_ns - updated[i]) / 1e9 if updated[i] > 0 else np.inf
        if age > worst[c]:
            worst[c] = age
    return sums, worst
