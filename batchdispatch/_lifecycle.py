"""A dispatcher's lifecycle: one state, and every transition between states.

::

            first enqueue              shutdown()            drained
    NEW ------------------> RUNNING -------------> CLOSING ---------> CLOSED
     |                        |                      |  a deadline       ^
     |                        |                      v  passed           |
     |                        |                    STOPPING -- drained --+
     |                        | the exit hook                            |
     |                        v                     drained              |
     |                  EXIT_DRAINING ------------------------------+    |
     |                        | the exit hook gives up              |    |
     |                        v                     drained         v    |
     |                  EXIT_GIVEN_UP ---------------------------> EXIT_CLOSED
     |                                                              ^    |
     +---- the exit hook, or an enqueue once the exit hook ran -----+    |
     +---- shutdown() before any enqueue --------------------------------+

* ``NEW``: no worker yet; the first enqueue starts one (or, in a process
  without threads, has callers deliver). A uWSGI master stays new.
* ``RUNNING``: workers take batches; ``enqueue`` accepts items.
* ``CLOSING``: ``shutdown()`` closed it. ``enqueue`` refuses items (a
  ``"closed"`` drop); the workers drain what was accepted, retries included.
* ``STOPPING``: as ``CLOSING``, and the shutdown deadline passed: no retry
  starts any more (given up, or to the spool). The exit hook also comes
  here from ``RUNNING`` when it gives up on a dispatcher it did not close
  (``flush_on_exit=False``).
* ``EXIT_DRAINING``: the exit hook closed it. Late items still join the
  queue, and the workers drain within the exit budget.
* ``EXIT_GIVEN_UP``: the exit hook stopped waiting: what was queued went
  to the spool, or was counted as ``"exit"`` drops, and so do late items.
* ``CLOSED``: the workers are gone after a shutdown; ``enqueue`` refuses.
* ``EXIT_CLOSED``: closed at interpreter exit: a late item is delivered on
  the thread that enqueues it, while the exit budget lasts; past it, it
  goes to the spool or is dropped as ``"exit"``.

A forked child's dispatchers are ``NEW`` again (the parent keeps their
items), unless they were closing or closed in the parent: then ``CLOSED``.
A worker that dies on an internal error closes its dispatcher (``CLOSED``,
or ``EXIT_CLOSED`` at exit), counting what it held as ``"worker_died"``.

Not states: where batches are delivered (``Engine._caller_delivers``, a
mode fixed at the start) and whether appends take the lock (``_gil``).
The states are strings too, so that a snapshot compares with ``"running"``.
"""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    """Where a dispatcher is in its life (see the module's notes)."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    STOPPING = "stopping"
    EXIT_DRAINING = "exit draining"
    EXIT_GIVEN_UP = "exit given up"
    CLOSED = "closed"
    EXIT_CLOSED = "exit closed"

    def __str__(self) -> str:
        return self.value


NEW, RUNNING, CLOSING, STOPPING = State.NEW, State.RUNNING, State.CLOSING, State.STOPPING
EXIT_DRAINING, EXIT_GIVEN_UP = State.EXIT_DRAINING, State.EXIT_GIVEN_UP
CLOSED, EXIT_CLOSED = State.CLOSED, State.EXIT_CLOSED

#: Closed, with workers still draining what was accepted.
DRAINING = frozenset({CLOSING, STOPPING, EXIT_DRAINING, EXIT_GIVEN_UP})
#: Closed, with no worker left.
SHUT = frozenset({CLOSED, EXIT_CLOSED})
#: No retry starts: a deadline passed, or no worker is left.
NO_RETRIES = frozenset({STOPPING, EXIT_GIVEN_UP, CLOSED, EXIT_CLOSED})
#: Closed by the exit hook, or closed at exit.
AT_EXIT = frozenset({EXIT_DRAINING, EXIT_GIVEN_UP, EXIT_CLOSED})


def closed(by_exit: bool, state: State) -> State:
    """The state that ``shutdown()`` (or, *by_exit*, the exit hook) moves *state* to."""
    if state is NEW:
        return EXIT_CLOSED if by_exit else CLOSED
    if state is RUNNING:
        return EXIT_DRAINING if by_exit else CLOSING
    return state


def stopped(state: State) -> State:
    """The state once a shutdown or exit deadline passed: no more retries."""
    if state is EXIT_DRAINING:
        return EXIT_GIVEN_UP
    if state in (RUNNING, CLOSING):
        return STOPPING
    return state


def drained(state: State) -> State:
    """The state once the workers have drained and left."""
    return EXIT_CLOSED if state in AT_EXIT else CLOSED
