"""Answers rendered once and shared: one body per (copy of the data, question, format).

Readers of the same copy asking the same question (grouping, filters, measures, format) get
the same bytes; the first asks for the render, the others wait for it instead of rendering
again. A render of a large frame runs in a thread (Polars releases the interpreter while it
filters and writes), so the event loop keeps answering small requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Final

_MOST_KEYS: Final = 256
"""Most distinct questions kept per copy (beyond: the oldest is dropped)."""


class RenderCache:
    """Rendered answers of the latest copy of some data, keyed by the question asked.

    A new ``copy`` (a snapshot seq, the identity of a per-position copy) drops every answer
    of the previous one.
    """

    def __init__(self) -> None:
        self._copy: Hashable = None
        self._bodies: dict[Hashable, asyncio.Future[bytes]] = {}
        self.renders = 0
        """Bodies rendered since start (a shared answer is counted once)."""

    async def get(
        self,
        copy: Hashable,
        key: Hashable,
        make: Callable[[], bytes],
        *,
        threaded: bool = False,
    ) -> bytes:
        """The body ``make()`` renders for ``key`` of ``copy``, rendered once per copy and
        key (in a thread when ``threaded``); an exception ``make`` raises reaches every
        reader waiting for it and is not kept."""
        if copy != self._copy:
            self._copy, self._bodies = copy, {}
        found = self._bodies.get(key)
        if found is None:
            if len(self._bodies) >= _MOST_KEYS:
                del self._bodies[next(iter(self._bodies))]
            found = self._bodies[key] = asyncio.get_running_loop().create_future()
            self.renders += 1
            try:
                body = await asyncio.to_thread(make) if threaded else make()
            except BaseException as exc:
                if self._bodies.get(key) is found:
                    del self._bodies[key]
                found.set_exception(exc)
                found.exception()  # retrieved: no "never retrieved" warning if none waits
                raise
            found.set_result(body)
            return body
        return await asyncio.shield(found)
