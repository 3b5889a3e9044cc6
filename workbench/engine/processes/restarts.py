"""The supervisor's restart policy as a state machine: events in, actions out, no I/O.

Events: a child died, a child missed its heartbeats, a child became ready, time passed.
Actions: restart a child now, kill a hung one (silent for ``heartbeat_timeout_s`` once
ready, or for ``startup_timeout_s`` while it sets up), roll one worker. The first failure in a
row restarts at once; each further one waits ``backoff_s``, doubling up to ``max_backoff_s``;
the count resets once a child has stayed ready for ``stable_s``. A rolling restart never takes
a second worker of an asset class down while one of that class is restarting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Restart:
    """Start ``child`` again (it is down)."""

    child: str


@dataclass(frozen=True)
class Kill:
    """``child`` stopped answering heartbeats: kill it (its death then restarts it)."""

    child: str


@dataclass(frozen=True)
class Roll:
    """Rolling restart of ``child`` (it is healthy; stop it gracefully)."""

    child: str


Action = Restart | Kill | Roll


@dataclass
class _Child:
    group: str  # children of one group never roll together (the asset class)
    rolls: bool  # workers roll; feed, ingest and aggregator do not
    up: bool = True
    ready: bool = False
    ready_since_ns: int = 0
    last_beat_ns: int = 0
    failures: int = 0
    restart_at_ns: int | None = None
    restarts: int = 0


@dataclass
class RestartPolicy:
    """What to do about each child; all times are ``time.monotonic_ns`` values passed in."""

    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    stable_s: float = 30.0
    heartbeat_timeout_s: float = 5.0
    startup_timeout_s: float = 300.0  # set-up (loading, compiling, first full price) allowance
    rolling_s: float = 0.0
    children: dict[str, _Child] = field(default_factory=dict)
    next_roll_ns: int | None = None
    roll_index: int = 0

    def add(self, child: str, *, group: str, rolls: bool, now_ns: int) -> None:
        """Track a child that was just started."""
        self.children[child] = _Child(group, rolls, last_beat_ns=now_ns)
        if self.rolling_s > 0 and self.next_roll_ns is None:
            self.next_roll_ns = now_ns + int(self.rolling_s * 1e9)

    def heartbeat(self, child: str, *, ready: bool, now_ns: int) -> None:
        """A heartbeat from ``child``."""
        c = self.children.get(child)
        if c is None or not c.up:
            return
        c.last_beat_ns = now_ns
        if ready and not c.ready:
            c.ready = True
            c.ready_since_ns = now_ns
        if c.ready and c.failures and now_ns - c.ready_since_ns >= self.stable_s * 1e9:
            c.failures = 0

    def died(self, child: str, *, now_ns: int, planned: bool = False) -> None:
        """``child`` exited; a planned exit (rolling restart) restarts at once."""
        c = self.children[child]
        c.up = False
        c.ready = False
        if planned:
            c.restart_at_ns = now_ns
            return
        # the first failure in a row restarts at once (a one-off crash costs no waiting); the
        # next ones wait backoff_s, doubling up to max_backoff_s
        delay = 0.0 if c.failures == 0 else self.backoff_s * (2 ** (c.failures - 1))
        delay = min(delay, self.max_backoff_s)
        c.failures += 1
        c.restart_at_ns = now_ns + int(delay * 1e9)

    def started(self, child: str, *, now_ns: int) -> None:
        """``child`` was started again."""
        c = self.children[child]
        c.up = True
        c.ready = False
        c.restart_at_ns = None
        c.last_beat_ns = now_ns
        c.restarts += 1

    def tick(self, now_ns: int) -> list[Action]:
        """The actions due at ``now_ns``."""
        out: list[Action] = []
        for name, c in self.children.items():
            if not c.up and c.restart_at_ns is not None and now_ns >= c.restart_at_ns:
                out.append(Restart(name))
            elif c.up:
                limit = self.heartbeat_timeout_s if c.ready else self.startup_timeout_s
                if now_ns - c.last_beat_ns > limit * 1e9:
                    out.append(Kill(name))
        if self.next_roll_ns is not None and now_ns >= self.next_roll_ns:
            roll = self._next_roll()
            if roll is not None:
                out.append(Roll(roll))
                self.next_roll_ns = now_ns + int(self.rolling_s * 1e9)
        return out

    def _next_roll(self) -> str | None:
        names = sorted(n for n, c in self.children.items() if c.rolls)
        if not names:
            return None
        for k in range(len(names)):
            name = names[(self.roll_index + k) % len(names)]
            c = self.children[name]
            group_busy = any(
                (not o.up or not o.ready) for o in self.children.values() if o.group == c.group
            )
            if c.up and c.ready and not group_busy:
                self.roll_index = (self.roll_index + k + 1) % len(names)
                return name
        return None

    def restarts(self, child: str) -> int:
        """How many times ``child`` has been started again."""
        return self.children[child].restarts
