"""Lanes and batches: where a dispatcher's items wait, and how they leave.

A *lane* holds one key's waiting items, its deadline and the batch it has
out (at most one). ``Lane`` is BackgroundDispatcher's single lane, filled
without a lock; ``PriorityLane`` is a KeyedDispatcher lane, ordered by
priority and filled by the engine under its lock. The engine in
``_engine.py`` decides when a lane goes out; this module only stores.
"""

from __future__ import annotations

import collections
import itertools
import math
import sys
from typing import Any, Deque, Dict, Hashable, List, Optional, Tuple

NEVER = sys.maxsize
INF = math.inf


class Batch:
    """Items taken from a lane, through every attempt until settled."""

    __slots__ = ("attempt", "first", "id", "items", "key", "lane", "not_before")

    def __init__(self, lane: Optional[Lane], items: List[Any], first: int, key: Hashable = None) -> None:
        self.lane = lane  # None for a batch delivered inline, which is never retried
        self.key = lane.key if lane is not None else key
        self.items = items
        self.first = first  # position of its earliest item, for flush
        self.attempt = 0
        self.not_before: Optional[float] = None  # set while waiting for a retry
        self.id: Optional[str] = None  # made on first request: see current_batch_id()


class Lane:
    """One key's waiting items, its deadline and its batch (if one is out).

    This base class stores items in one deque, filled without the lock by
    BackgroundDispatcher's producers; positions are counted by ``taken``.
    """

    __slots__ = (
        "batch", "due_at", "first_at", "flush_upto", "items", "key", "last_take", "ready", "taken", "wake_at",
    )

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.items: Deque[Any] = collections.deque()
        self.taken = 0  # position of the next item to leave ``items``
        self.due_at: Optional[float] = None  # engine clock
        self.first_at: Optional[float] = None  # when the oldest waiting item was seen
        self.last_take = -INF
        self.batch: Optional[Batch] = None
        self.flush_upto = 0  # flush(key) target: take at once before this position
        self.ready = False  # in the engine's ready queue (at most once)
        # Keyed lanes: the engine looks at a push only once ``count`` exceeds
        # this (a new lane needs a deadline, a full one goes out at once).
        self.wake_at = 0

    def size(self) -> int:
        return len(self.items)

    def min_position(self) -> float:
        return self.taken if self.items else INF

    def pop(self, count: int) -> Tuple[List[Any], int]:
        # Producers append without the lock, so the deque is popped item by
        # item (in C, via starmap) rather than copied and cleared.
        first = self.taken
        items = popleft(self.items, count)
        self.taken += count
        return items, first

    def pop_oldest(self) -> Any:
        self.taken += 1
        return self.items.popleft()

    def pending(self) -> int:
        return self.size() + (len(self.batch.items) if self.batch is not None else 0)

    def awaits_take(self) -> bool:
        """Whether a worker will have something to take: items, or a batch waiting to retry."""
        if self.batch is None:
            return self.size() > 0
        return self.batch.not_before is not None


def popleft(queue: Deque[Any], count: int) -> List[Any]:
    """Pop *count* items off the left of *queue*, in C (via starmap)."""
    return list(itertools.starmap(queue.popleft, itertools.repeat((), count)))


class Level:
    """One priority's items in a keyed lane, FIFO, with their positions.

    Positions are kept per run of items that share one: the engine sorts
    the inbox into lanes in bulk, and every item of one drain gets the
    position the drain started at. That is exact for flush, whose target
    is always taken right after a drain, and it costs nothing per item (a
    (position, item) tuple per item would be tracked, and scanned, by the
    garbage collector).
    """

    __slots__ = ("items", "runs")

    def __init__(self) -> None:
        self.items: Deque[Any] = collections.deque()
        self.runs: Deque[List[int]] = collections.deque()  # [position, items], oldest first

    def take(self, count: int) -> Tuple[List[Any], int]:
        """Pop *count* items (at most ``len(items)``); return them and the first one's position."""
        runs = self.runs
        first = runs[0][0]
        left = count
        while left:
            run = runs[0]
            if run[1] > left:
                run[1] -= left
                break
            left -= run[1]
            runs.popleft()
        return popleft(self.items, count), first


class PriorityLane(Lane):
    """A KeyedDispatcher lane: higher priority first, FIFO within a priority.

    Priority 0, the default, always has a level (``zero``), so that the
    engine's drain loop can append to it without a lookup.
    """

    __slots__ = ("count", "levels", "order", "zero")

    def __init__(self, key: Hashable) -> None:
        super().__init__(key)
        self.zero = Level()
        self.levels: Dict[int, Level] = {0: self.zero}
        self.order: List[int] = [0]  # priorities present, highest first
        self.count = 0

    def push(self, priority: int, position: int, item: Any) -> None:
        level = self.levels.get(priority)
        if level is None:
            level = self.levels[priority] = Level()
            self.order.append(priority)
            self.order.sort(reverse=True)
        level.items.append(item)
        level.runs.append([position, 1])
        self.count += 1

    def size(self) -> int:
        return self.count

    def min_position(self) -> float:
        if len(self.order) == 1:
            return self.zero.runs[0][0] if self.zero.items else INF
        return min((level.runs[0][0] for level in self.levels.values() if level.items), default=INF)

    def pop(self, count: int) -> Tuple[List[Any], int]:
        if not count:
            return [], NEVER
        if len(self.order) == 1:  # only the default priority: the usual case
            self.count -= count
            return self.zero.take(count)
        items: List[Any] = []
        first = NEVER
        for priority in list(self.order):
            level = self.levels[priority]
            take = min(count - len(items), len(level.items))
            if take:
                taken, position = level.take(take)
                items += taken
                first = min(first, position)
            self._drop_if_empty(priority, level)
            if len(items) == count:
                break
        self.count -= len(items)
        return items, first

    def pop_oldest(self) -> Any:
        level = min((lv for lv in self.levels.values() if lv.items), key=lambda lv: lv.runs[0][0])
        (item,), _ = level.take(1)
        self.count -= 1
        for priority, candidate in list(self.levels.items()):
            if candidate is level:
                self._drop_if_empty(priority, level)
        return item

    def _drop_if_empty(self, priority: int, level: Level) -> None:
        if not level.items and level is not self.zero:
            del self.levels[priority]
            self.order.remove(priority)
