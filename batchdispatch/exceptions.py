"""Exceptions raised by batchdispatch.

Every exception derives from :class:`BatchDispatchError`, so one ``except``
clause catches anything this library raises on purpose.
"""

from __future__ import annotations

__all__ = ["BatchDispatchError", "QueueFullError"]


class BatchDispatchError(Exception):
    """Base class of every exception raised by batchdispatch."""


class QueueFullError(BatchDispatchError):
    """Raised by ``enqueue`` when the queue is full and ``overflow="raise"``.

    :ivar max_queue_size: the limit that was reached.
    """

    def __init__(self, max_queue_size: int) -> None:
        super().__init__(f"queue is full ({max_queue_size} items); item not accepted")
        self.max_queue_size = max_queue_size
