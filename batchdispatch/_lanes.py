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
import heapq
import itertools
import math
import sys
from typing import Any, Deque, Dict, Hashable, List, Optional, Tuple

NEVER = sys.maxsize
INF = math.inf

#: Stands for "every key" where None could be a key.
ALL: Any = type("AllKeys", (), {"__repr__": lambda self: "ALL"})()


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

    __slots__ = (
        "__weakref__", "attempt", "first", "first_at", "id", "items", "key", "lane", "not_before", "rows",
        "seq_first", "took",
    )

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
        # When its oldest item was first seen (engine clock), for
        # stats().oldest_pending_age: set when a worker first takes it.
        self.first_at: Optional[float] = None
        self.took = 0.0  # seconds its last dispatch call took (perf_counter)


class Lane:
    """One key's waiting items, its deadline and its batch (if one is out).

    Items of the default priority wait in ``items``, a deque that producers
    append to without the lock. Positions are counted by ``taken``.
    """

    __slots__ = (
        "batch", "dead", "due_at", "first_at", "flush_seq", "flush_upto", "grant", "items", "key",
        "last_take", "listed", "prioritised", "ready", "room", "spilling", "taken", "wake_at",
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
        self.listed = False  # on the engine's list of lanes whose grant may hold spare room
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

    def peek(self) -> List[Any]:
        """Every waiting item, in the order ``pop`` would take them, left in place."""
        return list(self.items)

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

    Two heaps keep every operation O(log P) in the number P of priorities
    present, however many there are: ``order`` holds the negated
    priorities (highest first) and ``heads`` each level's first item as
    (sequence number, priority). Both are pruned lazily: an entry whose
    level is gone (or whose item left) is dropped when it reaches the top,
    and a heap grown past twice the levels (plus a few) is rebuilt, so
    stale entries cost O(1) each, amortized.

    Within a lane, items pushed later have a higher sequence number and a
    lane position no lower, so the level head with the lowest sequence
    number is also the oldest by position: ``heads`` serves both flush
    (``min_seq``) and ``"drop_oldest"`` (``pop_oldest``).
    """

    __slots__ = ("heads", "levels", "order")

    def __init__(self, key: Hashable, room: int = 0) -> None:
        super().__init__(key, room)
        self.levels: Dict[int, Level] = {}  # priorities other than 0
        self.order: List[int] = []  # heap of -priority for the levels (lazy)
        self.heads: List[Tuple[int, int]] = []  # heap of (sequence number, priority) of level heads (lazy)

    def push(self, priority: int, seq: int, item: Any) -> None:
        """Add an item of a priority other than 0. Lock held."""
        level = self.levels.get(priority)
        new = level is None
        if level is None:
            level = self.levels[priority] = Level()
        level.items.append(item)
        level.stamps.append((seq, self.taken + len(self.items)))
        self.prioritised += 1
        if new:  # after the append: a rebuild reads every level's head
            _push_pruned(self.order, -priority, len(self.levels), self._order_entries)
            _push_pruned(self.heads, (seq, priority), len(self.levels), self._head_entries)

    def size(self) -> int:
        return len(self.items) + self.prioritised

    def min_seq(self) -> float:
        head = self._oldest_head()
        return INF if head is None else head[0]

    def pop(self, count: int) -> Tuple[List[Any], int, int]:
        if not self.levels:  # only the default priority: the usual case
            return super().pop(count)
        items: List[Any] = []
        first = seq_first = NEVER
        default_done = False  # the default priority is visited once (producers append meanwhile)
        while len(items) < count:
            left = count - len(items)
            priority = self._top()
            if (priority is None or priority < 0) and not default_done:
                default_done = True
                take = min(left, len(self.items))
                if take:
                    taken, first, _ = super().pop(take)
                    items += taken
                continue
            if priority is None:
                break
            taken, seq_first_here = self._take_level(priority, left)
            items += taken
            seq_first = min(seq_first, seq_first_here)
        return items, first, seq_first

    def peek(self) -> List[Any]:
        priorities = sorted(self.levels, reverse=True)
        items: List[Any] = []
        for priority in priorities:
            if priority > 0:
                items += self.levels[priority].items
        items += self.items
        for priority in priorities:
            if priority < 0:
                items += self.levels[priority].items
        return items

    def pop_oldest(self) -> Any:
        # A level's head came before the default item at the lane position
        # it was stamped with (ties: the level's, pushed first).
        head = self._oldest_head()
        if head is None or (self.items and self.levels[head[1]].stamps[0][1] > self.taken):
            return super().pop_oldest()
        (item,), _ = self._take_level(head[1], 1)
        return item

    def _take_level(self, priority: int, count: int) -> Tuple[List[Any], int]:
        """Take up to *count* items off a level; return them and the first one's sequence number."""
        level = self.levels[priority]
        taken, seq_first = level.take(min(count, len(level.items)))
        self.prioritised -= len(taken)
        if level.items:
            _push_pruned(self.heads, (level.stamps[0][0], priority), len(self.levels), self._head_entries)
        else:
            del self.levels[priority]
            if self.order and self.order[0] == -priority:
                heapq.heappop(self.order)
        return taken, seq_first

    def _top(self) -> Optional[int]:
        """The highest priority other than 0 present, or None."""
        order = self.order
        while order and -order[0] not in self.levels:
            heapq.heappop(order)  # stale: emptied by pop_oldest
        return -order[0] if order else None

    def _oldest_head(self) -> Optional[Tuple[int, int]]:
        """(sequence number, priority) of the earliest item outside ``items``, or None."""
        heads, levels = self.heads, self.levels
        while heads:
            seq, priority = heads[0]
            level = levels.get(priority)
            if level is not None and level.stamps[0][0] == seq:
                return heads[0]
            heapq.heappop(heads)  # stale: that item left
        return None

    def _order_entries(self) -> List[int]:
        return [-priority for priority in self.levels]

    def _head_entries(self) -> List[Tuple[int, int]]:
        return [(level.stamps[0][0], priority) for priority, level in self.levels.items()]


def _push_pruned(heap: List[Any], entry: Any, live: int, rebuild: Any) -> None:
    """Push onto a lazily pruned heap; rebuild it from *rebuild()* once stale entries outnumber *live*."""
    if len(heap) > 2 * live + 8:
        heap[:] = rebuild()
        heapq.heapify(heap)
        if entry in heap:
            return
    heapq.heappush(heap, entry)


def check_priority(priority: object) -> None:
    """Refuse a priority that is not an int (bool included: True is not a priority)."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")


def unhashable(key: object) -> TypeError:
    """The error for a key that cannot key a lane."""
    return TypeError(f"key must be hashable, got {type(key).__name__}")
