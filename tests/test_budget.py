"""QueueBudget on its own: grants of room to lanes never add up past the bound."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from batchdispatch._budget import QueueBudget
from batchdispatch._lanes import NEVER, PriorityLane

Lanes = Dict[Any, PriorityLane]


class FakeEngine:
    """What the budget reads of its engine, no more: how many lanes there
    are (``_lanes``, the test's own dict) and whether they are lock-free."""

    def __init__(self, lanes: Lanes) -> None:
        self._lanes = lanes

    def _lock_free(self) -> bool:
        return True


def make(limit: int, batch: int = 10) -> Tuple[Lanes, QueueBudget]:
    """A budget of its own, and the lanes (by key) it grants room to."""
    lanes: Lanes = {}
    return lanes, QueueBudget(FakeEngine(lanes), limit, batch)  # type: ignore[arg-type]


def append(budget: QueueBudget, lanes: Lanes, key: Any) -> bool:
    """A producer's append: within the lane's room, else the locked path asks the budget."""
    lane = lanes.get(key)
    if lane is None:
        if not budget.reserve(None):
            return False
        lane = lanes[key] = PriorityLane(key, 0)
        budget.reserve(lane)
    elif len(lane.items) >= lane.room and not budget.reserve(lane):
        return False
    lane.items.append(object())
    return True


def check(budget: QueueBudget, lanes: Lanes) -> None:
    assert budget.granted == sum(lane.grant for lane in lanes.values())
    assert budget.granted + budget.prioritised <= budget.limit
    assert sum(len(lane.items) for lane in lanes.values()) <= budget.limit
    listed = {id(lane) for lane in budget.spare}
    for lane in lanes.values():
        assert len(lane.items) <= lane.grant
        assert lane.room == lane.grant
        if lane.grant > len(lane.items):
            assert lane.listed
            assert id(lane) in listed


def test_a_lane_is_granted_about_a_batch_at_a_time() -> None:
    lanes, budget = make(limit=100, batch=10)
    assert append(budget, lanes, "a")
    lane = lanes["a"]
    assert lane.grant == 10
    assert lane.room == 10
    check(budget, lanes)


def test_a_full_queue_takes_room_back_from_idle_grants() -> None:
    lanes, budget = make(limit=20, batch=10)
    assert append(budget, lanes, "a")  # a holds 1 item and a grant of 10
    for n in range(19):
        assert append(budget, lanes, f"k{n}"), n
    assert not append(budget, lanes, "one too many")
    assert sum(len(lane.items) for lane in lanes.values()) == 20
    check(budget, lanes)


def test_a_forgotten_lane_returns_its_grant() -> None:
    lanes, budget = make(limit=10, batch=10)
    assert append(budget, lanes, "a")
    lane = lanes.pop("a")
    lane.items.clear()
    budget.retire(lane)
    assert budget.granted == 0
    assert lane.grant == 0
    for n in range(10):
        assert append(budget, lanes, n)
    check(budget, lanes)


def test_without_a_bound_everything_fits() -> None:
    _lanes, budget = make(limit=NEVER)
    assert budget.reserve(None)
    assert budget.queued_below(1)
    assert budget.granted == 0


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 5)),
        st.tuples(st.just("take"), st.integers(0, 5)),
        st.tuples(st.just("forget"), st.integers(0, 5)),
        st.tuples(st.just("priority"), st.integers(0, 5)),
        st.tuples(st.just("below"), st.integers(1, 40)),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 30), batch=st.integers(1, 12), steps=ops)
def test_the_grants_never_pass_the_bound(limit: int, batch: int, steps: List[Tuple[str, int]]) -> None:
    lanes, budget = make(limit, batch)
    for op, key in steps:
        lane = lanes.get(key)
        if op == "append":
            append(budget, lanes, key)
        elif op == "take" and lane is not None and lane.items:
            lane.items.popleft()
            budget.list_spare(lane)  # items left: its grant may hold room now
        elif op == "forget" and lane is not None and not lane.items:
            del lanes[key]
            budget.retire(lane)
        elif op == "priority" and budget.reserve(None):
            budget.prioritised += 1  # an item at another priority, counted outside any grant
        elif op == "below":
            queued = sum(len(each.items) for each in lanes.values()) + budget.prioritised
            if budget.queued_below(key):
                assert queued < key  # never says "room" when there is none
        check(budget, lanes)
