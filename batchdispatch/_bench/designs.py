"""The four single-lane buffers the enqueue section compares, and one timed run of each.

(a) a bare :meth:`collections.deque.append`, with no lock and no consumer:
    the floor any design in pure Python stands on;
(b) a lock around ``list.append`` in a method, drained by a consumer thread
    that swaps the list every 10 ms;
(c) a :class:`queue.Queue` whose consumer thread calls ``get()`` once per
    item and collects batches, the design most batching libraries use;
(d) :class:`~batchdispatch.BackgroundDispatcher`.

Beside them, (p) is (d) with the Prometheus collector of
:mod:`batchdispatch.contrib.prometheus` registered and scraped from another
thread while producers run, to show what a scrape costs an ``enqueue``
(nothing is added to it, but a scrape shares the GIL). It needs
``prometheus_client``; without it, :func:`scraped_design` returns None.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Deque, List, Optional, Sequence, Tuple, Type

from .._dispatcher import BackgroundDispatcher
from .harness import (
    DELAY,
    DRAIN_TIMEOUT,
    MAX_BATCH_SIZE,
    PAYLOAD,
    BenchError,
    CountingSink,
    Put,
    join_consumer,
    produce_items,
    race,
)

# -- the four designs -----------------------------------------------------------
#
# Each one is built fresh for every run. open() starts its consumer and returns
# the callable producers call; close() delivers what is left and stops the
# consumer. Only the producer phase and the delivery are timed.


class _Design:
    key = ""
    label = ""
    #: Whether the design has a consumer delivering to the sink.
    delivers = True

    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink

    def open(self) -> Put:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _BareDeque(_Design):
    key = "a"
    label = "(a) deque.append (the limit)"
    delivers = False

    def open(self) -> Put:
        self.items: Deque[object] = collections.deque()
        return self.items.append

    def close(self) -> None:
        self.items.clear()


class _LockedList:
    """A list behind a lock: the simplest thread-safe buffer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: List[object] = []

    def append(self, item: object) -> None:
        with self._lock:
            self._items.append(item)

    def swap(self) -> List[object]:
        with self._lock:
            items, self._items = self._items, []
        return items


class LockAndList(_Design):
    key = "b"
    label = "(b) lock + list.append"
    #: Seconds between two swaps of the consumer.
    POLL = 0.01

    def open(self) -> Put:
        self.buffer = _LockedList()
        self.stop = threading.Event()
        self.consumer = threading.Thread(target=self._consume, name="bench-b-consumer", daemon=True)
        self.consumer.start()
        return self.buffer.append

    def _consume(self) -> None:
        while not self.stop.wait(self.POLL):
            self._deliver(self.buffer.swap())
        self._deliver(self.buffer.swap())

    def _deliver(self, items: List[object]) -> None:
        for start in range(0, len(items), MAX_BATCH_SIZE):
            self.sink(items[start : start + MAX_BATCH_SIZE])

    def close(self) -> None:
        self.stop.set()
        join_consumer(self.consumer, self.label)


_STOP = object()


class _QueueAndGet(_Design):
    key = "c"
    label = "(c) queue.Queue + get() per item"

    def open(self) -> Put:
        self.queue: queue.Queue[object] = queue.Queue()
        self.consumer = threading.Thread(target=self._consume, name="bench-c-consumer", daemon=True)
        self.consumer.start()
        return self.queue.put

    def _consume(self) -> None:
        # The usual shape: block for a first item, then keep taking items
        # one by one until the batch is full or its delay has run out.
        get = self.queue.get
        sink = self.sink
        monotonic = time.monotonic
        batch: List[object] = []
        deadline = 0.0
        while True:
            try:
                if batch:
                    item = get(timeout=max(0.0, deadline - monotonic()))
                else:
                    item = get()
                    deadline = monotonic() + DELAY
            except queue.Empty:
                sink(batch)
                batch = []
                continue
            if item is _STOP:
                break
            batch.append(item)
            if len(batch) >= MAX_BATCH_SIZE:
                sink(batch)
                batch = []
        if batch:
            sink(batch)

    def close(self) -> None:
        self.queue.put(_STOP)
        join_consumer(self.consumer, self.label)


class _Dispatcher(_Design):
    key = "d"
    label = "(d) BackgroundDispatcher"

    def open(self) -> Put:
        self.dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
            self.sink, delay=DELAY, max_batch_size=MAX_BATCH_SIZE, max_queue_size=None, name="bench"
        )
        return self.dispatcher.enqueue

    def close(self) -> None:
        if not self.dispatcher.shutdown(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{self.label}: shutdown took more than {DRAIN_TIMEOUT:g} s")


DESIGNS: Sequence[Type[_Design]] = (_BareDeque, LockAndList, _QueueAndGet, _Dispatcher)


class Scraped(_Dispatcher):
    """(d), with a DispatcherCollector on a registry that another thread scrapes all along."""

    key = "p"
    label = "(p) (d), Prometheus scraped"
    #: Seconds between two scrapes: far more often than Prometheus's usual
    #: 15 s, so that several land in every run.
    SCRAPE_INTERVAL = 0.005
    #: Scrapes made, over every run.
    scrapes = 0

    def open(self) -> Put:
        from prometheus_client import CollectorRegistry, generate_latest

        from ..contrib.prometheus import DispatcherCollector

        put = super().open()
        registry = CollectorRegistry()
        registry.register(DispatcherCollector(dispatchers=[self.dispatcher]))
        self.stop = threading.Event()
        self.failure: Optional[str] = None

        def scrape() -> None:
            while not self.stop.wait(self.SCRAPE_INTERVAL):
                try:
                    text = generate_latest(registry)
                except Exception as exc:  # noqa: BLE001 - reported by close()
                    self.failure = repr(exc)
                    return
                if b"batchdispatch_items_enqueued_total" not in text:
                    self.failure = "the scrape lacks the dispatcher's metrics"
                    return
                Scraped.scrapes += 1

        self.scraper = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
        self.scraper.start()
        return put

    def close(self) -> None:
        self.stop.set()
        join_consumer(self.scraper, self.label)
        super().close()
        if self.failure is not None:
            raise BenchError(f"{self.label}: {self.failure}")


def scraped_design() -> Optional[Type[_Design]]:
    """(p), or None if prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401 - only whether it is there
    except ImportError:
        return None
    return Scraped


def run_once(make: Type[_Design], threads: int, items: int) -> Tuple[float, Optional[float]]:
    """Time one run; return (seconds per enqueue, end-to-end items/s or None)."""
    sink = CountingSink()
    design = make(sink)
    put = design.open()
    try:
        if design.delivers:
            # One item through first, so a lazily started consumer (d) is
            # running before the clock starts, as the others' already are.
            sink.expect(1)
            put(PAYLOAD)
            if not sink.done.wait(DRAIN_TIMEOUT):
                raise BenchError(f"{design.label}: the warm-up item never arrived")
        sink.expect(items)
        released, finished = race(threads, items, lambda barrier, count: produce_items(barrier, put, count))
    finally:
        design.close()
    per_enqueue = (finished - released) / items
    if not design.delivers:
        return per_enqueue, None
    if sink.received != items or sink.done_at is None:
        raise BenchError(f"{design.label}: the sink received {sink.received:,} of {items:,} items")
    return per_enqueue, items / (sink.done_at - released)
