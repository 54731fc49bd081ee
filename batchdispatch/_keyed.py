"""KeyedDispatcher: the engine's face for per-key batching (webhooks per endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, List, Optional, TypeVar

from . import _validate
from ._keyed_engine import KeyedEngine
from ._lanes import ALL
from ._retry import RetryPolicy
from ._stats import KeyedStats
from ._types import ErrorHandler

if TYPE_CHECKING:
    from ._spool_protocol import Spool

T = TypeVar("T")

__all__ = ["KeyedDispatcher"]


class KeyedDispatcher(KeyedEngine[T]):
    """Batch items per key and deliver each key's batches on a small thread pool.

    Every key (a webhook endpoint, say) has its own batches: a key's batch
    goes out when it holds *max_batch_size* items or when its oldest item
    has waited *delay* seconds. Batches of different keys are delivered in
    parallel on at most *max_concurrent_batches* worker threads, never two
    of the same key at once, so a slow or failing key does not hold the
    others back. Within a key, items with a higher *priority* go first, and
    items of equal priority keep their order, retries included.

    .. code-block:: python

        from batchdispatch import KeyedDispatcher, RetryPolicy

        def deliver(endpoint_id, batch):
            print(f"POST {len(batch)} events to {endpoint_id}")

        hooks = KeyedDispatcher(deliver, delay=1.0, max_batch_size=100,
                                retry=RetryPolicy(max_attempts=5))
        hooks.enqueue("endpoint-1", {"event": "message.sent"})
        hooks.enqueue("endpoint-2", {"event": "alert"}, priority=10)
        hooks.flush(5.0, key="endpoint-1")
        hooks.shutdown(timeout=5.0)

    :param deliver: called as ``deliver(key, batch)`` on a worker thread.
        Raising fails the batch (it is retried under *retry*); raising
        :class:`~batchdispatch.PartialFailure` fails only some items, and the
        rest is never sent again.
    :param max_concurrent_batches: worker threads at most, started as work
        appears (>= 1).
    :param retry: a :class:`~batchdispatch.RetryPolicy` (None: no retry).
        While a key's batch waits for its retry, that key's later items wait
        behind it; other keys go on.
    :param max_queue_size: items waiting at most, all keys together (None:
        no limit). Under concurrent producers the bound may be passed by at
        most one item per thread enqueueing at that instant.

    The other options are those of
    :class:`~batchdispatch.BackgroundDispatcher`: *delay*, *max_batch_size*,
    *overflow* (``"drop_oldest"`` evicts the oldest item of the key whose
    waiting items were first seen earliest),
    *block_timeout*, *on_error*, *name*, *flush_on_exit*, *exit_timeout*,
    *clock*, *spool*, *spill_exhausted* (replayed items keep their key) and
    *dead_letters*.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        deliver: Callable[[Any, List[T]], object],
        *,
        delay: float = 0.1,
        max_batch_size: Optional[int] = None,
        max_concurrent_batches: int = 4,
        retry: Optional[RetryPolicy] = None,
        max_queue_size: Optional[int] = 100_000,
        overflow: str = "drop_newest",
        block_timeout: Optional[float] = None,
        on_error: Optional[ErrorHandler[T]] = None,
        name: Optional[str] = None,
        flush_on_exit: bool = True,
        exit_timeout: float = 5.0,
        clock: Optional[Callable[[], float]] = None,
        spool: Optional[Spool] = None,
        spill_exhausted: bool = False,
        dead_letters: bool = True,
    ) -> None:
        options = _validate.common(
            dispatch=deliver, delay=delay, max_batch_size=max_batch_size,
            max_queue_size=max_queue_size, overflow=overflow, block_timeout=block_timeout,
            on_error=on_error, name=name, flush_on_exit=flush_on_exit,
            exit_timeout=exit_timeout, clock=clock, retry=retry,
            spool=spool, spill_exhausted=spill_exhausted, dead_letters=dead_letters,
        )
        workers = _validate.count("max_concurrent_batches", max_concurrent_batches)
        if workers is None:
            raise TypeError("max_concurrent_batches must be an int, got NoneType")
        super().__init__(deliver, max_workers=workers, **options)
        self.deliver = deliver

    #: Add *item* to *key*'s next batch (the engine's method itself, so
    #: the hot path has no call layer).
    enqueue = KeyedEngine._enqueue_keyed

    def pending(self, key: Hashable = ALL) -> int:
        """Items of *key* (or of every key) not yet delivered or given up."""
        return self._pending_for(key)

    def flush(self, timeout: Optional[float] = 5.0, *, key: Hashable = ALL) -> bool:
        """Deliver every key's items now (only *key*'s, with *key*).

        Batches waiting for a retry are tried at once.

        :param timeout: seconds to wait at most, as one deadline; None waits
            as long as it takes. The first parameter, as on
            :meth:`BackgroundDispatcher.flush
            <batchdispatch.BackgroundDispatcher.flush>`: ``flush(5)`` waits
            five seconds for every key.
        :param key: flush only this key (keyword only).
        :returns: True once every item of that key (or of every key)
            enqueued before the call is delivered or given up; False if
            *timeout* seconds passed first.
        """
        return self._drain.flush(key, timeout)

    def stats(self) -> KeyedStats:
        """Return a consistent snapshot of the counters, with per-key figures."""
        return super().stats()
