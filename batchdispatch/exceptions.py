"""Exceptions raised by batchdispatch.

Every exception derives from :class:`BatchDispatchError`, so one ``except``
clause catches anything this library raises on purpose.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable, List, Optional, Tuple

__all__ = [
    "BatchDispatchError",
    "DeliveryError",
    "EndpointGoneError",
    "ItemTooLargeError",
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

        import requests
        from batchdispatch import PartialFailure


        def deliver(endpoint_id, batch):
            answer = requests.post(f"https://{endpoint_id}.example.com/bulk", json=batch, timeout=10)
            rejected = [batch[i] for i in answer.json()["rejected"]]  # the indexes it refused
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

        from batchdispatch.exceptions import DeliveryError


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


class ItemTooLargeError(DeliveryError):
    """Items larger on their own than the sink's *max_body_bytes*: never sent, never retryable.

    A sink with *max_body_bytes* sends the rest of the batch and raises a
    :class:`PartialFailure` whose ``failed_items`` are these items and whose
    cause is this error, so only they are given up (or, with a spool, kept
    as dead letters). The message names each item's index in the batch and
    its serialized size, for example ``item 3 of the batch is 6,291,458
    bytes, over max_body_bytes (5,242,880): not sent``.

    :ivar oversized: ``(index, size)`` of each such item: its index in the
        batch and its size in bytes, serialized and uncompressed.
    :ivar limit: the *max_body_bytes* in force.

    .. versionadded:: 0.2.0
    """

    def __init__(self, oversized: Iterable[Tuple[int, int]], limit: int, *, url: str = "") -> None:
        self.oversized = tuple(oversized)
        self.limit = limit
        shown = [f"{index} ({size:,} bytes)" for index, size in self.oversized[:5]]
        if len(self.oversized) == 1:
            index, size = self.oversized[0]
            what = f"item {index} of the batch is {size:,} bytes,"
        else:
            more = f" and {len(self.oversized) - 5} more" if len(self.oversized) > 5 else ""
            what = f"items {', '.join(shown)}{more} of the batch are"
        super().__init__(
            f"{what} over max_body_bytes ({limit:,}): not sent", url=url, status=None, retryable=False,
        )

    @property
    def index(self) -> int:
        """The index in the batch of the first item too large."""
        return self.oversized[0][0]

    @property
    def size(self) -> int:
        """The size in bytes of the first item too large."""
        return self.oversized[0][1]


class EndpointGoneError(DeliveryError):
    """An endpoint answered 410 Gone: a :class:`~batchdispatch.http.WebhookSink` disabled it.

    Never retryable. The batch that drew the 410 fails with it (``status``
    410), and so does every later batch for that endpoint id, at once and
    without a request (``status`` None), until
    :meth:`~batchdispatch.http.WebhookSink.enable` is called. The
    dispatcher gives the items up (``stats().failed``, the
    ``items_exhausted`` event), or with a spool keeps them as dead letters
    with this error's text; the sink counts them in
    ``sink.stats().endpoint_gone``.

    :ivar endpoint_id: the endpoint that is gone.
    :ivar reason: ``"endpoint_gone"``, why its items were given up.

    .. versionadded:: 0.2.0
    """

    #: Why the items were given up.
    reason = "endpoint_gone"

    def __init__(self, message: str, endpoint_id: Hashable, *, url: str = "", status: Optional[int] = None,
                 body: str = "") -> None:
        super().__init__(message, url=url, status=status, body=body, retryable=False)
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

        from collections import Counter
        from batchdispatch import SpoolError
        from batchdispatch.spool import SqliteSpool

        faults = Counter()
        with SqliteSpool("events.db") as spool:
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
