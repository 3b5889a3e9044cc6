"""The API's answer formats: JSON by default, Arrow IPC stream or CSV when asked.

A table endpoint answers in the format the ``format`` query parameter names (``json``,
``arrow``, ``csv``) or, without it, the first of the request's ``Accept`` types it offers
(``application/json``, ``application/vnd.apache.arrow.stream``, ``text/csv``); anything else
gets JSON. In JSON a table is ``{"rows": [...], ...}`` with its identity beside it (non-finite
numbers as ``null``); in Arrow and CSV the table alone, its identity in ``X-Workbench-*``
headers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec
import polars as pl
from fastapi import Response

Format = Literal["json", "arrow", "csv"]
FORMATS: Final[tuple[Format, ...]] = ("json", "arrow", "csv")
MEDIA_TYPES: Final[dict[Format, str]] = {
    "json": "application/json",
    "arrow": "application/vnd.apache.arrow.stream",
    "csv": "text/csv; charset=utf-8",
}
_BY_NAME: Final[dict[str, Format]] = {f: f for f in FORMATS}
_ACCEPTED: Final[dict[str, Format]] = {
    "application/json": "json",
    "application/vnd.apache.arrow.stream": "arrow",
    "text/csv": "csv",
}
_encoder: Final = msgspec.json.Encoder()


class FormatError(ValueError):
    """A ``format`` parameter that names no format."""


def negotiate(accept: str | None, asked: str | None) -> Format:
    """The format of an answer: ``asked`` (the ``format`` parameter) if given, else the first
    offered media type in ``accept`` (an ``Accept`` header), else JSON.

    Raises
    ------
    FormatError
        ``asked`` is not one of :data:`FORMATS`.
    """
    if asked is not None:
        if asked in _BY_NAME:
            return _BY_NAME[asked]
        raise FormatError(f"format={asked[:40]!r}: expected one of {', '.join(FORMATS)}")
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in _ACCEPTED:
            return _ACCEPTED[media]
    return "json"


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON (NaN and infinities as ``null``)."""
    return _encoder.encode(value)


def table_bytes(frame: pl.DataFrame, fmt: Format, meta: Mapping[str, Any]) -> bytes:
    """The body of a table answer: ``frame`` in ``fmt``; in JSON with ``meta`` beside
    ``rows``."""
    sink = io.BytesIO()
    if fmt == "json":  # the rows from Polars: no Python dict per row
        sink.write(json_bytes(meta)[:-1] + (b',"rows":' if meta else b'"rows":'))
        frame.write_json(sink)
        sink.write(b"}")
    elif fmt == "arrow":
        frame.write_ipc_stream(sink, compression="uncompressed")
    else:
        frame.write_csv(sink)
    return sink.getvalue()


def headers(meta: Mapping[str, Any]) -> dict[str, str]:
    """``meta``'s scalar entries as ``X-Workbench-<Name>`` headers (``snapshot_seq`` →
    ``X-Workbench-Snapshot-Seq``)."""
    return {
        "X-Workbench-" + "-".join(w.capitalize() for w in k.split("_")): str(v)
        for k, v in meta.items()
        if isinstance(v, int | float | str)
    }


def table_response(body: bytes, fmt: Format, meta: Mapping[str, Any]) -> Response:
    """A table answer already rendered by :func:`table_bytes`."""
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers(meta))


def render(frame: pl.DataFrame, fmt: Format, meta: Mapping[str, Any]) -> Response:
    """``frame`` as an answer in ``fmt`` (see the module docstring)."""
    return table_response(table_bytes(frame, fmt, meta), fmt, meta)
