"""KeyedDispatcher: per-key batches, parallel delivery, priorities, retries, stats."""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import logging
import sys
import threading
import time
import tracemalloc
from typing import Any, Dict, Iterator, List, Set

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchdispatch import KeyedDispatcher, KeyedStats, PartialFailure, RetryPolicy
from batchdispatch._deadlines import monotonic
from batchdispatch._lanes import PriorityLane

from .conftest import FakeClock, KeyedRecorder, lock_free_only, poke, wait_for_idle_workers, worker_threads

NO_WAIT = RetryPolicy(max_attempts=3, backoff=0.001, jitter=False)


class Gate:
    """A deliver callable that holds batches until opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.calls: List[Any] = []

    def __call__(self, key: Any, batch: List[Any]) -> None:
        self.calls.append((key, list(batch)))
        self.entered.set()
        assert self.opened.wait(30), "gate never opened"


# -- 1. grouping: per-key batches and deadlines ---------------------------------------


def test_each_key_gets_its_own_batches_no_larger_than_max(make_keyed) -> None:
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=0.01, max_batch_size=4)
    for i in range(10):
        for key in ("a", "b", "c"):
            d.enqueue(key, i)
    assert d.flush(timeout=10)
    for key in ("a", "b", "c"):
        assert rec.items(key) == list(range(10))
    assert all(0 < len(batch) <= 4 for _, batch in rec.calls)


def test_a_full_batch_goes_at_once(make_keyed) -> None:
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=3600.0, max_batch_size=5)
    for i in range(5):
        d.enqueue("a", i)
    d.enqueue("b", "waits for its hour")
    assert rec.wait_calls(1)
    assert rec.calls == [("a", [0, 1, 2, 3, 4])]
    assert d.pending("b") == 1


def test_each_key_has_its_own_deadline(make_keyed, clock: FakeClock) -> None:
    sent: Dict[Any, float] = {}
    done = threading.Condition()

    def deliver(key: Any, batch: List[Any]) -> None:
        with done:
            sent[key] = clock()
            done.notify_all()

    d = make_keyed(deliver, delay=5.0, clock=clock)
    d.enqueue("a", 1)  # due at 1005
    clock.advance(3.0)
    d.enqueue("b", 1)  # due at 1008, not at a global tick
    clock.advance(2.1)
    poke(d, clock)
    with done:
        assert done.wait_for(lambda: "a" in sent, 10)
    assert d.pending("b") == 1
    clock.advance(3.0)
    poke(d, clock)
    with done:
        assert done.wait_for(lambda: "b" in sent, 10)
    assert sent["a"] >= 1005.0
    assert sent["b"] >= 1008.0


# -- 2. enqueue never waits ---------------------------------------------------------------


def test_enqueue_never_waits_for_delivery_even_when_batches_fill(make_keyed) -> None:
    gate = Gate()
    d = make_keyed(gate, delay=0.001, max_batch_size=2, max_concurrent_batches=1)
    d.enqueue("a", 0)
    assert gate.entered.wait(10)
    assert all(d.enqueue(key, i) for i in range(1000) for key in ("a", "b"))
    gate.opened.set()
    assert d.flush(timeout=30)
    assert d.stats().dispatched == 2001


# -- 3. concurrency ------------------------------------------------------------------------


def test_keys_are_delivered_in_parallel_up_to_the_cap_never_two_of_a_key(make_keyed) -> None:
    cap = 3
    lock = threading.Lock()
    in_flight: Set[Any] = set()
    peak = [0]
    overlap_same_key = []
    reached = threading.Event()

    def deliver(key: Any, batch: List[Any]) -> None:
        with lock:
            if key in in_flight:
                overlap_same_key.append(key)
            in_flight.add(key)
            peak[0] = max(peak[0], len(in_flight))
            if len(in_flight) == cap:
                reached.set()
        reached.wait(2)  # hold the slot so that parallel batches overlap
        with lock:
            in_flight.discard(key)

    d = make_keyed(deliver, delay=0.001, max_batch_size=1, max_concurrent_batches=cap)
    for i in range(5):
        for key in range(8):
            d.enqueue(key, i)
    assert d.flush(timeout=30)
    assert reached.is_set()
    assert peak[0] == cap  # parallel, and never above the cap
    assert overlap_same_key == []
    assert len(worker_threads(d)) <= cap


def test_a_slow_key_does_not_hold_the_others_back(make_keyed) -> None:
    gate = Gate()
    rec = KeyedRecorder()

    def deliver(key: Any, batch: List[Any]) -> None:
        (gate if key == "slow" else rec)(key, batch)

    d = make_keyed(deliver, delay=0.001, max_concurrent_batches=2)
    d.enqueue("slow", 1)
    assert gate.entered.wait(10)
    for i in range(20):
        d.enqueue(f"fast-{i % 4}", i)
    assert d.flush(key="fast-0", timeout=10)
    assert d.flush(key="fast-3", timeout=10)
    assert d.pending("slow") == 1
    gate.opened.set()


# -- 4. order per key ------------------------------------------------------------------------


def test_higher_priority_first_fifo_within_a_priority(make_keyed) -> None:
    gate = Gate()
    d = make_keyed(gate, delay=0.001, max_concurrent_batches=1)
    d.enqueue("k", "first")
    assert gate.entered.wait(10)  # the key is busy: the rest waits together
    for item, priority in [("a0", 0), ("b5", 5), ("c0", 0), ("d5", 5), ("e1", 1)]:
        d.enqueue("k", item, priority=priority)
    gate.opened.set()
    assert d.flush(timeout=10)
    assert gate.calls[1] == ("k", ["b5", "d5", "e1", "a0", "c0"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.lists(st.sampled_from("abc"), max_size=60), min_size=1, max_size=4),
    max_batch_size=st.one_of(st.none(), st.integers(1, 8)),
    failures=st.sets(st.integers(0, 20), max_size=4),
)
def test_per_key_order_holds_under_many_producers_and_retries(
    plan: Any, max_batch_size: Any, failures: Any
) -> None:
    delivered: List[Any] = []
    calls = [0]
    lock = threading.Lock()

    def deliver(key: Any, batch: List[Any]) -> None:
        with lock:
            calls[0] += 1
            if calls[0] in failures:
                raise RuntimeError("planned")
            delivered.extend((key, item) for item in batch)

    d: KeyedDispatcher[Any] = KeyedDispatcher(
        deliver, delay=0.001, max_batch_size=max_batch_size, max_concurrent_batches=3,
        retry=RetryPolicy(max_attempts=10, backoff=0.001, jitter=False), on_error=lambda e, b: None,
    )
    start = threading.Barrier(len(plan))

    def produce(tid: int, keys: List[str]) -> None:
        start.wait()
        for seq, key in enumerate(keys):
            assert d.enqueue(key, (tid, seq))

    threads = [threading.Thread(target=produce, args=(t, keys)) for t, keys in enumerate(plan)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d.shutdown(timeout=30)
    expected = sorted((key, (t, s)) for t, keys in enumerate(plan) for s, key in enumerate(keys))
    assert sorted(delivered) == expected  # each item exactly once
    for key in "abc":
        for tid in range(len(plan)):
            seqs = [s for k, (t, s) in delivered if k == key and t == tid]
            assert seqs == sorted(seqs)


# -- 5. retries --------------------------------------------------------------------------------


def test_a_failed_batch_is_retried_with_the_same_items_until_it_succeeds(make_keyed) -> None:
    attempts: List[Any] = []
    events: List[Any] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        attempts.append(list(batch))
        if len(attempts) < 3:
            raise ConnectionError("down")

    d = make_keyed(deliver, delay=0.001, retry=NO_WAIT, on_error=lambda e, b: None)
    for name in ("batch_failed", "batch_retry_scheduled", "batch_succeeded"):
        d.on(name, events.append)
    d.enqueue("k", 1)
    d.enqueue("k", 2)
    assert d.flush(timeout=10)
    assert attempts == [[1, 2]] * 3
    assert [(type(e).__name__, e.attempt) for e in events] == [
        ("BatchFailed", 1), ("BatchRetryScheduled", 2),
        ("BatchFailed", 2), ("BatchRetryScheduled", 3),
        ("BatchSucceeded", 3),
    ]
    stats = d.stats()
    assert (stats.dispatched, stats.failed, stats.retried, stats.batches) == (2, 0, 4, 3)


def test_items_are_given_up_after_max_attempts(make_keyed) -> None:
    exhausted: List[Any] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        raise ConnectionError("still down")

    d = make_keyed(deliver, delay=0.001, retry=NO_WAIT, on_error=lambda e, b: None)
    d.on("items_exhausted", exhausted.append)
    d.enqueue("k", "x")
    assert d.flush(timeout=10)
    assert [(e.key, e.items, e.attempts, type(e.error)) for e in exhausted] == [
        ("k", ("x",), 3, ConnectionError)
    ]
    assert (d.stats().failed, d.stats().batches) == (1, 3)


def test_an_error_marked_not_retryable_is_given_up_at_once(make_keyed) -> None:
    class Rejected(Exception):
        retryable = False

    calls: List[Any] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        calls.append(batch)
        raise Rejected("400 Bad Request")

    d = make_keyed(deliver, delay=0.001, retry=NO_WAIT, on_error=lambda e, b: None)
    d.enqueue("k", 1)
    assert d.flush(timeout=10)
    assert len(calls) == 1
    assert d.stats().failed == 1


def test_partial_failure_retries_only_the_failed_items_exactly_once(make_keyed) -> None:
    delivered: List[Any] = []
    failed_once: Set[int] = set()

    def deliver(key: Any, batch: List[Any]) -> None:
        failed = [item for item in batch if item % 3 == 0 and item not in failed_once]
        failed_once.update(failed)
        delivered.extend(item for item in batch if item not in failed)
        if failed:
            raise PartialFailure(failed, ConnectionError("some rejected"))

    d = make_keyed(deliver, delay=0.001, max_batch_size=10,
                   retry=RetryPolicy(max_attempts=5, backoff=0.001, jitter=False),
                   on_error=lambda e, b: None)
    for i in range(30):
        d.enqueue("k", i)
    assert d.flush(timeout=10)
    assert sorted(delivered) == list(range(30))  # every item once, none twice
    stats = d.stats()
    assert (stats.dispatched, stats.failed) == (30, 0)


def test_a_failing_key_waits_behind_its_retry_while_others_go_on(make_keyed) -> None:
    rec = KeyedRecorder()

    def deliver(key: Any, batch: List[Any]) -> None:
        if key == "down":
            raise ConnectionError("down")
        rec(key, batch)

    d = make_keyed(deliver, delay=0.001, on_error=lambda e, b: None,
                   retry=RetryPolicy(max_attempts=3, backoff=30.0, jitter=False))
    failed = threading.Event()
    d.on("batch_failed", lambda event: failed.set())  # emitted once the attempt is settled
    d.enqueue("down", 1)
    d.enqueue("up", 1)
    assert d.flush(key="up", timeout=10)
    assert failed.wait(10)  # flushing "up" does not wait for "down"'s first attempt
    d.enqueue("down", 2)  # waits behind the retry of [1]
    d.enqueue("up", 2)
    assert d.flush(key="up", timeout=10)
    assert rec.items("up") == [1, 2]
    assert d.pending("down") == 2
    assert d.stats().active_batches == 0  # [1] waits for its retry, not in flight


def test_shutdown_cuts_a_30_second_backoff_short(make_keyed) -> None:
    calls: List[Any] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        calls.append(list(batch))
        if len(calls) == 1:
            raise ConnectionError("blip")

    scheduled = threading.Event()
    d = make_keyed(deliver, delay=0.001, on_error=lambda e, b: None,
                   retry=RetryPolicy(max_attempts=3, backoff=30.0, jitter=False))
    d.on("batch_retry_scheduled", lambda e: scheduled.set())
    d.enqueue("k", 1)
    assert scheduled.wait(10)  # 30 s of backoff ahead ...
    assert d.pending("k") == 1
    started = monotonic()
    assert d.shutdown(timeout=1)  # ... but shutdown retries at once
    assert monotonic() - started < 5
    assert calls == [[1], [1]]


def test_no_retry_outlives_shutdown_and_what_is_left_is_reported(make_keyed, caplog) -> None:
    gate = Gate()
    reports: List[Any] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        if key == "hang":
            gate(key, batch)
        raise ConnectionError("down")

    d = make_keyed(deliver, delay=0.001, on_error=lambda e, b: None,
                   retry=RetryPolicy(max_attempts=100, backoff=30.0, jitter=False))
    d.on("shutdown", reports.append)
    d.enqueue("hang", 1)
    assert gate.entered.wait(10)
    with caplog.at_level(logging.WARNING, logger="batchdispatch"):
        assert d.shutdown(timeout=0.5) is False
    assert "shutdown timed out with 1 items undelivered" in caplog.text
    assert [(r.completed, r.undelivered) for r in reports] == [(False, 1)]
    gate.opened.set()  # the hung attempt fails now: no retry may follow
    assert d.shutdown(timeout=10)
    assert len(gate.calls) == 1
    assert d.stats().failed == 1
    assert d.enqueue("k", 2) is False


# -- 6. events ---------------------------------------------------------------------------------


def test_on_once_off_and_unknown_events(make_keyed) -> None:
    seen: List[str] = []
    d = make_keyed(KeyedRecorder(), delay=0.001)

    def always(e: Any) -> None:
        seen.append("on")

    d.on("batch_succeeded", always)
    d.once("batch_succeeded", lambda e: seen.append("once"))
    d.enqueue("k", 1)
    assert d.flush(timeout=10)
    d.off("batch_succeeded", always)
    d.enqueue("k", 2)
    assert d.flush(timeout=10)
    assert seen == ["on", "once"]
    with pytest.raises(ValueError, match="unknown event 'batch_done'"):
        d.on("batch_done", always)
    with pytest.raises(TypeError, match="listener must be callable"):
        d.on("batch_started", 3)


def test_a_listener_that_raises_is_logged_and_changes_nothing(make_keyed, caplog) -> None:
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=0.001)

    def broken(event: Any) -> None:
        raise RuntimeError("listener bug")

    d.on("batch_started", broken)
    with caplog.at_level(logging.ERROR, logger="batchdispatch"):
        d.enqueue("k", 1)
        assert d.flush(timeout=10)
    assert rec.items("k") == [1]
    assert "a listener for 'batch_started' raised" in caplog.text
    assert d.stats().dispatched == 1


def test_drops_are_reported_as_events_by_the_worker_not_the_producer(make_keyed) -> None:
    gate = Gate()
    dropped: List[Any] = []
    d = make_keyed(gate, delay=0.001, max_batch_size=1, max_queue_size=2, max_concurrent_batches=1)
    d.on("items_dropped", lambda e: dropped.append((e.key, e.items, e.reason, threading.current_thread())))
    d.enqueue("k", 0)
    assert gate.entered.wait(10)
    assert d.enqueue("k", 1)
    assert d.enqueue("k", 2)
    assert d.enqueue("k", 3) is False
    assert dropped == []  # not emitted on the producer's thread
    gate.opened.set()
    assert d.flush(timeout=10)
    assert [(k, items, reason) for k, items, reason, _ in dropped] == [("k", (3,), "queue_full")]
    assert dropped[0][3] is not threading.current_thread()


# -- 7. stats --------------------------------------------------------------------------------------


def test_stats_per_key_while_pending_and_after_drain(make_keyed) -> None:
    gate = Gate()
    d = make_keyed(gate, delay=3600.0, max_concurrent_batches=1)
    for i in range(3):
        d.enqueue("a", i)
    d.enqueue("b", 0)
    stats = d.stats()
    assert isinstance(stats, KeyedStats)
    assert dict(stats.pending_by_key) == {"a": 3, "b": 1}
    assert (stats.pending, stats.keys_with_pending, stats.average_queue_size) == (4, 2, 2.0)
    gate.opened.set()
    assert d.flush(timeout=10)
    after = d.stats()
    assert dict(after.pending_by_key) == {}
    assert (after.pending, after.keys_with_pending, after.average_queue_size) == (0, 0, 0.0)
    assert (after.enqueued, after.dispatched, after.batches, after.active_batches) == (4, 4, 2, 0)


def test_idle_keys_are_forgotten(make_keyed) -> None:
    # Memory does not grow with keys ever seen: measured from outside, as
    # what the process holds after a flush, before and after 10,000 keys
    # it never sees again. Keeping a lane per key costs about 1.5 KB each.
    delivered = [0]

    def deliver(key: Any, batch: List[Any]) -> None:
        delivered[0] += len(batch)  # a count only: keeping the calls would grow too

    d = make_keyed(deliver, delay=0.001)

    def distinct_keys(first: int, count: int) -> None:
        for key in range(first, first + count):
            d.enqueue(key, "x")
        assert d.flush(timeout=30)

    keys = 10_000
    tracemalloc.start()
    try:
        distinct_keys(10**6, 2000)  # warm up: the engine's own structures at their working size
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        distinct_keys(2 * 10**6, keys)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 300 * keys, f"{grown / keys:.0f} bytes kept per key ever seen"
    assert delivered[0] == d.stats().dispatched == 2000 + keys


# -- 8. shutdown -----------------------------------------------------------------------------------


def test_shutdown_flushes_every_key_and_refuses_more(make_keyed) -> None:
    rec = KeyedRecorder()
    reports: List[Any] = []
    d = make_keyed(rec, delay=3600.0)
    d.on("shutdown", reports.append)
    for key in "abc":
        d.enqueue(key, key)
    assert d.shutdown(timeout=10)
    assert sorted(k for k, _ in rec.calls) == ["a", "b", "c"]
    assert [(r.completed, r.undelivered) for r in reports] == [(True, 0)]
    assert d.enqueue("a", "late") is False
    assert d.stats().dropped_by_reason == {"closed": 1}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrent_batches": 0}, ValueError, "max_concurrent_batches must be at least 1"),
        ({"max_concurrent_batches": None}, TypeError, "max_concurrent_batches must be an int"),
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy"),
        ({"delay": 0}, ValueError, "delay must be a positive"),
    ],
)
def test_bad_options_name_the_parameter(options: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        KeyedDispatcher(lambda k, b: None, **options)


def test_a_later_item_goes_out_on_its_own_deadline_with_default_options(make_keyed) -> None:
    """Regression: two idle workers once slept for ever after the first batch."""
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=0.01)
    for round_no in range(1, 6):
        d.enqueue("k", round_no)
        assert rec.wait_calls(round_no, timeout=10)  # no flush: the deadline alone
    assert rec.items("k") == [1, 2, 3, 4, 5]


def test_flush_from_a_listener_does_not_wait_for_its_own_worker(make_keyed) -> None:
    results: List[Any] = []
    d = make_keyed(KeyedRecorder(), delay=0.001, max_concurrent_batches=1)
    d.on("batch_started", lambda e: results.append(d.flush(timeout=None)))
    d.enqueue("k", 1)
    assert d.flush(timeout=10)
    assert results == [False]  # it would otherwise wait for ever


def test_flush_takes_its_timeout_first_and_the_key_by_keyword() -> None:
    # flush(10) means ten seconds for every key, as on BackgroundDispatcher;
    # it used to take 10 for a key with nothing pending and return at once.
    rec = KeyedRecorder()
    d = KeyedDispatcher(rec, delay=60.0)
    try:
        d.enqueue("a", 1)
        d.enqueue(10, 2)
        assert d.flush(10)
        assert (rec.items("a"), rec.items(10)) == ([1], [2])
        d.enqueue("a", 3)
        d.enqueue(10, 4)
        assert d.flush(10, key=10)
        assert (rec.items("a"), rec.items(10)) == ([1], [2, 4])
        with pytest.raises(TypeError, match="timeout must be a number"):
            d.flush("a")  # the old order is refused, not taken as a timeout
    finally:
        d.shutdown(timeout=10)


# -- retries keep their backoff; the queue and events stay prompt --------------------------


class FailFirst:
    """Fails each key's first attempt; records every attempt with the clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.attempts: List[Any] = []
        self.cond = threading.Condition()

    def __call__(self, key: Any, batch: List[Any]) -> None:
        with self.cond:
            first = all(k != key for k, _, _ in self.attempts)
            self.attempts.append((key, list(batch), self.clock.last))
            self.cond.notify_all()
        if first:
            raise ConnectionError(f"{key} is down")

    def wait(self, count: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.attempts) >= count, 10)


SLOW_RETRY = RetryPolicy(max_attempts=3, backoff=30.0, jitter=False)


def test_a_full_lane_behind_a_retry_does_not_cut_its_backoff(make_keyed, clock: FakeClock) -> None:
    deliver = FailFirst(clock)
    d = make_keyed(deliver, delay=1.0, max_batch_size=2, retry=SLOW_RETRY, clock=clock)
    retrying = threading.Event()
    d.once("batch_retry_scheduled", lambda event: retrying.set())
    d.enqueue("a", 0)
    d.enqueue("a", 1)  # full: goes at once, fails, retry due at 1030
    assert retrying.wait(10)  # settled at 1000: the clock may move now
    for i in range(2, 8):  # full again and again while the retry waits
        d.enqueue("a", i)
    poke(d, clock)
    clock.advance(29.0)
    poke(d, clock)
    assert len(deliver.attempts) == 1
    clock.advance(1.5)
    poke(d, clock)
    assert deliver.wait(2)
    assert deliver.attempts[1][1:] == ([0, 1], 1030.5)


def test_a_full_queue_sends_other_keys_early_but_keeps_the_backoff(make_keyed, clock: FakeClock) -> None:
    deliver = FailFirst(clock)
    d = make_keyed(deliver, delay=60.0, max_queue_size=3, retry=SLOW_RETRY, clock=clock)
    retrying = threading.Event()
    d.once("batch_retry_scheduled", lambda event: retrying.set())
    d.enqueue("a", "a0")
    clock.advance(60.0)
    poke(d, clock)
    assert retrying.wait(10)  # a's first attempt failed: its retry waits 30 s
    d.enqueue("b", "b0")
    d.enqueue("b", "b1")
    d.enqueue("c", "c0")
    d.enqueue("c", "c1")  # the queue is full: b, the earliest deadline, goes now
    assert deliver.wait(2)
    assert deliver.attempts[1][0] == "b"
    poke(d, clock)
    assert [key for key, _, _ in deliver.attempts].count("a") == 1  # still in backoff
    assert d.stats().dropped_by_reason == {"queue_full": 1}


def test_items_behind_a_batch_count_their_delay_from_arrival(make_keyed, clock: FakeClock) -> None:
    gate = Gate()
    d = make_keyed(gate, delay=5.0, max_batch_size=1, clock=clock)
    d.enqueue("a", 0)  # full: out at once, held by the gate
    assert gate.entered.wait(10)
    clock.advance(1.0)
    d.enqueue("a", 1)  # arrives at 1001, behind the batch
    clock.advance(5.5)  # 1006.5: past 1001 + 5
    gate.opened.set()
    assert d.flush(key="a", timeout=10)
    poke(d, clock)
    assert gate.calls == [("a", [0]), ("a", [1])]
    assert clock.last >= 1006.0


def test_a_drop_event_reaches_listeners_while_the_worker_sleeps(make_keyed, clock: FakeClock) -> None:
    dropped = threading.Event()
    d = make_keyed(KeyedRecorder(), delay=3600.0, max_queue_size=1, clock=clock)
    d.on("items_dropped", lambda event: dropped.set())
    d.enqueue("a", 0)
    assert d.enqueue("b", 1) is False  # dropped; the worker sleeps for an hour
    assert dropped.wait(10)


def test_shutdown_is_false_while_a_worker_still_runs_a_listener(make_keyed) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_listener(event: Any) -> None:
        entered.set()
        release.wait(30)

    d = make_keyed(KeyedRecorder(), delay=0.01)
    d.on("batch_succeeded", slow_listener)
    d.enqueue("a", 0)
    assert entered.wait(10)
    assert d.shutdown(timeout=0.2) is False
    release.set()
    assert d.shutdown(timeout=10) is True


def test_events_arrive_in_order_across_workers_one_listener_at_a_time(make_keyed) -> None:
    seen: List[Any] = []
    running = [0, 0]  # listeners running now, most ever at once
    guard = threading.Lock()

    def listener(name: str, event: Any) -> None:
        with guard:
            running[0] += 1
            running[1] = max(running)
        threading.Event().wait(0.0005)  # widen the window another emitter could use
        with guard:
            seen.append((name, event.key, event.items))
            running[0] -= 1

    d = make_keyed(KeyedRecorder(), delay=0.01, max_batch_size=1, max_concurrent_batches=4)
    for name in ("batch_started", "batch_succeeded"):
        d.on(name, functools.partial(listener, name))
    for i in range(200):
        d.enqueue(i % 8, i)
    assert d.shutdown(timeout=30)
    assert running[1] == 1
    for key in range(8):
        # A key's next batch starts only after its previous one settled, so
        # in posting order its events alternate, batch after batch.
        expected = [
            (name, key, (i,)) for i in range(key, 200, 8) for name in ("batch_started", "batch_succeeded")
        ]
        assert [event for event in seen if event[1] == key] == expected


def test_shutdown_called_from_deliver_does_not_abandon_other_retries(make_keyed) -> None:
    retried = threading.Event()
    calls: List[Any] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        calls.append((key, list(batch)))
        if key == "a" and calls.count(("a", batch)) == 1:
            raise ConnectionError("a is down")
        if key == "b":
            assert d.shutdown(timeout=5) is False  # from inside deliver: does not wait

    d = make_keyed(deliver, delay=0.01, retry=SLOW_RETRY)
    d.once("batch_retry_scheduled", lambda event: retried.set())
    d.enqueue("a", "a0")
    assert retried.wait(10)
    d.enqueue("b", "b0")
    assert d.shutdown(timeout=10) is True
    assert calls.count(("a", ["a0"])) == 2  # retried at shutdown, not given up
    assert d.stats().failed == 0


def test_a_partial_failure_listing_more_items_than_sent_fails_the_batch(make_keyed, caplog) -> None:
    def deliver(key: Any, batch: List[Any]) -> None:
        raise PartialFailure([*batch, "never sent"], ValueError("confused"))

    d = make_keyed(deliver, delay=0.01)
    d.enqueue("a", 1)
    d.enqueue("a", 2)
    assert d.flush(timeout=10)
    stats = d.stats()
    assert (stats.failed, stats.dispatched) == (2, 0)
    assert "PartialFailure listed 3 failed items for a batch of 2" in caplog.text


def test_bad_keys_and_priorities_name_the_parameter(make_keyed) -> None:
    d = make_keyed(KeyedRecorder(), delay=0.01)
    d.enqueue("a", 0)  # the worker runs: the next ones take the lock-free path
    with pytest.raises(TypeError, match="key must be hashable, got list"):
        d.enqueue(["not", "hashable"], 1)
    with pytest.raises(TypeError, match="key must be hashable"):
        d.enqueue(["not", "hashable"], 1, priority=2)
    with pytest.raises(TypeError, match="priority must be an int, got str"):
        d.enqueue("a", 1, priority="high")
    assert d.stats().enqueued == 1


# -- races found in review -------------------------------------------------------------


class PausingKey:
    """A key whose first hash, in enqueue's hot path, waits at a gate:
    the producer is then between the room check and its append."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.first = True

    def __hash__(self) -> int:
        if self.first:
            self.first = False
            self.entered.set()
            assert self.gate.wait(10)
        return 1


def _append_racing_close(d: KeyedDispatcher[Any]) -> List[bool]:
    """Enqueue with a key that pauses between the room check and the append,
    shut down meanwhile, then let it append while another thread drains."""
    d.enqueue("warm", 0)  # a worker runs: the next enqueue takes the lock-free path
    key = PausingKey()
    result: List[bool] = []
    producer = threading.Thread(target=lambda: result.append(d.enqueue(key, "late")))
    producer.start()
    assert key.entered.wait(10)
    assert d.shutdown(timeout=10)
    stop = threading.Event()

    def drain_in_a_loop() -> None:  # every public call that sorts the inbox
        while not stop.is_set():
            d.pending()

    other = threading.Thread(target=drain_in_a_loop)
    other.start()
    key.gate.set()
    producer.join(10)
    stop.set()
    other.join(10)
    return result


def test_an_append_that_lands_after_close_is_refused_never_stranded(make_keyed) -> None:
    for _ in range(20):
        d = make_keyed(KeyedRecorder(), delay=0.01)
        assert _append_racing_close(d) == [False]
        stats = d.stats()
        assert (stats.pending, stats.enqueued, dict(stats.dropped_by_reason)) == (0, 1, {"closed": 1})


def test_shutdown_keeps_its_deadline_while_a_listener_blocks(make_keyed) -> None:
    release = threading.Event()
    d = make_keyed(KeyedRecorder(), delay=0.01)
    d.on("batch_succeeded", lambda event: release.wait(30))
    d.on("shutdown", lambda event: None)  # an event to emit after the deadline
    d.enqueue("a", 0)
    assert d.flush(timeout=0.2) is False  # the worker is inside the listener
    returned: List[bool] = []
    closer = threading.Thread(target=lambda: returned.append(d.shutdown(timeout=0.2)))
    closer.start()
    closer.join(10)  # a generous bound: without the fix it waits for the listener (30 s)
    assert not closer.is_alive()
    assert returned == [False]
    release.set()
    assert d.shutdown(timeout=10)


def test_flush_wakes_an_idle_worker_while_another_runs_a_slow_listener(make_keyed) -> None:
    release = threading.Event()
    in_listener = threading.Event()

    def slow(event: Any) -> None:
        if event.key == "slow":
            in_listener.set()
            release.wait(30)

    rec = KeyedRecorder()
    d = make_keyed(rec, delay=3600.0, max_batch_size=2, max_concurrent_batches=2)
    d.on("batch_succeeded", slow)
    for key in ("w1", "w2"):  # two workers start, each with a full batch
        d.enqueue(key, 0)
        d.enqueue(key, 1)
    assert d.flush(timeout=10)
    d.enqueue("slow", 0)
    d.enqueue("slow", 1)
    assert in_listener.wait(10)  # one worker is inside the listener, the other sleeps
    d.enqueue("b", 0)  # due in an hour; wakes the idle worker, which goes back to sleep
    assert d.pending("b") == 1
    wait_for_idle_workers(d, 1)
    try:
        # flush itself waits for b's events too, which queue behind the slow
        # listener (events keep their order); the delivery must not.
        d.flush(key="b", timeout=0)
        assert rec.wait_calls(4)
        assert rec.calls[3] == ("b", [0])
    finally:
        release.set()


# -- lanes fed without a lock: forgetting, the bound, flush ------------------------------


@contextlib.contextmanager
def _lanes_locked(d: KeyedDispatcher[Any]) -> Iterator[Dict[Any, Any]]:
    """The engine's lanes by key, with its lock held.

    The race tests below must look inside: they stop a producer inside a
    key's lane (its deque), at the exact point where a worker forgets the
    lane, and check that the lane was forgotten (or kept) at that point,
    which nothing public shows. They reach the lanes here only.
    """
    with d._lock:
        yield d._lanes


class PausingDeque(collections.deque):  # type: ignore[type-arg]
    """A lane's deque that stops one producer thread once: before its append
    lands (``"append"``: it has passed the room check), or right after it,
    before it reads the lane's ``wake_at`` (``"after"``)."""

    def __init__(self, items: Any, where: str) -> None:
        super().__init__(items)
        self.where = where
        self.producer: Any = None
        self.appended = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _pause(self) -> None:
        if threading.current_thread() is self.producer and not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(10)

    def append(self, item: Any) -> None:
        if self.where == "append":
            self._pause()
        super().append(item)
        self.appended = threading.current_thread() is self.producer

    def __len__(self) -> int:
        if self.where == "after" and self.appended:
            self._pause()
        return super().__len__()


def _pause_producer(d: KeyedDispatcher[Any], key: Any, item: Any, where: str) -> Any:
    """Start a producer of *item* for *key* that stops inside the lane's deque;
    return (its deque, the thread, the list its result goes to)."""
    with _lanes_locked(d) as lanes:
        lane = lanes[key]
        items = lane.items = PausingDeque(lane.items, where)
    result: List[bool] = []
    producer = threading.Thread(target=lambda: result.append(d.enqueue(key, item)))
    items.producer = producer
    producer.start()
    assert items.entered.wait(10)
    return items, producer, result


@lock_free_only
@pytest.mark.parametrize("recreated", [False, True])
def test_an_item_that_lands_in_a_forgotten_lane_joins_the_live_one(make_keyed, recreated: bool) -> None:
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=3600.0)
    d.enqueue("k", 0)
    items, producer, result = _pause_producer(d, "k", 1, "append")  # past the room check
    assert d.flush(key="k", timeout=10)  # delivers 0: the lane, empty, is forgotten under the producer
    with _lanes_locked(d) as lanes:
        assert "k" not in lanes
    if recreated:
        d.enqueue("k", 2)  # the key gets a new lane before the paused append lands
    items.gate.set()
    producer.join(10)
    assert result == [True]
    assert d.flush(timeout=10)
    assert rec.items("k") == ([0, 2, 1] if recreated else [0, 1])
    stats = d.stats()
    assert (stats.enqueued, stats.dispatched, stats.pending) == (3 if recreated else 2,) * 2 + (0,)
    with _lanes_locked(d) as lanes:
        assert lanes == {}


@lock_free_only
def test_an_item_appended_before_the_lane_settles_keeps_the_lane(make_keyed) -> None:
    release = threading.Event()
    entered = threading.Event()
    rec = KeyedRecorder()

    def deliver(key: Any, batch: List[Any]) -> None:
        entered.set()
        assert release.wait(10)
        rec(key, batch)

    d = make_keyed(deliver, delay=3600.0, max_batch_size=1)
    d.enqueue("k", 0)  # full: out at once, held in deliver
    assert entered.wait(10)  # the lane is empty behind its batch: the next append takes no lock
    items, producer, result = _pause_producer(d, "k", 1, "after")  # appended, threshold not read yet
    release.set()
    assert rec.wait_calls(2)  # the worker saw the item when the batch settled, and sent it
    items.gate.set()
    producer.join(10)
    assert result == [True]
    assert d.flush(timeout=10)
    assert rec.calls == [("k", [0]), ("k", [1])]
    assert d.stats().enqueued == 2


@lock_free_only
def test_an_append_between_forgetting_and_the_last_look_keeps_the_lane(make_keyed, clock: FakeClock) -> None:
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=3600.0, clock=clock)

    class LandsLate(collections.deque):  # type: ignore[type-arg]
        """Simulates a lock-free append that lands just after the worker
        published "forgotten" and before its last look at the deque."""

        landed = False

        def __len__(self) -> int:
            if lane.room == -1 and not self.landed:
                self.landed = True
                super().append("late")
            return super().__len__()

        def __bool__(self) -> bool:  # Python 3.9's deque has its own, which skips __len__
            return len(self) > 0

    d.enqueue("k", 0)
    with _lanes_locked(d) as lanes:
        lane = lanes["k"]
        lane.items = LandsLate(lane.items)
    assert d.flush(key="k", timeout=10)
    with _lanes_locked(d) as lanes:
        assert lanes.get("k") is lane  # kept, open to lock-free appends again
    assert lane.room > 0
    assert rec.items("k") == [0]
    # ... and given a deadline: "late" goes out when its delay ends, without a flush.
    clock.advance(3600.0)
    poke(d, clock)
    assert rec.wait_calls(2)
    assert rec.items("k") == [0, "late"]


@lock_free_only
def test_an_append_that_lands_in_a_lane_after_shutdown_is_refused(make_keyed) -> None:
    d = make_keyed(KeyedRecorder(), delay=3600.0)
    d.enqueue("k", 0)
    items, producer, result = _pause_producer(d, "k", 1, "append")
    assert d.shutdown(timeout=10)
    items.gate.set()
    producer.join(10)
    assert result == [False]
    stats = d.stats()
    assert (stats.pending, stats.enqueued, stats.dispatched) == (0, 1, 1)
    assert dict(stats.dropped_by_reason) == {"closed": 1}


@pytest.fixture
def short_switch_interval() -> Iterator[None]:
    """Switch threads often, for more interleavings."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _produce(
    d: KeyedDispatcher[Any], producers: int, per_producer: int, keys: str, paced: bool = False
) -> Dict[Any, bool]:
    """Enqueue (key, (producer, seq)) items from several threads at once; return each item's result.

    *paced* producers give up the GIL after each item, so that workers keep
    up and lanes empty (and are forgotten) all the time.
    """
    results: Dict[Any, bool] = {}
    start = threading.Barrier(producers)

    def produce(tid: int) -> None:
        start.wait()
        for seq in range(per_producer):
            key = keys[(seq + tid) % len(keys)]
            results[(key, (tid, seq))] = d.enqueue(key, (tid, seq))
            if paced:
                time.sleep(0)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _assert_in_order(delivered: List[Any]) -> None:
    by_key_and_producer: Dict[Any, List[int]] = {}
    for key, (tid, seq) in delivered:
        by_key_and_producer.setdefault((key, tid), []).append(seq)
    for seqs in by_key_and_producer.values():
        assert seqs == sorted(seqs)


@pytest.mark.parametrize("max_batch_size", [1, 2, 3])
def test_many_producers_while_lanes_are_forgotten_and_recreated(
    make_keyed, short_switch_interval: None, max_batch_size: int
) -> None:
    delivered: List[Any] = []
    lock = threading.Lock()

    def deliver(key: Any, batch: List[Any]) -> None:
        with lock:
            delivered.extend((key, item) for item in batch)

    d = make_keyed(
        deliver, delay=0.0001, max_batch_size=max_batch_size, max_concurrent_batches=3, max_queue_size=None
    )
    results = _produce(d, producers=4, per_producer=1500, keys="abcdef", paced=True)
    assert d.flush(timeout=30)
    assert all(results.values())
    assert sorted(delivered) == sorted(results)  # each item exactly once
    _assert_in_order(delivered)
    with _lanes_locked(d) as lanes:
        assert lanes == {}  # every key's lane was forgotten
    stats = d.stats()
    assert (stats.enqueued, stats.dispatched, stats.pending) == (6000, 6000, 0)


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest", "block"])
def test_the_bound_holds_for_all_keys_together_under_many_producers(
    make_keyed, short_switch_interval: None, overflow: str
) -> None:
    limit, producers = 20, 4
    delivered: List[Any] = []
    dropped: List[Any] = []
    lock = threading.Lock()

    def deliver(key: Any, batch: List[Any]) -> None:
        threading.Event().wait(0.0005)  # a slow consumer: the queue stays full
        with lock:
            delivered.extend((key, item) for item in batch)

    d = make_keyed(
        deliver, delay=0.001, max_batch_size=3, max_queue_size=limit, overflow=overflow,
        max_concurrent_batches=2,
    )
    d.on("items_dropped", lambda event: dropped.extend((event.key, item) for item in event.items))
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        # One snapshot: pending less the batches out is what waits in the
        # queue (no batch waits for a retry here).
        while not done.is_set():
            stats = d.stats()
            peak[0] = max(peak[0], stats.pending - stats.in_flight)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = _produce(d, producers=producers, per_producer=500, keys="abcdefg")
    finally:
        done.set()
        watcher.join()
    assert d.shutdown(timeout=30)
    assert peak[0] <= limit + producers  # at most one item per producer thread past the bound
    refused = {item for item, accepted in results.items() if not accepted}
    assert sorted(delivered + dropped) == sorted(results)  # each item once: delivered, or dropped
    assert set(dropped) >= refused
    _assert_in_order(delivered)
    stats = d.stats()
    assert stats.dropped == len(dropped)
    assert stats.enqueued == len(results) - len(refused)
    if overflow == "block":
        assert dropped == []


def test_flush_covers_what_was_enqueued_before_it_while_producers_go_on(make_keyed) -> None:
    delivered: Set[Any] = set()
    lock = threading.Lock()

    def deliver(key: Any, batch: List[Any]) -> None:
        with lock:
            delivered.update(batch)

    d = make_keyed(deliver, delay=3600.0, max_batch_size=5, max_concurrent_batches=2, max_queue_size=None)
    stop = threading.Event()
    returned: List[List[Any]] = [[] for _ in range(3)]

    def produce(tid: int) -> None:
        seq = 0
        while not stop.is_set() and seq < 30_000:
            key = "abcd"[seq % 4]
            item = (key, tid, seq)
            assert d.enqueue(key, item, priority=(0, 0, 0, 1, -1)[seq % 5])
            returned[tid].append(item)
            seq += 1

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    try:
        for round_no in range(40):
            key = "abcd"[round_no % 4] if round_no % 2 else None
            before = [item for items in returned for item in list(items) if key is None or item[0] == key]
            assert d.flush(timeout=10) if key is None else d.flush(key=key, timeout=10)
            with lock:
                missing = [item for item in before if item not in delivered]
            assert missing == []
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert d.flush(timeout=10)
    assert len(delivered) == sum(len(items) for items in returned)


def test_drop_oldest_evicts_from_the_key_that_has_waited_longest(make_keyed, clock: FakeClock) -> None:
    # The one worker is busy with another key throughout: a full queue kicks a
    # worker to send early, and a free one could take a1 before c1 arrives.
    rec = KeyedRecorder()
    busy, release = threading.Event(), threading.Event()

    def deliver(key: Any, batch: List[Any]) -> None:
        if key == "busy":
            busy.set()
            release.wait(30)
        rec(key, batch)

    dropped: List[Any] = []
    d = make_keyed(deliver, delay=3600.0, max_queue_size=3, overflow="drop_oldest", clock=clock,
                   max_concurrent_batches=1)
    d.on("items_dropped", lambda event: dropped.append((event.key, event.items)))
    d.enqueue("busy", 0)
    assert not d.flush(key="busy", timeout=0)
    assert busy.wait(10)
    d.enqueue("a", "a0")
    clock.advance(1.0)
    d.enqueue("b", "b0")
    d.enqueue("a", "a1", priority=5)
    clock.advance(1.0)
    assert d.enqueue("c", "c0")  # full: a has waited longest, and a0 is its oldest item
    assert d.enqueue("c", "c1")  # a still has: then a1
    release.set()
    assert d.flush(timeout=10)
    assert dropped == [("a", ("a0",)), ("a", ("a1",))]
    assert sorted(rec.calls) == [("b", ["b0"]), ("busy", [0]), ("c", ["c0", "c1"])]


def test_a_lane_evicts_its_oldest_item_whatever_its_priority() -> None:
    lane = PriorityLane("k")
    lane.push(5, 0, "p0")  # before any default-priority item
    lane.items.append("d0")
    lane.items.append("d1")
    lane.push(-1, 1, "n0")  # after d0 and d1
    assert [lane.pop_oldest() for _ in range(4)] == ["p0", "d0", "d1", "n0"]
    assert lane.size() == 0


@lock_free_only
def test_a_report_that_lands_on_a_forgotten_lane_restores_its_threshold(make_keyed) -> None:
    """A producer reports a lane without the lock: its store of "never" may
    land after a worker marked the lane forgotten (-1). It must notice, undo
    the store and move its item, or later appends would strand in the lane."""
    rec = KeyedRecorder()
    d = make_keyed(rec, delay=3600.0)
    d.enqueue("k", 0)
    with _lanes_locked(d) as lanes:
        lane = lanes["k"]
    items, producer, result = _pause_producer(d, "k", 1, "append")  # past the room check
    assert d.flush(key="k", timeout=10)  # delivered; the lane is forgotten under the producer
    assert lane.dead
    assert (lane.room, lane.wake_at) == (-1, -1)
    lane.wake_at = sys.maxsize  # what a late report's store leaves behind
    items.gate.set()  # its item lands in the dead lane, and the producer reports it
    producer.join(10)
    assert result == [True]
    assert lane.wake_at == -1  # restored: the next late append looks again
    assert d.flush(timeout=10)
    assert rec.items("k") == [0, 1]
    assert d.stats().enqueued == 2


def test_a_full_lane_wakes_an_idle_worker_while_another_delivers(make_keyed) -> None:
    """Reports of full lanes wake an idle worker even after an earlier report
    woke one that is still busy delivering."""
    release = threading.Event()
    slow_entered = threading.Event()
    rec = KeyedRecorder()

    def deliver(key: Any, batch: List[Any]) -> None:
        if key == "slow":
            slow_entered.set()
            assert release.wait(30)
        rec(key, batch)

    d = make_keyed(deliver, delay=3600.0, max_batch_size=2, max_concurrent_batches=2)
    for key in ("w1", "w2"):  # two workers start, each with a full batch
        d.enqueue(key, 0)
        d.enqueue(key, 1)
    assert d.flush(timeout=10)
    d.enqueue("b", 0)  # waits for its hour
    wait_for_idle_workers(d, 2)
    try:
        d.enqueue("slow", 0)
        d.enqueue("slow", 1)  # full: reported, and a worker goes into deliver for good
        assert slow_entered.wait(10)
        wait_for_idle_workers(d, 1)
        d.enqueue("b", 1)  # full: the idle worker must send it now, not in an hour
        assert rec.wait_calls(3)
        assert rec.calls[2] == ("b", [0, 1])
    finally:
        release.set()


@lock_free_only
def test_a_stale_never_on_a_forgotten_lane_does_not_hide_it_from_other_producers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Forced interleaving (found in review): producer Q crossed wake_at and
    # is about to store "never"; producer R has checked the lane's room and
    # is about to append. The worker then forgets the lane; Q's store lands
    # over the forget's -1; R appends into the dead lane. R must still take
    # the locked path, so its item joins the live lane before enqueue
    # returns: flush(key) covers it and its next item comes after it.
    from batchdispatch import _keyed_engine, _lanes

    slots = {name: _lanes.Lane.__dict__[name] for name in ("wake_at", "room", "dead")}
    reads: Dict[Any, int] = collections.Counter()
    pauses: Dict[Any, Any] = {}

    def pause_at(thread: str, attr: str, nth: int) -> Any:
        pauses[(thread, attr, nth)] = gates = (threading.Event(), threading.Event())
        return gates

    def hooked(attr: str) -> Any:
        slot = slots[attr]

        def get(self: Any) -> Any:
            value = slot.__get__(self)
            key = (threading.current_thread().name, attr)
            reads[key] += 1
            gates = pauses.get((*key, reads[key]))
            if gates:
                gates[0].set()
                assert gates[1].wait(10)
            return value

        return property(get, slot.__set__)

    class HookedLane(PriorityLane):
        wake_at = hooked("wake_at")
        room = hooked("room")
        dead = hooked("dead")

    monkeypatch.setattr(_keyed_engine, "PriorityLane", HookedLane)
    delivered: List[str] = []
    first, in_first = threading.Event(), threading.Event()

    def deliver(key: str, items: List[str]) -> None:
        if items == ["a"]:
            in_first.set()
            assert first.wait(10)
        delivered.extend(items)

    d = KeyedDispatcher(deliver, delay=0.001, max_batch_size=10, max_concurrent_batches=1)
    d.enqueue("k", "a")
    assert in_first.wait(10)  # the worker took "a" and waits in deliver
    with _lanes_locked(d) as lanes:
        lane = lanes["k"]
    q_in_wake, q_go = pause_at("Q", "wake_at", 2)
    q_locking, q_go_on = pause_at("Q", "dead", 1)
    q = threading.Thread(target=lambda: d.enqueue("k", "q1"), name="Q")
    q.start()
    assert q_in_wake.wait(10)
    r_checked, r_go = pause_at("R", "room", 1)
    seen: Dict[str, Any] = {}

    def producer_r() -> None:
        seen["r1"] = d.enqueue("k", "r1")
        seen["flushed"] = d.flush(key="k", timeout=10)
        seen["at_flush"] = list(delivered)
        seen["r2"] = d.enqueue("k", "r2")

    r = threading.Thread(target=producer_r, name="R")
    r.start()
    assert r_checked.wait(10)
    first.set()
    deadline = monotonic() + 10
    while True:  # q1 delivered, then the lane forgotten
        with _lanes_locked(d) as lanes:
            if "k" not in lanes and "q1" in delivered:
                break
        assert monotonic() < deadline
        threading.Event().wait(0.001)
    q_go.set()
    assert q_locking.wait(10)  # Q stored "never" over the -1 and heads for the lock
    assert slots["wake_at"].__get__(lane) == _lanes.NEVER
    r_go.set()
    r.join(10)
    q_go_on.set()
    q.join(10)
    assert d.shutdown(timeout=10)
    assert seen["r1"] is seen["r2"] is seen["flushed"] is True
    assert "r1" in seen["at_flush"]
    assert delivered == ["a", "q1", "r1", "r2"]
