"""What every measurement shares: the payload, the counting sink and the producer race.

Producers are released together by a barrier and each enqueues its share of
the items; the wall time from the release to the last producer's join,
divided by the items, is the cost per enqueue. The consumer runs meanwhile
and shares the GIL, as it would in production. The :class:`CountingSink`
notes when the expected total has arrived, which ends the end-to-end time.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

#: The item every producer enqueues; built once, so building it is not timed.
PAYLOAD: Dict[str, object] = {"event": "page_view", "user": 1}

#: Producer thread counts measured.
THREAD_COUNTS = (1, 4)

#: The batching delay given to (c) and (d), in seconds.
DELAY = 0.01

#: The largest batch any consumer hands to the sink.
MAX_BATCH_SIZE = 1000

#: Seconds a consumer may take to deliver the rest once producers are done.
DRAIN_TIMEOUT = 60.0

Put = Callable[[object], object]


class BenchError(RuntimeError):
    """A design lost items or did not finish in time: its figures would lie."""


class CountingSink:
    """Counts delivered items and notes the moment the expected total arrived."""

    def __init__(self) -> None:
        self.received = 0
        self.expected = 0
        self.done_at: Optional[float] = None
        self.done = threading.Event()

    def expect(self, count: int) -> None:
        """Start counting afresh. Only call while nothing is in flight."""
        self.received = 0
        self.expected = count
        self.done_at = None
        self.done.clear()

    def __call__(self, batch: List[object]) -> None:
        self.received += len(batch)
        if self.received >= self.expected and self.done_at is None:
            self.done_at = time.perf_counter()
            self.done.set()


def join_consumer(thread: threading.Thread, label: str) -> None:
    """Wait for a design's consumer thread to drain; a BenchError if it does not in time."""
    thread.join(DRAIN_TIMEOUT)
    if thread.is_alive():
        raise BenchError(f"{label}: the consumer took more than {DRAIN_TIMEOUT:g} s to drain")


def produce_items(barrier: threading.Barrier, put: Put, count: int) -> None:
    """One producer thread: wait for the others, then hand *count* payloads to *put*."""
    barrier.wait()
    for item in itertools.repeat(PAYLOAD, count):
        put(item)


def race(threads: int, items: int, produce: Callable[[threading.Barrier, int], None]) -> Tuple[float, float]:
    """Run *threads* producers sharing *items*, released together by a barrier.

    :returns: (the moment they were released, the moment the last one finished).
    """
    released: List[float] = []
    barrier = threading.Barrier(threads, action=lambda: released.append(time.perf_counter()))
    producers = [
        threading.Thread(target=produce, args=(barrier, count), name=f"bench-producer-{k}")
        for k, count in enumerate(shares(items, threads))
    ]
    gc.collect()
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    return released[0], time.perf_counter()


def shares(total: int, parts: int) -> List[int]:
    """*total* split into *parts* shares that differ by one at most."""
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]
