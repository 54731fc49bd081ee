"""Exceptions raised by batchdispatch.

Every exception derives from :class:`BatchDispatchError`, so one ``except``
clause catches anything this library raises on purpose.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

__all__ = ["BatchDispatchError", "PartialFailure", "QueueFullError"]


class BatchDispatchError(Exception):
    """Base class of every exception raised by batchdispatch."""


class QueueFullError(BatchDispatchError):
    """Raised by ``enqueue`` when the queue is full and ``overflow="raise"``.

    :ivar max_queue_size: the limit that was reached.
    """

    def __init__(self, max_queue_size: int) -> None:
        super().__init__(f"queue is full ({max_queue_size} items); item not accepted")
        self.max_queue_size = max_queue_size


class PartialFailure(BatchDispatchError):
    """Raised by a dispatch callable when only some items of a batch failed.

    Only *failed_items* are retried (or given up); the rest of the batch
    counts as delivered and is never sent again.

    .. code-block:: python

        def deliver(endpoint_id, batch):
            rejected = post(endpoint_id, batch)      # returns the items refused
            if rejected:
                raise PartialFailure(rejected, RuntimeError("rejected"))

    :ivar failed_items: the items that were not delivered.
    :ivar cause: the underlying error, if any. Its ``retryable`` attribute,
        when False, gives the failed items up at once.
    """

    def __init__(self, failed_items: Iterable[Any], cause: Optional[BaseException] = None) -> None:
        self.failed_items = list(failed_items)
        self.cause = cause
        reason = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"{len(self.failed_items)} items of the batch failed{reason}")

    @property
    def retryable(self) -> bool:
        """False when the cause is marked as not worth retrying."""
        return getattr(self.cause, "retryable", True) is not False
