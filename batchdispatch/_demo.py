"""``python -m batchdispatch demo``: a web app's event stream, batched in-process.

Producer threads stand in for a web app's request threads: each builds small
event dicts and enqueues them on one shared
:class:`~batchdispatch.BackgroundDispatcher`, whose worker hands every batch
to a *sink*. The default sink, :class:`MemorySink`, serializes each batch to
JSON as a transport would and keeps only counters, so the demo needs no
network. Any object satisfying :class:`Sink` can take its place (a sink that
posts to a URL, for instance) without changing the rest of the demo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from typing import Callable, Dict, List, Optional, Protocol, TextIO

from ._dispatcher import BackgroundDispatcher

__all__ = ["DemoOptions", "MemorySink", "Sink", "run"]

#: One analytics event, as a request thread would produce it.
Event = Dict[str, object]

#: Seconds ``shutdown`` may take to deliver what is still queued.
SHUTDOWN_TIMEOUT = 30.0

# Per-thread CPU time: time spent waiting for the GIL while other threads run
# is not charged to the enqueue being measured. Wall time would be, several
# times over when there are more runnable threads than cores.
_cpu_ns: Callable[[], int] = getattr(time, "thread_time_ns", time.perf_counter_ns)


class Sink(Protocol):
    """Receives the demo's batches on the dispatcher's worker thread.

    It counts what it received, so the demo can show progress while it runs
    and check at the end that every accepted event arrived. The counters are
    only written by the worker thread; other threads may read a value that
    is a moment old.
    """

    @property
    def items(self) -> int:
        """Events received so far."""

    @property
    def batches(self) -> int:
        """Batches received so far."""

    @property
    def nbytes(self) -> int:
        """Bytes of serialized payload produced so far."""

    def __call__(self, batch: List[Event], /) -> object:
        """Deliver one batch; raising marks its events as failed."""


class MemorySink:
    """Serializes each batch to compact JSON and keeps only counters.

    Encoding stands in for the cost a real transport pays before it sends;
    the encoded body is then dropped.

    .. code-block:: python

        sink = MemorySink()
        sink([{"event": "page_view"}])
        assert (sink.items, sink.batches) == (1, 1)
    """

    def __init__(self) -> None:
        self.items = 0
        self.batches = 0
        self.nbytes = 0

    def __call__(self, batch: List[Event]) -> None:
        body = json.dumps(batch, separators=(",", ":")).encode("utf-8")
        self.nbytes += len(body)
        self.batches += 1
        self.items += len(batch)  # last, so a reader never sees items ahead of bytes


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What ``python -m batchdispatch demo`` was asked to do."""

    #: Producer threads.
    threads: int = 4
    #: Events enqueued in total, shared out between the threads.
    items: int = 200_000
    #: The dispatcher's ``delay``, in seconds.
    delay: float = 0.01
    #: The dispatcher's ``max_batch_size``.
    max_batch_size: int = 1000


class _Producer:
    """One request thread: handles requests, each of which enqueues one event.

    Handling a request (rendering and hashing a small JSON response) is not
    timed; the enqueue calls are. Without that work the producers would only
    enqueue, which no web app does, and they would outrun any sink.
    """

    #: Requests handled per round; the round's enqueues are timed together.
    CHUNK = 32

    def __init__(self, thread: int, count: int, enqueue: Callable[[Event], bool]) -> None:
        self.thread = thread
        self.count = count
        self.enqueue = enqueue
        self.accepted = 0
        self.cpu_ns = 0

    def run(self) -> None:
        enqueue = self.enqueue
        accepted = spent = 0
        seq = 0
        while seq < self.count:
            stop = min(seq + self.CHUNK, self.count)
            events = [self._handle_request(n) for n in range(seq, stop)]
            started = _cpu_ns()
            for event in events:
                if enqueue(event):
                    accepted += 1
            spent += _cpu_ns() - started
            seq = stop
        self.accepted = accepted
        self.cpu_ns = spent

    def _handle_request(self, n: int) -> Event:
        path = f"/p/{n % 97}"
        body = json.dumps({"status": 200, "path": path, "items": list(range(n % 8))})
        etag = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
        return {"event": "page_view", "user": n % 1000, "path": path, "etag": etag,
                "thread": self.thread, "seq": n}


class _Progress:
    """Rewrites one status line on a terminal a few times per second."""

    #: Seconds between two refreshes.
    INTERVAL = 0.2

    def __init__(self, sink: Sink, stream: TextIO, started: float) -> None:
        self._sink = sink
        self._stream = stream
        self._started = started
        self._width = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batchdispatch-demo-progress", daemon=True)

    def start(self) -> None:
        self._render()
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and erase the line, leaving the cursor at its start."""
        self._stop.set()
        self._thread.join()
        self._stream.write("\r" + " " * self._width + "\r")
        self._stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._render()

    def _render(self) -> None:
        elapsed = time.perf_counter() - self._started
        items = self._sink.items
        rate = items / elapsed if elapsed > 0 else 0.0
        line = f"demo: {items:,} items sent in {self._sink.batches:,} batches, {rate:,.0f} items/s"
        # Pad to the longest line so far, so no tail of an older line remains.
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(line))


def _shares(total: int, parts: int) -> List[int]:
    """Split *total* into *parts* counts that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def run(options: DemoOptions, out: TextIO, err: TextIO, sink: Optional[Sink] = None) -> int:
    """Run the demo, print its summary on *out* and return the exit status.

    A progress line is drawn on *err* only when *err* is a terminal. The
    status is 1 when the dispatcher could not deliver everything it accepted
    within :data:`SHUTDOWN_TIMEOUT` or the sink is missing events.
    """
    if sink is None:
        sink = MemorySink()
    dispatcher: BackgroundDispatcher[Event] = BackgroundDispatcher(
        sink, delay=options.delay, max_batch_size=options.max_batch_size, name="demo"
    )
    shares = _shares(options.items, options.threads)
    producers = [_Producer(k, count, dispatcher.enqueue) for k, count in enumerate(shares)]
    threads = [
        threading.Thread(target=p.run, name=f"batchdispatch-demo-producer-{p.thread}", daemon=True)
        for p in producers
    ]
    started = time.perf_counter()
    progress = _Progress(sink, err, started) if err.isatty() else None
    if progress is not None:
        progress.start()
    delivered_all = False
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        delivered_all = dispatcher.shutdown(timeout=SHUTDOWN_TIMEOUT)
        elapsed = time.perf_counter() - started
    finally:
        if progress is not None:
            progress.stop()
        if not delivered_all:
            dispatcher.shutdown(timeout=0)

    stats = dispatcher.stats()
    accepted = sum(p.accepted for p in producers)
    cpu_ns = sum(p.cpu_ns for p in producers)
    received = sink.items
    mean_batch = received / sink.batches if sink.batches else 0.0
    rows = [
        ("items", f"{received:,}"),
        ("batches", f"{sink.batches:,}"),
        ("mean batch size", f"{mean_batch:,.1f}"),
        ("drops", f"{stats.dropped:,}"),
        ("items/s", f"{received / elapsed:,.0f}" if elapsed > 0 else "-"),
        ("ns per enqueue", f"{cpu_ns / options.items:,.0f}  (producer CPU time in enqueue / items)"),
        ("serialized", f"{sink.nbytes / 1e6:,.1f} MB of JSON"),
        ("elapsed", f"{elapsed:.2f} s"),
    ]
    out.write(
        f"batchdispatch demo: {options.threads} producer threads, {options.items:,} events,"
        f" delay {options.delay:g} s, max batch size {options.max_batch_size:,}\n"
    )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"  {label.ljust(width)}  {value}\n")
    out.flush()

    problems = []
    if not delivered_all:
        problems.append(
            f"shutdown did not finish within {SHUTDOWN_TIMEOUT:g} s"
            f" ({stats.pending:,} items still pending)"
        )
    if stats.failed:
        problems.append(f"the sink raised for {stats.failed:,} items (last error: {stats.last_error!r})")
    if received != accepted:
        problems.append(f"the sink received {received:,} of the {accepted:,} accepted items")
    for problem in problems:
        err.write(f"error: {problem}\n")
    err.flush()
    return 1 if problems else 0
