"""The ``stats()`` fields that describe waits and batches: ``oldest_pending_age``,
``batch_seconds`` and ``batch_sizes``, and the :class:`Histogram` snapshot.

Ages are read on a :class:`FakeClock`, after a sync point (the worker has
gone to sleep, a dispatch call has started, a listener has run), so every
figure is exact.
"""

from __future__ import annotations

import gc
import math
import threading
import time
import weakref
from typing import Any, List

import pytest

from batchdispatch import RetryPolicy
from batchdispatch._stats import DURATION_BOUNDS, SIZE_BOUNDS, Buckets, Histogram

from .conftest import FakeClock, KeyedRecorder, Recorder, poke, worker_wait_timeout


class Gate:
    """A dispatch callable (plain or keyed) that holds its first call until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls: List[Any] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        self.entered.set()
        assert self.opened.wait(30), "gate never opened"


# -- Histogram and Buckets ----------------------------------------------------------


def test_a_value_on_a_bound_counts_in_that_bucket_and_above_every_bound_in_the_last() -> None:
    buckets = Buckets((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 2.0, 7.0):
        buckets.observe(value)
    snapshot = buckets.snapshot()
    assert snapshot == Histogram(bounds=(1.0, 2.0, 5.0), counts=(2, 2, 0, 1), sum=12.0, count=5)
    assert snapshot.cumulative() == [(1.0, 2), (2.0, 4), (5.0, 4), (math.inf, 5)]
    buckets.observe(3.0)
    assert snapshot.count == 5  # a snapshot does not move with its buckets


def test_quantile_bounds_and_the_one_line_form() -> None:
    buckets = Buckets((1.0, 2.0, 5.0))
    assert buckets.snapshot().quantile_bound(0.5) is None
    assert str(buckets.snapshot()) == "count=0"
    for value in [0.5] * 90 + [4.0] * 9 + [9.0]:
        buckets.observe(value)
    snapshot = buckets.snapshot()
    assert snapshot.quantile_bound(0.5) == 1.0
    assert snapshot.quantile_bound(0.95) == 5.0
    assert snapshot.quantile_bound(1.0) == math.inf
    assert str(snapshot) == "count=100 mean=0.9 p50<=1 p95<=5 p99<=5"
    with pytest.raises(ValueError, match="q must be"):
        snapshot.quantile_bound(0)


def test_the_buckets_are_the_documented_ones(make, recorder: Recorder) -> None:
    stats = make(recorder).stats()
    assert stats.batch_seconds.bounds == DURATION_BOUNDS == (
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    )
    assert stats.batch_sizes.bounds == SIZE_BOUNDS == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
    assert stats.batch_seconds.count == stats.batch_sizes.count == 0
    assert stats.oldest_pending_age is None


# -- batch_sizes and batch_seconds ------------------------------------------------------


def test_each_dispatch_call_counts_its_size(make, recorder: Recorder) -> None:
    d = make(recorder, delay=60, max_batch_size=3)
    for i in range(7):
        d.enqueue(i)
    assert d.flush(timeout=10)
    stats = d.stats()
    assert [len(batch) for batch in recorder.batches] == [3, 3, 1]
    sizes = stats.batch_sizes
    assert (sizes.count, sizes.sum) == (3, 7.0)
    assert dict(zip(sizes.bounds, sizes.counts)) == {
        1: 1, 2: 0, 5: 2, 10: 0, 20: 0, 50: 0, 100: 0, 200: 0, 500: 0, 1000: 0, 2000: 0, 5000: 0,
    }
    assert stats.batch_seconds.count == stats.batches == 3


def test_a_dispatch_call_is_timed_from_its_start_to_its_end(make) -> None:
    def slow(batch: List[Any]) -> None:
        time.sleep(0.03)  # the duration under test, not a wait for another thread

    d = make(slow, delay=60)
    d.enqueue("a")
    started = time.perf_counter()
    assert d.flush(timeout=10)
    took = time.perf_counter() - started
    seconds = d.stats().batch_seconds
    assert seconds.count == 1
    assert 0.03 <= seconds.sum <= took
    assert seconds.counts[:3] == (0, 0, 0)  # nothing at or below 0.025 s


def test_failed_calls_and_their_retries_count_and_on_error_is_not_timed(make) -> None:
    calls: List[List[Any]] = []

    def flaky(batch: List[Any]) -> None:
        calls.append(list(batch))
        if len(calls) == 1:
            raise ConnectionError("down")

    def slow_handler(exc: BaseException, batch: List[Any]) -> None:
        time.sleep(0.2)  # part of the failed attempt, but not of the dispatch call

    d = make(
        flaky, delay=60, on_error=slow_handler,
        retry=RetryPolicy(max_attempts=2, backoff=0.001, jitter=False),
    )
    d.enqueue("a")
    d.enqueue("b")
    assert d.flush(timeout=10)
    stats = d.stats()
    assert calls == [["a", "b"], ["a", "b"]]
    assert stats.batches == stats.batch_seconds.count == stats.batch_sizes.count == 2
    assert stats.batch_sizes.sum == 4
    assert stats.batch_seconds.sum < 0.2


def test_keyed_dispatchers_count_their_calls_too(make_keyed) -> None:
    recorder = KeyedRecorder()
    d = make_keyed(recorder, delay=60)
    for n in range(10):
        d.enqueue(n % 2, n)
    assert d.flush(timeout=10)
    stats = d.stats()
    assert (stats.batch_sizes.count, stats.batch_sizes.sum) == (2, 10)
    assert stats.batch_seconds.count == stats.batches == 2


# -- oldest_pending_age -------------------------------------------------------------


def test_the_oldest_queued_item_ages_with_the_clock(make, recorder: Recorder, clock: FakeClock) -> None:
    d = make(recorder, delay=60, clock=clock)
    assert d.stats().oldest_pending_age is None
    d.enqueue("a")
    worker_wait_timeout(d)  # the worker has seen the item and waits for the delay
    clock.advance(2.5)
    d.enqueue("b")
    assert d.stats().oldest_pending_age == 2.5  # "a"'s wait, not "b"'s
    clock.advance(1)
    assert d.stats().oldest_pending_age == 3.5
    assert d.flush(timeout=10)
    assert d.stats().oldest_pending_age is None
    assert recorder.items == ["a", "b"]


def test_a_batch_in_dispatch_keeps_the_age_of_its_oldest_item(make, clock: FakeClock) -> None:
    gate = Gate()
    d = make(gate, delay=60, max_batch_size=2, clock=clock)
    d.enqueue("a")
    worker_wait_timeout(d)
    clock.advance(4)
    d.enqueue("b")  # full: taken at once
    assert gate.entered.wait(10)
    clock.advance(3)
    d.enqueue("c")  # behind the batch: the batch, older, sets the figure
    assert d.stats().oldest_pending_age == 7
    gate.opened.set()
    assert d.flush(timeout=10)
    assert d.stats().oldest_pending_age is None
    assert gate.calls == [(["a", "b"],), (["c"],)]


def test_a_batch_waiting_for_its_retry_keeps_aging(make, clock: FakeClock) -> None:
    failed = threading.Event()
    calls: List[List[Any]] = []

    def flaky(batch: List[Any]) -> None:
        calls.append(list(batch))
        if len(calls) == 1:
            raise ConnectionError("down")

    d = make(flaky, delay=60, max_batch_size=1, clock=clock, retry=RetryPolicy(backoff=30, jitter=False))
    d.on("batch_retry_scheduled", lambda event: failed.set())
    d.enqueue("a")  # full: sent at once; it fails and waits 30 s for its retry
    assert failed.wait(10)
    clock.advance(20)
    stats = d.stats()
    assert (stats.pending, stats.in_flight, stats.oldest_pending_age) == (1, 0, 20)
    clock.advance(11)
    poke(d, clock)  # the backoff is over
    assert d.flush(timeout=10)
    assert calls == [["a"], ["a"]]
    assert d.stats().oldest_pending_age is None


def test_keyed_ages_come_from_the_oldest_key(make_keyed, clock: FakeClock) -> None:
    recorder = KeyedRecorder()
    d = make_keyed(recorder, delay=60, clock=clock)
    d.enqueue("a", 1)  # a new key takes the lock: stamped at once
    clock.advance(2)
    d.enqueue("b", 2)
    clock.advance(3)
    assert d.stats().oldest_pending_age == 5
    assert d.flush(key="a", timeout=10)
    assert d.stats().oldest_pending_age == 3
    assert d.flush(timeout=10)
    assert d.stats().oldest_pending_age is None


def test_keyed_items_behind_a_batch_count_from_their_enqueue(make_keyed, clock: FakeClock) -> None:
    """An append to a key with a batch out takes no lock: it reports the key,
    with the time, for a worker to stamp; with the only worker busy,
    stats() takes those reports itself."""
    gate = Gate()
    settled = threading.Event()
    d = make_keyed(gate, delay=60, max_batch_size=2, max_concurrent_batches=1, clock=clock)
    d.on("batch_succeeded", lambda event: settled.set())
    d.enqueue("a", 1)
    d.enqueue("a", 11)  # full: taken at once
    assert gate.entered.wait(10)
    clock.advance(5)
    d.enqueue("a", 2)  # reported at 1005
    clock.advance(3)
    assert d.stats().oldest_pending_age == 8  # the batch, taken at 1000
    gate.opened.set()
    assert settled.wait(10)
    stats = d.stats()
    assert (stats.pending, stats.oldest_pending_age) == (1, 3)  # "2", since 1005
    assert d.flush(timeout=10)
    assert [args[1] for args in gate.calls] == [[1, 11], [2]]


def test_items_left_behind_by_a_full_batch_count_from_its_take(make, clock: FakeClock) -> None:
    gate = Gate()
    settled = threading.Event()
    hold, held, go = threading.Event(), threading.Event(), threading.Event()

    def holding_clock() -> float:
        # The worker reads its clock when it wakes, before it looks at the
        # queue: once armed, its next read waits there.
        if hold.is_set() and threading.current_thread() is not threading.main_thread():
            hold.clear()
            held.set()
            assert go.wait(10)
        return clock()

    d = make(gate, delay=60, max_batch_size=2, clock=holding_clock)
    d.on("batch_succeeded", lambda event: settled.set())
    d.enqueue(1)
    worker_wait_timeout(d)  # stamped at 1000
    clock.advance(2)
    hold.set()
    d.enqueue(2)  # fills the batch: wakes the worker, which stops at its clock
    assert held.wait(10)
    d.enqueue(3)  # lands before the worker looks, so that the take leaves it behind
    go.set()
    assert gate.entered.wait(10)
    clock.advance(1)
    assert d.stats().oldest_pending_age == 3  # the batch [1, 2]
    gate.opened.set()
    assert settled.wait(10)
    assert d.stats().oldest_pending_age == 1  # [3], since the take at 1002
    assert d.flush(timeout=10)
    assert gate.calls == [([1, 2],), ([3],)]


def test_the_age_heap_stays_small_and_a_read_looks_at_its_top_only(make_keyed, clock: FakeClock) -> None:
    recorder = KeyedRecorder()
    d = make_keyed(recorder, delay=60, clock=clock)
    # White-box on purpose: the heap's size and what one read looks at are
    # the scheduler's own costs, which no figure of stats() shows.
    scheduler = d._scheduler
    for _ in range(10):
        for key in range(2000):
            d.enqueue(key, key)
        clock.advance(1)
        assert d.flush(timeout=30)
    # Ten rounds of 2,000 keys, each stamped and taken: the heap was
    # rebuilt as stale entries piled up (at twice the lanes and open
    # batches, 4,000 at most here), instead of holding 40,000.
    assert len(scheduler.waiting) <= 2 * 4000 + 65
    for key in range(5000):
        d.enqueue(key, key)
        clock.advance(0.001)
    checks: List[Any] = []
    real = scheduler.still_waiting
    scheduler.still_waiting = lambda entry: checks.append(entry) or real(entry)  # type: ignore[method-assign]
    try:
        d.stats()
        first = len(checks)
        d.stats()
    finally:
        del scheduler.still_waiting
    assert len(checks) - first == 1  # the top entry, live: no scan of 5,000 keys
    assert d.stats().oldest_pending_age == pytest.approx(5.0)
    assert d.flush(timeout=30)


def test_a_settled_batch_is_not_kept_alive_by_the_age_heap(make) -> None:
    class Item:
        pass

    refs: List[Any] = []
    d = make(lambda batch: refs.extend(weakref.ref(item) for item in batch), delay=60)
    d.enqueue(Item())
    assert d.shutdown(timeout=10)  # the worker has let go of everything it held
    gc.collect()
    assert [ref() for ref in refs] == [None]
