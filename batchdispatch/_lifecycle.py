"""A dispatcher's lifecycle: its states, and the transitions between them.

::

    NEW --first enqueue--> RUNNING --shutdown() or exit hook--> CLOSING --drained--> CLOSED
     |                                                                                 ^
     +------------------- shutdown() or exit hook before any enqueue -----------------+

* ``NEW``: no worker yet; the first enqueue starts one (or, in a process
  without threads, has callers deliver). A forked child's dispatchers are
  new again (the parent keeps their items), unless they were closing or
  closed in the parent: then they are closed.
* ``RUNNING``: workers take batches; ``enqueue`` accepts items.
* ``CLOSING``: ``enqueue`` refuses items (dropped as ``"closed"``) but for
  those that arrive after the exit hook closed the dispatcher, which are
  delivered on the enqueuing thread; the workers drain what was accepted.
* ``CLOSED``: the workers are gone; nothing is taken any more.

The states are strings too, so that a snapshot compares with ``"running"``.
"""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    """Where a dispatcher is in its life (see the module's notes)."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


NEW, RUNNING, CLOSING, CLOSED = State.NEW, State.RUNNING, State.CLOSING, State.CLOSED
