"""Lanes and batches: where a dispatcher's items wait, and how they leave.

A *lane* holds one key's waiting items, its deadline and the batch it has
out (at most one). ``Lane`` is BackgroundDispatcher's single lane;
``PriorityLane`` is a KeyedDispatcher lane, ordered by priority. Both keep
the default priority in one deque that producers append to without a lock.
The engine in ``_engine.py`` decides when a lane goes out; this module
only stores.

Positions, for flush: an item of the default priority is known by its
index in its lane (``taken`` counts the items that left the deque), since
a lock-free append cannot draw a number from a shared counter. Items
appended under the engine lock (other priorities, and items delivered on a
caller's thread) draw an engine-wide sequence number instead.
"""

from __future__ import annotations

import collections
import itertools
import math
import sys
from typing import Any, Deque, Dict, Hashable, List, Optional, Tuple

NEVER = sys.maxsize
INF = math.inf


class Spooled:
    """An item written to the spool before it was queued (durable mode), with its row id.

    Lanes hold it in the item's place; a batch is unwrapped when it is
    taken, so dispatch, listeners and ``on_error`` only see the item.
    """

    __slots__ = ("item", "row")

    def __init__(self, row: int, item: Any) -> None:
        self.row = row
        self.item = item


class Batch:
    """Items taken from a lane, through every attempt until settled."""

    __slots__ = ("attempt", "first", "id", "items", "key", "lane", "not_before", "rows", "seq_first")

    def __init__(
        self, lane: Optional[Lane], items: List[Any], first: int, key: Hashable = None, seq_first: int = NEVER
    ) -> None:
        self.lane = lane  # None for a batch delivered inline, which is never retried
        self.key = lane.key if lane is not None else key
        self.items = items
        self.first = first  # lane position of its earliest default-priority item (NEVER if none), for flush
        self.seq_first = seq_first  # sequence number of its earliest item that has one (NEVER if none)
        self.attempt = 0
        self.not_before: Optional[float] = None  # set while waiting for a retry
        self.id: Optional[str] = None  # made on first request: see current_batch_id()
        # Spool row id of each item (0: not in the spool), or None when no
        # item is: acked once delivered.
        self.rows: Optional[List[int]] = None


class Lane:
    """One key's waiting items, its deadline and its batch (if one is out).

    Items of the default priority wait in ``items``, a deque that producers
    append to without the lock. Positions are counted by ``taken``.
    """

    __slots__ = (
        "batch", "dead", "due_at", "first_at", "flush_seq", "flush_upto", "grant", "items", "key",
        "last_take", "prioritised", "ready", "room", "spilling", "taken", "wake_at",
    )

    def __init__(self, key: Hashable, room: int = 0) -> None:
        self.key = key
        self.items: Deque[Any] = collections.deque()
        self.taken = 0  # position of the next item to leave ``items``
        self.due_at: Optional[float] = None  # engine clock
        self.first_at: Optional[float] = None  # when the oldest waiting item was seen
        self.last_take = -INF
        self.batch: Optional[Batch] = None
        self.flush_upto = 0  # flush target: take at once while an item before this position waits
        self.flush_seq = 0  # flush(key) target for items with a sequence number
        self.ready = False  # in the engine's ready queue (at most once)
        self.prioritised = 0  # items waiting outside ``items`` (other priorities)
        # Keyed lanes publish these for lock-free producers, as the engine
        # does for BackgroundDispatcher's lane (see the engine's notes): an
        # append is allowed while len(items) < room, and looked at under the
        # lock once len(items) > wake_at. Both are -1 once the lane is
        # forgotten or the dispatcher closing.
        self.room = room
        self.wake_at = 0
        self.grant = 0  # this lane's share of a bounded queue (room, while running)
        self.dead = False  # being forgotten: set before room and wake_at become -1
        # A batch of it went to the spool while closing: what follows goes
        # there too, behind it, rather than out ahead of it.
        self.spilling = False

    def size(self) -> int:
        return len(self.items)

    def min_position(self) -> float:
        return self.taken if self.items else INF

    def min_seq(self) -> float:
        return INF

    def pop(self, count: int) -> Tuple[List[Any], int, int]:
        """Pop *count* items; return them, the first one's position and sequence number."""
        # Producers append without the lock, so the deque is popped item by
        # item (in C, via starmap) rather than copied and cleared.
        first = self.taken
        items = popleft(self.items, count)
        self.taken += count
        return items, first, NEVER

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
    """One priority other than the default in a keyed lane, FIFO.

    Each item has two stamps: its sequence number, for flush, and how many
    default-priority items its lane had been given before it, so that the
    lane can tell which of its items is oldest (for ``"drop_oldest"``).
    """

    __slots__ = ("items", "stamps")

    def __init__(self) -> None:
        self.items: Deque[Any] = collections.deque()
        self.stamps: Deque[Tuple[int, int]] = collections.deque()  # (sequence number, lane position)

    def take(self, count: int) -> Tuple[List[Any], int]:
        """Pop *count* items (at most ``len(items)``); return them and the first one's sequence number."""
        first = self.stamps[0][0]
        for _ in range(count):
            self.stamps.popleft()
        return popleft(self.items, count), first


class PriorityLane(Lane):
    """A KeyedDispatcher lane: higher priority first, FIFO within a priority.

    The default priority, 0, lives in ``items`` (appended to without the
    lock); the others in ``levels``, filled by the engine under its lock.
    """

    __slots__ = ("levels", "order")

    def __init__(self, key: Hashable, room: int = 0) -> None:
        super().__init__(key, room)
        self.levels: Dict[int, Level] = {}  # priorities other than 0
        self.order: List[int] = [0]  # priorities present (0 always), highest first

    def push(self, priority: int, seq: int, item: Any) -> None:
        """Add an item of a priority other than 0. Lock held."""
        level = self.levels.get(priority)
        if level is None:
            level = self.levels[priority] = Level()
            self.order.append(priority)
            self.order.sort(reverse=True)
        level.items.append(item)
        level.stamps.append((seq, self.taken + len(self.items)))
        self.prioritised += 1

    def size(self) -> int:
        return len(self.items) + self.prioritised

    def min_seq(self) -> float:
        return min((level.stamps[0][0] for level in self.levels.values()), default=INF)

    def pop(self, count: int) -> Tuple[List[Any], int, int]:
        if not self.levels:  # only the default priority: the usual case
            return super().pop(count)
        items: List[Any] = []
        first = seq_first = NEVER
        for priority in list(self.order):
            left = count - len(items)
            if not left:
                break
            if priority == 0:
                take = min(left, len(self.items))
                if take:
                    taken, first, _ = super().pop(take)
                    items += taken
                continue
            level = self.levels[priority]
            take = min(left, len(level.items))
            taken, seq_first_here = level.take(take)
            items += taken
            seq_first = min(seq_first, seq_first_here)
            self.prioritised -= take
            self._drop_if_empty(priority, level)
        return items, first, seq_first

    def pop_oldest(self) -> Any:
        # A level's head came before the default item at the lane position
        # it was stamped with (ties: the level's, pushed first).
        oldest: Optional[int] = None
        best: Tuple[float, int, float] = (self.taken, 1, 0) if self.items else (INF, 1, INF)
        for priority, level in self.levels.items():
            seq, position = level.stamps[0]
            if (position, 0, seq) < best:
                oldest, best = priority, (position, 0, seq)
        if oldest is None:
            return super().pop_oldest()
        level = self.levels[oldest]
        (item,), _ = level.take(1)
        self.prioritised -= 1
        self._drop_if_empty(oldest, level)
        return item

    def _drop_if_empty(self, priority: int, level: Level) -> None:
        if not level.items:
            del self.levels[priority]
            self.order.remove(priority)
