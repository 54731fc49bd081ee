"""``python -m batchdispatch bench``: what an enqueue costs, next to the alternatives.

Four buffers are measured in one run, on the same machine, by the same
producer loop:

(a) a bare :meth:`collections.deque.append`, with no lock and no consumer:
    the floor any design in pure Python stands on;
(b) a lock around ``list.append`` in a method, drained by a consumer thread
    that swaps the list every 10 ms;
(c) a :class:`queue.Queue` whose consumer thread calls ``get()`` once per
    item and collects batches, the design most batching libraries use;
(d) :class:`~batchdispatch.BackgroundDispatcher`.

For each, with 1 and with 4 producer threads, the bench reports the wall
time per enqueue (barrier release to last join, divided by the items; the
consumer runs meanwhile and shares the GIL, as it would in production) and
the end-to-end rate (barrier release until the sink has every item). Each
figure is the best of several repetitions, interleaved so that a slow patch
of the machine hits every design alike.

It then checks that an idle dispatcher does not wake up: it counts the
worker's waits on its condition during a quiet second.

The spool section measures what ``spool=`` costs an enqueue: the same
BackgroundDispatcher without a spool, with a spool in its default mode
(nothing is written while delivery keeps up), and with ``durable=True``
(every item is written to its process's log before ``enqueue`` returns), on
a fresh file in a temporary directory for each run.

The scale section measures how KeyedDispatcher's costs grow with the
number of keys: one enqueue of a new key and of an existing key, one
enqueue under ``overflow="drop_oldest"`` with the queue full (each one
evicts), one call to ``stats()``, each with 1,000, 10,000 and 100,000 keys
waiting, and one enqueue of a new priority on a key holding that many
distinct priorities. None should grow with the keys.

The HTTP section measures what batching buys over the network: items per
second delivered to a :class:`~batchdispatch.testing.Receiver` on
127.0.0.1 by (f) one :func:`requests.post` per item, as an application
without this library would write it, (g) one ``post`` per item on a shared
:class:`requests.Session`, and (h) a BackgroundDispatcher over an
:class:`~batchdispatch.http.HttpSink` with batches of 100.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import itertools
import os
import platform
import queue
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, TextIO, Tuple, Type

from . import __version__
from ._dispatcher import BackgroundDispatcher
from ._keyed import KeyedDispatcher

__all__ = ["BenchOptions", "run"]

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


#: The sections of the bench, in the order they run: the enqueue designs
#: (plain, keyed, parallel delivery, idle wake-ups), the spool, growth with
#: the number of keys, then HTTP delivery.
SECTIONS: Tuple[str, ...] = ("enqueue", "spool", "scale", "http")


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What ``python -m batchdispatch bench`` was asked to do."""

    #: Items enqueued per run, shared out between the producer threads.
    items: int = 1_000_000
    #: Runs per design and thread count; the best one is reported.
    repeat: int = 5
    #: Seconds of idleness over which the dispatcher's wake-ups are counted.
    idle: float = 1.0
    #: Requests of the per-item HTTP runs, (f) and (g).
    http_posts: int = 2_000
    #: Items of the batched HTTP run, (h).
    http_items: int = 100_000
    #: Items per run of the spool section.
    spool_items: int = 20_000
    #: Keys (or priorities) waiting in each run of the scale section.
    scale_keys: Tuple[int, ...] = (1_000, 10_000, 100_000)
    #: The sections to run, from :data:`SECTIONS`.
    sections: Tuple[str, ...] = SECTIONS


#: Settings of ``--quick``: seconds, not minutes; the figures are rough.
QUICK = BenchOptions(
    items=4_000, repeat=1, idle=0.2, http_posts=100, http_items=5_000, spool_items=1_000,
    scale_keys=(1_000, 10_000),
)


class _Sink:
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

    def __init__(self, sink: _Sink) -> None:
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


class _LockAndList(_Design):
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
        _join(self.consumer, self.label)


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
        _join(self.consumer, self.label)


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


DESIGNS: Sequence[Type[_Design]] = (_BareDeque, _LockAndList, _QueueAndGet, _Dispatcher)

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


class _KeyedSink(_Sink):
    """A thread-safe _Sink for deliver(key, batch), called by several workers."""

    def __init__(self, sleep: float = 0.0) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._sleep = sleep

    def deliver(self, key: object, batch: List[object]) -> None:
        if self._sleep:
            time.sleep(self._sleep)  # stands for an HTTP round trip
        with self._lock:
            self(batch)


class _KeyedDesign:
    label = ""

    def __init__(self, sink: _KeyedSink, workers: int, batch: int, delay: float) -> None:
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


class _LockedDict(_KeyedDesign):
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
            stopping = self.stop.wait(_LockAndList.POLL)
            with self.lock:
                lanes, self.lanes = self.lanes, {}
            for key, items in lanes.items():
                for start in range(0, len(items), self.batch):
                    self.sink.deliver(key, items[start : start + self.batch])
            if stopping:
                return

    def close(self) -> None:
        self.stop.set()
        _join(self.consumer, self.label)


class _Keyed(_KeyedDesign):
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


KEYED_DESIGNS: Sequence[Type[_KeyedDesign]] = (_LockedDict, _Keyed)


def _produce_keyed(barrier: threading.Barrier, enqueue: KeyedPut, count: int,
                   keys: Sequence[object]) -> None:
    barrier.wait()
    for key in itertools.islice(itertools.cycle(keys), count):
        enqueue(key, PAYLOAD)


def _run_keyed(
    make: Type[_KeyedDesign], threads: int, items: int, keys: int, workers: int = KEYED_WORKERS,
    sleep: float = 0.0, batch: int = KEYED_BATCH, delay: float = KEYED_DELAY,
) -> Tuple[float, float]:
    """Time one keyed run; return (seconds per enqueue, end-to-end items/s).

    The end-to-end figure runs until the sink has every item; once the
    producers are done, the design is flushed, so a 5 s delay does not count.
    """
    sink = _KeyedSink(sleep)
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
        released, finished = _race(
            threads, items, lambda barrier, count: _produce_keyed(barrier, enqueue, count, names)
        )
        design.flush()
        if not sink.done.wait(DRAIN_TIMEOUT):
            raise BenchError(f"{design.label}: the sink received {sink.received:,} of {items:,} items")
    finally:
        design.close()
    assert sink.done_at is not None
    return (finished - released) / items, items / (sink.done_at - released)


def _join(thread: threading.Thread, label: str) -> None:
    thread.join(DRAIN_TIMEOUT)
    if thread.is_alive():
        raise BenchError(f"{label}: the consumer took more than {DRAIN_TIMEOUT:g} s to drain")


def _produce(barrier: threading.Barrier, put: Put, count: int) -> None:
    barrier.wait()
    for item in itertools.repeat(PAYLOAD, count):
        put(item)


def _race(threads: int, items: int, produce: Callable[[threading.Barrier, int], None]) -> Tuple[float, float]:
    """Run *threads* producers sharing *items*, released together by a barrier.

    :returns: (the moment they were released, the moment the last one finished).
    """
    released: List[float] = []
    barrier = threading.Barrier(threads, action=lambda: released.append(time.perf_counter()))
    producers = [
        threading.Thread(target=produce, args=(barrier, count), name=f"bench-producer-{k}")
        for k, count in enumerate(_shares(items, threads))
    ]
    gc.collect()
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    return released[0], time.perf_counter()


def _shares(total: int, parts: int) -> List[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def _run_once(make: Type[_Design], threads: int, items: int) -> Tuple[float, Optional[float]]:
    """Time one run; return (seconds per enqueue, end-to-end items/s or None)."""
    sink = _Sink()
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
        released, finished = _race(threads, items, lambda barrier, count: _produce(barrier, put, count))
    finally:
        design.close()
    per_enqueue = (finished - released) / items
    if not design.delivers:
        return per_enqueue, None
    if sink.received != items or sink.done_at is None:
        raise BenchError(f"{design.label}: the sink received {sink.received:,} of {items:,} items")
    return per_enqueue, items / (sink.done_at - released)


# -- idle wake-ups ----------------------------------------------------------------


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
    sink = _Sink()
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=MAX_BATCH_SIZE, max_queue_size=None, name="bench-idle"
    )
    # Swapped in before the first enqueue: the worker does not exist yet and
    # looks the method up afresh at every wait.
    counter = _CountingSleep(dispatcher._sleep)
    setattr(dispatcher, "_sleep", counter)  # noqa: B010 - shadows the method on this instance
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


# -- the spool ----------------------------------------------------------------------
#
# BackgroundDispatcher, (d) above, without a spool and with one in each mode.
# Each run gets a fresh spool file; it is timed like the enqueue designs
# (barrier release to the last producer's join, per item), and end to end
# until flush() returns, which for the durable mode includes acking the
# delivered items. A run is checked: the sink got every item and nothing
# is left in the spool.

#: (key, label, durable: None for no spool).
SPOOL_MODES: Tuple[Tuple[str, str, Optional[bool]], ...] = (
    ("memory", "(d) BackgroundDispatcher, no spool", None),
    ("spill", "(s) spool=SqliteSpool(path)", False),
    ("durable", "(t) spool=SqliteSpool(path, durable=True)", True),
)


def _run_spooled(
    durable: Optional[bool], label: str, threads: int, items: int
) -> Tuple[float, float]:
    """Time one run; return (seconds per enqueue, end-to-end items/s)."""
    from .spool import SqliteSpool

    directory = tempfile.mkdtemp(prefix="batchdispatch-bench-")
    spool = None if durable is None else SqliteSpool(os.path.join(directory, "bench.db"), durable=durable)
    sink = _Sink()
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=MAX_BATCH_SIZE, max_queue_size=None, name="bench-spool",
        spool=spool,
    )
    try:
        sink.expect(1)
        dispatcher.enqueue(PAYLOAD)  # warm-up: the worker runs and the file exists
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT) or sink.received != 1:
            raise BenchError(f"{label}: the warm-up item was not delivered")
        sink.expect(items)
        enqueue = dispatcher.enqueue
        released, finished = _race(threads, items, lambda barrier, count: _produce(barrier, enqueue, count))
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{label}: delivery took more than {DRAIN_TIMEOUT:g} s")
        drained = time.perf_counter()
        left = 0 if spool is None else spool.count()
        stats = dispatcher.stats()
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
        if spool is not None:
            spool.close()
        shutil.rmtree(directory, ignore_errors=True)
    if sink.received != items or left or stats.dropped or stats.spool_faults:
        raise BenchError(
            f"{label}: the sink received {sink.received:,} of {items:,} items, {left:,} rows left,"
            f" faults: {dict(stats.spool_faults)}"
        )
    return (finished - released) / items, items / (drained - released)


def measure_spool(options: BenchOptions, err: TextIO) -> Dict[Tuple[str, int], Tuple[float, float]]:
    """Best (seconds per enqueue, items/s) per (mode, producer threads), interleaved rounds."""
    best: Dict[Tuple[str, int], Tuple[float, float]] = {}
    for round_no in range(1, options.repeat + 1):
        for threads in THREAD_COUNTS:
            for key, label, durable in SPOOL_MODES:
                _status(err, f"bench: spool, round {round_no} of {options.repeat}, {label}, {threads} thr")
                # The durable mode costs microseconds per item: fewer items.
                items = options.spool_items if durable else options.items
                per, rate = _run_spooled(durable, label, threads, items)
                old_per, old_rate = best.get((key, threads), (per, rate))
                best[key, threads] = (min(per, old_per), max(rate, old_rate))
    return best


def _spool_report(options: BenchOptions, best: Dict[Tuple[str, int], Tuple[float, float]]) -> List[str]:
    header = ["spool mode"]
    for threads in THREAD_COUNTS:
        header += [f"us/enq {threads} thr", "vs (d)"]
    for threads in THREAD_COUNTS:
        header += [f"e2e/s {threads} thr"]
    rows = []
    for key, label, _ in SPOOL_MODES:
        cells = [label]
        for threads in THREAD_COUNTS:
            per = best[key, threads][0] * 1e6
            cells += [f"{per:,.2f}", _ratio(per, best["memory", threads][0] * 1e6)]
        for threads in THREAD_COUNTS:
            cells += [f"{best[key, threads][1]:,.0f}"]
        rows.append(cells)
    durable = best["durable", THREAD_COUNTS[-1]][0] * 1e6
    return [
        f"spool: {options.items:,} items per run ({options.spool_items:,} for (t)), best of {options.repeat},"
        " a fresh file each run;",
        "e2e/s until flush() returned, which for (t) includes acking the delivered items.",
        "",
        *_table(header, rows),
        "",
        f"durable enqueue with {THREAD_COUNTS[-1]} producer threads: {durable:,.1f} us per item",
    ]


# -- HTTP delivery -----------------------------------------------------------------
#
# One Receiver on 127.0.0.1, in this process, takes every request. Each run
# is timed from its first post (or enqueue) until the receiver has answered
# every item with a 200, and checked: the receiver must hold exactly the
# items sent, or the figure is not printed.

#: Items per request of the batched run (h), and its dispatcher's delay.
HTTP_BATCH, HTTP_DELAY = 100, 0.01
#: The per-item designs' request timeout, in seconds: what a careful app sets.
HTTP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class _HttpRun:
    label: str
    items: int
    requests: int
    items_per_s: float


def _per_item_posts(receiver: Any, posts: int, with_session: bool) -> _HttpRun:
    """(f) or (g): one POST of one JSON object per item."""
    import requests

    label = (
        "(g) requests.Session().post per item" if with_session
        else "(f) requests.post per item (no session)"
    )
    session = requests.Session() if with_session else None
    post = session.post if session is not None else requests.post
    url = receiver.url
    try:
        post(url, json=PAYLOAD, timeout=HTTP_TIMEOUT).raise_for_status()  # warm-up
        receiver.clear()
        started = time.perf_counter()
        for item in itertools.repeat(PAYLOAD, posts):
            post(url, json=item, timeout=HTTP_TIMEOUT).raise_for_status()
        elapsed = time.perf_counter() - started
    except requests.RequestException as exc:
        raise BenchError(f"{label}: {exc}") from exc
    finally:
        if session is not None:
            session.close()
    if receiver.item_count != posts:
        raise BenchError(f"{label}: the receiver got {receiver.item_count:,} of {posts:,} items")
    return _HttpRun(label, posts, receiver.request_count, posts / elapsed)


def _batched_posts(receiver: Any, items: int) -> _HttpRun:
    """(h): BackgroundDispatcher + HttpSink, batches of HTTP_BATCH items."""
    from .http import HttpSink

    label = f"(h) BackgroundDispatcher + HttpSink, batches of {HTTP_BATCH}"
    sink = HttpSink(receiver.url)
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=HTTP_DELAY, max_batch_size=HTTP_BATCH, max_queue_size=None, name="bench-http"
    )
    try:
        # Warm-up: the worker runs and the sink's connection is open, as the
        # session of (g) is after its warm-up.
        receiver.clear()
        dispatcher.enqueue(PAYLOAD)
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT) or receiver.item_count != 1:
            error = dispatcher.stats().last_error
            raise BenchError(f"{label}: the warm-up item was not delivered: {error!r}")
        receiver.clear()
        enqueue = dispatcher.enqueue
        started = time.perf_counter()
        for item in itertools.repeat(PAYLOAD, items):
            enqueue(item)
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{label}: delivery took more than {DRAIN_TIMEOUT:g} s")
        elapsed = time.perf_counter() - started
        stats = dispatcher.stats()
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
        sink.close()
    if stats.failed or stats.dropped or receiver.item_count != items:
        raise BenchError(
            f"{label}: the receiver got {receiver.item_count:,} of {items:,} items"
            f" ({stats.failed:,} failed, {stats.dropped:,} dropped, last error: {stats.last_error!r})"
        )
    return _HttpRun(label, items, receiver.request_count, items / elapsed)


def measure_http(options: BenchOptions, err: TextIO) -> List[_HttpRun]:
    """Run (f), (g) and (h) once each against one embedded receiver."""
    from .testing import Receiver

    runs = []
    with Receiver() as receiver:
        for with_session in (False, True):
            session = "a session" if with_session else "no session"
            _status(err, f"bench: HTTP, {options.http_posts:,} posts, {session}")
            runs.append(_per_item_posts(receiver, options.http_posts, with_session))
        _status(err, f"bench: HTTP, {options.http_items:,} items in batches of {HTTP_BATCH}")
        runs.append(_batched_posts(receiver, options.http_items))
    return runs


def _http_report(runs: Sequence[_HttpRun]) -> List[str]:
    plain, session, batched = runs
    rows = [
        [run.label, f"{run.items:,}", f"{run.requests:,}", f"{run.items_per_s:,.0f}",
         _ratio(run.items_per_s, plain.items_per_s), _ratio(run.items_per_s, session.items_per_s)]
        for run in runs
    ]
    header = ["HTTP delivery", "items", "requests", "items/s", "vs (f)", "vs (g)"]
    return [
        "HTTP: to a Receiver on 127.0.0.1 in this process, one run each; items/s from the first",
        "post until the receiver had answered every item.",
        "",
        *_table(header, rows),
        "",
        f"HTTP batched (h)/(f): {_ratio(batched.items_per_s, plain.items_per_s)},"
        f" (h)/(g): {_ratio(batched.items_per_s, session.items_per_s)}",
    ]


# -- growth with the number of keys ---------------------------------------------------
#
# Each run fills a KeyedDispatcher whose deliver never returns before the
# end (delay=3600 s, so nothing is taken meanwhile but full batches) with
# one item for each of N keys, then times a number of the same operation,
# one after the other on one thread. The filling is not timed.

#: (key, label, operations timed per run).
SCALE_OPS: Tuple[Tuple[str, str, int], ...] = (
    ("new", "enqueue, new key", 2_000),
    ("existing", "enqueue, existing key", 20_000),
    ("drop_oldest", 'enqueue, full queue, overflow="drop_oldest"', 2_000),
    ("stats", "stats()", 20),
    ("priority", "enqueue, new priority (N priorities on one key)", 2_000),
)


def _scale_once(op: str, keys: int, count: int) -> float:
    """Time *count* operations *op* with *keys* keys waiting; return seconds per operation."""
    gate = threading.Event()

    def deliver(key: object, batch: List[object]) -> None:
        gate.wait(DRAIN_TIMEOUT)

    # Bounded, as by default, so that the queue's grants are in play; with
    # room to spare but for "drop_oldest", where each timed enqueue evicts.
    bound = keys if op == "drop_oldest" else 2 * keys
    dispatcher: KeyedDispatcher[object] = KeyedDispatcher(
        deliver, delay=3600.0, max_batch_size=100, max_queue_size=bound,
        overflow="drop_oldest" if op == "drop_oldest" else "drop_newest", name="bench-scale",
    )
    try:
        enqueue = dispatcher.enqueue
        if op == "priority":
            for priority in range(1, keys + 1):
                enqueue("k", PAYLOAD, priority)
        else:
            for key in range(keys):
                enqueue(key, PAYLOAD)
        gc.collect()
        started = time.perf_counter()
        if op == "stats":
            for _ in range(count):
                dispatcher.stats()
        elif op == "existing":
            for key in itertools.islice(itertools.cycle(range(keys)), count):
                enqueue(key, PAYLOAD)
        elif op == "priority":
            for priority in range(keys + 1, keys + 1 + count):
                enqueue("k", PAYLOAD, priority)
        else:  # a new key each time; with "drop_oldest", each evicts
            for key in range(keys, keys + count):
                enqueue(key, PAYLOAD)
        elapsed = time.perf_counter() - started
    finally:
        gate.set()
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
    return elapsed / count


def measure_scale(options: BenchOptions, err: TextIO) -> Dict[Tuple[str, int], float]:
    """Best seconds per operation, by (operation, keys)."""
    best: Dict[Tuple[str, int], float] = {}
    for round_no in range(1, min(options.repeat, 3) + 1):
        for op, label, count in SCALE_OPS:
            for keys in options.scale_keys:
                _status(err, f"bench: scale, round {round_no}, {label}, {keys:,} keys")
                seconds = _scale_once(op, keys, count)
                best[op, keys] = min(seconds, best.get((op, keys), seconds))
    return best


def _scale_report(options: BenchOptions, best: Dict[Tuple[str, int], float]) -> List[str]:
    sizes = options.scale_keys
    header = ["KeyedDispatcher, N keys waiting", *(f"us/op N={n:,}" for n in sizes)]
    header.append(f"{sizes[-1]:,} vs {sizes[0]:,}")
    rows = []
    for op, label, _ in SCALE_OPS:
        cells = [label, *(f"{best[op, n] * 1e6:,.2f}" for n in sizes)]
        rows.append([*cells, _ratio(best[op, sizes[-1]], best[op, sizes[0]])])
    return [
        *_table(header, rows),
        "",
        "us/op: one thread, best of up to 3 runs; each run first enqueues one item for each",
        "       of N keys (or N priorities on one key), untimed, with delay=3600 and",
        "       max_queue_size=2N (N under drop_oldest, so that every timed enqueue evicts).",
    ]


# -- the report -------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Lay out a Markdown table whose columns also line up as plain text."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return [line(header), rule, *(line(row) for row in rows)]


def _ratio(value: Optional[float], base: Optional[float]) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _status(stream: TextIO, text: str) -> None:
    """Rewrite the status line on *stream*, if it is a terminal."""
    if stream.isatty():
        stream.write("\r" + text.ljust(60) + ("" if text else "\r"))
        stream.flush()


@dataclasses.dataclass
class _Results:
    #: Best seconds per enqueue, by (design key, producer threads).
    per_enqueue: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    #: Best end-to-end items/s, by (design key, producer threads).
    rate: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    wakeups: int = 0
    timed_waits: int = 0
    #: Keyed designs over KEYS keys: best seconds per enqueue and items/s, by (label, threads).
    keyed_per_enqueue: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    keyed_rate: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    #: Parallel delivery: best items/s by worker count.
    parallel: Dict[int, float] = dataclasses.field(default_factory=dict)

    def add(self, key: Tuple[str, int], seconds: float, items_per_s: Optional[float]) -> None:
        self.per_enqueue[key] = min(seconds, self.per_enqueue.get(key, seconds))
        if items_per_s is not None:
            self.rate[key] = max(items_per_s, self.rate.get(key, items_per_s))


def _measure(options: BenchOptions, err: TextIO) -> _Results:
    results = _Results()
    for round_no in range(1, options.repeat + 1):
        for threads in THREAD_COUNTS:
            for design in DESIGNS:
                _status(err, f"bench: round {round_no} of {options.repeat}, {design.label}, {threads} thr")
                results.add((design.key, threads), *_run_once(design, threads, options.items))
            for keyed in KEYED_DESIGNS:
                _status(err, f"bench: round {round_no} of {options.repeat}, {keyed.label}, {threads} thr")
                per, rate = _run_keyed(keyed, threads, options.items, KEYS)
                entry = (keyed.label, threads)
                results.keyed_per_enqueue[entry] = min(per, results.keyed_per_enqueue.get(entry, per))
                results.keyed_rate[entry] = max(rate, results.keyed_rate.get(entry, rate))
    parallel_items = max(PARALLEL_KEYS * PARALLEL_BATCH, options.items // 50)
    for workers in PARALLEL_WORKERS:
        _status(err, f"bench: parallel delivery with {workers} workers")
        _, rate = _run_keyed(
            _Keyed, 1, parallel_items, PARALLEL_KEYS, workers, PARALLEL_SLEEP, PARALLEL_BATCH, DELAY
        )
        results.parallel[workers] = rate
    _status(err, f"bench: idle wake-ups over {options.idle:g} s")
    results.wakeups, results.timed_waits = measure_idle(options.idle)
    return results


def _report(options: BenchOptions, results: _Results) -> List[str]:
    header = ["design"]
    for threads in THREAD_COUNTS:
        header += [f"ns/enq {threads} thr", "vs (b)"]
    for threads in THREAD_COUNTS:
        header += [f"e2e/s {threads} thr", "vs (c)"]
    rows = []
    for design in DESIGNS:
        cells = [design.label]
        for threads in THREAD_COUNTS:
            ns = results.per_enqueue[design.key, threads] * 1e9
            cells += [f"{ns:,.1f}", _ratio(ns, results.per_enqueue["b", threads] * 1e9)]
        for threads in THREAD_COUNTS:
            rate = results.rate.get((design.key, threads))
            cells += ["-" if rate is None else f"{rate:,.0f}", _ratio(rate, results.rate.get(("c", threads)))]
        rows.append(cells)
    d_over_c = ", ".join(
        f"{_ratio(results.rate.get(('d', t)), results.rate.get(('c', t)))}"
        f" with {t} producer thread{'s' if t > 1 else ''}"
        for t in THREAD_COUNTS
    )
    return [
        *_table(header, rows),
        "",
        "ns/enq: wall time from barrier release to the last producer's join, per item",
        "        (consumer threads run meanwhile and share the GIL); lower is better.",
        "e2e/s:  items per second from barrier release until the sink had all of them;",
        "        higher is better. (a) has no consumer.",
        "vs (b), vs (c): ratio to that design's figure from this same run.",
        "",
        f"end-to-end (d)/(c): {d_over_c}",
        f"idle wake-ups in {options.idle:g} s: {results.wakeups}"
        f" (waits with a timeout: {results.timed_waits})",
        "",
        *_keyed_report(results),
    ]


def _keyed_report(results: _Results) -> List[str]:
    header = ["keyed design"]
    for threads in THREAD_COUNTS:
        header += [f"ns/enq {threads} thr", "vs (b)", "vs (b) per key"]
    for threads in THREAD_COUNTS:
        header += [f"e2e/s {threads} thr"]
    rows = []
    for keyed in KEYED_DESIGNS:
        cells = [keyed.label]
        for threads in THREAD_COUNTS:
            ns = results.keyed_per_enqueue[keyed.label, threads] * 1e9
            floor = results.keyed_per_enqueue[_LockedDict.label, threads] * 1e9
            cells += [f"{ns:,.1f}", _ratio(ns, results.per_enqueue["b", threads] * 1e9), _ratio(ns, floor)]
        for threads in THREAD_COUNTS:
            cells += [f"{results.keyed_rate[keyed.label, threads]:,.0f}"]
        rows.append(cells)
    slow, fast = (results.parallel[w] for w in PARALLEL_WORKERS)
    return [
        f"keyed: {KEYS:,} keys in turn; (e) with delay={KEYED_DELAY:g}, max_batch_size={KEYED_BATCH},"
        f" max_concurrent_batches={KEYED_WORKERS};",
        "e2e/s here flushes once the producers are done.",
        "",
        *_table(header, rows),
        "",
        f"parallel delivery: {PARALLEL_KEYS} keys, batches of {PARALLEL_BATCH},"
        f" deliver sleeps {PARALLEL_SLEEP * 1000:g} ms per batch:",
        *(
            f"  max_concurrent_batches={w}: {results.parallel[w]:,.0f} items/s"
            for w in PARALLEL_WORKERS
        ),
        f"  speed-up: {_ratio(fast, slow)}",
    ]


def run(options: BenchOptions, out: TextIO, err: TextIO) -> int:
    """Run the bench, print the report on *out* and return the exit status.

    While it runs, a status line is drawn on *err* if that is a terminal.
    """
    out.write(
        f"batchdispatch {__version__} bench\n"
        f"Python {platform.python_version()} ({platform.python_implementation()})"
        f" on {platform.platform()}, {os.cpu_count() or 1} CPUs,"
        f" switch interval {sys.getswitchinterval() * 1000:g} ms\n"
    )
    if "enqueue" in options.sections:
        out.write(
            f"{options.items:,} items per run, best of {options.repeat};"
            f" batches of up to {MAX_BATCH_SIZE}, delay {DELAY:g} s for (c) and (d),"
            f" (d) with max_queue_size=None\n"
        )
    out.write("\n")
    out.flush()
    report: List[str] = []
    try:
        if "enqueue" in options.sections:
            report += _report(options, _measure(options, err))
        if "spool" in options.sections:
            spooled = measure_spool(options, err)
            report += ([""] if report else []) + _spool_report(options, spooled)
        if "scale" in options.sections:
            scaled = measure_scale(options, err)
            report += ([""] if report else []) + _scale_report(options, scaled)
        if "http" in options.sections:
            runs = measure_http(options, err)
            report += ([""] if report else []) + _http_report(runs)
    except BenchError as exc:
        _status(err, "")
        err.write(f"error: {exc}\n")
        return 1
    _status(err, "")
    out.write("\n".join(report) + "\n")
    out.flush()
    return 0
