"""The keyed buffers the enqueue section compares, and one timed run of each.

(b) per key is a dict of lists behind a lock, the floor for a keyed buffer;
(e) is :class:`~batchdispatch.KeyedDispatcher`. The same run, with a
``deliver`` that sleeps, measures parallel delivery across keys.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Dict, List, Sequence, Tuple, Type

from .._keyed import KeyedDispatcher
from .designs import LockAndList
from .harness import DRAIN_TIMEOUT, PAYLOAD, BenchError, CountingSink, join_consumer, race

# -- keyed designs ------------------------------------------------------------------
#
# Producers cycle through KEYS keys. Both designs deliver batches of one key
# at a time, of at most KEYED_BATCH items, to the same counting sink.

#: Keys the keyed enqueue cycles through.
KEYS = 1_000
#: The KeyedDispatcher options of the keyed enqueue run: the issue's example
#: configuration for webhooks (delay=5.0, max_batch_size=100, 10 workers).
KEYED_DELAY, KEYED_BATCH, KEYED_WORKERS = 5.0, 100, 10
#: Keys, per-batch delivery time and batch size of the parallel-delivery run.
PARALLEL_KEYS, PARALLEL_SLEEP, PARALLEL_BATCH = 100, 0.010, 100
#: Worker counts compared in the parallel-delivery run.
PARALLEL_WORKERS = (1, 10)

KeyedPut = Callable[[object, object], object]


class KeyedSink(CountingSink):
    """A thread-safe CountingSink for deliver(key, batch), called by several workers."""

    def __init__(self, sleep: float = 0.0) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._sleep = sleep

    def deliver(self, key: object, batch: List[object]) -> None:
        if self._sleep:
            time.sleep(self._sleep)  # stands for an HTTP round trip
        with self._lock:
            self(batch)


class KeyedDesign:
    label = ""

    def __init__(self, sink: KeyedSink, workers: int, batch: int, delay: float) -> None:
        self.sink = sink
        self.workers = workers
        self.batch = batch
        self.delay = delay

    def open(self) -> KeyedPut:
        raise NotImplementedError

    def flush(self) -> None:
        """Deliver what waits now (the end of the timed run)."""

    def close(self) -> None:
        raise NotImplementedError


class LockedDict(KeyedDesign):
    """(b) per key: a dict of lists behind a lock, swapped every 10 ms.

    The simplest thread-safe keyed buffer, and the floor for one: the lock
    of (b) plus the key's lookup.
    """

    label = "(b) per key: lock + dict of lists"

    def open(self) -> KeyedPut:
        self.lock = threading.Lock()
        self.lanes: Dict[object, List[object]] = {}
        self.stop = threading.Event()
        self.consumer = threading.Thread(target=self._consume, name="bench-keyed-consumer", daemon=True)
        self.consumer.start()
        return self.append

    def append(self, key: object, item: object) -> None:
        with self.lock:
            lane = self.lanes.get(key)
            if lane is None:
                lane = self.lanes[key] = []
            lane.append(item)

    def _consume(self) -> None:
        while True:
            stopping = self.stop.wait(LockAndList.POLL)
            with self.lock:
                lanes, self.lanes = self.lanes, {}
            for key, items in lanes.items():
                for start in range(0, len(items), self.batch):
                    self.sink.deliver(key, items[start : start + self.batch])
            if stopping:
                return

    def close(self) -> None:
        self.stop.set()
        join_consumer(self.consumer, self.label)


class Keyed(KeyedDesign):
    label = "(e) KeyedDispatcher"

    def open(self) -> KeyedPut:
        self.dispatcher: KeyedDispatcher[object] = KeyedDispatcher(
            self.sink.deliver, delay=self.delay,
            max_batch_size=self.batch, max_queue_size=None,
            max_concurrent_batches=self.workers, name="bench-keyed",
        )
        return self.dispatcher.enqueue

    def flush(self) -> None:
        if not self.dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{self.label}: flush took more than {DRAIN_TIMEOUT:g} s")

    def close(self) -> None:
        if not self.dispatcher.shutdown(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{self.label}: shutdown took more than {DRAIN_TIMEOUT:g} s")


KEYED_DESIGNS: Sequence[Type[KeyedDesign]] = (LockedDict, Keyed)


def _produce_keyed(barrier: threading.Barrier, enqueue: KeyedPut, count: int,
                   keys: Sequence[object]) -> None:
    barrier.wait()
    for key in itertools.islice(itertools.cycle(keys), count):
        enqueue(key, PAYLOAD)


def run_keyed(
    make: Type[KeyedDesign], threads: int, items: int, keys: int, workers: int = KEYED_WORKERS,
    sleep: float = 0.0, batch: int = KEYED_BATCH, delay: float = KEYED_DELAY,
) -> Tuple[float, float]:
    """Time one keyed run; return (seconds per enqueue, end-to-end items/s).

    The end-to-end figure runs until the sink has every item; once the
    producers are done, the design is flushed, so a 5 s delay does not count.
    """
    sink = KeyedSink(sleep)
    design = make(sink, workers, batch, delay)
    enqueue = design.open()
    names = [f"endpoint-{k}" for k in range(keys)]
    try:
        sink.expect(1)
        enqueue(names[0], PAYLOAD)  # warm up: a worker is running
        design.flush()
        if not sink.done.wait(DRAIN_TIMEOUT):
            raise BenchError(f"{design.label}: the warm-up item never arrived")
        sink.expect(items)
        released, finished = race(
            threads, items, lambda barrier, count: _produce_keyed(barrier, enqueue, count, names)
        )
        design.flush()
        if not sink.done.wait(DRAIN_TIMEOUT):
            raise BenchError(f"{design.label}: the sink received {sink.received:,} of {items:,} items")
    finally:
        design.close()
    assert sink.done_at is not None
    return (finished - released) / items, items / (sink.done_at - released)
