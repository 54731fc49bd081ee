"""``python -m batchdispatch demo``: a web app's event stream, batched and shipped over HTTP.

Producer threads stand in for a web app's request threads: each builds small
event dicts and enqueues them on one shared
:class:`~batchdispatch.BackgroundDispatcher`, whose worker hands every batch
to a *sink*. By default the sink is an :class:`~batchdispatch.http.HttpSink`
that POSTs each batch to an embedded
:class:`~batchdispatch.testing.Receiver` on 127.0.0.1, over real HTTP, and
the demo checks at the end that the receiver got every accepted event; with
``--url`` it ships to that URL instead. Any object satisfying :class:`Sink`
can take the HTTP sink's place (:class:`MemorySink`, in-process, for
instance) without changing the rest of the demo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Protocol, TextIO

from ._console import ProgressLine, display_url, write_summary
from ._dispatcher import BackgroundDispatcher

if TYPE_CHECKING:
    from .testing import Receiver

__all__ = ["DemoOptions", "HttpCounter", "MemorySink", "Sink", "run"]

#: One analytics event, as a request thread would produce it.
Event = Dict[str, object]

#: Seconds ``shutdown`` may take to deliver what is still queued.
SHUTDOWN_TIMEOUT = 30.0

#: Seconds the final check waits for the embedded receiver to hold every event.
RECEIVER_TIMEOUT = 5.0

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

        from batchdispatch._demo import MemorySink

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


class HttpCounter:
    """POSTs each batch to *url* with an :class:`~batchdispatch.http.HttpSink` and counts what succeeded.

    A batch counts once the endpoint answered 2xx; one whose delivery
    raised is not counted, and the error goes back to the dispatcher.
    Call :meth:`close` when done.
    """

    def __init__(self, url: str) -> None:
        from .http import HttpSink, json_serializer

        self._encode = json_serializer
        self._sink = HttpSink(url, serializer=self._serialize)
        self._size = 0
        self.items = 0
        self.batches = 0
        self.nbytes = 0

    def _serialize(self, batch: List[Event]) -> bytes:
        body = self._encode(batch)
        self._size = len(body)  # one worker thread: read back by __call__ below
        return body

    def __call__(self, batch: List[Event]) -> None:
        self._sink(batch)
        self.nbytes += self._size
        self.batches += 1
        self.items += len(batch)  # last, so a reader never sees items ahead of bytes

    def close(self) -> None:
        self._sink.close()


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What ``python -m batchdispatch demo`` was asked to do."""

    #: Producer threads.
    threads: int = 4
    #: Events enqueued in total, shared out between the threads. At most
    #: the dispatcher's default max_queue_size, so that however far the
    #: producers outrun HTTP delivery, no event is dropped.
    items: int = 100_000
    #: The dispatcher's ``delay``, in seconds.
    delay: float = 0.01
    #: The dispatcher's ``max_batch_size``.
    max_batch_size: int = 1000
    #: Ship to this URL; None: to an embedded receiver on 127.0.0.1.
    url: Optional[str] = None


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


def _shares(total: int, parts: int) -> List[int]:
    """Split *total* into *parts* counts that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def run(options: DemoOptions, out: TextIO, err: TextIO, sink: Optional[Sink] = None) -> int:
    """Run the demo, print its summary on *out* and return the exit status.

    Without *sink*, batches go over HTTP: to ``options.url``, or to an
    embedded receiver on 127.0.0.1 that is then checked for every accepted
    event. A progress line is drawn on *err* only when *err* is a terminal.
    The status is 1 when the dispatcher could not deliver everything it
    accepted within :data:`SHUTDOWN_TIMEOUT`, or the sink (or the receiver)
    is missing events; 2 when the URL is not one the sink can use.
    """
    if sink is not None:
        return _run(options, out, err, sink, "an in-process sink", None)

    from .testing import Receiver  # here: the in-process demo needs no server

    with contextlib.ExitStack() as stack:
        receiver: Optional[Receiver] = None
        if options.url is None:
            receiver = stack.enter_context(Receiver())
            url, target = receiver.url, f"{receiver.url} (an embedded receiver)"
        else:
            url, target = options.url, display_url(options.url)
        try:
            http = HttpCounter(url)
        except ValueError as exc:
            err.write(f"error: {exc}\n")
            return 2
        stack.callback(http.close)
        return _run(options, out, err, http, target, receiver)


def _run(
    options: DemoOptions, out: TextIO, err: TextIO, sink: Sink, target: str, receiver: Optional[Receiver]
) -> int:
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

    def progress_text() -> str:
        elapsed = time.perf_counter() - started
        items = sink.items
        rate = items / elapsed if elapsed > 0 else 0.0
        return f"demo: {items:,} items sent in {sink.batches:,} batches, {rate:,.0f} items/s"

    progress = ProgressLine(progress_text, err) if err.isatty() else None
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
    if receiver is not None:
        # The receiver records a request before answering it, so what the
        # sink saw acknowledged is there already; this only bounds the check.
        receiver.wait_for_items(received, timeout=RECEIVER_TIMEOUT)
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
    write_summary(
        out,
        f"batchdispatch demo: {options.threads} producer threads, {options.items:,} events,"
        f" delay {options.delay:g} s, max batch size {options.max_batch_size:,}\n"
        f"  to {target}\n",
        rows,
    )

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
    if receiver is not None and receiver.item_count != accepted:
        problems.append(f"the receiver got {receiver.item_count:,} of the {accepted:,} accepted items")
    for problem in problems:
        err.write(f"error: {problem}\n")
    err.flush()
    return 1 if problems else 0
