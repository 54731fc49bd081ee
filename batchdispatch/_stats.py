"""What a dispatcher reports about itself: the ``stats()`` snapshots and rate-limited reports.

:class:`DispatcherStats` and :class:`KeyedStats` are the frozen snapshots
``stats()`` returns; :class:`RateLimit` lets one log line about drops or
failures through per interval and counts the ones it holds back. Leaf
module: it imports nothing of batchdispatch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Mapping, Optional


@dataclasses.dataclass(frozen=True)
class DispatcherStats:
    """A snapshot of a dispatcher's counters, from ``stats()``.

    Once everything has drained, ``enqueued + replayed == dispatched +
    failed + spilled`` plus the accepted items later discarded (evicted by
    ``"drop_oldest"`` or given up at exit).

    .. versionchanged:: 0.2.0
       ``oldest_pending_age``.
    """

    #: The dispatcher's name (worker threads are ``batchdispatch:<name>``).
    name: str
    #: Items accepted and not yet delivered or given up (queued, in flight,
    #: or waiting to be retried).
    pending: int
    #: Items in batches being delivered right now.
    in_flight: int
    #: Items accepted by ``enqueue`` since the dispatcher was created.
    enqueued: int
    #: Items delivered (dispatch returned, or they were not among a
    #: ``PartialFailure``'s failed items).
    dispatched: int
    #: Calls to dispatch, successful or not, retries included.
    batches: int
    #: Items given up after their last attempt failed.
    failed: int
    #: Of the ``failed`` items, those kept in the spool's dead letters
    #: (see ``dead_letters=``). 0 without a spool.
    dead_lettered: int
    #: Items scheduled for another attempt (each retry counts its items).
    retried: int
    #: Items dropped, for any reason (the sum of ``dropped_by_reason``).
    dropped: int
    #: Drops by reason: ``"queue_full"``, ``"closed"``, ``"exit"``, ...
    dropped_by_reason: Mapping[str, int]
    #: The error of the last failed attempt, if any.
    last_error: Optional[BaseException]
    #: Whether a worker thread is running.
    worker_alive: bool
    #: Batches being delivered right now.
    active_batches: int
    #: Items written to the spool instead of being dropped or given up
    #: (overflow, exit, shutdown deadline, exhausted retries). 0 without a spool.
    spilled: int
    #: Items taken back from the spool to be delivered again.
    replayed: int
    #: Spool operations that failed, by kind (``"full"``, ``"read_only"``,
    #: ``"corrupt"``, ``"locked"``, ``"io"``, ``"encode"``, ``"closed"``).
    #: The dispatcher went on in memory after each.
    spool_faults: Mapping[str, int]
    #: Seconds the oldest pending item has waited (queued, in a batch being
    #: delivered, or in one waiting for a retry), on the dispatcher's clock;
    #: None when nothing is pending. A wait counts from when the dispatcher
    #: noted the item: at its enqueue (to within a worker's wake-up), except
    #: for items that arrive behind a batch that is out (in a dispatch call,
    #: or waiting for a retry), noted when a worker next looks (or, keyed,
    #: ``stats()``), at the latest when that batch settles, while that
    #: batch, older, sets the figure; items left behind by a batch (it was
    #: full, or they have a lower priority), counted from when it was taken;
    #: and items replayed from the spool, from when a worker takes them.
    #: ``0.0`` while the only pending items are not noted yet. Read in
    #: O(log n) amortized, however many keys are pending.
    oldest_pending_age: Optional[float]


@dataclasses.dataclass(frozen=True)
class KeyedStats(DispatcherStats):
    """``DispatcherStats`` plus the per-key view of a KeyedDispatcher.

    Every figure, the per-key ones included, comes from one look under the
    dispatcher's lock, so they agree with each other. That look reads each
    key that has items pending, in one pass: an item of the default
    priority is appended without the lock and counted nowhere but in its
    key's queue, so ``pending`` (and ``enqueued``) cannot be kept as running
    totals without a cost on every ``enqueue``. With many keys pending,
    ``stats()`` holds the lock for about 17 ms per 100,000 keys on the test
    machine (``python -m batchdispatch bench --only scale``), while the
    enqueues of new keys and the workers wait for it.
    """

    #: Pending items per key, for keys that have any.
    pending_by_key: Mapping[Hashable, int]
    #: How many keys have pending items.
    keys_with_pending: int
    #: Mean pending items over the keys that have any (0 when none do).
    average_queue_size: float


class RateLimit:
    """Lets one event through per ``interval`` and counts the ones it holds back."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = -float("inf")
        self.held = 0

    def ready(self) -> Optional[int]:
        """Return how many events were held back, or None to hold this one."""
        now = self.clock()
        if now < self.next_at:
            self.held += 1
            return None
        self.next_at = now + self.interval
        held, self.held = self.held, 0
        return held
