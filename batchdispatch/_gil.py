"""Whether producers may append without the lock: what the hot paths ask of the GIL.

The lock-free hot paths (see the engine's design notes) rely on the GIL:
a deque append and a length read are each atomic, and a store made by
one thread before a load is seen by a thread that loads after it. A
free-threaded CPython (3.13t and later, where ``sys._is_gil_enabled()``
is False) gives neither guarantee, so there every ``enqueue`` takes the
dispatcher's lock instead (the path that admits a new key or a full
queue), at some cost per item. ``BATCHDISPATCH_FREE_THREADED=1`` forces
that path on any build, which is how it is tested on interpreters with a
GIL. Read once, when a dispatcher is made. Leaf module.
"""

from __future__ import annotations

import os
import sys

#: The environment variable that forces every append under the lock: ``1``
#: (or ``true``, ``yes``, ``on``). Anything else leaves the choice to the
#: build: a GIL that is disabled means the lock.
FREE_THREADED_ENV = "BATCHDISPATCH_FREE_THREADED"


def appends_need_lock() -> bool:
    """Whether every ``enqueue`` must take the dispatcher's lock (no GIL to rely on)."""
    if os.environ.get(FREE_THREADED_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    gil_enabled = getattr(sys, "_is_gil_enabled", None)  # 3.13 and later
    return callable(gil_enabled) and not gil_enabled()
