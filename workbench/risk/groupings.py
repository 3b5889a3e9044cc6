"""Groupings of a book's positions for scenario PnL and loss measures: by desk, asset class,
currency or any other of the book's string columns, several at once.

A run revalues the book once, summing PnL by **cell** — each combination of the groupings'
labels that the book holds — and each grouping's PnL is the sum of its cells'
(:func:`sum_cells`): one revaluation, however many groupings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.book.schema import ASSET_CLASS, ASSET_CLASSES, Book, Categorical

GROUP_COLUMNS = ("desk", "book", "product", "asset_class", "currency", "underlying")
"""What a book's positions can be grouped by: its string columns and the product's asset
class (``rates``, ``fx``, ``credit``, ``equity``)."""


@dataclass(frozen=True)
class Grouping:
    """One grouping of a book's positions: ``column``'s ``labels`` (those the book holds, in
    the book's order) and each position's index into them (``codes``)."""

    column: str
    labels: tuple[str, ...]
    codes: IntArray


@dataclass(frozen=True)
class Cells:
    """Each position's cell (``codes``, into ``n`` cells) and, per grouping, each cell's group
    (``groups[j]``: ``n`` codes into grouping ``j``'s labels)."""

    codes: IntArray
    n: int
    groups: tuple[IntArray, ...]


def grouping(book: Book, column: str) -> Grouping:
    """The grouping of ``book`` by ``column`` (one of :data:`GROUP_COLUMNS`).

    Raises
    ------
    ValueError
        If ``column`` is not one of :data:`GROUP_COLUMNS`.
    """
    if column == "asset_class":
        labels = tuple(ASSET_CLASS[p] for p in book.product.labels)
        by_product = Categorical(
            np.array([ASSET_CLASSES.index(c) for c in labels], dtype=np.int64)[book.product.codes]
            if len(book)
            else np.empty(0, np.int64),
            ASSET_CLASSES,
        )
        return _present(column, by_product)
    if column not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {column!r}: one of {', '.join(GROUP_COLUMNS)}")
    value = getattr(book, column)
    assert isinstance(value, Categorical)
    return _present(column, value)


def _present(column: str, value: Categorical) -> Grouping:
    """``value``'s labels that occur, in label order, and each row's index into them."""
    used = np.flatnonzero(np.bincount(value.codes, minlength=len(value.labels)))
    index = np.full(len(value.labels), -1, dtype=np.int64)
    index[used] = np.arange(used.size)
    return Grouping(column, tuple(value.labels[i] for i in used), index[value.codes])


def parse_by(text: str | Sequence[str]) -> tuple[str, ...]:
    """Grouping columns from ``"desk,asset_class"`` (or a sequence of names), each once, in
    order.

    Raises
    ------
    ValueError
        If a name is not one of :data:`GROUP_COLUMNS`, or none is given.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in GROUP_COLUMNS]
    if bad or not names:
        raise ValueError(
            f"cannot group by {', '.join(map(repr, bad)) or 'nothing'}: "
            f"one or more of {', '.join(GROUP_COLUMNS)}, comma-separated"
        )
    return tuple(dict.fromkeys(names))


def cells(groupings: Sequence[Grouping]) -> Cells:
    """The cells of ``groupings`` (at least one): the label combinations the book holds, in
    lexicographic order of the groupings' codes. With one grouping the cells are its groups."""
    if len(groupings) == 1:
        g = groupings[0]
        return Cells(g.codes, len(g.labels), (np.arange(len(g.labels), dtype=np.int64),))
    stacked = np.stack([g.codes for g in groupings], axis=1)
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    return Cells(
        inverse.reshape(-1).astype(np.int64),
        unique.shape[0],
        tuple(np.ascontiguousarray(unique[:, j]) for j in range(len(groupings))),
    )


def sum_cells(pnl: FloatArray, groups: IntArray, n_groups: int) -> FloatArray:
    """(scenarios × ``n_groups``) sums of the cells' PnL ``pnl`` (scenarios × cells), cell
    ``c`` counted in group ``groups[c]`` (USD)."""
    out = np.zeros((pnl.shape[0], n_groups))
    for c in range(pnl.shape[1]):
        out[:, groups[c]] += pnl[:, c]
    return out


__all__ = ["GROUP_COLUMNS", "Cells", "Grouping", "cells", "grouping", "parse_by", "sum_cells"]
