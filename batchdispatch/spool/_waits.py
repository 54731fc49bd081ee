"""Waits: every wait of a spool operation is bounded by its deadline.

Owns turning an operation's *timeout* into a deadline on
:func:`time.monotonic`, and taking a lock no later than that deadline,
or raising :class:`~batchdispatch.exceptions.SpoolError` kind
``"locked"``; and the least wait for a server's answer
(:data:`ANSWER_FLOOR`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Optional

from .._validate import optional_seconds
from ..exceptions import SpoolError

#: The least time, in seconds, an operation on a server waits for its answer, however
#: close its deadline (even at ``timeout=0``): one round trip, with room for a busy host.
ANSWER_FLOOR = 0.1


def deadline_after(timeout: Optional[float]) -> Optional[float]:
    """The time.monotonic() by which an operation given *timeout* must stop waiting, or None."""
    checked = optional_seconds("timeout", timeout)
    return None if checked is None else time.monotonic() + checked


def acquire(lock: Any, deadline: Optional[float]) -> bool:
    """Take *lock*, waiting no later than *deadline* (None: as long as it takes); whether it was taken."""
    if deadline is None:
        return bool(lock.acquire())
    return bool(lock.acquire(timeout=max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def holding(lock: Any, deadline: Optional[float], what: str, path: str) -> Iterator[None]:
    """Hold *lock* (one of proc's), waiting no later than *deadline*, or raise "locked"."""
    if not acquire(lock, deadline):
        raise SpoolError(
            f"spool {path}: {what} was busy past the timeout", path=path, kind="locked",
        )
    try:
        yield
    finally:
        lock.release()
