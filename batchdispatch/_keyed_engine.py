"""The keyed engine: one lane per key, appended to without the lock.

KeyedDispatcher's engine. What differs from the single lane (see the
engine's design notes, "KeyedDispatcher uses the same scheme per lane"):
the hot path looks its key's lane up and appends against the lane's own
``room`` and ``wake_at``; a lane that crosses ``wake_at`` is reported on
``_news`` without the lock; idle lanes are forgotten; the queue bound is
shared out as grants (:mod:`._budget`); and ``"drop_oldest"`` evicts from
the key whose items were first seen earliest (a heap of lane ages).
"""

from __future__ import annotations

import collections
import heapq
import types
from typing import Any, Callable, Deque, Hashable, List, Optional, Tuple, TypeVar

from ._budget import QueueBudget
from ._engine import Engine
from ._lanes import ALL, INF, NEVER, Lane, PriorityLane, check_priority, popleft, unhashable
from ._lifecycle import RUNNING, SHUT
from ._stats import KeyedStats
from .exceptions import QueueFullError

T = TypeVar("T")

#: The priority of the lock-free path (see _enqueue_keyed).
_DEFAULT_PRIORITY = 0


class KeyedEngine(Engine[T]):
    """Lanes per key, each fed without the lock, within a shared queue bound."""

    def _reset(self) -> None:
        super()._reset()
        self._budget = QueueBudget(self, self._queue_limit, self._batch_limit)
        self._retired = 0  # items ever appended to lanes since forgotten
        # "drop_oldest" with a bound: a heap of (first_at, ticket, lane),
        # pushed when a lane's first_at is set, pruned lazily (_oldest_lane).
        if self._overflow == "drop_oldest" and self._queue_limit != NEVER:
            self._scheduler.ages = []
        # (lane, time) for lanes whose producer crossed wake_at, reported
        # without the lock; a worker handles them under it (_take_news).
        self._news: Deque[Tuple[Lane, float]] = collections.deque()
        self._news_wanted = True  # a worker waits for news: the next reporter wakes one

    def _durable_enqueue(self) -> Callable[..., bool]:
        return self._enqueue_durable

    def _enqueue_durable(self, key: Hashable, item: T, priority: int = 0) -> bool:
        """``enqueue`` of a durable KeyedDispatcher: to the spool, then to the key's queue."""
        # Checked before the write, so that a refused item leaves no record.
        try:
            hash(key)
        except TypeError:
            raise unhashable(key) from None
        check_priority(priority)
        try:
            return self._enqueue_keyed(key, self._bridge.write_ahead(key, item), priority)
        except QueueFullError:
            self._bridge.io()  # remove the refused item's record now, not at the next write
            raise

    def _replay_key(self, key: Hashable) -> Hashable:
        return key

    # -- the hot path ------------------------------------------------------------

    def _enqueue_keyed(self, key: Hashable, item: T, priority: int = 0) -> bool:
        """Add *item* to *key*'s next batch without waiting for delivery.

        :param priority: higher goes first within the key; equal priorities
            keep their order. Items with a priority other than 0 take a
            short lock, and so does the first item of a key with nothing
            pending; the others take none.
        :returns: True if accepted, False if dropped (counted in
            :meth:`stats` with its reason).
        :raises QueueFullError: when the queue is full and ``overflow="raise"``.
        :raises TypeError: for a key that is not hashable, or a priority
            that is not an int.
        """
        # The scheme of _enqueue_one, per lane (see the module's notes).
        try:
            lane = self._lanes.get(key)
        except TypeError:
            raise unhashable(key) from None
        # "is": 0.0 and False equal 0 but are not ints, and are refused on
        # the locked path (check_priority) whether the lane exists or not;
        # every int 0 is one object in CPython. (Also quicker than ==.)
        if lane is not None and priority is _DEFAULT_PRIORITY:
            items = lane.items
            if len(items) < lane.room:
                items.append(item)
                # room, which only the lock holder writes, is -1 once the
                # lane is forgotten or the dispatcher closes: a stale
                # "never" another producer stored in wake_at cannot hide it.
                if len(items) > lane.wake_at or lane.room < 0:
                    return self._wake_lane(lane)
                return True
        return self._admit(key, item, priority)

    def _wake_lane(self, lane: Lane) -> bool:
        """Slow half of a keyed append: the lane crossed its ``wake_at``.

        While running, the lane is reported without the lock: it goes on
        ``_news`` with the time, and an idle worker is woken if one waits
        for news. ``wake_at`` becomes "never" first, so that one report is
        enough until a worker looks (and publishes it again). That store
        may land on a lane a worker is forgetting, or on a closing
        dispatcher, and undo their -1: so ``dead`` and the state are read
        *after* it (each is stored before its -1), and either one sends
        the producer to the locked path, which restores the -1.
        """
        if lane.wake_at >= 0 and self._state == RUNNING:
            lane.wake_at = NEVER
            if not lane.dead and self._state == RUNNING:
                self._news.append((lane, self._clock()))
                if self._news_wanted:
                    self._news_wanted = False
                    if not self._workers.kick() and len(self._workers.threads) < self._max_workers:
                        with self._lock:
                            self._workers.more()
                return True
        return self._wake_lane_slow(lane)

    def _wake_lane_slow(self, lane: Lane) -> bool:
        """The slow half of a keyed append, under the lock: a forgotten lane
        (what landed in it joins the live one), a closing dispatcher, or
        items appended after the workers left."""
        with self._lock:
            state = self._state
            if self._lanes.get(lane.key) is lane:
                if state not in SHUT:
                    if state != RUNNING:
                        lane.wake_at = -1  # closing: a stale "never" from _wake_lane must not stand
                    self._lane_event(lane, self._clock())
                    return True
                # Appended after the workers drained the lanes and left.
                late = popleft(lane.items, len(lane.items))
            else:
                # Forgotten under this producer's feet: whatever landed in
                # it (this item, maybe others) joins the key's live lane.
                lane.room = lane.wake_at = -1  # undo a stale "never" from _wake_lane
                late = popleft(lane.items, len(lane.items))
                if not late:
                    return True  # another producer moved it
                if state not in SHUT:
                    live = self._lanes.get(lane.key)
                    if live is None:
                        live = self._new_lane(lane.key)
                    live.items.extend(late)
                    self._budget.cover(live)
                    self._lane_event(live, self._clock())
                    return True
            if not late:
                return True
            inline, report = self._delivery.take_late(lane.key, late, NEVER)
        return self._delivery.after_late(inline, report)

    def _new_lane(self, key: Hashable) -> PriorityLane:
        """Create *key*'s lane, with no grant yet. Lock held."""
        room = (NEVER if self._queue_limit == NEVER else 0) if self._lock_free() else -1
        lane = self._lanes[key] = PriorityLane(key, room)
        if room < 0:
            lane.wake_at = -1
        return lane

    def _lock_free(self) -> bool:
        """Whether producers may append to keyed lanes without the lock: running,
        with worker threads, and a GIL to rely on (see _gil). Callers that
        deliver take the lock for every item. Lock held."""
        return self._state == RUNNING and not self._caller_delivers and not self._locked_appends

    def _push(self, key: Hashable, item: T, priority: int) -> bool:
        """Add an item to its lane and schedule the lane; False if the queue
        has no room for it. Called with the lock held."""
        check_priority(priority)
        try:
            lane = self._lanes.get(key)
        except TypeError:
            raise unhashable(key) from None
        if priority == 0:
            if lane is not None and not self._budget.reserve(lane):
                return False
            if lane is None:
                if not self._budget.reserve(None):
                    return False
                lane = self._new_lane(key)
                self._budget.reserve(lane)  # cannot fail: the room for one item is there
            lane.items.append(item)
        else:
            if not self._budget.reserve(None):
                return False
            if lane is None:
                lane = self._new_lane(key)
            assert isinstance(lane, PriorityLane)
            lane.push(priority, self._seq, item)
            self._seq += 1
            self._budget.prioritised += 1
        self._lane_event(lane, self._clock())
        return True

    # -- the queue bound and the engine's hooks -------------------------------------

    def _lane_for(self, key: Hashable) -> Lane:
        lane = self._lanes.get(key)
        return lane if lane is not None else self._new_lane(key)

    def _enqueued_count(self) -> int:
        return self._enqueued_given(sum(lane.taken + len(lane.items) for lane in self._lanes.values()))

    def _enqueued_given(self, appended: int) -> int:
        """Items accepted, given those ever appended to the live lanes' deques. Lock held."""
        return self._overflowed + self._seq + self._retired + appended - self._uncounted

    def _queued_below(self, count: int, reclaim: bool = True) -> bool:
        return self._budget.queued_below(count, reclaim)

    def _pop_lane(self, lane: Lane, count: int) -> Tuple[List[Any], int, int]:
        held = lane.prioritised
        popped = lane.pop(count)
        self._budget.prioritised -= held - lane.prioritised
        self._budget.list_spare(lane)
        return popped

    def _lanes_emptied(self) -> None:
        self._budget.prioritised = 0

    def _ask_for_news(self, seen: int) -> bool:
        self._news_wanted = True
        return bool(self._news)

    def _pick_when_full(self) -> Optional[Lane]:
        if (self._overflowing or self._blocked) and not self._queued_below(self._queue_limit):
            return self._earliest_waiting()
        return None

    def stats(self) -> KeyedStats:
        """Return a consistent snapshot of the counters, with per-key figures."""
        with self._lock:
            # Lanes producers reported since a worker last looked: stamped
            # now with the time of their report, for oldest_pending_age.
            self._take_news()
            # One pass over the lanes, O(keys): items appended without the
            # lock are counted nowhere but in their lane's deque. Each deque
            # is read once, so pending, enqueued and the per-key figures agree.
            by_key = {}
            queued = appended = 0
            for lane in self._lanes.values():
                waiting = len(lane.items)
                appended += lane.taken + waiting
                waiting += lane.prioritised
                queued += waiting
                batch = lane.batch
                pending = waiting + len(batch.items) if batch is not None else waiting
                if pending:
                    by_key[lane.key] = pending
            fields = self._stats_fields(queued, self._enqueued_given(appended))
            return KeyedStats(
                **fields,
                pending_by_key=types.MappingProxyType(by_key),
                keys_with_pending=len(by_key),
                average_queue_size=sum(by_key.values()) / len(by_key) if by_key else 0.0,
            )

    def _pending_for(self, key: Any) -> int:
        with self._lock:
            if key is ALL:
                return self._pending_count()
            lane = self._lanes.get(key)
            return lane.pending() if lane is not None else 0

    def _lane_event(self, lane: Lane, now: float) -> None:
        """New items in a keyed lane, seen under the lock: stamp their arrival,
        give the lane a deadline, or send it when full. Lock held."""
        # Behind a batch that is out, the delay counts from now, not from
        # when that batch settles.
        self._scheduler.stamp(lane, now)
        if lane.batch is not None:
            self._scheduler.set_wake(lane, NEVER)
        elif lane.due_at is None:
            self._scheduler.schedule(lane, now)
        elif not lane.ready:
            self._scheduler.set_wake(lane, self._batch_limit - 1 - lane.prioritised)
        if lane.batch is None and (lane.size() >= self._batch_limit or self._state != RUNNING):
            self._scheduler.make_ready(lane)

    def _take_news(self) -> None:
        """Handle the lanes producers reported without the lock. Lock held.

        Called at the top of every pass, it also asks for the next report
        (before it looks): a worker that a report woke may go on to deliver
        for long, and a later report must then wake another.
        """
        self._news_wanted = True
        news = self._news
        if not news or self._state in SHUT:
            return
        lanes = self._lanes
        reported: List[Tuple[Lane, float]] = popleft(news, len(news))
        for lane, when in reported:
            if lanes.get(lane.key) is not lane:
                continue  # forgotten: its producers come under the lock
            if not lane.size():
                # Reported, then taken: the next item must report again
                # (publish, then look).
                self._scheduler.set_wake(lane, 0)
                if not lane.size():
                    continue
            # A report may predate the last take: it stamps no earlier.
            self._lane_event(lane, max(when, lane.last_take))

    def _oldest_lane(self) -> Optional[Lane]:
        """The lane to evict from under ``"drop_oldest"``. Lock held.

        Keys have no common order (their items are appended without a
        lock), so the oldest key is the one whose waiting items were first
        seen earliest: to within the time a producer takes to get the lock,
        and counting items left behind by a batch from when it was taken.

        The top of ``_ages`` (O(log n), stale entries dropped on the
        way). Every lane with waiting items has its first_at set, and an
        entry for it, once a worker has seen it: a lane whose first item
        was appended without the lock waits on ``_news`` until then, so
        the news is taken here first. Past that, only a lane caught
        between a producer's append and its look is unstamped; the scan
        at the end covers it, so that a full queue always finds its item.
        """
        ages = self._scheduler.ages
        assert ages is not None  # keyed "drop_oldest" with a bound
        for _ in range(2):
            while ages:
                if self._scheduler.aged(ages[0]):
                    lane = ages[0][2]
                    if lane.size():
                        return lane
                    lane.first_at = None  # emptied: its age left with its items
                heapq.heappop(ages)
            if not self._news:
                break
            self._take_news()
        lanes = [lane for lane in self._lanes.values() if lane.size()]
        return min(lanes, key=lambda lane: INF if lane.first_at is None else lane.first_at, default=None)

    def _evict_oldest(self, lane: Lane, trash: List[Any]) -> None:
        held = lane.prioritised
        super()._evict_oldest(lane, trash)
        self._budget.prioritised -= held - lane.prioritised
        self._budget.give_back(lane)  # its room, for the item that takes its place
        if lane.size():
            return
        # Emptied: its age left with its items, and the next item must be
        # stamped afresh even behind a batch, so its append reports
        # (publish, then look).
        lane.first_at = None
        self._scheduler.set_wake(lane, 0)
        if lane.size():
            self._lane_event(lane, self._clock())
        else:
            self._forget_if_idle(lane)

    def _earliest_waiting(self) -> Optional[Lane]:
        """The lane whose delay ends first, skipping retries still in backoff. Lock held."""
        held = []
        found = None
        timers = self._scheduler.timers
        while timers:
            entry = heapq.heappop(timers)
            lane = entry[2]
            if lane.due_at != entry[0]:
                continue  # stale
            if lane.batch is None and lane.size():
                found = lane
                break
            if lane.awaits_take():
                held.append(entry)
        for entry in held:
            heapq.heappush(timers, entry)
        return found

    def _after_batch(self, lane: Lane) -> None:
        """A lane's batch is settled: schedule its next items, or forget it."""
        if not lane.size():
            self._forget_if_idle(lane)
            return
        self._scheduler.schedule(lane, self._clock())
        if lane.size() >= self._batch_limit or self._state != RUNNING or self._scheduler.flushing(lane):
            self._scheduler.make_ready(lane)

    def _forget_if_idle(self, lane: Lane) -> None:
        """Drop an empty, settled lane, so memory does not grow with keys ever seen. Lock held."""
        if lane.size() or lane.batch is not None:
            return
        if self._lanes.get(lane.key) is not lane:
            return  # forgotten already
        # Publish "forgotten", then look a last time: a producer that
        # appended before the look is seen here, one after it sees -1 and
        # moves its item to a live lane (see _wake_lane).
        lane.dead = True
        lane.room = lane.wake_at = -1
        if lane.items:
            lane.dead = False
            if self._lock_free():
                lane.room = NEVER if self._queue_limit == NEVER else lane.grant
                lane.wake_at = 0
            self._lane_event(lane, self._clock())
            return
        del self._lanes[lane.key]
        self._budget.retire(lane)
        self._retired += lane.taken
        lane.due_at = None
