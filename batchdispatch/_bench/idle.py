"""Whether an idle BackgroundDispatcher wakes up: its worker's waits over a quiet time."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple

from .._dispatcher import BackgroundDispatcher
from .harness import DELAY, DRAIN_TIMEOUT, MAX_BATCH_SIZE, PAYLOAD, BenchError, CountingSink


class _CountingSleep:
    """Stands in for the engine's ``_sleep`` method and counts the waits."""

    def __init__(self, real: Callable[[Any, Optional[float]], None]) -> None:
        self._real = real
        #: The timeout of every wait, in call order (None: no timeout).
        self.timeouts: List[Optional[float]] = []
        #: Waits that have returned: each one is a wake-up of the worker.
        self.returns = 0

    def __call__(self, waiter: Any, timeout: Optional[float]) -> None:
        self.timeouts.append(timeout)
        try:
            self._real(waiter, timeout)
        finally:
            self.returns += 1


def measure_idle(seconds: float) -> Tuple[int, int]:
    """Count an idle dispatcher's wake-ups over *seconds*.

    :returns: (wake-ups, waits with a timeout among those in progress or
        begun during the quiet time). Both should be 0: an idle worker waits
        with no timeout until a producer needs it.
    """
    sink = CountingSink()
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=MAX_BATCH_SIZE, max_queue_size=None, name="bench-idle"
    )
    # Swapped in before the first enqueue: the worker does not exist yet and
    # looks the method up afresh at every wait.
    counter = _CountingSleep(dispatcher._workers._sleep)
    setattr(dispatcher._workers, "_sleep", counter)  # noqa: B010 - shadows the method on this instance
    try:
        dispatcher.enqueue(PAYLOAD)
        # When flush returns the worker is already inside its next wait: it
        # settles the batch and starts waiting without letting go of the lock.
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError("the idle dispatcher did not deliver its one item")
        calls, returns = len(counter.timeouts), counter.returns
        time.sleep(seconds)
        wakeups = counter.returns - returns
        timed = sum(1 for timeout in counter.timeouts[max(0, calls - 1) :] if timeout is not None)
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
    return wakeups, timed
