"""The keyed queue's bound: room granted to lanes, within ``max_queue_size``.

``max_queue_size`` bounds all keys together, yet producers append to a
key's lane without the lock, so nobody can count the queue on each
append. Instead each lane's ``room`` is its *grant*, a share of the free
room handed out under the lock (about a batch at a time) and reclaimed
when the lane is forgotten, or from lanes holding room beyond their
items when the free room runs out. The grants, plus the items waiting at
other priorities (appended under the lock), never add up to more than
the bound, so the queue can pass it only by one item per thread that was
appending at the instant a grant shrank.

Every method here is called with the engine lock held.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Deque, Optional

from ._lanes import NEVER, Lane

if TYPE_CHECKING:
    from ._keyed_engine import KeyedEngine


class QueueBudget:
    """Grants of queue room to a keyed engine's lanes."""

    def __init__(self, engine: KeyedEngine[Any], limit: int, batch_limit: int) -> None:
        self.engine = engine
        self.limit = limit  # max_queue_size, or NEVER
        self.batch_limit = batch_limit
        self.reset()

    def reset(self) -> None:
        """Nothing granted (a new dispatcher, or a forked child)."""
        self.granted = 0  # the lanes' grants added up (bounded only)
        self.prioritised = 0  # items waiting in lanes' other-priority levels
        # Lanes whose grant may hold room beyond their items, each listed
        # once (Lane.listed), least recently listed first; reclaim takes room
        # back from the front, so a full queue costs O(1) amortized.
        self.spare: Deque[Lane] = collections.deque()

    def reserve(self, lane: Optional[Lane]) -> bool:
        """Room for one more item of *lane*'s default priority (or, with None,
        of another priority), within ``max_queue_size``."""
        limit = self.limit
        if limit == NEVER:
            return True
        need = 1 if lane is None else len(lane.items) + 1 - lane.grant
        if need <= 0:
            return True
        free = limit - self.granted - self.prioritised
        if free < need:
            self.reclaim(need)
            free = limit - self.granted - self.prioritised
        if free < need:
            return False
        if lane is not None:
            # About a batch at a time, so that the lane's producers come back
            # for more about once per batch; less as the free room runs out.
            more = max(need, min(self.batch_limit, free // 2))
            lane.grant += more
            self.granted += more
            self.list_spare(lane)
            if self.engine._lock_free():
                lane.room = lane.grant
        return True

    def list_spare(self, lane: Lane) -> None:
        """Note that a lane's grant may now hold more than its items (it was
        given room, or items left it)."""
        if lane.listed or self.limit == NEVER:
            return
        spare = self.spare
        if len(spare) > 2 * len(self.engine._lanes) + 64:
            # Mostly forgotten lanes (grant 0), listed when nothing needed
            # reclaiming: keep the ones with room to give, amortized O(1).
            kept = collections.deque(each for each in spare if each.grant > len(each.items))
            for each in spare:
                each.listed = False
            for each in kept:
                each.listed = True
            spare = self.spare = kept
        lane.listed = True
        spare.append(lane)

    def reclaim(self, need: int) -> None:
        """Take back the room lanes' grants hold beyond their items, least
        recently listed lane first, until *need* items fit or none is left.

        Room beyond a lane's items appears only when the lane is granted
        some or items leave it, and both list it (:meth:`list_spare`); each
        lane looked at here leaves the list. So a full queue costs O(1)
        per item, amortized, however many keys there are. A smaller room
        is published first: a producer that read the old one may still
        append, one item per thread (the documented slack).
        """
        spare = self.spare
        limit = self.limit
        while spare and limit - self.granted - self.prioritised < need:
            lane = spare.popleft()
            lane.listed = False
            self.give_back(lane)

    def give_back(self, lane: Lane) -> None:
        """Shrink a lane's grant to its items."""
        spare = lane.grant - len(lane.items)
        if spare > 0:
            lane.grant -= spare
            self.granted -= spare
            if self.engine._lock_free():
                lane.room = lane.grant

    def cover(self, lane: Lane) -> None:
        """Grow a lane's grant to cover items it took in past its room (moved from a dead lane)."""
        if self.limit != NEVER and len(lane.items) > lane.grant:
            self.granted += len(lane.items) - lane.grant
            lane.grant = len(lane.items)
            if self.engine._lock_free():
                lane.room = lane.grant

    def retire(self, lane: Lane) -> None:
        """A lane is forgotten: its grant returns to the free room."""
        self.granted -= lane.grant
        lane.grant = 0

    def queued_below(self, count: int, reclaim: bool = True) -> bool:
        """Whether fewer than *count* items wait in lanes (not taken).

        Lanes are appended to without the lock, so summing their lengths
        would cost O(keys): the grants bound them instead (a lane's items
        stay within its grant but for the documented slack), once the room
        they hold beyond their items is taken back as far as needed
        (amortized O(1), see :meth:`reclaim`).
        """
        if self.limit == NEVER:
            return True  # no bound, no grants: callers only ask about the bound or half of it
        if reclaim:
            self.reclaim(self.limit - count + 1)
        return self.granted + self.prioritised < count
