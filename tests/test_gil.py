"""Free-threaded readiness: without a GIL to rely on, every enqueue takes the lock.

``BATCHDISPATCH_FREE_THREADED=1`` forces that path on a build with a GIL,
which is how it is tested here (free-threaded CPython is not installed on
the test machines). The tests tell the two paths apart by behaviour: with
the dispatcher's lock held by another thread, a lock-free append returns,
and a locked one waits for the lock.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Callable, Iterator, List

import pytest

from batchdispatch import _gil
from batchdispatch._deadlines import monotonic

from .conftest import KeyedRecorder, Recorder, worker_wait_timeout


def test_the_variable_forces_the_locked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_gil.FREE_THREADED_ENV, raising=False)
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)
    assert not _gil.appends_need_lock()
    for value in ("1", "true", " YES ", "on"):
        monkeypatch.setenv(_gil.FREE_THREADED_ENV, value)
        assert _gil.appends_need_lock(), value
    for value in ("0", "", "no", "maybe"):
        monkeypatch.setenv(_gil.FREE_THREADED_ENV, value)
        assert not _gil.appends_need_lock(), value


def test_a_build_without_the_gil_takes_the_locked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_gil.FREE_THREADED_ENV, raising=False)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert _gil.appends_need_lock()
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert not _gil.appends_need_lock()


class HoldingClock:
    """A ``clock=`` callable that can hold the dispatcher's lock from outside.

    The engine reads its clock with its lock held (``stats()`` does, to age
    what is pending): a read on the thread given to :meth:`held_by` waits
    there, with the lock held, until that block ends.
    """

    def __init__(self) -> None:
        self.holder: Any = None
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> float:
        if threading.current_thread() is self.holder and not self.holding.is_set():
            self.holding.set()
            assert self.release.wait(30)
        return monotonic()

    @contextlib.contextmanager
    def held_by(self, dispatcher: Any) -> Iterator[None]:
        """The dispatcher's lock held, by a thread inside stats(), for the block."""
        self.holder = threading.Thread(target=dispatcher.stats, name="holder")
        self.holder.start()
        try:
            assert self.holding.wait(10), "stats() did not read the clock"
            yield
        finally:
            self.release.set()
            self.holder.join(10)


def _enqueue_while_the_lock_is_held(
    dispatcher: Any, clock: HoldingClock, enqueue: Callable[[], bool]
) -> bool:
    """Run *enqueue* on another thread while the dispatcher's lock is held;
    return whether it had to wait for the lock. The item is accepted either way."""
    result: List[bool] = []
    producer = threading.Thread(target=lambda: result.append(enqueue()), name="producer")
    with clock.held_by(dispatcher):
        producer.start()
        deadline = monotonic() + 10
        waited = False
        while producer.is_alive() and monotonic() < deadline:
            frame = sys._current_frames().get(producer.ident or 0)
            names = set()
            while frame is not None:
                names.add(frame.f_code.co_name)
                frame = frame.f_back
            if "_admit" in names:  # the locked path, blocked on the lock the holder holds
                waited = True
                break
            producer.join(0.01)
        assert waited or not producer.is_alive(), "the producer neither returned nor waited for the lock"
    producer.join(10)
    assert result == [True]
    return waited


@pytest.mark.parametrize("forced", [False, True])
def test_background_enqueue_takes_the_lock_only_without_a_gil(
    monkeypatch: pytest.MonkeyPatch, make: Any, forced: bool
) -> None:
    monkeypatch.setenv(_gil.FREE_THREADED_ENV, "1" if forced else "0")
    recorder, clock = Recorder(), HoldingClock()
    d = make(recorder, delay=3600.0, max_batch_size=1000, clock=clock)
    d.enqueue(0)
    worker_wait_timeout(d)  # the worker waits for the delay: the next append wakes no one
    assert _enqueue_while_the_lock_is_held(d, clock, lambda: d.enqueue(1)) is forced
    assert d.flush(timeout=10)
    assert recorder.items == [0, 1]


@pytest.mark.parametrize("forced", [False, True])
def test_keyed_enqueue_takes_the_lock_only_without_a_gil(
    monkeypatch: pytest.MonkeyPatch, make_keyed: Any, forced: bool
) -> None:
    monkeypatch.setenv(_gil.FREE_THREADED_ENV, "1" if forced else "0")
    recorder, clock = KeyedRecorder(), HoldingClock()
    d = make_keyed(recorder, delay=3600.0, max_batch_size=1000, max_concurrent_batches=1, clock=clock)
    d.enqueue("k", 0)
    worker_wait_timeout(d)  # the lane has its deadline and room: the next append reports nothing
    assert _enqueue_while_the_lock_is_held(d, clock, lambda: d.enqueue("k", 1)) is forced
    assert d.flush(timeout=10)
    assert recorder.items("k") == [0, 1]
