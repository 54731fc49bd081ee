"""The sinks section's Redis part: ``XADD`` per item, against
:class:`~batchdispatch.sinks.redis.RedisStreamSink`.

Both write the bench's payload as JSON in a field ``data`` of a stream of
the Redis on 127.0.0.1:6379 (a stream of the bench's own, deleted after):

* per item, one ``client.xadd(stream, {"data": json.dumps(item)})`` per
  item on a ``redis.Redis``, as an application writes it without this
  library: a round trip each;
* batched, a BackgroundDispatcher (``delay=0.01``, batches of up to
  :data:`BATCH`) over a RedisStreamSink: a pipeline of ``XADD`` per batch.

Each figure is items per second from the first write (or enqueue) until
the last is acknowledged, checked against the stream's length; the best
of :func:`~.sinks.rounds` rounds, each running both ways in turn.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any, List, TextIO

from .._dispatcher import BackgroundDispatcher
from .harness import DRAIN_TIMEOUT, PAYLOAD, BenchError
from .options import BenchOptions
from .output import status
from .sinks import Row, Unavailable, rounds

#: The Redis the part writes to.
URL = "redis://127.0.0.1:6379/0"
#: The largest batch the sink gets, and the dispatcher's delay.
BATCH, DELAY = 1000, 0.01


def measure(options: BenchOptions, err: TextIO) -> List[Row]:
    try:
        import redis
    except ImportError:
        raise Unavailable('redis-py is not installed: pip install redis (the extra redis)') from None
    client: Any = redis.Redis.from_url(URL, socket_timeout=10, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise Unavailable(f"Redis does not answer on {URL}: {type(exc).__name__}") from None
    stream = f"batchdispatch-bench-{uuid.uuid4().hex[:12]}"
    slow = fast = 0.0
    try:
        for _ in range(rounds(options)):
            status(err, f"bench: Redis, {options.sink_per_item:,} XADD one by one")
            slow = max(slow, _per_item(client, stream, options.sink_per_item))
            client.delete(stream)
            status(err, f"bench: Redis, {options.sink_items:,} items through RedisStreamSink")
            fast = max(fast, _batched(client, stream, options.sink_items))
            client.delete(stream)
    finally:
        client.delete(stream)
        client.close()
    return [("Redis stream", "client.xadd() per item", slow, fast)]


def _per_item(client: Any, stream: str, count: int) -> float:
    xadd, dumps = client.xadd, json.dumps
    started = time.perf_counter()
    for item in itertools.repeat(PAYLOAD, count):
        xadd(stream, {"data": dumps(item)})
    elapsed = time.perf_counter() - started
    if client.xlen(stream) != count:
        raise BenchError(f"Redis per item: the stream holds {client.xlen(stream):,} of {count:,} entries")
    return count / elapsed


def _batched(client: Any, stream: str, count: int) -> float:
    from ..sinks.redis import RedisStreamSink

    sink = RedisStreamSink(URL, stream)
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=BATCH, max_queue_size=None, name="bench-redis",
    )
    try:
        dispatcher.enqueue(PAYLOAD)  # warm-up: the worker runs and the sink's connection is open
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT) or client.xlen(stream) != 1:
            error = dispatcher.stats().last_error
            raise BenchError(f"RedisStreamSink: the warm-up item was not delivered: {error!r}")
        enqueue = dispatcher.enqueue
        started = time.perf_counter()
        for item in itertools.repeat(PAYLOAD, count):
            enqueue(item)
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"RedisStreamSink: delivery took more than {DRAIN_TIMEOUT:g} s")
        elapsed = time.perf_counter() - started
        stats = dispatcher.stats()
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
        sink.close()
    if stats.failed or stats.dropped or client.xlen(stream) != count + 1:
        raise BenchError(
            f"RedisStreamSink: the stream holds {client.xlen(stream) - 1:,} of {count:,} items"
            f" ({stats.failed:,} failed, {stats.dropped:,} dropped, last error: {stats.last_error!r})"
        )
    return count / elapsed
