"""KeyedDispatcher with many keys and many priorities: the structures that
keep a full queue, eviction and priorities O(log n) stay right.

No timings here: growth is shown by ``python -m batchdispatch bench``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchdispatch import KeyedDispatcher
from batchdispatch._lanes import PriorityLane

from .conftest import FakeClock

# -- PriorityLane against a plain model ---------------------------------------------------

LaneOp = Tuple[str, int]
lane_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(-6, 6)),  # 0: a default-priority append
        st.tuples(st.just("pop"), st.integers(1, 5)),
        st.tuples(st.just("oldest"), st.just(0)),
    ),
    max_size=80,
)


@given(lane_ops)
def test_a_lane_keeps_priority_order_fifo_within_peeks_and_finds_its_oldest(ops: List[LaneOp]) -> None:
    lane = PriorityLane("k")
    model: List[Tuple[int, int, int]] = []  # (priority, arrival, sequence number or -1)
    arrival = seq = 0
    for op, value in ops:
        if op == "push":
            if value == 0:
                lane.items.append(arrival)
                model.append((0, arrival, -1))
            else:
                lane.push(value, seq, arrival)
                model.append((value, arrival, seq))
                seq += 1
            arrival += 1
        elif op == "pop":
            expected = sorted(model, key=lambda entry: (-entry[0], entry[1]))[:value]
            items, _, seq_first = lane.pop(min(value, lane.size()))
            assert items == [entry[1] for entry in expected]
            seqs = [entry[2] for entry in expected if entry[0] != 0]
            assert seq_first == (min(seqs) if seqs else seq_first)
            for entry in expected:
                model.remove(entry)
        elif model:
            oldest = min(model, key=lambda entry: entry[1])
            assert lane.pop_oldest() == oldest[1]
            model.remove(oldest)
        assert lane.size() == len(model)
        # peek: what pop would take, in its order, left in place.
        assert lane.peek() == [entry[1] for entry in sorted(model, key=lambda entry: (-entry[0], entry[1]))]
        assert lane.prioritised == sum(1 for entry in model if entry[0] != 0)
        seqs = [entry[2] for entry in model if entry[0] != 0]
        assert lane.min_seq() == (min(seqs) if seqs else float("inf"))
        # The lazy heaps stay within a constant of the levels present.
        assert len(lane.order) <= 2 * len(lane.levels) + 9
        assert len(lane.heads) <= 2 * len(lane.levels) + 9


def test_forty_thousand_priorities_come_out_highest_first() -> None:
    lane = PriorityLane("k")
    priorities = [(p * 7919) % 40_000 - 20_000 for p in range(40_000)]  # distinct, shuffled
    for seq, priority in enumerate(priorities):
        lane.push(priority or 20_001, seq, priority or 20_001)
    out: List[int] = []
    while lane.size():
        out += lane.pop(1000)[0]
    assert out == sorted(out, reverse=True)
    assert len(out) == 40_000


def test_a_new_priority_that_rebuilds_the_heaps_keeps_its_item() -> None:
    """Stale heap entries left by emptied levels make the next new level
    rebuild the heaps; the rebuild must see that level's first item."""
    lane = PriorityLane("k")
    seq = 0
    for priority in range(1, 21):
        for _ in range(3):
            lane.push(priority, seq, (priority, seq))
            seq += 1
    lane.pop(3 * 19)  # empties 19 levels: their heap entries go stale
    lane.push(50, seq, "new")
    assert lane.pop(1)[0] == ["new"]
    assert lane.pop(10)[0] == [(1, 0), (1, 1), (1, 2)]


# -- a full queue with many keys ------------------------------------------------------


def _never(gate: threading.Event) -> Any:
    def deliver(key: Any, batch: List[Any]) -> None:
        gate.wait(30)

    return deliver


def test_drop_oldest_evicts_the_oldest_key_across_thousands(make_keyed, clock: FakeClock) -> None:
    gate, entered = threading.Event(), threading.Event()
    dropped: List[Any] = []
    keys = 3000

    def deliver(key: Any, batch: List[Any]) -> None:
        entered.set()
        gate.wait(30)

    d = make_keyed(
        deliver, delay=3600.0, max_queue_size=keys, overflow="drop_oldest", clock=clock,
        max_concurrent_batches=1,
    )
    d.on("items_dropped", lambda event: dropped.extend(event.items))
    # The one worker is held in dispatch, so that a full queue cannot send a key out
    # (it would take the earliest one) while the producer evicts.
    d.enqueue("blocker", "b")
    d.flush(0, key="blocker")
    assert entered.wait(10)
    # Keys stamped in an order unlike their creation order, one tick apart.
    order = [(k * 7) % keys for k in range(keys)]
    for k in order:
        d.enqueue(k, f"old-{k}")
        clock.advance(1.0)
    for k in range(200):
        assert d.enqueue(("new", k), "new")
    gate.set()
    assert d.flush(timeout=30)
    assert dropped == [f"old-{k}" for k in order[:200]]
    assert d.stats().pending == 0


@contextlib.contextmanager
def _kept_counts(d: KeyedDispatcher[Any]) -> Iterator[Tuple[List[Any], Any, Any]]:
    """The engine's lanes, its queue budget and its scheduler, with its lock held.

    The property below must look inside: what it checks is the counts the
    engine keeps so that a full queue costs O(1) per item (the budget's
    sums, the list of lanes with room to give back, the heap of lane
    ages), against a recount, which no public figure shows. It reaches
    the engine here only.
    """
    with d._lock:
        yield list(d._lanes.values()), d._budget, d._scheduler


def _recount(lanes: List[Any], budget: Any, scheduler: Any) -> None:
    """Check the kept counts against a full recount of the lanes."""
    assert budget.prioritised == sum(lane.prioritised for lane in lanes)
    if budget.limit < 10**9:
        assert budget.granted == sum(lane.grant for lane in lanes)
        assert budget.granted + budget.prioritised <= budget.limit
        listed = set(map(id, budget.spare))
        for lane in lanes:
            assert lane.listed == (id(lane) in listed)
            if lane.grant > len(lane.items):
                assert lane.listed  # room to give back is always findable
    if scheduler.ages is not None:
        aged = {id(entry[2]) for entry in scheduler.ages if scheduler.aged(entry)}
        for lane in lanes:
            if lane.size() and lane.first_at is not None:
                assert id(lane) in aged


enqueue_ops = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from([0, 0, 0, 1, -1, 5]), st.booleans()),
    min_size=1, max_size=120,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=enqueue_ops,
    limit=st.integers(1, 25),
    overflow=st.sampled_from(["drop_oldest", "drop_newest"]),
    batch=st.sampled_from([None, 3]),
)
def test_kept_counts_agree_with_a_recount_under_a_full_queue(
    ops: List[Tuple[int, int, bool]], limit: int, overflow: str, batch: Any
) -> None:
    clock = FakeClock()
    gate = threading.Event()
    d: KeyedDispatcher[Any] = KeyedDispatcher(
        _never(gate), delay=3600.0, max_queue_size=limit, overflow=overflow, max_batch_size=batch,
        clock=clock,
    )
    accepted = 0
    try:
        for n, (key, priority, tick) in enumerate(ops):
            accepted += bool(d.enqueue(key, n, priority=priority))
            if tick:
                clock.advance(1.0)
            with _kept_counts(d) as (lanes, budget, scheduler):
                _recount(lanes, budget, scheduler)
        gate.set()
        assert d.flush(timeout=30)
        stats = d.stats()
        assert stats.enqueued == accepted
        assert stats.pending == 0
        assert stats.dispatched + stats.dropped - (len(ops) - accepted) == accepted
    finally:
        gate.set()
        assert d.shutdown(timeout=30)
