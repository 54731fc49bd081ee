"""When lanes go out: deadlines, the ready queue, and taking a lane's batch.

A lane goes out as a batch when it is full, when its oldest item has
waited ``delay`` (and ``delay`` has passed since its previous batch), or
at once on flush, shutdown or a full queue. The scheduler keeps a heap
of lane deadlines (``timers``, pruned lazily: an entry whose lane was
taken or rescheduled is stale) and a queue of lanes to take as soon as a
worker looks (``ready``); :meth:`Scheduler.pick` chooses the next lane and
:meth:`Scheduler.take` hands its batch to a worker. A lane never has two
batches out at a time: a batch that waits to be retried keeps its lane's
later items behind it.

Keyed with ``"drop_oldest"`` and a bound, it also keeps a heap of lane
ages (``ages``: when each lane's oldest waiting item was first seen), so
that the oldest key is found in O(log n).

For ``stats().oldest_pending_age`` it keeps a heap of every pending
item's wait (``waiting``): an entry for a lane when its first waiting item
is stamped (:meth:`Scheduler.stamp`), and one for a batch when a worker
first takes it (:meth:`Scheduler.take`), with the time its oldest item was
first seen. An entry stands while its lane still holds items from that
stamp, or while its batch is open (out, or waiting for a retry); stale
ones are dropped when they reach the top, and the heap is rebuilt once it
outgrows twice the lanes and open batches, so that the oldest wait is
read in O(log n) amortized, however many keys wait. A batch is held by a
weak reference, so that a stale entry does not keep its items alive. A
batch replayed from the spool counts its wait from when a worker first
takes it.

Every method here is called with the engine lock held.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import weakref
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Set, Tuple, Union

from ._lanes import NEVER, Batch, Lane
from ._lifecycle import RUNNING
from .events import BatchStarted

if TYPE_CHECKING:
    from ._engine import Engine

#: What an entry of ``Scheduler.waiting`` stands for: a lane, or a batch (weakly).
Waiter = Union[Lane, "weakref.ReferenceType[Batch]"]


class Scheduler:
    """An engine's lane deadlines and ready queue (see the module's notes)."""

    def __init__(self, engine: Engine[Any]) -> None:
        self.engine = engine
        self.timers: List[Tuple[float, int, Lane]] = []  # heap of (due, ticket, lane)
        self.ticket = itertools.count()  # ties in the heaps break by insertion order
        self.ready: Deque[Lane] = collections.deque()
        # Keyed, "drop_oldest" with a bound: a heap of lane ages (see KeyedEngine).
        self.ages: Optional[List[Tuple[float, int, Lane]]] = None
        # When each lane's and open batch's oldest item was first seen, for
        # stats().oldest_pending_age: a heap of (time, ticket, lane or a
        # weak reference to a batch).
        self.waiting: List[Tuple[float, int, Waiter]] = []

    def set_wake(self, lane: Lane, wake_at: int) -> None:
        """Publish a keyed lane's ``wake_at``; closing, every append keeps looking (-1). Lock held."""
        if self.engine._state == RUNNING:
            lane.wake_at = wake_at

    def schedule(self, lane: Lane, now: float) -> None:
        """Give a lane with waiting items its deadline. Called with the lock held."""
        engine = self.engine
        due = max(self.stamp(lane, now), lane.last_take) + engine._delay
        lane.due_at = due
        self.set_wake(lane, engine._batch_limit - 1 - lane.prioritised)
        self.push_timer(due, lane)
        engine._workers.more()

    def stamp(self, lane: Lane, now: float) -> float:
        """Note when the oldest of a lane's waiting items was seen, unless noted;
        return that time. Lock held."""
        if lane.first_at is not None:
            return lane.first_at
        lane.first_at = now
        ages = self.ages
        if ages is not None:
            if len(ages) > 2 * len(self.engine._lanes) + 64:
                # Stale entries (lanes taken or forgotten since) outnumber
                # the live ones: rebuild, amortized O(1) per stamp.
                ages[:] = [entry for entry in ages if self.aged(entry)]
                heapq.heapify(ages)
            heapq.heappush(ages, (now, next(self.ticket), lane))
        self.note_waiting(now, lane)
        return now

    def aged(self, entry: Tuple[float, int, Lane]) -> bool:
        """Whether an entry of ``_ages`` still stands for its lane's first_at. Lock held."""
        lane = entry[2]
        return lane.first_at == entry[0] and self.engine._lanes.get(lane.key) is lane

    def note_waiting(self, since: float, holder: Union[Lane, Batch]) -> None:
        """Note that *holder*'s oldest item has waited since *since*. Lock held."""
        waiting = self.waiting
        engine = self.engine
        if len(waiting) > 2 * (len(engine._lanes) + len(engine._open)) + 64:
            # Stale entries outnumber the live ones: rebuild, amortized O(1)
            # per note. A lane stamped twice at one time (a clock that did
            # not move) has two live entries: one is kept.
            lanes: Set[Lane] = set()
            live = []
            for entry in waiting:
                if self.still_waiting(entry):
                    lane = entry[2]
                    if isinstance(lane, Lane):
                        if lane in lanes:
                            continue
                        lanes.add(lane)
                    live.append(entry)
            waiting[:] = live
            heapq.heapify(waiting)
        waiter: Waiter = holder if isinstance(holder, Lane) else weakref.ref(holder)
        heapq.heappush(waiting, (since, next(self.ticket), waiter))

    def still_waiting(self, entry: Tuple[float, int, Waiter]) -> bool:
        """Whether an entry of ``waiting`` still stands for pending items. Lock held."""
        holder = entry[2]
        engine = self.engine
        if isinstance(holder, Lane):
            live = engine._lanes.get(holder.key) is holder
            return live and holder.first_at == entry[0] and holder.size() > 0
        return holder() in engine._open

    def oldest_waiting(self) -> Optional[float]:
        """When the oldest pending item that has an entry was first seen, or None. Lock held."""
        waiting = self.waiting
        while waiting:
            if self.still_waiting(waiting[0]):
                return waiting[0][0]
            heapq.heappop(waiting)
        return None

    def push_timer(self, due: float, lane: Lane) -> None:
        """Add a deadline. Idle workers sleep until the earliest one (or for
        ever with none), so they must look again only when this one is the
        new earliest; busy workers look when they come back."""
        engine = self.engine
        earliest = not self.timers or due < self.timers[0][0]
        heapq.heappush(self.timers, (due, next(self.ticket), lane))
        if earliest and engine._workers.sleepers:
            engine._workers.kick_all()

    def mark_ready(self, lane: Lane) -> None:
        """Queue a lane to be taken as soon as a worker looks. Lock held."""
        self.set_wake(lane, NEVER)
        if not lane.ready:
            lane.ready = True
            self.ready.append(lane)

    def make_ready(self, lane: Lane) -> None:
        """Queue a lane and get a worker to look: an idle one, or a new one.

        (A worker that looks awake may be inside a slow listener, so an idle
        one is always woken.)
        """
        engine = self.engine
        self.mark_ready(lane)
        if not engine._workers.kick():
            engine._workers.more()

    def rush(self) -> None:
        """Make every lane with work due now (flush of everything, close)."""
        engine = self.engine
        for lane in engine._lanes.values():
            if lane.awaits_take():
                self.mark_ready(lane)
        engine._workers.kick_all()
        engine._workers.more()

    def pick(self, now: float) -> Optional[Lane]:
        """The next lane to take from: ready ones first, then expired
        deadlines, then (with the queue full) the earliest deadline."""
        while self.ready:
            lane = self.ready.popleft()
            lane.ready = False
            if self._takeable(lane, now):
                return lane
            # A retry whose backoff still runs: its timer brings it back.
        timers = self.timers
        while timers and timers[0][0] <= now:
            due, _, lane = heapq.heappop(timers)
            if lane.due_at == due and self._takeable(lane, now):
                return lane
        return self.engine._pick_when_full()

    def _takeable(self, lane: Lane, now: float) -> bool:
        """Whether a worker may take the lane now. Lock held."""
        engine = self.engine
        if engine._lanes.get(lane.key) is not lane:
            return False  # forgotten: a producer moves what lands in it
        batch = lane.batch
        if batch is None:
            return lane.size() > 0
        if batch.not_before is None:
            return False  # out with a worker
        # Waiting for a retry: its backoff ends at not_before, or early for
        # a flush that covers it, or for shutdown.
        return batch.not_before <= now or engine._state != RUNNING or self.flushes(batch, lane)

    def flushes(self, batch: Batch, lane: Lane) -> bool:
        """Whether a flush waits for *batch*. Lock held."""
        return batch.first < lane.flush_upto or batch.seq_first < max(self.engine._flush_upto, lane.flush_seq)

    def flushing(self, lane: Lane) -> bool:
        """Whether a flush waits for an item still in *lane*. Lock held."""
        flush_seq = max(self.engine._flush_upto, lane.flush_seq)
        return lane.min_position() < lane.flush_upto or lane.min_seq() < flush_seq

    def has_work(self) -> bool:
        engine = self.engine
        if engine._open or engine._bridge.replay:
            return True
        return any(lane.size() for lane in engine._lanes.values())

    def take(self, lane: Lane, now: float) -> Batch:
        """Hand the lane's next batch to this worker. Called with the lock held."""
        engine = self.engine
        batch = lane.batch
        if batch is None:
            items, first, seq_first = engine._pop_lane(lane, min(lane.size(), engine._batch_limit))
            batch = lane.batch = Batch(lane, items, first, seq_first=seq_first)
            if engine._bridge.wrapped:
                engine._bridge.unwrap(batch)
            engine._open.add(batch)
            batch.first_at = now if lane.first_at is None else lane.first_at
            self.note_waiting(batch.first_at, batch)
            lane.last_take = now
            lane.first_at = None
            engine._overflowing = False
            if engine._blocked:
                engine._notify_progress()
        elif batch.first_at is None:  # replayed from the spool: it waits here from now
            batch.first_at = now
            self.note_waiting(now, batch)
        batch.not_before = None
        batch.attempt += 1
        lane.due_at = None
        # Items behind the batch count their delay from now (items left
        # behind by a full batch) or from when the first of them arrived,
        # which the first append after this look stamps: publish, then look.
        self.set_wake(lane, 0)
        if lane.size():
            self.stamp(lane, now)
            self.set_wake(lane, NEVER)
        engine._inflight.add(batch)
        engine._taken(lane)
        if self.ready or self.timers:
            engine._workers.more()
        engine._post("batch_started", lambda: BatchStarted(lane.key, tuple(batch.items), batch.attempt))
        return batch
