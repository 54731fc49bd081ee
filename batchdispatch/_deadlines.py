"""Clocks and bounded waits: what every deadline in the engine is measured with.

``monotonic`` is the real monotonic clock, out of freezegun's reach;
:class:`SafeClock` keeps a user's ``clock=`` from killing a worker; and
:func:`acquire`, :func:`wait_slice` and :func:`join_thread` wait until a
deadline at most, in short slices on the main thread so that Ctrl-C ends
the wait. Leaf module: it imports nothing of batchdispatch.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Optional


def _real_monotonic() -> Callable[[], float]:
    """Return a monotonic clock that freezegun cannot freeze.

    freezegun replaces ``time.monotonic`` and every module attribute that is
    the real function. ``clock_gettime`` is left alone, and a
    ``functools.partial`` is not recognised by its module scan, so batching
    keeps real time inside a user's ``freeze_time()`` block.
    """
    if hasattr(time, "clock_gettime") and hasattr(time, "CLOCK_MONOTONIC"):
        return functools.partial(time.clock_gettime, time.CLOCK_MONOTONIC)
    return functools.partial(time.monotonic)  # pragma: no cover - not POSIX


#: The clock used for deadlines that must hold in real time.
monotonic: Callable[[], float] = _real_monotonic()

#: Longest single wait of the main thread in flush, shutdown and exit: a
#: signal handled by another thread does not wake a waiting one, and
#: Ctrl-C must not wait for the end of a long timeout.
MAIN_THREAD_WAIT_SLICE = 0.25


class SafeClock:
    """A user's *clock*, kept from killing the worker.

    A reading that raises, or is not a finite real number, is replaced by
    the last good one plus the real monotonic time since then (time goes
    on from where the user's clock was), and reported once through
    *report(problem)*, which must not log under the engine lock (the
    engine queues the line for the next thread that emits events).
    """

    __slots__ = ("clock", "failed", "last", "last_real", "report")

    def __init__(self, clock: Callable[[], float], report: Callable[[str], None]) -> None:
        self.clock = clock
        self.report = report
        self.failed = False
        self.last = 0.0
        self.last_real = monotonic()

    def __call__(self) -> float:
        try:
            value = self.clock()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                reading = float(value)  # numpy.float64 and other subclasses too
                if reading - reading == 0:  # finite: inf - inf and nan - nan are nan
                    self.last, self.last_real = reading, monotonic()
                    return reading
            problem = f"returned {type(value).__name__} {value!r:.40}"
        except Exception as exc:  # noqa: BLE001 - the user's clock must not kill the worker
            problem = f"raised {type(exc).__name__}: {exc}"
        if not self.failed:
            self.failed = True
            self.report(problem)
        return self.last + (monotonic() - self.last_real)


def deadline_after(timeout: Optional[float]) -> Optional[float]:
    """The ``monotonic`` time *timeout* seconds from now (None: no deadline)."""
    if timeout is None:
        return None
    return monotonic() + max(0.0, timeout)


def acquire(lock: Any, deadline: Optional[float], block: bool = True) -> bool:
    """Take *lock*: at once or not at all (not *block*), or waiting until
    *deadline* (None: for ever), in slices on the main thread (see wait_slice)."""
    if not block:
        return bool(lock.acquire(False))
    while True:
        timeout = wait_slice(deadline)
        if timeout is None:
            return bool(lock.acquire())
        if lock.acquire(True, timeout):
            return True
        if deadline is not None and monotonic() >= deadline:
            return False


def wait_slice(deadline: Optional[float]) -> Optional[float]:
    """How long one wait until *deadline* may last (None: for ever; 0: the deadline passed).

    The main thread waits at most ``MAIN_THREAD_WAIT_SLICE`` at a time: a
    signal that the kernel hands to another thread does not wake it, and
    Ctrl-C must end a flush or the exit hook's wait promptly.
    """
    main = threading.current_thread() is threading.main_thread()
    if deadline is None:
        return MAIN_THREAD_WAIT_SLICE if main else None
    timeout = min(max(0.0, deadline - monotonic()), threading.TIMEOUT_MAX)
    return min(timeout, MAIN_THREAD_WAIT_SLICE) if main else timeout


def join_thread(thread: threading.Thread, deadline: Optional[float]) -> None:
    """``thread.join`` until *deadline* (None: for ever), in slices on the main thread (see wait_slice)."""
    while thread.is_alive():
        timeout = wait_slice(deadline)
        if timeout == 0:
            return
        thread.join(timeout)
