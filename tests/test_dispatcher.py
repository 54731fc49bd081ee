"""BackgroundDispatcher behaviour, in process, with real threads."""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import signal
import sys
import threading
import weakref
from typing import Any, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchdispatch import BackgroundDispatcher, BatchDispatchError, DispatcherStats, QueueFullError
from batchdispatch._deadlines import monotonic

from .conftest import (
    FakeClock,
    Recorder,
    lock_free_only,
    poke,
    run_python,
    worker_threads,
    worker_wait_timeout,
)


class Gate:
    """A dispatch callable that blocks until opened, to hold a batch in flight."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.batches: List[List[Any]] = []

    def __call__(self, batch: List[Any]) -> None:
        self.batches.append(list(batch))
        self.entered.set()
        assert self.opened.wait(30), "gate never opened"

    @property
    def items(self) -> List[Any]:
        return [item for batch in self.batches for item in batch]


# -- 1. order, batching, no empty batches, no duplicates ------------------------


def test_batches_keep_enqueue_order_and_are_never_empty(make, recorder: Recorder) -> None:
    d = make(recorder, delay=0.01, max_batch_size=100)
    assert all(d.enqueue(i) for i in range(5000))
    assert d.flush(timeout=10)
    assert recorder.items == list(range(5000))
    assert all(0 < len(batch) <= 100 for batch in recorder.batches)
    before = len(recorder.batches)
    assert d.flush(timeout=10)  # nothing pending: no empty batch is sent
    assert len(recorder.batches) == before


def test_each_thread_keeps_its_order_and_nothing_is_duplicated(make, recorder: Recorder) -> None:
    d = make(recorder, delay=0.005, max_batch_size=64, max_queue_size=None)
    threads, per_thread = 4, 5000
    start = threading.Barrier(threads)

    def produce(tid: int) -> None:
        start.wait()
        for seq in range(per_thread):
            assert d.enqueue((tid, seq))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert d.flush(timeout=10)
    items = recorder.items
    assert len(items) == len(set(items)) == threads * per_thread
    for tid in range(threads):
        assert [seq for t, seq in items if t == tid] == list(range(per_thread))


def test_batches_leave_at_most_once_per_delay(make, recorder: Recorder) -> None:
    """Consecutive take decisions are at least ``delay`` apart (real clock)."""
    decisions: List[float] = []
    seen = [0.0]

    def clock() -> float:  # the engine reads it only when deciding
        seen[0] = monotonic()
        return seen[0]

    def dispatch(batch: List[Any]) -> None:
        decisions.append(seen[0])
        recorder(batch)

    delay = 0.03
    d = make(dispatch, delay=delay, clock=clock)
    i = 0
    while len(recorder.batches) < 5:  # bounded by the timeout; pacing only
        d.enqueue(i)
        i += 1
        threading.Event().wait(0.001)
    assert d.flush(timeout=10)
    gaps = [b - a for a, b in zip(decisions, decisions[1:5])]
    assert all(gap >= delay for gap in gaps), gaps
    assert recorder.items == list(range(i))


def test_a_batch_waits_for_the_delay_on_a_fake_clock(make, recorder: Recorder, clock: FakeClock) -> None:
    decided: List[float] = []

    def dispatch(batch: List[Any]) -> None:
        decided.append(clock.last)
        recorder(batch)

    d = make(dispatch, delay=5.0, clock=clock)
    d.enqueue("a")
    assert worker_wait_timeout(d) == pytest.approx(5.0)
    clock.advance(4.9)
    poke(d, clock)
    assert worker_wait_timeout(d) == pytest.approx(0.1)
    assert recorder.batches == []
    clock.advance(0.2)
    poke(d, clock)
    assert recorder.wait_batches(1)
    assert decided == [pytest.approx(1005.1)]


def test_a_full_batch_goes_at_once_without_waiting_for_the_delay(make, recorder: Recorder) -> None:
    d = make(recorder, delay=3600.0, max_batch_size=10)
    for i in range(25):
        d.enqueue(i)
    assert recorder.wait_batches(2)
    assert recorder.batches == [list(range(10)), list(range(10, 20))]
    assert d.stats().pending == 5  # not full: waits for the hour-long delay
    assert d.flush(timeout=10)
    assert recorder.batches[2] == list(range(20, 25))


# -- 2. lazy start, daemon, no polling ---------------------------------------


def test_import_and_construction_start_no_thread() -> None:
    result = run_python(
        """
        import threading
        import batchdispatch
        d = batchdispatch.BackgroundDispatcher(print, delay=0.1)
        print(threading.active_count(), d.stats().worker_alive)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]


def test_the_worker_is_a_named_daemon_started_on_first_enqueue(make, recorder: Recorder) -> None:
    d = make(recorder, delay=0.01, name="audit")
    assert not worker_threads(d)
    assert not d.stats().worker_alive
    d.enqueue(1)
    [worker] = worker_threads(d)
    assert worker is not None
    assert worker.name == "batchdispatch:audit"
    assert worker.daemon
    assert worker.is_alive()
    assert d.flush(timeout=10)


def test_the_default_name_is_the_dispatch_callables(make) -> None:
    def send_events(batch: List[Any]) -> None:
        pass

    assert make(send_events).name.endswith("send_events")


def test_an_idle_worker_waits_without_a_timeout(make, recorder: Recorder) -> None:
    d = make(recorder, delay=60.0)
    d.enqueue(1)
    # With an item waiting, the worker sleeps until its deadline ...
    assert worker_wait_timeout(d) == pytest.approx(60.0, abs=1.0)
    assert d.flush(timeout=10)
    # ... and with nothing to do, it sleeps with no timeout at all: no polling.
    assert worker_wait_timeout(d) is None


# -- 3. the hot path never waits for user code --------------------------------


def test_user_code_runs_without_the_lock(make) -> None:
    # Seen from another thread: stats() takes the dispatcher's lock, so it
    # returns while dispatch or on_error runs only if they run without it.
    # (A probe on the worker's own thread could not tell: the lock is reentrant.)
    returned: List[bool] = []

    def probe(d: BackgroundDispatcher[Any]) -> None:
        reader = threading.Thread(target=d.stats, daemon=True)
        reader.start()
        reader.join(5)
        returned.append(not reader.is_alive())

    def dispatch(batch: List[Any]) -> None:
        probe(d)
        raise RuntimeError("fail so on_error runs too")

    d = make(dispatch, delay=0.01, on_error=lambda exc, batch: probe(d))
    d.enqueue(1)
    assert d.flush(timeout=10)
    assert returned == [True, True]


def test_enqueue_never_waits_for_dispatch(make) -> None:
    gate = Gate()
    d = make(gate, delay=0.001, max_batch_size=1)
    d.enqueue(-1)
    assert gate.entered.wait(10)
    # dispatch is stuck: enqueue must still return at once, every time
    assert all(d.enqueue(i) for i in range(10_000))
    gate.opened.set()
    assert d.flush(timeout=30)
    assert gate.items == [-1, *range(10_000)]


# -- 4. errors ----------------------------------------------------------------------


def test_a_failing_dispatch_calls_on_error_and_the_worker_goes_on(make) -> None:
    errors: List[Any] = []
    delivered: List[Any] = []

    def dispatch(batch: List[Any]) -> None:
        if batch[0] == "bad":
            raise ValueError("boom")
        delivered.extend(batch)

    d = make(dispatch, delay=0.01, on_error=lambda exc, batch: errors.append((exc, batch)))
    d.enqueue("bad")
    assert d.flush(timeout=10)
    d.enqueue("good")
    assert d.flush(timeout=10)
    assert [(type(e), b) for e, b in errors] == [(ValueError, ["bad"])]
    assert delivered == ["good"]  # no automatic retry
    stats = d.stats()
    assert (stats.failed, stats.dispatched, stats.batches) == (1, 1, 2)
    assert isinstance(stats.last_error, ValueError)
    assert stats.worker_alive


def test_failures_are_logged_with_traceback_and_rate_limited(make, caplog) -> None:
    def dispatch(batch: List[Any]) -> None:
        raise ValueError("endpoint down")

    d = make(dispatch, delay=0.01)
    with caplog.at_level(logging.ERROR, logger="batchdispatch"):
        for i in range(3):
            d.enqueue(i)
            assert d.flush(timeout=10)
    records = [r for r in caplog.records if r.name == "batchdispatch"]
    assert len(records) == 1  # three failures within ten seconds: one line
    assert records[0].exc_info is not None
    assert "endpoint down" in caplog.text
    assert d.stats().failed == 3


def test_an_on_error_that_raises_is_logged_and_harmless(make, caplog) -> None:
    def dispatch(batch: List[Any]) -> None:
        raise ValueError("first")

    def on_error(exc: BaseException, batch: List[Any]) -> None:
        raise KeyError("second")

    d = make(dispatch, delay=0.01, on_error=on_error)
    with caplog.at_level(logging.ERROR, logger="batchdispatch"):
        d.enqueue(1)
        assert d.flush(timeout=10)
        d.enqueue(2)
        assert d.flush(timeout=10)
    assert "on_error raised" in caplog.text
    assert d.stats().failed == 2
    assert d.stats().worker_alive


# -- 5. flush and shutdown -------------------------------------------------------


def test_flush_waits_for_items_enqueued_before_it(make, recorder: Recorder) -> None:
    d = make(recorder, delay=3600.0)
    for i in range(10):
        d.enqueue(i)
    assert d.flush(timeout=10)
    assert recorder.items == list(range(10))


def test_flush_returns_false_at_its_deadline_when_dispatch_hangs(make) -> None:
    gate = Gate()
    d = make(gate, delay=0.01)
    d.enqueue(1)
    started = monotonic()
    assert d.flush(timeout=0.2) is False
    assert 0.2 <= monotonic() - started < 5.0
    gate.opened.set()
    assert d.flush(timeout=10)


def test_shutdown_returns_false_at_its_deadline_and_warns(make, caplog) -> None:
    gate = Gate()
    d = make(gate, delay=0.01, name="stuck")
    d.enqueue(1)
    assert gate.entered.wait(10)
    d.enqueue(2)
    started = monotonic()
    with caplog.at_level(logging.WARNING, logger="batchdispatch"):
        assert d.shutdown(timeout=0.2) is False
    assert monotonic() - started < 5.0
    assert "shutdown timed out with 2 items undelivered" in caplog.text
    gate.opened.set()
    assert d.shutdown(timeout=10)
    assert gate.items == [1, 2]


def test_flush_from_inside_dispatch_does_not_deadlock(make, recorder: Recorder) -> None:
    results: List[bool] = []

    def dispatch(batch: List[Any]) -> None:
        results.append(d.flush(timeout=5))
        recorder(batch)

    d = make(dispatch, delay=0.01)
    d.enqueue(1)
    assert d.flush(timeout=10)
    assert results == [False]  # it cannot wait for itself
    assert recorder.items == [1]


def test_shutdown_from_inside_dispatch_does_not_deadlock(make, recorder: Recorder) -> None:
    def dispatch(batch: List[Any]) -> None:
        d.shutdown(timeout=5)
        recorder(batch)

    d = make(dispatch, delay=0.01)
    d.enqueue(1)
    d.enqueue(2)
    assert d.flush(timeout=10)
    assert d.shutdown(timeout=10)
    assert recorder.items == [1, 2]


def test_shutdown_is_idempotent_and_later_items_are_counted_as_closed(make, recorder: Recorder) -> None:
    d = make(recorder, delay=3600.0)
    d.enqueue("x")
    assert d.shutdown(timeout=10)
    assert d.shutdown(timeout=10)
    assert recorder.items == ["x"]
    assert d.enqueue("late") is False
    stats = d.stats()
    assert stats.dropped_by_reason == {"closed": 1}
    assert stats.dropped == 1
    assert not stats.worker_alive


def test_shutdown_of_a_dispatcher_never_used_is_immediate() -> None:
    d: BackgroundDispatcher[Any] = BackgroundDispatcher(print)
    assert d.shutdown(timeout=0)
    assert d.enqueue(1) is False


def test_the_with_block_shuts_down(recorder: Recorder) -> None:
    with BackgroundDispatcher(recorder, delay=3600.0) as d:
        d.enqueue(1)
    assert recorder.items == [1]
    assert not d.stats().worker_alive


def test_a_shut_down_dispatcher_can_be_garbage_collected(recorder: Recorder) -> None:
    d: BackgroundDispatcher[Any] = BackgroundDispatcher(recorder, delay=0.01)
    d.enqueue(1)
    assert d.shutdown(timeout=10)
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


# -- overflow -----------------------------------------------------------------------


def _full(make, overflow: str, **options: Any) -> Any:
    """A dispatcher with one item in flight and a queue of 5 filled."""
    gate = Gate()
    d = make(gate, delay=0.001, max_batch_size=1, max_queue_size=5, overflow=overflow, **options)
    d.enqueue(0)
    assert gate.entered.wait(10)
    for i in range(1, 6):
        assert d.enqueue(i)
    return d, gate


def test_drop_newest_rejects_and_counts(make) -> None:
    d, gate = _full(make, "drop_newest")
    assert [d.enqueue(i) for i in range(6, 9)] == [False, False, False]
    gate.opened.set()
    assert d.flush(timeout=10)
    assert gate.items == [0, 1, 2, 3, 4, 5]
    stats = d.stats()
    assert stats.dropped_by_reason == {"queue_full": 3}
    assert stats.enqueued == 6 == stats.dispatched


def test_drop_oldest_evicts_and_counts(make) -> None:
    d, gate = _full(make, "drop_oldest")
    assert all(d.enqueue(i) for i in range(6, 9))
    gate.opened.set()
    assert d.flush(timeout=10)
    assert gate.items == [0, 4, 5, 6, 7, 8]
    stats = d.stats()
    assert stats.dropped_by_reason == {"queue_full": 3}
    assert stats.enqueued == stats.dispatched + 3


def test_block_waits_for_room(make) -> None:
    d, gate = _full(make, "block")
    results: List[bool] = []
    blocked = threading.Thread(target=lambda: results.append(d.enqueue(6)))
    blocked.start()
    blocked.join(0.1)
    assert blocked.is_alive()  # waiting for room, not dropped
    gate.opened.set()
    blocked.join(10)
    assert results == [True]
    assert d.flush(timeout=10)
    assert gate.items == list(range(7))


def test_block_gives_up_after_block_timeout(make) -> None:
    d, gate = _full(make, "block", block_timeout=0.1)
    started = monotonic()
    assert d.enqueue(6) is False
    assert 0.1 <= monotonic() - started < 5.0
    assert d.stats().dropped_by_reason == {"queue_full": 1}
    gate.opened.set()


def test_raise_raises_queue_full_error(make) -> None:
    d, gate = _full(make, "raise")
    with pytest.raises(QueueFullError) as info:
        d.enqueue(6)
    assert isinstance(info.value, BatchDispatchError)
    assert info.value.max_queue_size == 5
    assert d.stats().dropped_by_reason == {"queue_full": 1}
    gate.opened.set()


def test_drops_are_logged_once_in_a_while(make, caplog) -> None:
    d, gate = _full(make, "drop_newest", name="busy")
    with caplog.at_level(logging.WARNING, logger="batchdispatch"):
        for i in range(100):
            d.enqueue(i)
    gate.opened.set()
    lines = [r.getMessage() for r in caplog.records if r.name == "batchdispatch"]
    assert lines == ["batchdispatch:busy: 1 items dropped so far (queue_full: 1); see stats()"]
    assert d.stats().dropped == 100


# -- stats ---------------------------------------------------------------------------


def test_stats_is_a_frozen_snapshot(make, recorder: Recorder) -> None:
    d = make(recorder, delay=3600.0)
    for i in range(3):
        d.enqueue(i)
    stats = d.stats()
    assert isinstance(stats, DispatcherStats)
    assert (stats.pending, stats.enqueued, stats.dispatched, stats.batches) == (3, 3, 0, 0)
    assert stats.worker_alive
    assert stats.last_error is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.pending = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.dropped_by_reason["x"] = 1  # type: ignore[index]
    assert d.flush(timeout=10)
    after = d.stats()
    assert (after.pending, after.enqueued, after.dispatched, after.batches) == (0, 3, 3, 1)
    assert stats.pending == 3  # the earlier snapshot did not change


def test_repr_names_the_dispatcher_and_its_state(make) -> None:
    d = make(print, name="events")
    assert repr(d) == "<BackgroundDispatcher name='events' state=new pending=0>"


# -- 9. bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"delay": 0}, ValueError, "delay must be a positive finite number"),
        ({"delay": -1}, ValueError, "delay must be a positive finite number"),
        ({"delay": float("nan")}, ValueError, "delay must be a positive finite number"),
        ({"delay": float("inf")}, ValueError, "delay must be a positive finite number"),
        ({"delay": "1"}, TypeError, "delay must be a number"),
        ({"max_batch_size": 0}, ValueError, "max_batch_size must be at least 1"),
        ({"max_batch_size": 1.5}, TypeError, "max_batch_size must be an int"),
        ({"max_queue_size": 0}, ValueError, "max_queue_size must be at least 1"),
        ({"max_queue_size": -5}, ValueError, "max_queue_size must be at least 1"),
        ({"overflow": "drop"}, ValueError, "overflow must be one of"),
        ({"block_timeout": -1}, ValueError, "block_timeout must be a non-negative"),
        ({"on_error": 3}, TypeError, "on_error must be callable"),
        ({"exit_timeout": float("inf")}, ValueError, "exit_timeout must be a non-negative"),
        ({"name": 7}, TypeError, "name must be a str"),
    ],
)
def test_bad_options_fail_at_construction(options: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        BackgroundDispatcher(print, **options)


def test_a_non_callable_dispatch_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="dispatch must be callable"):
        BackgroundDispatcher("not a function")  # type: ignore[arg-type]


# -- property: any mix of producers and batch limits --------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 400), min_size=1, max_size=4),
    max_batch_size=st.one_of(st.none(), st.integers(1, 64)),
    failing=st.sets(st.integers(0, 30), max_size=5),
)
def test_every_accepted_item_is_settled_once_in_per_thread_order(
    counts: List[int], max_batch_size: Any, failing: Any
) -> None:
    delivered: List[Any] = []
    failed: List[Any] = []
    calls = [0]

    def dispatch(batch: List[Any]) -> None:
        calls[0] += 1
        if calls[0] in failing:
            raise RuntimeError("planned failure")
        delivered.extend(batch)

    d: BackgroundDispatcher[Any] = BackgroundDispatcher(
        dispatch, delay=0.001, max_batch_size=max_batch_size,
        on_error=lambda exc, batch: failed.extend(batch),
    )
    start = threading.Barrier(len(counts))

    def produce(tid: int, count: int) -> None:
        start.wait()
        for seq in range(count):
            assert d.enqueue((tid, seq))

    threads = [threading.Thread(target=produce, args=(t, c)) for t, c in enumerate(counts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d.shutdown(timeout=30)
    settled = delivered + failed
    assert sorted(settled) == sorted((t, s) for t, c in enumerate(counts) for s in range(c))
    for tid in range(len(counts)):
        assert [s for t, s in delivered if t == tid] == sorted(s for t, s in delivered if t == tid)
    stats = d.stats()
    assert stats.enqueued == sum(counts) == stats.dispatched + stats.failed
    assert (stats.dispatched, stats.failed, stats.pending) == (len(delivered), len(failed), 0)


# -- regressions from the concurrency review ----------------------------------------


def test_flush_is_not_fooled_by_evictions_behind_a_batch_in_flight(make) -> None:
    gate = Gate()
    d = make(gate, delay=0.001, max_batch_size=3, max_queue_size=3, overflow="drop_oldest")
    for i in range(3):
        d.enqueue(i)
    assert gate.entered.wait(10)  # [0, 1, 2] is inside dispatch
    for i in range(3, 20):  # evictions settle later items, out of order
        d.enqueue(i)
    assert d.flush(timeout=0.2) is False  # [0, 1, 2] is still not delivered
    gate.opened.set()
    assert d.flush(timeout=10)


def test_a_full_queue_goes_at_once_under_drop_oldest_too(make, recorder: Recorder) -> None:
    gate = Gate()
    d = make(lambda b: (gate(b), recorder(b)), delay=3600.0, max_queue_size=5, overflow="drop_oldest")
    for i in range(5):
        d.enqueue(i)
    assert gate.entered.wait(10)  # the full queue went without the hour-long delay
    for i in range(5, 12):
        d.enqueue(i)
    gate.opened.set()
    assert recorder.wait_batches(2)  # ... and so does the next full one
    assert recorder.batches[1] == [7, 8, 9, 10, 11]


def test_a_finalizer_that_enqueues_cannot_deadlock_the_worker(make) -> None:
    class Noisy:
        def __del__(self) -> None:
            d.enqueue("from __del__")

    seen: List[str] = []  # names only: keeping the items would keep them alive
    d = make(lambda batch: seen.extend(str(type(x).__name__) for x in batch), delay=0.01)
    d.enqueue(Noisy())
    assert d.flush(timeout=10)
    assert d.shutdown(timeout=10)  # the item was released after the lock
    assert seen == ["Noisy", "str"]


def test_enqueue_from_a_thread_that_holds_the_lock_does_not_deadlock(make, recorder: Recorder) -> None:
    """A signal handler runs on whatever the main thread was doing, even
    inside one of the engine's locked sections.

    A real one: SIGUSR1, raised from the ``clock=`` callable, the one piece
    of user code the engine runs with its lock held (stats() reads it to
    age what is pending); the handler runs before raise_signal returns.
    """
    armed, handled = [False], []

    def on_signal(signum: int, frame: Any) -> None:
        # The main thread is inside the locked section: another thread's
        # stats() waits for it (a precondition, so that the test stays real).
        reader = threading.Thread(target=d.stats, daemon=True)
        reader.start()
        reader.join(0.5)
        handled.append((reader.is_alive(), d.enqueue(2)))

    def clock() -> float:
        if armed[0] and threading.current_thread() is threading.main_thread():
            armed[0] = False
            signal.raise_signal(signal.SIGUSR1)
        return monotonic()

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        d = make(recorder, delay=3600.0, max_batch_size=2, clock=clock)
        d.enqueue(1)
        worker_wait_timeout(d)  # it waits for the delay: the append that fills the batch takes the lock
        armed[0] = True
        assert d.stats().pending == 1  # the signal lands here, with the lock held
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled == [(True, True)]
    assert d.flush(timeout=10)
    assert recorder.items == [1, 2]


def test_a_failed_thread_start_delivers_inline_and_tries_again(make, recorder: Recorder, monkeypatch) -> None:
    """Simulated: a real out-of-threads condition cannot be produced safely here."""
    real_start = threading.Thread.start
    calls = [0]

    def failing_once(self: threading.Thread) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", failing_once)
    d = make(recorder, delay=0.01)
    assert d.enqueue("inline")
    assert recorder.items == ["inline"]  # delivered on this thread, at once
    assert d.enqueue("queued")
    assert d.stats().worker_alive
    assert d.flush(timeout=10)
    assert d.shutdown(timeout=10)
    assert d.enqueue("after") is False


def test_huge_delays_are_clamped_not_fatal(make, recorder: Recorder) -> None:
    d = make(recorder, delay=float(sys.maxsize))
    d.enqueue(1)
    assert worker_wait_timeout(d) == threading.TIMEOUT_MAX
    assert d.flush(timeout=10)
    assert recorder.items == [1]


@lock_free_only
def test_an_item_appended_as_shutdown_finishes_is_dropped_not_dispatched(make, recorder: Recorder) -> None:
    """Forces the window between the admission check and the append."""
    d = make(recorder, delay=0.01)
    d.enqueue("first")
    assert d.flush(timeout=10)

    class Racing(collections.deque):  # type: ignore[type-arg]
        def append(self, item: Any) -> None:
            assert d.shutdown(timeout=10)  # completes before the append lands
            super().append(item)

    d._items = d._main.items = Racing(d._items)
    assert d.enqueue("late") is False
    assert recorder.items == ["first"]
    assert d.stats().dropped_by_reason == {"closed": 1}
