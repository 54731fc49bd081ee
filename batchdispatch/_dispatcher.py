"""BackgroundDispatcher: the public face of the engine for one stream of items."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from . import _validate
from ._lanes import ALL
from ._retry import RetryPolicy
from ._single_lane import SingleLaneEngine
from ._types import DispatchFunc, ErrorHandler

if TYPE_CHECKING:
    from ._spool_protocol import Spool

T = TypeVar("T")

__all__ = ["BackgroundDispatcher"]


class BackgroundDispatcher(SingleLaneEngine[T]):
    """Collect items from any thread and hand them to *dispatch* in batches.

    A daemon worker thread, started on the first :meth:`enqueue`, takes the
    waiting items once *delay* seconds have passed since it saw the first of
    them (and since it took the previous batch), or at once when a batch is
    full, and calls ``dispatch(batch)`` with the lock released. It never
    calls dispatch with an empty list.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher

        def send(batch):
            print(f"sending {len(batch)} events")

        with BackgroundDispatcher(send, delay=0.1) as dispatcher:
            dispatcher.enqueue({"event": "signup"})
        # leaving the block flushed the batch and stopped the worker

    :param dispatch: called as ``dispatch(batch)`` on the worker thread with
        a non-empty list, in enqueue order. If it raises, the batch's items
        count as failed (or, with *retry*, are tried again); raising
        :class:`~batchdispatch.PartialFailure` fails only some of them.
    :param delay: seconds an item may wait for company before its batch
        goes out. Batches leave at most once per *delay*, earlier only when
        a batch (or the queue) is full, or on :meth:`flush`. Must be > 0 and
        finite.
    :param max_batch_size: the largest batch dispatch receives (None: no
        limit). A full batch wakes the worker at once.
    :param max_queue_size: items held at most (None: no limit). Under
        concurrent producers the bound may be passed by at most one item per
        thread enqueueing at that instant.
    :param overflow: what ``enqueue`` does when the queue is full:
        ``"drop_newest"`` rejects the new item, ``"drop_oldest"`` evicts the
        oldest waiting one, ``"block"`` wakes the worker and waits up to
        *block_timeout* seconds for room before dropping, ``"raise"`` raises
        :class:`~batchdispatch.QueueFullError`, ``"spill"`` (with a
        *spool*) writes the item to the spool. Every drop is counted in
        :meth:`stats` under ``"queue_full"`` (or ``"closed"`` for a blocked
        producer released by :meth:`shutdown`).
    :param block_timeout: seconds ``"block"`` waits at most (None: no limit).
    :param on_error: called as ``on_error(exc, batch)`` on the worker thread
        when dispatch raises. By default the failure is logged with its
        traceback on the ``batchdispatch`` logger, at most once every ten
        seconds.
    :param name: names the worker thread ``batchdispatch:<name>`` (default:
        the dispatch callable's qualified name).
    :param flush_on_exit: at interpreter exit, deliver what is pending
        within *exit_timeout* seconds. If False, the queued items are
        discarded at exit, counted as ``"exit"`` drops and logged (a batch
        already in dispatch may still finish).
    :param exit_timeout: seconds the exit hook (and the ``with`` block)
        waits at most.
    :param clock: a monotonic clock for the *delay*, for tests. Flush,
        shutdown and exit deadlines always use the real monotonic clock.
    :param retry: a :class:`~batchdispatch.RetryPolicy` for failed batches
        (None: a failed batch is given up at once). Later items wait behind
        a batch that waits to be retried, so order is kept.
    :param spool: a :class:`~batchdispatch.spool.Spool`, such as
        :class:`~batchdispatch.spool.SqliteSpool`. What cannot
        be delivered goes to the spool instead of being lost (items left at
        the exit deadline, batches that fail while the dispatcher closes,
        items over the queue limit with ``overflow="spill"``), and the
        first enqueue (or :meth:`flush`) replays what the spool holds,
        oldest first, before new items. With ``durable=True`` every item
        is written before ``enqueue`` returns. See :doc:`/guarantees`.
    :param spill_exhausted: with a spool, items given up after their
        retries go to it too, for the next start, rather than count as
        failed.
    :param dead_letters: with a spool, items given up (an error that is
        not retryable, or retries run out without *spill_exhausted*) are
        kept in the spool's dead letters, with the error, the attempts and
        the time, rather than deleted; they are never replayed on their
        own (see :doc:`/operations`). They count as failed, and in
        ``stats().dead_lettered``. False deletes them. No effect without a
        spool.
    """

    def __init__(
        self,
        dispatch: DispatchFunc[T],
        *,
        delay: float = 0.1,
        max_batch_size: Optional[int] = None,
        max_queue_size: Optional[int] = 100_000,
        overflow: str = "drop_newest",
        block_timeout: Optional[float] = None,
        on_error: Optional[ErrorHandler[T]] = None,
        name: Optional[str] = None,
        flush_on_exit: bool = True,
        exit_timeout: float = 5.0,
        clock: Optional[Callable[[], float]] = None,
        retry: Optional[RetryPolicy] = None,
        spool: Optional[Spool] = None,
        spill_exhausted: bool = False,
        dead_letters: bool = True,
    ) -> None:
        options = _validate.common(
            dispatch=dispatch, delay=delay, max_batch_size=max_batch_size,
            max_queue_size=max_queue_size, overflow=overflow, block_timeout=block_timeout,
            on_error=on_error, name=name, flush_on_exit=flush_on_exit,
            exit_timeout=exit_timeout, clock=clock, retry=retry,
            spool=spool, spill_exhausted=spill_exhausted, dead_letters=dead_letters,
        )
        super().__init__(lambda key, batch: dispatch(batch), max_workers=1, **options)
        self.dispatch = dispatch

    enqueue = SingleLaneEngine._enqueue_one

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Deliver everything enqueued so far, without waiting for the delay.

        Batches waiting for a retry are tried at once.

        :param timeout: seconds to wait at most, measured as one deadline;
            None waits as long as it takes.
        :returns: True once every item enqueued before the call has been
            delivered or given up; False if the timeout passed first. Called
            from inside dispatch or on_error, it cannot wait for itself: it
            asks for an immediate flush and returns False.
        """
        return self._drain.flush(ALL, timeout)
