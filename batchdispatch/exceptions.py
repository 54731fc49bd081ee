"""Exceptions raised by batchdispatch.

Every exception derives from :class:`BatchDispatchError`, so one ``except``
clause catches anything this library raises on purpose.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable, List, Optional

__all__ = [
    "BatchDispatchError",
    "DeliveryError",
    "PartialFailure",
    "QueueFullError",
    "SerializationError",
    "SpoolError",
    "UnknownEndpointError",
]


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


class DeliveryError(BatchDispatchError):
    """A batch could not be delivered (raised by the sinks of :mod:`batchdispatch.http`).

    The dispatcher sees it like any other failure: ``on_error``, the
    ``batch_failed`` event and its :class:`~batchdispatch.RetryPolicy`. When
    :attr:`retryable` is False (an HTTP 4xx other than 408 and 429, say) the
    policy gives the items up at once.

    .. code-block:: python

        def on_error(exc, batch):
            if isinstance(exc, DeliveryError) and exc.status == 413:
                print(f"{exc.url} refused a batch of {len(batch)} as too large")

    :ivar url: the target, without user info or query string, so no
        credential carried in the URL appears in messages.
    :ivar status: the HTTP status of the last answer (None: no answer, as on
        a connection error or timeout, whose exception is ``__cause__``).
    :ivar body: the first 200 characters or so of the last answer's body.
    :ivar retryable: whether trying again later may help.
    :ivar retry_after: seconds the receiver asked to wait before the next
        attempt (a ``Retry-After`` header), or None. A dispatcher with a
        :class:`~batchdispatch.RetryPolicy` waits that long for this
        batch's key, capped at the policy's ``max_backoff``, instead of its
        own backoff; the worker is free meanwhile.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: Optional[int] = None,
        body: str = "",
        retryable: bool = True,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after


class SerializationError(DeliveryError):
    """An item of the batch could not be serialized; never retryable.

    The message names the item's index in the batch and the type that could
    not be encoded, for example ``item 3 of the batch is not JSON
    serializable: datetime``.

    :ivar index: the index of the offending item in the batch (None: unknown).
    """

    def __init__(self, message: str, *, url: str = "", index: Optional[int] = None) -> None:
        super().__init__(message, url=url, retryable=False)
        self.index = index


class UnknownEndpointError(DeliveryError):
    """A :class:`~batchdispatch.http.WebhookSink` was asked to deliver to an id it does not know.

    Never retryable: the items are given up at once.

    :ivar endpoint_id: the unknown id.
    """

    def __init__(self, endpoint_id: Hashable) -> None:
        super().__init__(f"unknown endpoint id {endpoint_id!r}", retryable=False)
        self.endpoint_id = endpoint_id


class SpoolError(BatchDispatchError):
    """A spool operation failed (:class:`~batchdispatch.spool.SqliteSpool`,
    :class:`~batchdispatch.spool.PostgresSpool`, or any other
    :class:`~batchdispatch.spool.Spool`).

    The message names the spool (its file, or its server and table,
    without credentials) and the cause; the underlying error (a
    :class:`sqlite3.Error`, :class:`OSError`, a database client's error,
    or the serializer's own exception) is ``__cause__``. Nothing stored is
    damaged by the failure: a write that fails is rolled back whole.

    .. code-block:: python

        try:
            spool.put([(None, {"event": "signup"})])
        except SpoolError as exc:
            faults[exc.kind] += 1   # "full", say: keep the items in memory

    :ivar path: the spool's file, or where a spool on a server lives
        (``postgresql://host:port/db#table``, no credentials).
    :ivar kind: what went wrong, one of :attr:`KINDS`: ``"corrupt"`` (not a
        spool file, or a damaged one), ``"full"`` (no space left),
        ``"read_only"`` (the file or its directory cannot be written),
        ``"locked"`` (another connection held the file past the spool's
        timeout or the operation's, or this thread is already inside the
        spool: a signal handler called it), ``"removed"`` (the spool's
        directory, or a file of its write-ahead log, was removed while in
        use and could not be made again), ``"io"`` (any other error of the
        file system or SQLite), ``"encode"`` (an item or key the spool
        cannot serialize; the spool itself is fine), ``"unreachable"`` (the
        spool's server could not be reached, or the connection to it was
        lost) and ``"closed"`` (the spool was closed).
    :ivar refused: for an ``"encode"`` error from ``put``: the indices, in
        the input, of the items that could not be encoded, ascending. Every
        other item was written. None for every other error, which means
        nothing was written.
    :ivar rows: for an ``"encode"`` error from ``put``: the row id written
        for each input item, aligned with the input, 0 for a refused one.
        None otherwise.

    .. versionchanged:: 0.2.0
        ``refused``, ``rows`` and the kinds ``"removed"`` and ``"unreachable"``.
    """

    #: Every value :attr:`kind` takes.
    KINDS = ("corrupt", "full", "read_only", "locked", "removed", "io", "encode", "unreachable", "closed")

    def __init__(
        self,
        message: str,
        *,
        path: str,
        kind: str,
        refused: Optional[List[int]] = None,
        rows: Optional[List[int]] = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind
        self.refused = refused
        self.rows = rows
