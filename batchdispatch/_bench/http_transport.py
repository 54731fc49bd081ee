"""The ``http`` section's transport rows: one POST of a batch through HttpSink, and through urllib3 directly.

Issue 19 asked whether posting through urllib3's pool directly, without
requests, would cut the worker's CPU per event. HttpSink's own session
sends through its adapter (:mod:`batchdispatch.http._direct`): a
``PreparedRequest``, the adapter's ``send``, a ``requests.Response``,
then the answer read and judged. Three ways (:data:`WAYS`) post the same
batches of analytics events (:func:`.http.event`), with the same headers,
to one Receiver on 127.0.0.1 in this process:

HttpSink
    The sink with its defaults, called with the batch as its worker calls
    it: serialize, plan the body, headers, the POST, the answer.
urlopen on the sink's pool
    :func:`~batchdispatch.http.json_serializer`, the headers the sink sent
    (a new ``webhook-id`` and ``webhook-timestamp`` per batch), and
    ``HTTPConnectionPool.urlopen`` on a pool of the class the sink's
    adapter makes (its connections read the answer by the call's
    deadline), with the sink's Retry, a deadline-bound Timeout and the
    call's deadline set: what a sink that keeps its deadline would do
    without requests.
urlopen on a plain pool
    The same on :class:`urllib3.HTTPConnectionPool` with a plain Timeout:
    the least a POST through urllib3 costs.

HttpSink's figure less the second's is the most a sink posting through
urllib3 would save: it also holds the sink's own work around the POST
(the plan of bodies, its counters, judging the answer), which would stay.

The ways take turns batch by batch: each batch is posted by every way,
one after the other, in an order that starts one further along in each
round, so that a busy moment of this shared machine weighs on all of them
alike. (With each way posting 200 batches in a row, two runs gave a saving
of 26 and 251 µs per batch of 100; batch by batch, three gave 257 to 295.)
Each way's CPU time (:func:`time.thread_time`) around its own POSTs is
summed over the round's :data:`ROUND_EVENTS` events of each batch size; the
report gives the median of the rounds, per batch. Before the first round,
the receiver must have got the same header names from every way, or the
bench stops with an error.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, List, Mapping, TextIO, Tuple

from .harness import BenchError
from .http import CPU_BATCHES, event
from .options import BenchOptions
from .output import ratio, status, table

#: The ways, in the order of the table: the first is HttpSink, and the others' savings are against it.
WAYS = ("HttpSink (requests, its adapter)", "urlopen, the sink's pool", "urlopen, a plain pool")
#: Headers made per request: urllib3 writes Host and Content-Length, and each batch has its own id and time.
PER_REQUEST = frozenset(("host", "content-length", "webhook-id", "webhook-timestamp"))
#: HttpSink's default timeout, (connect, read) seconds: the direct ways use the same.
CONNECT, READ = 3.05, 30.0
#: Events of each batch size that every way posts in a round: 20 batches of 100, 2 of 1,000.
ROUND_EVENTS = 2_000
#: Rounds per ``--repeat``: each is short, so that the median can leave out the ones another process cut.
ROUNDS_PER_REPEAT = 10

#: One POST of a batch, however it is made; it raises BenchError unless the answer is a 200.
Post = Callable[[List[Any]], None]


@dataclasses.dataclass(frozen=True)
class TransportMeasured:
    """Seconds of this thread's CPU per batch, by (way, batch size): the median of *rounds*."""

    per_batch: Dict[Tuple[str, int], float]
    rounds: int


def _direct(url: str, headers: Mapping[str, str], keep_deadline: bool) -> Tuple[Post, Callable[[], None]]:
    """A POST through ``urlopen`` on a pool for *url*, and what closes the pool.

    With *keep_deadline*, the pool, Retry, Timeout and thread-local
    deadline are those HttpSink's own session uses; without, urllib3's own.
    """
    import urllib3

    from ..http import json_serializer
    from ..http._deadline import _call, _deadline_pool, _DeadlineTimeout
    from ..http._retries import _bounded_retry, default_retry

    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    pool_class: Any = urllib3.HTTPConnectionPool
    if keep_deadline:
        pool_class = _deadline_pool(pool_class)
    pool = pool_class(parts.hostname, parts.port, maxsize=10)
    retry = _bounded_retry(default_retry())
    fixed = dict(headers)

    def post(batch: List[Any]) -> None:
        body = json_serializer(batch)
        sent = dict(fixed)
        sent["webhook-id"] = uuid.uuid4().hex
        sent["webhook-timestamp"] = str(int(time.time()))
        outer = getattr(_call, "deadline", None)
        timeout: Any
        if keep_deadline:
            deadline = time.monotonic() + CONNECT + READ
            _call.deadline = deadline
            timeout = _DeadlineTimeout(CONNECT, READ, deadline)
        else:
            timeout = urllib3.Timeout(connect=CONNECT, read=READ)
        try:
            response = pool.urlopen("POST", path, body=body, headers=sent, retries=retry, redirect=False,
                                    timeout=timeout, preload_content=False)
            response.read()
            response.release_conn()
        finally:
            _call.deadline = outer
        if response.status != 200:
            raise BenchError(f"urlopen: the receiver answered {response.status}")

    return post, pool.close


def _same_headers(receiver: Any, posts: Mapping[str, Post]) -> None:
    """Post two events each way; the receiver must have got the same header names from each."""
    names: Dict[str, List[str]] = {}
    for way, post in posts.items():
        receiver.clear()
        post([event(0), event(1)])
        names[way] = sorted(receiver.requests[-1].headers)
    first = names[WAYS[0]]
    for way, got in names.items():
        if got != first:
            raise BenchError(f"{way} sent the headers {got}, HttpSink {first}")
    receiver.clear()


def measure(options: BenchOptions, err: TextIO) -> TransportMeasured:
    """Every way in turn, batch by batch, round after round, with batches of each size, to one receiver."""
    from ..http import HttpSink
    from ..testing import Receiver

    rounds = ROUNDS_PER_REPEAT * max(1, options.repeat)
    batches = {size: [[event(size * b + k) for k in range(size)] for b in range(ROUND_EVENTS // size)]
               for size in CPU_BATCHES}
    samples: Dict[Tuple[str, int], List[float]] = {}
    clock = time.thread_time
    with Receiver() as receiver, HttpSink(receiver.url) as sink:
        sink([event(0)])  # the sink's connection is open, and the receiver has its headers
        headers = {k: v for k, v in receiver.requests[-1].headers.items() if k not in PER_REQUEST}
        own, close_own = _direct(receiver.url, headers, keep_deadline=True)
        plain, close_plain = _direct(receiver.url, headers, keep_deadline=False)
        posts: Dict[str, Post] = dict(zip(WAYS, (sink, own, plain)))
        try:
            _same_headers(receiver, posts)
            for round_ in range(rounds):
                status(err, f"bench: HTTP, POST through requests or urllib3, round {round_ + 1} of {rounds}")
                start = round_ % len(WAYS)
                order = [(way, posts[way]) for way in WAYS[start:] + WAYS[:start]]
                for size, sized in batches.items():
                    spent = dict.fromkeys(WAYS, 0.0)
                    for batch in sized:
                        for way, post in order:
                            started = clock()
                            post(batch)
                            spent[way] += clock() - started
                    sent = size * len(sized) * len(WAYS)
                    if receiver.item_count != sent:
                        raise BenchError(f"the POST through requests or urllib3: the receiver got"
                                         f" {receiver.item_count:,} of {sent:,} events")
                    receiver.clear()
                    for way, seconds in spent.items():
                        samples.setdefault((way, size), []).append(seconds / len(sized))
        finally:
            close_own()
            close_plain()
    return TransportMeasured({key: statistics.median(values) for key, values in samples.items()}, rounds)


def figures(measured: TransportMeasured) -> Dict[str, Any]:
    """For ``bench --json``: each way's CPU per batch and per event, by batch size."""
    return {
        "rounds": measured.rounds,
        "ways": [
            {
                "label": way,
                "us_per_batch": {str(size): measured.per_batch[(way, size)] * 1e6 for size in CPU_BATCHES},
                "us_per_event": {str(size): measured.per_batch[(way, size)] / size * 1e6
                                 for size in CPU_BATCHES},
            }
            for way in WAYS
        ],
    }


def report(measured: TransportMeasured) -> List[str]:
    per_batch = measured.per_batch
    base = WAYS[0]

    def cells(way: str, size: int) -> List[str]:
        spent = per_batch[(way, size)]
        return [f"{spent * 1e6:,.0f}", f"{spent / size * 1e6:.2f}", ratio(spent, per_batch[(base, size)])]

    rows = [[way, *(cell for size in CPU_BATCHES for cell in cells(way, size))] for way in WAYS]
    header = ["POST through", *(cell for size in CPU_BATCHES
                                for cell in (f"us/batch of {size:,}", "us/event", "vs HttpSink"))]
    saved = "; ".join(
        f"{(per_batch[(base, size)] - per_batch[(WAYS[1], size)]) * 1e6:+,.0f} us per batch of {size:,}"
        f" ({(per_batch[(base, size)] - per_batch[(WAYS[1], size)]) / size * 1e6:+.2f} us per event)"
        for size in CPU_BATCHES
    )
    rounds = f"{measured.rounds} round{'s' if measured.rounds > 1 else ''}"
    return [
        "The POST, through requests or urllib3: the same batches (json_serializer) with the same headers;",
        "time.thread_time() of the posting thread per batch, each batch posted by every way in turn;",
        f"the median of {rounds} of {ROUND_EVENTS:,} events per batch size.",
        "",
        *table(header, rows),
        "",
        f"HttpSink less urlopen on the sink's pool: {saved}.",
    ]
