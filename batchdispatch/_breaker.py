"""The breaker: a durable enqueue stops waiting for a spool that fails slowly.

A durable ``enqueue`` writes its item to the spool before it returns. A
spool whose server stops answering (paused, swapping, cut off by the
network) fails each write only at its timeout, 5 s by default for the
server spools: every request thread would wait that long, one after
another. So after a write that failed having waited :data:`SLOW` seconds or
more, the breaker *opens*: for a cooldown, writes skip the spool and their
items go on in memory at once, counted as faults of the same kind. After
the cooldown the next write tries the spool again (concurrent ones share
its wait, through the spool's group commit): stored, the breaker closes;
failed slowly, it opens again for twice as long, :data:`MOST_COOLDOWN` at
most. A write that fails fast (a refused connection, a full disk) never
opens it, since trying again costs nothing and durability comes back
with the first write that works.

The hot path reads :attr:`Breaker.until` alone while the breaker is
closed; the rest runs on faults, with the engine's lock held.
"""

from __future__ import annotations

from typing import Callable, Optional

#: A write that failed after waiting this long (seconds) opens the breaker.
SLOW = 0.1

#: How long the breaker stays open the first time, in seconds; doubled
#: each time a write tried after a cooldown fails slowly again.
FIRST_COOLDOWN = 1.0

#: The longest cooldown, in seconds: once the server answers again, durable
#: writes resume within this long.
MOST_COOLDOWN = 10.0


class Breaker:
    """Whether durable writes skip the spool now (see the module's docstring)."""

    __slots__ = ("clock", "cooldown", "kind", "skipped", "until", "waited")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        #: Writes skip the spool until this time on *clock*; 0.0 while closed.
        self.until = 0.0
        self.cooldown = FIRST_COOLDOWN  # the next time it opens, for this long
        #: The fault kind of the write that opened it, and how long that write waited.
        self.kind = ""
        self.waited = 0.0
        #: Writes skipped since it opened.
        self.skipped = 0

    def skips(self) -> bool:
        """True while open: the write should not be tried. Counts it."""
        if self.clock() < self.until:
            self.skipped += 1  # without a lock: a count for a log line, off by one at worst
            return True
        return False

    def failed(self, started: float, kind: str) -> Optional[float]:
        """A write that began at *started* failed with a fault of *kind*. Opens the
        breaker if the write waited long; returns the cooldown it opened for, or
        None. Lock held."""
        now = self.clock()
        if now - started < SLOW:
            return None
        if self.until > started:  # opened by a write that shared this one's wait
            return None
        opened = self.cooldown
        self.until = now + opened
        self.cooldown = min(opened * 2, MOST_COOLDOWN)
        self.kind = kind
        self.waited = now - started
        return opened

    def stored(self) -> Optional[int]:
        """A write was stored: close. Returns how many writes were skipped while it
        was open, or None if it was closed already. Lock held."""
        if not self.until:
            return None
        skipped = self.skipped
        self.until = 0.0
        self.cooldown = FIRST_COOLDOWN
        self.skipped = 0
        return skipped
