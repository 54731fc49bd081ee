"""The ``http`` section: what batching buys over the network.

Items per second delivered to a :class:`~batchdispatch.testing.Receiver` on
127.0.0.1 by (f) one :func:`requests.post` per item, as an application
without this library would write it, (g) one ``post`` per item on a shared
:class:`requests.Session`, and (h) a BackgroundDispatcher over an
:class:`~batchdispatch.http.HttpSink` with batches of 100.

Then what a worker thread spends per event: the CPU time
(:func:`time.thread_time`) of the thread that calls an HttpSink with
batches of 100 and of 1,000 analytics events, with the default
:func:`~batchdispatch.http.json_serializer` and with
:func:`~batchdispatch.http.orjson_serializer` if orjson is installed. Only
that thread's CPU counts: the receiver's threads, in the same process, do not.

:mod:`.http_options` runs (h) and the worker CPU rows again with the
HttpSink options of issue 15; both take the sink's keyword arguments and a
*check* for that.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple

from .._dispatcher import BackgroundDispatcher
from .harness import DRAIN_TIMEOUT, PAYLOAD, BenchError
from .options import BenchOptions
from .output import ratio, status, table

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

#: Called with the sink once a run is over and every item in, before the sink is closed:
#: it raises BenchError if the sink did not do what the run meant to measure.
Check = Callable[[Any], None]


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


def _batched_posts(
    receiver: Any, items: int,
    sink_options: Optional[Mapping[str, Any]] = None, check: Optional[Check] = None,
) -> _HttpRun:
    """(h): BackgroundDispatcher + HttpSink(**sink_options), batches of HTTP_BATCH items."""
    from ..http import HttpSink

    label = f"(h) BackgroundDispatcher + HttpSink, batches of {HTTP_BATCH}"
    sink = HttpSink(receiver.url, **(sink_options or {}))
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
        if check is not None:
            check(sink)
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
        sink.close()
    if stats.failed or stats.dropped or receiver.item_count != items:
        raise BenchError(
            f"{label}: the receiver got {receiver.item_count:,} of {items:,} items"
            f" ({stats.failed:,} failed, {stats.dropped:,} dropped, last error: {stats.last_error!r})"
        )
    return _HttpRun(label, items, receiver.request_count, items / elapsed)


#: Batch sizes of the worker CPU rows.
CPU_BATCHES = (100, 1000)


def event(n: int) -> Dict[str, Any]:
    """An analytics event as the app section's Flask app builds it: a name, a user and properties."""
    return {"event": "page_view", "user": f"user-{n % 1000}",
            "properties": {"id": f"4242-{n}", "path": "/view", "at": time.time()}}


def _worker_cpu(
    receiver: Any, items: int, size: int, serializer: Optional[Any],
    sink_options: Optional[Mapping[str, Any]] = None, check: Optional[Check] = None,
) -> float:
    """Seconds of this thread's CPU per event, calling an HttpSink with batches of *size* events."""
    from ..http import HttpSink

    batches = [[event(size * b + k) for k in range(size)] for b in range(max(2, items // size))]
    with HttpSink(receiver.url, serializer=serializer, **(sink_options or {})) as sink:
        sink(batches[0])  # warm-up: the connection is open
        receiver.clear()
        started = time.thread_time()
        for batch in batches[1:]:
            sink(batch)
        spent = time.thread_time() - started
        if check is not None:
            check(sink)
    sent = size * (len(batches) - 1)
    if receiver.item_count != sent:
        raise BenchError(f"worker CPU: the receiver got {receiver.item_count:,} of {sent:,} events")
    receiver.clear()
    return spent / sent


@dataclasses.dataclass(frozen=True)
class HttpMeasured:
    """The runs (f), (g), (h), and the worker's CPU per event by (serializer, batch size)."""

    runs: List[_HttpRun]
    cpu: Dict[Tuple[str, int], float]


def measure(options: BenchOptions, err: TextIO) -> HttpMeasured:
    """Run (f), (g) and (h) once each, then the worker CPU rows, against one embedded receiver."""
    from ..http import orjson_serializer
    from ..testing import Receiver

    runs = []
    cpu: Dict[Tuple[str, int], float] = {}
    serializers: List[Tuple[str, Any]] = [("json_serializer", None)]
    if importlib.util.find_spec("orjson") is not None:
        serializers.append(("orjson_serializer", orjson_serializer))
    with Receiver() as receiver:
        for with_session in (False, True):
            session = "a session" if with_session else "no session"
            status(err, f"bench: HTTP, {options.http_posts:,} posts, {session}")
            runs.append(_per_item_posts(receiver, options.http_posts, with_session))
        status(err, f"bench: HTTP, {options.http_items:,} items in batches of {HTTP_BATCH}")
        runs.append(_batched_posts(receiver, options.http_items))
        receiver.clear()
        # In turn, round after round: a busy moment of the machine weighs on each alike.
        samples: Dict[Tuple[str, int], List[float]] = {}
        items = max(CPU_BATCHES[-1] * 2, options.http_items // 5)
        for _ in range(max(1, min(options.repeat, 3))):
            for name, serializer in serializers:
                for size in CPU_BATCHES:
                    status(err, f"bench: HTTP, worker CPU, {name}, batches of {size}")
                    spent = _worker_cpu(receiver, items, size, serializer)
                    samples.setdefault((name, size), []).append(spent)
        cpu = {key: min(values) for key, values in samples.items()}
    return HttpMeasured(runs, cpu)


def figures(measured: HttpMeasured) -> List[Dict[str, Any]]:
    """The runs' figures, for ``bench --json``."""
    return [dataclasses.asdict(run) for run in measured.runs]


def cpu_figures(measured: HttpMeasured) -> List[Dict[str, Any]]:
    """The worker's CPU per event, for ``bench --json``: one entry per serializer and batch size."""
    return [{"serializer": name, "batch": size, "us_per_event": seconds * 1e6}
            for (name, size), seconds in measured.cpu.items()]


def report(measured: HttpMeasured) -> List[str]:
    runs = measured.runs
    plain, session, batched = runs
    rows = [
        [run.label, f"{run.items:,}", f"{run.requests:,}", f"{run.items_per_s:,.0f}",
         ratio(run.items_per_s, plain.items_per_s), ratio(run.items_per_s, session.items_per_s)]
        for run in runs
    ]
    header = ["HTTP delivery", "items", "requests", "items/s", "vs (f)", "vs (g)"]
    return [
        "HTTP: to a Receiver on 127.0.0.1 in this process, one run each; items/s from the first",
        "post until the receiver had answered every item.",
        "",
        *table(header, rows),
        "",
        f"HTTP batched (h)/(f): {ratio(batched.items_per_s, plain.items_per_s)},"
        f" (h)/(g): {ratio(batched.items_per_s, session.items_per_s)}",
        "",
        "Worker CPU per event: time.thread_time() of the thread calling HttpSink (defaults, own session),",
        "per event of {event, user, properties: {id, path, at}}; the best of up to 3 rounds.",
        "",
        *table(
            ["serializer", *(f"us/event, batches of {size:,}" for size in CPU_BATCHES)],
            [[name, *(f"{measured.cpu[(name, size)] * 1e6:.2f}" for size in CPU_BATCHES)]
             for name in dict.fromkeys(name for name, _ in measured.cpu)],
        ),
    ]
