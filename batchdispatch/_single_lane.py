"""The single-lane engine: one queue, appended to without the lock.

BackgroundDispatcher's engine. Producers append to one deque and compare
its length against the two thresholds the worker publishes, ``_room`` and
``_wake_at`` (see the engine's design notes); the worker notices what
they appended when it looks (``_discover``).
"""

from __future__ import annotations

from typing import Callable, Hashable, Optional, TypeVar

from ._engine import Engine
from ._lanes import NEVER, Lane
from ._lifecycle import RUNNING, SHUT
from .exceptions import QueueFullError

T = TypeVar("T")


class SingleLaneEngine(Engine[T]):
    """One lane, fed without the lock."""

    def _reset(self) -> None:
        super()._reset()
        self._main = self._lanes[None] = Lane(None)
        self._items = self._main.items  # the hot path's deque

    def _durable_enqueue(self) -> Callable[..., bool]:
        return self._enqueue_durable

    def _enqueue_durable(self, item: T) -> bool:
        """``enqueue`` of a durable BackgroundDispatcher: to the spool, then to the queue."""
        try:
            return self._enqueue_one(self._bridge.write_ahead(None, item))
        except QueueFullError:
            self._bridge.io()  # remove the refused item's record now, not at the next write
            raise

    def _replay_key(self, key: Hashable) -> Hashable:
        return None  # rows spilled under any key come back to the one lane

    # -- the hot path ------------------------------------------------------------

    def _enqueue_one(self, item: T) -> bool:
        """Add *item* to the next batch without waiting for delivery.

        :returns: True if the item was accepted, False if it was dropped
            (queue full under ``"drop_newest"`` or ``"block"``, or the
            dispatcher is shut down). Every drop is counted in
            :meth:`stats` with its reason.
        :raises QueueFullError: when the queue is full and
            ``overflow="raise"``.
        """
        items = self._items
        if len(items) < self._room:
            items.append(item)
            if len(items) > self._wake_at:
                return self._wake()
            return True
        return self._admit(None, item, 0)

    def _wake(self) -> bool:
        """Slow half of an append: wake the worker, or deal with a late item."""
        with self._lock:
            lane = self._main
            if self._state not in SHUT or not lane.items:
                if self._state == RUNNING:
                    self._wake_at = NEVER  # one notification is enough
                self._workers.kick()
                return True
            # Appended after the worker drained the queue and left. The
            # exit hook's dispatchers still deliver, on this thread; one the
            # user shut down drops it (and any other such late arrival).
            late, first, _ = lane.pop(len(lane.items))
            inline, report = self._delivery.take_late(None, late, first)
        return self._delivery.after_late(inline, report)

    # -- the engine's hooks -----------------------------------------------------------

    def _lane_for(self, key: Hashable) -> Lane:
        return self._main

    def _push(self, key: Hashable, item: T, priority: int) -> bool:
        if len(self._main.items) >= self._queue_limit:
            return False
        self._main.items.append(item)
        if len(self._main.items) > self._wake_at:
            if self._state == RUNNING:
                self._wake_at = NEVER
            self._workers.kick()
        return True

    def _enqueued_count(self) -> int:
        return self._overflowed + self._main.taken + len(self._main.items) - self._uncounted

    def _advance_position(self, count: int) -> None:
        super()._advance_position(count)
        self._main.taken += count

    def _queued_below(self, count: int, reclaim: bool = True) -> bool:
        return len(self._main.items) < count

    def _oldest_lane(self) -> Optional[Lane]:
        return self._main if self._main.items else None

    def _discover(self, now: float) -> int:
        """Notice what producers appended to the lock-free lane; publish its threshold."""
        lane = self._main
        n = len(lane.items)
        running = self._state == RUNNING
        if lane.batch is not None:
            if running:
                self._wake_at = NEVER  # later items wait behind the batch
        elif n == 0:
            lane.due_at = lane.first_at = None
            if running:
                self._wake_at = 0
        else:
            if lane.due_at is None:
                self._scheduler.schedule(lane, now)
            full = n >= self._batch_limit or n >= self._queue_limit
            flushing = lane.taken < lane.flush_upto
            if full or flushing or self._blocked or not running:
                self._scheduler.mark_ready(lane)
            elif running:
                self._wake_at = min(self._batch_limit, self._queue_limit) - 1
        return n

    def _ask_for_news(self, seen: int) -> bool:
        return len(self._items) != seen

    def _taken(self, lane: Lane) -> None:
        if self._state == RUNNING:
            self._wake_at = NEVER  # later items wait behind the batch

    def _after_batch(self, lane: Lane) -> None:
        self._workers.kick()  # the worker rediscovers the lane itself
