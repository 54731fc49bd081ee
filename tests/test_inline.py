"""Delivery on the callers' threads, for processes without threads (uWSGI).

``BATCHDISPATCH_INLINE=1`` forces the mode uWSGI without ``--enable-threads``
gets automatically, so these tests need no uWSGI; the detection itself runs
against a stand-in ``uwsgi`` module in a subprocess. The real server is in
``tests/with_server/test_uwsgi.py``.
"""

from __future__ import annotations

import threading
from typing import Any, List, Tuple

import pytest

from batchdispatch import RetryPolicy, _threadless

from .conftest import FakeClock, run_python, worker_threads


class Calls:
    """A dispatch callable that notes each batch with the thread it ran on."""

    def __init__(self, fail: int = 0) -> None:
        self.batches: List[Tuple[Any, List[Any], threading.Thread]] = []
        self.fail = fail  # the first *fail* calls raise

    def __call__(self, batch: List[Any]) -> None:
        self.deliver(None, batch)

    def deliver(self, key: Any, batch: List[Any]) -> None:
        self.batches.append((key, list(batch), threading.current_thread()))
        if len(self.batches) <= self.fail:
            raise ConnectionError(f"attempt {len(self.batches)} failed")

    def lists(self) -> List[List[Any]]:
        return [batch for _, batch, _ in self.batches]

    def keyed(self) -> List[Tuple[Any, List[Any]]]:
        return [(key, batch) for key, batch, _ in self.batches]

    def threads(self) -> List[threading.Thread]:
        return [thread for _, _, thread in self.batches]


class NoThreads(threading.Thread):
    """Stands in for threading.Thread inside the engine: starting one fails the test."""

    def start(self) -> None:
        raise AssertionError(f"a thread was started: {self.name}")


@pytest.fixture(autouse=True)
def inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch on, and any thread start inside the engine a failure."""
    monkeypatch.setenv(_threadless.INLINE_ENV, "1")
    monkeypatch.setattr(threading, "Thread", NoThreads)


# -- BackgroundDispatcher ---------------------------------------------------------


def test_a_full_batch_is_delivered_by_the_enqueue_that_fills_it(make) -> None:
    calls = Calls()
    d = make(calls, delay=60, max_batch_size=3)
    assert d.enqueue(1)
    assert d.enqueue(2)
    assert calls.lists() == []  # not due: held, like a worker would
    assert d.enqueue(3)
    assert calls.lists() == [[1, 2, 3]]  # delivered before enqueue returned
    assert calls.threads() == [threading.current_thread()]
    stats = d.stats()
    assert (stats.enqueued, stats.dispatched, stats.pending, stats.worker_alive) == (3, 3, 0, False)
    assert worker_threads(d) == []


def test_a_batch_past_its_delay_goes_with_the_next_enqueue(make, clock: FakeClock) -> None:
    calls = Calls()
    d = make(calls, delay=5.0, clock=clock)
    d.enqueue("a")
    clock.advance(4.9)
    d.enqueue("b")
    assert calls.lists() == []
    clock.advance(0.2)
    d.enqueue("c")  # a has waited 5.1 s: the batch is due, c goes with it
    assert calls.lists() == [["a", "b", "c"]]
    # The next batch counts its delay from the first item after this one.
    clock.advance(1.0)
    d.enqueue("d")
    clock.advance(4.9)
    d.enqueue("e")
    assert calls.lists() == [["a", "b", "c"]]
    clock.advance(0.2)
    d.enqueue("f")
    assert calls.lists() == [["a", "b", "c"], ["d", "e", "f"]]
    assert set(calls.threads()) == {threading.current_thread()}


def test_flush_and_shutdown_deliver_on_the_calling_thread(make, clock: FakeClock) -> None:
    calls = Calls()
    d = make(calls, delay=60, clock=clock)
    d.enqueue(1)
    d.enqueue(2)
    assert d.flush(timeout=5)
    assert calls.lists() == [[1, 2]]
    assert d.flush(timeout=5)  # nothing pending: no empty batch
    d.enqueue(3)
    assert d.shutdown(timeout=5)
    assert calls.lists() == [[1, 2], [3]]
    assert set(calls.threads()) == {threading.current_thread()}
    assert not d.enqueue(4)  # shut down: refused and counted, as with a worker
    assert d.stats().dropped_by_reason == {"closed": 1}
    assert d.shutdown(timeout=5)  # idempotent


def test_a_failing_dispatch_calls_on_error_on_the_callers_thread(make) -> None:
    calls, errors = Calls(fail=1), []
    d = make(calls, delay=60, max_batch_size=2, on_error=lambda exc, batch: errors.append((exc, batch)))
    d.enqueue(1)
    assert d.enqueue(2)  # the failure is not the caller's: enqueue returns True
    assert [(str(exc), batch) for exc, batch in errors] == [("attempt 1 failed", [1, 2])]
    d.enqueue(3)
    d.enqueue(4)
    stats = d.stats()
    assert (stats.dispatched, stats.failed) == (2, 2)
    assert calls.lists() == [[1, 2], [3, 4]]


def test_a_retry_waits_for_the_first_call_after_its_backoff(make, clock: FakeClock) -> None:
    calls = Calls(fail=1)
    policy = RetryPolicy(max_attempts=3, backoff=2.0, jitter=False)
    d = make(calls, delay=60, max_batch_size=2, retry=policy, clock=clock)
    d.enqueue(1)
    d.enqueue(2)  # first attempt, fails
    clock.advance(1.9)
    d.enqueue(3)  # the backoff still runs: no attempt, and no sleep
    assert calls.lists() == [[1, 2]]
    clock.advance(0.2)
    d.enqueue(4)  # past the backoff: the retry goes, then the next full batch
    assert calls.lists() == [[1, 2], [1, 2], [3, 4]]
    assert d.stats().retried == 2


def test_flush_does_not_wait_out_a_backoff(make, clock: FakeClock) -> None:
    calls = Calls(fail=1)
    d = make(calls, delay=60, retry=RetryPolicy(max_attempts=2, backoff=3600, jitter=False), clock=clock)
    d.enqueue(1)
    assert d.flush(timeout=5)  # fails, then retried at once for the flush
    assert calls.lists() == [[1], [1]]
    assert d.stats().dispatched == 1


def test_block_does_not_wait_when_callers_deliver(make, clock: FakeClock) -> None:
    """A retry in backoff holds the queue full: "block" drops at once rather
    than wait for a worker that does not exist."""
    calls = Calls(fail=1)
    d = make(calls, delay=60, max_batch_size=2, max_queue_size=2, overflow="block",
             retry=RetryPolicy(max_attempts=2, backoff=3600, jitter=False), clock=clock)
    d.enqueue(1)
    d.enqueue(2)  # out, failed, waiting an hour to retry
    d.enqueue(3)
    d.enqueue(4)
    assert not d.enqueue(5)  # would block for ever
    assert d.stats().dropped_by_reason == {"queue_full": 1}


def test_an_enqueue_from_inside_dispatch_is_delivered_by_the_same_pass(make) -> None:
    calls = Calls()

    def dispatch(batch: List[Any]) -> None:
        calls(batch)
        if batch == ["first"]:
            assert d.enqueue("from dispatch")  # no nested delivery inside dispatch
            assert not d.flush(timeout=5)  # cannot wait for itself

    d = make(dispatch, delay=60, max_batch_size=1)
    d.enqueue("first")
    assert calls.lists() == [["first"], ["from dispatch"]]


def test_listeners_run_on_the_callers_thread(make) -> None:
    seen: List[Tuple[str, threading.Thread]] = []
    d = make(Calls(), delay=60, max_batch_size=1)
    d.on("batch_succeeded", lambda event: seen.append(("succeeded", threading.current_thread())))
    d.enqueue(1)
    assert seen == [("succeeded", threading.current_thread())]


# -- KeyedDispatcher --------------------------------------------------------------


def test_keyed_batches_go_per_key_when_due(make_keyed, clock: FakeClock) -> None:
    calls = Calls()
    d = make_keyed(calls.deliver, delay=5.0, max_batch_size=2, clock=clock)
    d.enqueue("a", 1)
    d.enqueue("b", 1)
    d.enqueue("a", 2)  # a is full
    assert calls.keyed() == [("a", [1, 2])]
    clock.advance(5.1)
    d.enqueue("c", 1)  # b is past its delay; c is not
    assert calls.keyed() == [("a", [1, 2]), ("b", [1])]
    d.enqueue("c", 2, priority=10)  # full, higher priority first
    assert calls.keyed()[-1] == ("c", [2, 1])
    d.enqueue("d", 1)
    d.enqueue("e", 1)
    assert d.flush(key="d", timeout=5)  # that key only
    assert calls.keyed()[-1] == ("d", [1])
    assert d.pending() == 1
    assert d.shutdown(timeout=5)
    assert calls.keyed()[-1] == ("e", [1])
    assert set(calls.threads()) == {threading.current_thread()}
    assert worker_threads(d) == []


def test_keyed_failure_retries_only_its_key(make_keyed, clock: FakeClock) -> None:
    calls, errors = Calls(fail=1), []
    d = make_keyed(calls.deliver, delay=60, max_batch_size=1, clock=clock,
                   retry=RetryPolicy(max_attempts=2, backoff=1.0, jitter=False),
                   on_error=lambda exc, batch: errors.append(batch))
    d.enqueue("a", 1)  # fails: a waits a second
    d.enqueue("b", 1)  # b goes on
    assert calls.keyed() == [("a", [1]), ("b", [1])]
    assert errors == [[1]]
    clock.advance(1.1)
    d.enqueue("b", 2)  # b's full batch, and a's retry past its backoff
    assert sorted(calls.keyed()[2:]) == [("a", [1]), ("b", [2])]
    assert d.stats().dispatched == 3


def test_keyed_bounded_queue_takes_the_lock_for_every_item(make_keyed, clock: FakeClock) -> None:
    calls = Calls()
    d = make_keyed(calls.deliver, delay=60, max_batch_size=3, max_queue_size=10, clock=clock)
    for n in range(9):
        assert d.enqueue(n % 3, n)
    assert sorted(calls.keyed()) == [(0, [0, 3, 6]), (1, [1, 4, 7]), (2, [2, 5, 8])]
    # An enqueue that takes the lock delivers what is due on its way out;
    # one that appended without it (a lane with room) would return at once.
    assert d.enqueue("a", "a0")
    assert d.enqueue("b", "b0")
    clock.advance(61)
    assert d.enqueue("b", "b1")  # neither fills b nor starts it: only the lock delivers a0 now
    assert sorted(calls.keyed()[3:]) == [("a", ["a0"]), ("b", ["b0", "b1"])]


# -- at exit, and the switch ----------------------------------------------------------


def test_the_exit_hook_delivers_on_the_main_thread() -> None:
    result = run_python(
        """
        import sys, threading
        from batchdispatch import BackgroundDispatcher, KeyedDispatcher

        def where():
            return threading.current_thread().name

        d = BackgroundDispatcher(lambda b: print("plain", b, where()), delay=3600)
        k = KeyedDispatcher(lambda key, b: print("keyed", key, b, where()), delay=3600)
        d.enqueue(1)
        d.enqueue(2)
        k.enqueue("x", 1)
        k.enqueue("y", 2)
        print("threads", threading.active_count())
        """,
        env={_threadless.INLINE_ENV: "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # chosen explicitly: no warning
    lines = result.stdout.splitlines()
    assert lines[0] == "threads 1"
    assert sorted(lines[1:]) == [
        "keyed x [1] MainThread", "keyed y [2] MainThread", "plain [1, 2] MainThread",
    ]


FAKE_UWSGI = """
import sys, threading, types, warnings
fake = types.ModuleType("uwsgi")
fake.__dict__.update({attrs})
sys.modules["uwsgi"] = fake
from batchdispatch import BackgroundDispatcher, KeyedDispatcher

def where(*args):  # one write per line: two workers may print at once
    sys.stdout.write(f"{{threading.current_thread().name}} {{args[-1][0]}}\\n")

a = BackgroundDispatcher(where, delay=3600, max_batch_size=1)
b = KeyedDispatcher(where, delay=3600, max_batch_size=1)
a.enqueue(1)
b.enqueue("k", 2)
a.shutdown()
b.shutdown()
"""


@pytest.mark.parametrize(
    ("attrs", "env", "thread", "warned"),
    [
        ("has_threads=0, opt={}", {}, "MainThread", True),
        ("has_threads=1, opt={}", {}, "batchdispatch", False),
        ("has_threads=0, opt={}", {_threadless.INLINE_ENV: "0"}, "batchdispatch", False),
        ("has_threads=0, opt={}", {_threadless.INLINE_ENV: "yes"}, "MainThread", False),
        ("opt={'master': True}", {}, "MainThread", True),  # no has_threads: read the options
        ("opt={'enable-threads': True}", {}, "batchdispatch", False),
        ("opt={'threads': b'4'}", {}, "batchdispatch", False),
        ("version=b'?'", {}, "batchdispatch", False),  # not uWSGI's module
    ],
)
def test_uwsgi_without_threads_is_detected_and_warned_once(
    attrs: str, env: Any, thread: str, warned: bool
) -> None:
    result = run_python(FAKE_UWSGI.format(attrs=attrs), env={_threadless.INLINE_ENV: "", **env})
    assert result.returncode == 0, result.stderr
    threads = sorted(line.split()[0].split(":")[0] for line in result.stdout.splitlines())
    assert threads == [thread, thread]
    warnings = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == (1 if warned else 0), result.stderr
    if warned:
        assert "--enable-threads" in warnings[0]
        assert "--lazy-apps" in warnings[0]
        assert "<string>:" in warnings[0]  # points at the caller's enqueue


def test_a_warnings_filter_that_raises_cannot_make_enqueue_raise() -> None:
    result = run_python(
        FAKE_UWSGI.format(attrs="has_threads=0").replace(
            "from batchdispatch", "import logging; logging.basicConfig(); warnings.simplefilter('error')\n"
            "from batchdispatch", 1,
        ),
        env={_threadless.INLINE_ENV: ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["MainThread", "1", "MainThread", "2"]
    assert result.stderr.count("WARNING:batchdispatch:batchdispatch: uWSGI runs this process") == 1
