"""Regression tests for the engine's part of the fault hunt (issue 12), one or more per item.

Each was checked to fail on the code before its fix.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import threading
import time
from typing import Any, List

import pytest

from batchdispatch import BackgroundDispatcher, RetryPolicy, current_deadline
from batchdispatch.exceptions import DeliveryError
from batchdispatch.spool import SqliteSpool

from .conftest import KeyedRecorder, Recorder, run_python
from .spools import held_by_another_thread


def run_script(tmp_path: Any, code: str, *argv: str, timeout: float = 60) -> Any:
    """Run *code* as a program's ``__main__`` (its atexit hooks run as they would), with *argv*."""
    script = tmp_path / "app.py"
    script.write_text(code)
    return run_python(f"import runpy, sys; sys.argv = ['app', *{list(argv)!r}]; "
                      f"runpy.run_path({str(script)!r}, run_name='__main__')", timeout=timeout)


# -- 1. a long retry policy ------------------------------------------------------------


@pytest.mark.parametrize("multiplier", [1.0, 1.5, 2.0, 10.0, 1e308])
def test_backoff_for_any_attempt_stays_under_the_cap(multiplier: float) -> None:
    policy = RetryPolicy(max_attempts=10**6, backoff=0.5, multiplier=multiplier, max_backoff=60, jitter=False)
    for attempt in (1, 2, 3, 1024, 1025, 5000, 10**6):
        wait = policy.backoff_for(attempt)
        assert 0 < wait <= 60
    assert policy.backoff_for(1) == 0.5
    assert policy.backoff_for(10**6) == (0.5 if multiplier == 1 else 60)


def test_a_policy_that_retries_for_days_keeps_the_worker_alive(make: Any) -> None:
    # multiplier 2 overflowed a float at attempt 1025, inside the engine: the worker died,
    # the items were dropped as worker_died and every later enqueue as closed.
    failures = [0]

    def flaky(batch: List[Any]) -> None:
        if failures[0] < 1100:
            failures[0] += 1
            raise OSError("endpoint down")

    d = make(flaky, delay=0.001, on_error=lambda exc, batch: None,
             retry=RetryPolicy(max_attempts=10**6, backoff=0.001, multiplier=2.0, max_backoff=60))
    assert d.enqueue("event")
    assert d.flush(timeout=60)  # a flush ends every backoff early: 1,101 attempts at once
    stats = d.stats()
    assert (stats.dispatched, stats.failed, stats.dropped, stats.worker_alive) == (1, 0, 0, True)
    assert stats.batches == 1101
    assert d.enqueue("later")
    assert d.flush(timeout=10)


# -- 8. the engine's side of Retry-After -----------------------------------------------------


def test_retry_after_becomes_the_keys_backoff_capped_and_frees_the_worker(make_keyed: Any) -> None:
    rec = KeyedRecorder()
    waits: List[float] = []

    def deliver(key: Any, batch: List[Any]) -> None:
        if key == "slow":
            raise DeliveryError("503", status=503, retry_after=999999.0)
        if key == "soon":
            raise DeliveryError("429", status=429, retry_after=0.25)
        rec(key, batch)

    d = make_keyed(deliver, delay=0.001, max_concurrent_batches=1, on_error=lambda exc, batch: None,
                   retry=RetryPolicy(max_attempts=3, backoff=0.001, max_backoff=30.0))
    scheduled = threading.Semaphore(0)
    d.on("batch_retry_scheduled", lambda e: (waits.append(e.delay), scheduled.release()))
    d.enqueue("slow", 1)
    assert scheduled.acquire(timeout=10)
    d.enqueue("soon", 2)
    assert scheduled.acquire(timeout=10)
    assert waits == [30.0, 0.25]  # the receiver's wait, capped by max_backoff, not the policy's 0.001
    # One worker, and it is free: a healthy key is delivered while "slow" waits its 30 s.
    d.enqueue("good", 3)
    assert d.flush(10, key="good")
    assert rec.items("good") == [3]


# -- 14, 17: arguments checked like the constructors' --------------------------------------


def test_shutdown_with_a_bad_timeout_raises_before_closing(make: Any) -> None:
    recorder = Recorder()
    d = make(recorder, delay=0.001)
    with pytest.raises(TypeError, match="timeout must be a number"):
        d.shutdown("x")
    assert d.enqueue(1)  # still open
    assert d.flush(timeout=10)
    assert recorder.items == [1]


@pytest.mark.parametrize(
    ("value", "error"), [(math.nan, ValueError), (-1, ValueError), (math.inf, ValueError),
                         (10**400, ValueError), ("5", TypeError), (True, TypeError)],
)
def test_flush_and_shutdown_check_their_timeout(make: Any, make_keyed: Any, value: Any, error: Any) -> None:
    d = make(Recorder(), delay=0.001)
    k = make_keyed(KeyedRecorder(), delay=0.001)
    for call in (d.flush, d.shutdown, k.flush, k.shutdown):
        with pytest.raises(error, match="timeout"):
            call(value)
    assert d.enqueue(1)
    assert k.enqueue("k", 1)


def test_huge_numbers_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="delay"):
        BackgroundDispatcher(print, delay=10**400)
    with pytest.raises(ValueError, match="block_timeout"):
        BackgroundDispatcher(print, block_timeout=10**400)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=10**400)
    with pytest.raises(ValueError, match="max_backoff must be a positive"):
        RetryPolicy(max_backoff=0)


@pytest.mark.parametrize("option", ["flush_on_exit", "spill_exhausted"])
def test_flags_must_be_bools(option: str) -> None:
    with pytest.raises(TypeError, match=f"{option} must be a bool"):
        BackgroundDispatcher(print, **{option: "no"})
    with pytest.raises(TypeError, match="jitter must be a bool"):
        RetryPolicy(jitter="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("priority", [0.0, False])
def test_a_priority_that_is_not_an_int_is_refused_for_every_key(make_keyed: Any, priority: Any) -> None:
    d = make_keyed(KeyedRecorder(), delay=60.0)
    with pytest.raises(TypeError, match="priority must be an int"):
        d.enqueue("new", 1, priority=priority)
    assert d.enqueue("old", 1)
    with pytest.raises(TypeError, match="priority must be an int"):
        d.enqueue("old", 2, priority=priority)  # the key has a lane now: it was accepted
    assert d.pending() == 1


@pytest.mark.parametrize(
    "clock", [lambda: "soon", lambda: math.nan, lambda: 1 / 0], ids=["str", "nan", "raises"]
)
def test_a_broken_clock_does_not_kill_the_worker(make: Any, make_keyed: Any, clock: Any, caplog: Any) -> None:
    recorder, keyed = Recorder(), KeyedRecorder()
    d = make(recorder, delay=0.001, clock=clock)
    k = make_keyed(keyed, delay=0.001, clock=clock)
    for n in range(5):
        assert d.enqueue(n)
        assert k.enqueue("k", n)
    assert d.flush(timeout=10)
    assert k.flush(timeout=10)
    assert recorder.items == keyed.items("k") == list(range(5))
    assert d.stats().worker_alive
    assert k.stats().worker_alive
    assert "the clock" in caplog.text


# -- 16: enqueue never says True for an item it dropped ----------------------------------------


def test_an_overflow_spill_that_fails_returns_false(make: Any, tmp_path: Any) -> None:
    spool = SqliteSpool(str(tmp_path / "spool.db"))
    gate, started = threading.Event(), threading.Event()

    def held(batch: List[Any]) -> None:
        started.set()
        gate.wait(10)

    try:
        d = make(held, delay=0.001, max_queue_size=1, overflow="spill", spool=spool)
        assert d.enqueue("in dispatch")
        assert started.wait(10)
        assert d.enqueue("queued")
        assert d.enqueue("spilled")  # the queue is full: into the spool
        assert not d.enqueue(datetime.datetime.now())  # cannot be spilled: dropped, and said so
        gate.set()
        assert d.flush(timeout=10)
        stats = d.stats()
        assert stats.dropped_by_reason == {"queue_full": 1}
        assert stats.spool_faults.get("encode") == 1
        assert stats.enqueued == stats.dispatched == 3
    finally:
        gate.set()
        spool.close()


# -- 3: an interrupt at exit ----------------------------------------------------------------

INTERRUPTED_EXIT = """
import atexit, faulthandler, os, signal, sys, threading, time
faulthandler.dump_traceback_later(30, exit=True)  # a hang shows where
from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool

mode, path = sys.argv[1], sys.argv[2]
spool = SqliteSpool(path) if path != "-" else None
stuck, entered = threading.Event(), threading.Event()

def dispatch(batch):
    entered.set()
    stuck.wait()  # a hung endpoint: only the exit deadline would end the wait

# Ten items go out as a batch and hang; the ninety behind them wait.
d = BackgroundDispatcher(dispatch, delay=60, max_batch_size=10, exit_timeout=60, spool=spool)
for n in range(100):
    d.enqueue(n)
entered.wait()

exiting = threading.Event()

def interrupt():
    exiting.wait()
    # The hook waits on the dispatcher's condition once it has closed it: then interrupt it.
    while not d._watchers:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT if mode == "sigint" else signal.SIGTERM)

threading.Thread(target=interrupt, daemon=True).start()
if mode == "sigterm":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
atexit.register(exiting.set)  # registered after batchdispatch's hook: runs before it
print("started", flush=True)
"""


@pytest.mark.parametrize("mode", ["sigint", "sigterm"])
def test_an_interrupt_at_exit_spills_what_is_queued(tmp_path: Any, mode: str) -> None:
    path = str(tmp_path / "spool.db")
    started = time.monotonic()
    result = run_script(tmp_path, INTERRUPTED_EXIT, mode, path, timeout=50)
    elapsed = time.monotonic() - started
    assert "started" in result.stdout, result.stderr
    assert elapsed < 40  # exit_timeout is 60: the interrupt ended the wait
    assert "exit flush was interrupted" in result.stderr, result.stderr  # no logging configured: on stderr
    spool = SqliteSpool(path)
    try:
        rows = spool.claim(1000)
    finally:
        spool.close()
    # Every item: the 90 queued and the 10 stuck in dispatch (which may arrive too).
    assert sorted(item for _, _, item in rows) == list(range(100))


def test_an_interrupt_at_exit_without_a_spool_counts_and_reports_the_items(tmp_path: Any) -> None:
    result = run_script(tmp_path, INTERRUPTED_EXIT, "sigint", "-", timeout=50)
    assert "started" in result.stdout, result.stderr
    assert "exit flush was interrupted" in result.stderr, result.stderr
    assert "90 items discarded at exit (interrupted)" in result.stderr


INTERRUPTED_HANDOVER = """
import json, sys
from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool

calls = []

def dumps(item):  # the spool's encoder: called for each item the hook hands to the spool
    calls.append(item)
    if len(calls) == 1:
        raise KeyboardInterrupt  # Ctrl-C, landing as the hook hands the queue to the spool
    return json.dumps(item)

spool = SqliteSpool(sys.argv[1], dumps=dumps, loads=json.loads)
d = BackgroundDispatcher(lambda batch: None, delay=60, spool=spool, flush_on_exit=False)
for n in range(100):
    d.enqueue(n)
assert not calls  # nothing was written before exit
print("started", flush=True)
"""


def test_an_interrupt_as_the_exit_hook_hands_the_queue_over_loses_nothing(tmp_path: Any) -> None:
    path = str(tmp_path / "spool.db")
    result = run_script(tmp_path, INTERRUPTED_HANDOVER, path)
    assert "started" in result.stdout, result.stderr
    assert "exit flush was interrupted" in result.stderr, result.stderr
    spool = SqliteSpool(path)
    try:
        rows = spool.claim(1000)
    finally:
        spool.close()
    # The items stay queued until they are handed over: the hook's second try spills them.
    assert sorted(item for _, _, item in rows) == list(range(100))


# -- 9: deadlines at exit and shutdown ------------------------------------------------------

LATE_RECORDS = """
import atexit, json, sys, time

seen = []

def late():
    for n in range(3):
        d.enqueue(n)

# Registered before batchdispatch's hook, so they run after it, in this order.
atexit.register(lambda: print(json.dumps({"deadline_known": seen}), flush=True))
atexit.register(late)
from batchdispatch import BackgroundDispatcher, current_deadline

def slow(batch):
    seen.append(current_deadline() is not None)
    time.sleep(2)  # an endpoint that takes its time, whatever the deadline says

d = BackgroundDispatcher(slow, delay=0.001, exit_timeout=1)
d.enqueue("first")
print(json.dumps({"ok": d.flush(timeout=10)}), flush=True)
"""


def test_items_enqueued_after_the_exit_hook_wait_no_longer_than_its_budget() -> None:
    # Before: each of the three late items was delivered on the exiting thread, one by one,
    # each taking its full time (with an HTTP sink, each with urllib3's retries).
    started = time.monotonic()
    result = run_python(LATE_RECORDS, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # The first late item starts within the budget (2 s); the two after it come past it.
    assert elapsed < 5.5, (elapsed, result.stderr)
    assert "items dropped so far (exit: 1)" in result.stderr  # reported, at most once in 10 s
    first, last = (json.loads(line) for line in result.stdout.splitlines())
    assert first == {"ok": True}
    assert last == {"deadline_known": [False, True]}  # the late call knew the exit deadline


SLOW_LISTENER = """
import time
from batchdispatch import BackgroundDispatcher

d = BackgroundDispatcher(lambda batch: None, delay=60, flush_on_exit=False, exit_timeout=1)
d.on("items_dropped", lambda event: time.sleep(20))
for n in range(10):
    d.enqueue(n)
print("started", flush=True)
"""


def test_a_slow_listener_does_not_hold_exit_past_its_timeout() -> None:
    started = time.monotonic()
    result = run_python(SLOW_LISTENER, timeout=60)
    assert "started" in result.stdout, result.stderr
    assert time.monotonic() - started < 12  # the listener sleeps 20 s
    assert "10 items discarded at exit" in result.stderr


def test_a_slow_listener_does_not_hold_shutdown_past_its_timeout(make: Any) -> None:
    release = threading.Event()
    d = make(Recorder(), delay=0.001)
    d.on("shutdown", lambda event: release.wait(30))
    d.enqueue(1)
    started = time.monotonic()
    assert d.shutdown(timeout=1)
    assert time.monotonic() - started < 10  # the listener waits 30 s
    release.set()


def test_dispatch_learns_the_shutdown_deadline(make: Any) -> None:
    seen: List[Any] = []
    d = make(lambda batch: seen.append(current_deadline()), delay=60)
    d.enqueue("waits for its delay")
    before = time.monotonic()
    assert d.shutdown(timeout=30)  # takes the batch now, under that deadline
    assert len(seen) == 1
    assert seen[0] is not None
    assert before + 29 < seen[0] <= time.monotonic() + 30
    assert current_deadline() is None  # outside dispatch


def test_spool_writes_at_shutdown_fit_its_timeout(make: Any, tmp_path: Any) -> None:
    import sqlite3

    path = str(tmp_path / "spool.db")
    spool = SqliteSpool(path, timeout=30.0)
    spool.count()  # the file exists
    other = sqlite3.connect(path, isolation_level=None)
    try:
        d = make(lambda batch: (_ for _ in ()).throw(OSError("down")), delay=60,
                 on_error=lambda exc, batch: None, retry=RetryPolicy(max_attempts=3, backoff=60),
                 spool=spool)
        for n in range(5):
            d.enqueue(n)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the file
        started = time.monotonic()
        # Closing, the failed batch goes to the spool: a write that waits for the lock.
        d.shutdown(timeout=1)
        assert time.monotonic() - started < 5  # the spool's own timeout is 30 s
    finally:
        other.close()
        spool.close()
    assert os.path.exists(path)


# -- found by a review of the fixes above ----------------------------------------------------


class _LazyError(Exception):
    """An error whose attributes are properties that raise, as a lazily parsed header might."""

    @property
    def retry_after(self) -> float:
        return float("Wed, 21 Oct 2015 07:28:00 GMT")

    @property
    def retryable(self) -> bool:
        raise KeyError("no status")


def test_an_error_whose_attributes_raise_does_not_kill_the_worker(make: Any) -> None:
    attempts = [0]

    def send(batch: List[Any]) -> None:
        attempts[0] += 1
        raise _LazyError("down")

    d = make(send, delay=0.001, on_error=lambda exc, batch: None,
             retry=RetryPolicy(max_attempts=3, backoff=0.001))
    assert d.enqueue(1)
    assert d.flush(timeout=10)
    stats = d.stats()
    assert (attempts[0], stats.failed, stats.dropped, stats.worker_alive) == (3, 1, 0, True)
    assert d.enqueue(2)


class _Seconds(float):
    """A float subclass, as numpy.float64 is."""


def test_a_clock_returning_a_float_subclass_is_a_good_clock(make: Any, caplog: Any) -> None:
    now = [_Seconds(1000.0)]
    recorder = Recorder()
    d = make(recorder, delay=5.0, clock=lambda: now[0])
    d.enqueue(1)
    assert d.stats().pending == 1
    assert d.flush(timeout=10)
    assert recorder.items == [1]
    assert "the clock" not in caplog.text


def test_a_timed_out_shutdown_does_not_cut_later_spool_writes_short(make: Any, path: str) -> None:
    import sqlite3

    spool = SqliteSpool(path, timeout=30.0)
    spool.count()
    entered, gate = threading.Event(), threading.Event()

    def send(batch: List[Any]) -> None:
        entered.set()
        gate.wait(30)
        raise OSError("endpoint down")

    other = sqlite3.connect(path, isolation_level=None)
    try:
        d = make(send, delay=0.001, on_error=lambda exc, batch: None, spool=spool)
        d.enqueue(1)
        assert entered.wait(10)
        other.execute("BEGIN EXCLUSIVE")
        assert d.shutdown(timeout=0.2) is False  # the batch is stuck in dispatch
        gate.set()  # it fails while closing: the worker spills it, and waits for the file's lock
        deadline = time.monotonic() + 30
        while not held_by_another_thread(spool) and not d.stats().spool_faults:
            assert time.monotonic() < deadline
            time.sleep(0.005)  # polls a state, with a deadline
        other.execute("COMMIT")
        assert d.shutdown(timeout=30)
        stats = d.stats()
        # It waited the spool's own timeout, as it did before shutdown gave up (it failed at once).
        assert (dict(stats.spool_faults), stats.spilled, stats.failed) == ({}, 1, 0)
    finally:
        gate.set()
        other.close()
        spool.close()


INTERRUPTED_SPOOL_WRITE = """
import json, sys, threading
from batchdispatch import KeyedDispatcher, _process
from batchdispatch.spool import SqliteSpool

fired = []

def dumps(item):
    if item == "bad":
        raise TypeError("cannot encode")
    if item == "ki" and not fired:
        fired.append(1)
        raise KeyboardInterrupt  # Ctrl-C arriving during this write
    return json.dumps(item)

spool = SqliteSpool(sys.argv[1], dumps=dumps, loads=json.loads)
hang, entered = threading.Event(), threading.Event()
d = KeyedDispatcher(lambda key, batch: (entered.set(), hang.wait()), delay=3600,
                    max_concurrent_batches=1, spool=spool, exit_timeout=0.3)
d.enqueue("h", "hung")
d.flush(0, key="h")
entered.wait(10)
d.enqueue("a", "bad")
d.enqueue("a", "ok1")
d.enqueue("b", "ki")
_process.exit_hook()  # as atexit would, now
s = d.stats()
rows = spool.count()
hang.set()  # the hung batch comes back: with no spool write left counted as running, a flush is done
print(json.dumps({"enqueued": s.enqueued, "spilled": s.spilled, "dropped": dict(s.dropped_by_reason),
                  "rows": rows, "flushed": d.flush(timeout=10)}))
"""


def test_an_interrupted_spool_write_at_exit_still_counts_every_item(tmp_path: Any) -> None:
    result = run_script(tmp_path, INTERRUPTED_SPOOL_WRITE, str(tmp_path / "spool.db"))
    report = json.loads(result.stdout.splitlines()[-1])
    # "hung", "ok1" and "ki" are in the file; "bad" cannot be, and is an "exit" drop.
    expected = {"enqueued": 4, "spilled": 3, "dropped": {"exit": 1}, "rows": 3, "flushed": True}
    assert report == expected, result.stderr


LATE_SPILL_ON_A_LOCKED_SPOOL = """
import atexit, json, sqlite3, sys, time

path = sys.argv[1]

def late():  # registered before batchdispatch's hook: runs after it, past its budget of 0 s
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another connection holds the file
    started = time.monotonic()
    accepted = d.enqueue("late")
    took = time.monotonic() - started
    other.execute("COMMIT")
    print(json.dumps({"accepted": accepted, "took": took, "dropped": dict(d.stats().dropped_by_reason)}))

atexit.register(late)
from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool

spool = SqliteSpool(path, timeout=20)
spool.count()
d = BackgroundDispatcher(lambda batch: None, delay=60, spool=spool, exit_timeout=0)
"""


def test_a_late_item_past_the_exit_budget_does_not_wait_for_the_spool(tmp_path: Any) -> None:
    result = run_script(tmp_path, LATE_SPILL_ON_A_LOCKED_SPOOL, str(tmp_path / "spool.db"))
    report = json.loads(result.stdout.splitlines()[-1])
    # It waited 20 s (the spool's timeout) for the lock, and then said True for a lost item.
    assert report["took"] < 5, report
    assert (report["accepted"], report["dropped"]) == (False, {"exit": 1}), result.stderr
