"""The polling process: the HTTP polls of every polling source, apart from the ingestion loop.

The ingestion starts it (:class:`PollingChild`) when ``feed.sources`` is not empty and binds a
PULL socket on loopback for it; the process (:func:`run`) runs one :class:`~.polling.Poller`
per source on its own asyncio loop and PUSHes each poll's outcome as a :class:`PollBatch`
(msgpack: source number, error or None, the reply's entries). The ingestion offers the entries
of a batch (:meth:`~.polling.PollIntake.outcome`) between two receives of ticks: its loop never
waits on HTTP, TLS or JSON (measures in docs/ticks.md, "Polling sources").

The process (``python -m workbench.engine.processes.pollers CONFIG ADDRESS``) dies with the
ingestion (``PR_SET_PDEATHSIG``); the ingestion restarts it if it exits, and stops it (SIGTERM,
then SIGKILL) when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from typing import Final

import msgspec
import zmq
import zmq.asyncio

from workbench.engine.processes.lifetime import die_with_parent
from workbench.engine.processes.polling import Poller, PollIntake, PollQuote
from workbench.engine.protocol.config import ServiceConfig, decode_config, encode_config
from workbench.engine.telemetry import logs

log = logging.getLogger(__name__)

BATCH_HWM: Final = 100
"""Poll outcomes the polling process may queue for the ingestion before it drops them."""
MAX_BATCH_BYTES: Final = 8 * 1024 * 1024
"""Largest batch the ingestion reads (a reply is at most 4 MiB of JSON)."""
WATCH_S: Final = 1.0
"""How often the ingestion checks that the polling process lives, seconds."""


class PollBatch(msgspec.Struct, frozen=True, array_like=True):
    """One poll of source ``source`` (its number): its entries, or the error it failed with."""

    source: int
    error: str | None
    entries: list[PollQuote | None]


_encode = msgspec.msgpack.Encoder().encode
_decoder: Final = msgspec.msgpack.Decoder(PollBatch)


def run(config_json: str, address: str) -> None:
    """Process entry point: poll every source of the configuration, PUSH each outcome to
    ``address``, until killed.

    Parameters
    ----------
    config_json
        The service configuration as JSON (:func:`~.config.encode_config`).
    address
        The ingestion's PULL socket (``tcp://127.0.0.1:<port>``).
    """
    die_with_parent()
    config = decode_config(config_json)
    logs.setup(config.name, "pollers")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, BATCH_HWM)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(address)

    def sink(source: int, entries: list[PollQuote | None], error: str | None) -> None:
        with contextlib.suppress(zmq.Again):  # the ingestion is not reading: a poll lost
            push.send(_encode(PollBatch(source, error, entries)), zmq.NOBLOCK)

    async def main() -> None:
        sources = enumerate(config.feed.sources, start=1)
        await asyncio.gather(*(Poller(k, s, sink).run() for k, s in sources))

    asyncio.run(main())


class PollingChild:
    """The ingestion's side: the polling process, its PULL socket, the task that reads it.

    Parameters
    ----------
    config
        The service configuration (its ``feed.sources`` are polled).
    ctx
        The ingestion's asyncio ZeroMQ context.
    intake
        Where each poll's outcome goes.
    """

    def __init__(self, config: ServiceConfig, ctx: zmq.asyncio.Context, intake: PollIntake) -> None:
        self.config_json = encode_config(config)
        self.intake = intake
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_BATCH_BYTES)
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.bad_batches = 0
        self.start()

    def start(self) -> None:
        """Start the polling process."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, self.config_json, self.address],
            stdin=subprocess.DEVNULL,
        )

    async def receive(self) -> None:
        """Hand each batch to the intake; restart the process if it has exited."""
        while True:
            try:
                payload = await asyncio.wait_for(self.pull.recv(), WATCH_S)
            except TimeoutError:
                self._watch()
                continue
            try:
                batch = _decoder.decode(payload)
            except msgspec.DecodeError:
                self.bad_batches += 1
                continue
            if 1 <= batch.source < len(self.intake.counts):
                self.intake.outcome(batch.source, batch.entries, batch.error)

    def _watch(self) -> None:
        code = None if self.proc is None else self.proc.poll()
        if code is not None:
            self.restarts += 1
            logs.event(
                log, "pollers_restarted", f"the polling process exited ({code}): restarted",
                level=logging.WARNING, exit_code=code,
            )  # fmt: skip
            self.start()

    def stats(self) -> dict[str, float]:
        """``pollers_restarts`` and ``pollers_bad_batches``."""
        return {
            "pollers_restarts": float(self.restarts),
            "pollers_bad_batches": float(self.bad_batches),
        }

    def close(self) -> None:
        """Stop the polling process (SIGTERM, then SIGKILL after 2 s)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2.0)
        self.pull.close(linger=0)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
