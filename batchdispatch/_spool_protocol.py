"""The spool contract: what a dispatcher needs from ``spool=``, and nothing else.

A leaf module: it imports nothing of batchdispatch, so that ``_validate``
can check ``spool=`` against :class:`Spool` without importing an
implementation. The public name is :class:`batchdispatch.spool.Spool`.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable, List, Optional, Protocol, Tuple, runtime_checkable

__all__ = ["Spool"]


@runtime_checkable
class Spool(Protocol):
    """What a dispatcher's ``spool=`` must do: the contract a spool implementation is written against.

    :class:`~batchdispatch.spool.SqliteSpool` implements it; so can any
    class with these members, without subclassing (``isinstance(obj,
    Spool)`` checks that the members exist, not what they do).

    .. code-block:: python

        from batchdispatch.spool import Spool, SqliteSpool

        spool: Spool = SqliteSpool("events.db")
        spool.put([("user-1", {"event": "signup"})])
        rows = spool.claim(100)                 # [(id, key, item), ...]
        spool.ack([row_id for row_id, _, _ in rows])

    **Items, ids and owners.** A spool stores ``(key, item)`` pairs. Each
    stored pair has an id, an ``int`` that is never 0: ids from
    :meth:`append` are negative, ids from :meth:`put` and :meth:`claim`
    positive (a dispatcher tells the two apart by the sign). An id names
    one pair while it is stored; it may be used again once that pair was
    acked. An *owner* is one spool object in one process: two objects on
    the same storage are two owners, and after :func:`os.fork` the child is
    a new owner (see *Fork* below). Every stored pair is in one of two
    states:

    * **free**: any owner's :meth:`claim` may take it;
    * **held** by one owner: claimed by it, put by it with ``claim=True``
      ("parked"), or appended by it. No other owner is handed a held pair
      while its owner lives.

    A held pair leaves that state by :meth:`ack` (deleted: delivered),
    by :meth:`release` (free again; claimed or parked pairs only), or when
    its owner ends: closed, or its process dead. It is then free, and the
    next :meth:`claim` of any owner may take it. How an implementation
    learns that an owner ended is its own (``SqliteSpool``: a lock the
    kernel drops when the process dies; a networked spool: a lease the
    owner renews), and documented by it.

    **Delivery: at least once.** A pair whose write returned is never lost
    until it is acked: at every moment it is free or held by a live owner.
    A pair is handed out twice only if an owner that held it ended without
    acking it (a crash mid-delivery, or a lease that ran out).

    **Order.** :meth:`claim` takes the oldest free pairs: it never returns
    a pair while an older free pair *of the same key* stays free, and it
    lists what it returns oldest first. Pairs are ordered by when they
    became free, in input order within one :meth:`put`; a released pair
    keeps the place it had; the appended pairs of an owner that ended
    become free in the order they were appended. The dispatcher relies on
    the order per key only; ``SqliteSpool`` also keeps it across keys, and
    an implementation should when it can.

    **Durable.** :attr:`durable` is the mode the dispatcher uses the spool
    in, read once when the dispatcher is built: with True, ``enqueue``
    calls :meth:`append` for every item before queuing it and acks the id
    once the item is delivered; with False, only what cannot be delivered
    from memory is :meth:`put`. The spool's operations behave the same
    either way. When :meth:`append` (or :meth:`put`) returns, the pair
    survives the process that wrote it being killed (SIGKILL included) at
    any later moment. What it survives beyond that (a power cut, the loss
    of a host or a server) is for each implementation to say
    (``SqliteSpool`` does not fsync: it survives the process, not a power cut).

    **Keys and items.** Keys are ``str``, ``int``, ``float``, ``bool``,
    None, or tuples of these, and come back equal (a tuple as a tuple).
    Items come back as the spool's encoding makes them (with JSON, tuples
    come back as lists and dict keys as strings). Nothing read from a
    spool may run code: never pickle. A stored pair that cannot be decoded
    is never handed out and never deleted silently: it is kept and logged.

    **Errors.** Every failure of the storage raises
    :class:`~batchdispatch.exceptions.SpoolError` with a
    :attr:`~batchdispatch.exceptions.SpoolError.kind` from
    :attr:`SpoolError.KINDS <batchdispatch.exceptions.SpoolError.KINDS>`
    (a dispatcher counts faults by kind and goes on in memory), a message
    naming the spool (never a password, nor an item's value), ``path``
    saying where the spool lives (a file, or a location without
    credentials), and the underlying error as ``__cause__``. A failed
    operation changes nothing, with one exception: :meth:`put` given items
    it cannot encode writes the others (kind ``"encode"``, with
    ``refused`` and ``rows``). After the spool is closed every operation
    raises kind ``"closed"``. Bad arguments (a *limit* below 1, a negative
    *timeout*, an appended id given to :meth:`release`) raise
    :class:`TypeError` or :class:`ValueError`: they are the caller's
    mistakes, not faults.

    **Timeouts.** Every operation but :meth:`append` takes a keyword
    *timeout*: the most seconds it may wait, in all, for locks (of other
    processes, or of other threads of this one) or for a server, before it
    raises ``SpoolError`` (kind ``"locked"`` for a lock, having changed
    nothing). None: the implementation's own bound for other processes
    and servers (``SqliteSpool``: its *timeout*). A dispatcher passes what
    is left of its caller's deadline, at exit and at shutdown. A spool on a
    server that does not answer by the deadline raises ``"unreachable"``:
    a write sent before may still land (the pair is then stored, and
    handed out at least once). :meth:`append`
    runs on ``enqueue``'s path: it should not wait for other threads, and
    waits for anything else at most the implementation's own bound.

    **Threads.** Every method may be called from any thread, concurrently.
    A call made by a signal handler or a finalizer that interrupted a call
    of the same thread into the spool must not wait for that thread: it
    runs, or raises ``SpoolError`` kind ``"locked"`` at once.

    **Fork.** After :func:`os.fork` the child may go on using the same
    object, as a new owner: what the parent holds (claimed, parked or
    appended) stays the parent's; the child's :meth:`ack` and
    :meth:`release` of those ids change nothing and count 0, and its
    :meth:`claim` does not get them while the parent lives. The child
    never uses, nor closes, the parent's connections or files, and its use
    of the spool (or its exit, closed or not) does not disturb the parent's.

    **Closing** is not part of this protocol, because the dispatcher never
    does it: the application that made the spool closes it, after the
    dispatchers that use it are shut down. An implementation should offer
    an idempotent ``close()`` that ends its owner (its held pairs become
    free, as above) and be usable as a context manager. Its ``repr`` should
    name the spool without secrets: dispatchers' log lines may show it.

    **Dead letters.** A third state beside *free* and *held*: *dead*,
    pairs given up (an error that cannot succeed, or retries run out).
    :meth:`bury` moves held pairs there, or writes pairs that were only in
    memory straight there, with the error's text, the attempts made and
    the time. :meth:`claim` never hands out a dead pair, and nothing but an
    operator's action takes one out of that state: an implementation
    should offer ``dead_letters(key=..., limit=...)`` to list them (oldest
    first), ``requeue(key=...)`` to make them free again (as the newest
    pairs, in the order they died) and ``purge(key=..., older_than=...)``
    to delete them, as :class:`~batchdispatch.spool.SqliteSpool` does.
    Dead pairs survive what free ones survive.

    **Polling.** An implementation whose pairs other owners free while a
    dispatcher runs (a host of a fleet died, its lease ran out) may set an
    attribute ``poll_interval``, in seconds: a running dispatcher then
    claims again that often, besides at its first batch, after a spill and
    at every flush. Without it (or None), it does not poll.

    **Growing the contract.** Later operations are added here as methods
    with their semantics, in the same terms: a state beside *free*,
    *held* and *dead*, and which operations move a pair into it.

    .. versionadded:: 0.2.0
    """

    @property
    def durable(self) -> bool:
        """Whether a dispatcher writes every item here before ``enqueue`` returns (see above)."""

    def append(self, key: Hashable, item: Any) -> int:
        """Store one pair, held by this owner; return its id (negative) once it is stored.

        Made for ``enqueue`` in durable mode: as cheap as the
        implementation can make it. The caller keeps the item and acks the
        id once it is delivered; if this owner ends first, the pair becomes
        free. An appended pair cannot be released: to give it up, the
        caller puts it again and acks the id.

        :raises SpoolError: ``"encode"`` (nothing is stored), ``"closed"``,
            or a fault of the storage.
        """

    def put(
        self, pairs: Iterable[Tuple[Hashable, Any]], *, claim: bool = False, timeout: Optional[float] = None,
    ) -> List[int]:
        """Store *pairs* ``(key, item)`` in one write, all or nothing; return their ids (positive), in order.

        The pairs are free, or with *claim* held by this owner ("parked":
        no one else gets them while it lives). No pairs: nothing is
        written, and the result is ``[]``.

        :raises SpoolError: ``"encode"`` if some items or keys cannot be
            encoded: every other pair is written, in order, in the one
            write; ``refused`` lists the refused indices (ascending) and
            ``rows`` the id of every input pair (0 for a refused one). Any
            other error writes nothing, and ``refused`` and ``rows`` are None.
        """

    def claim(self, limit: int, *, timeout: Optional[float] = None) -> List[Tuple[int, Hashable, Any]]:
        """Take up to *limit* of the oldest free pairs for this owner: ``[(id, key, item), ...]``.

        Frees the pairs of owners that ended first, so that they can be
        among those taken. Returns ``[]`` when nothing is free. A claim
        that raises holds nothing for good: pairs it took on a server
        whose answer was then lost go to this owner's next claim.

        :raises ValueError: *limit* is not an int of at least 1.
        """

    def ack(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Delete pairs this owner holds (claimed, parked or appended): they were delivered.

        Returns how many were deleted. Ids this owner does not hold
        (acked already, another owner's, the parent's after a fork,
        unknown) are ignored and not counted: acking twice is harmless.
        """

    def bury(
        self,
        entries: Iterable[Tuple[int, Hashable, Any]],
        *,
        error: Optional[BaseException] = None,
        attempts: int = 0,
        timeout: Optional[float] = None,
    ) -> int:
        """Make pairs dead (see *Dead letters* above); return how many were made.

        Each entry is ``(id, key, item)``. An id this owner holds (claimed
        or parked) moves that pair, in one write with the others; an
        appended id, or 0 for an item the spool never had, writes *item*
        as a dead pair (an appended id is then acked). Ids this owner does
        not hold are ignored and not counted. Kept with each: the text
        ``"TypeName: message"`` of *error* (cut to a bounded length; the
        caller passes errors whose text holds no secret), *attempts* and
        the time it died.

        :raises SpoolError: as :meth:`put`, ``"encode"`` included: every
            other entry is made dead, and ``refused`` lists the others.
        :raises ValueError: *attempts* is not an int of at least 0.
        """

    def release(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Free claimed or parked pairs this owner holds, each keeping its place; return how many.

        Ids this owner does not hold are ignored and not counted.

        :raises ValueError: an id from :meth:`append` (negative).
        """
