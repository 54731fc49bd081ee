"""What a dispatcher reports about itself: the ``stats()`` snapshots and rate-limited reports.

:class:`DispatcherStats` and :class:`KeyedStats` are the frozen snapshots
``stats()`` returns, and :class:`Histogram` the snapshot of a
distribution in them; :class:`Buckets` is what a worker counts a
distribution in (under the engine lock), and :class:`RateLimit` lets one
log line about drops or failures through per interval and counts the ones
it holds back. Leaf module: it imports nothing of batchdispatch.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Callable, Hashable, List, Mapping, Optional, Tuple

#: Upper bounds of the buckets of ``batch_seconds``: Prometheus's default buckets.
DURATION_BOUNDS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
#: Upper bounds of the buckets of ``batch_sizes``, in items.
SIZE_BOUNDS: Tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A snapshot of a distribution with fixed buckets, as Prometheus keeps one.

    ``counts[i]`` is the number of observations *v* with
    ``bounds[i - 1] < v <= bounds[i]``, and the last one, ``counts[-1]``,
    those above every bound; so ``len(counts) == len(bounds) + 1``.

    .. versionadded:: 0.2.0
    """

    #: The buckets' upper bounds (inclusive), ascending.
    bounds: Tuple[float, ...]
    #: Observations per bucket (not cumulative), the last one above every bound.
    counts: Tuple[int, ...]
    #: The sum of every observation.
    sum: float
    #: How many observations there were (the sum of ``counts``).
    count: int

    def cumulative(self) -> List[Tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, the last bound ``inf``:
        the form of Prometheus's ``_bucket{le=...}`` samples."""
        total = 0
        pairs = []
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            total += count
            pairs.append((bound, total))
        return pairs

    def quantile_bound(self, q: float) -> Optional[float]:
        """The upper bound of the bucket that holds the *q*-quantile (0 < *q* <= 1):
        at least that fraction of the observations were at or below it.
        ``inf`` if it lies above every bound; None with no observation."""
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1], got {q!r}")
        if not self.count:
            return None
        wanted = q * self.count
        for bound, seen in self.cumulative():
            if seen >= wanted:
                return bound
        return math.inf  # pragma: no cover - the last cumulative count is self.count

    def __str__(self) -> str:
        """One line: ``count=3 mean=0.0123 p50<=0.025 p95<=0.05 p99<=0.05``."""
        if not self.count:
            return "count=0"
        quantiles = " ".join(f"p{round(q * 100)}<={self.quantile_bound(q):g}" for q in (0.5, 0.95, 0.99))
        return f"count={self.count} mean={self.sum / self.count:.4g} {quantiles}"


class Buckets:
    """A distribution being counted: :meth:`observe` each value, :meth:`snapshot` to read.

    Not thread-safe: the engine observes and reads under its lock.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> Histogram:
        return Histogram(self.bounds, tuple(self.counts), self.sum, self.count)


@dataclasses.dataclass(frozen=True)
class DispatcherStats:
    """A snapshot of a dispatcher's counters, from ``stats()``.

    Once everything has drained, ``enqueued + replayed == dispatched +
    failed + spilled`` plus the accepted items later discarded (evicted by
    ``"drop_oldest"`` or given up at exit).

    .. versionchanged:: 0.2.0
       ``oldest_pending_age``, ``batch_seconds`` and ``batch_sizes``.
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
    #: How long each dispatch call took, in seconds (retries included, each
    #: counted once; ``batch_seconds.count == batches``), with Prometheus's
    #: default buckets (0.005 to 10).
    batch_seconds: Histogram
    #: How many items each dispatch call was given (retries included), with
    #: buckets 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000 and 5000.
    batch_sizes: Histogram


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
