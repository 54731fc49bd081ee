"""The sinks section's RabbitMQ part: publish-and-confirm per item against
:class:`~batchdispatch.sinks.rabbitmq.RabbitMQSink`.

Both publish the bench's payload as persistent JSON messages to a durable
queue of the bench's own (deleted after) on the RabbitMQ of
127.0.0.1:5672 (guest), through the default exchange, with publisher
confirms, so each message counts once the broker has taken charge of it:

* per item, ``channel.basic_publish(..., mandatory=True)`` on a pika
  ``BlockingChannel`` in confirm mode, which waits for each message's
  confirm before the next: what an application writes without this
  library;
* batched, a BackgroundDispatcher (``delay=0.01``, batches of up to
  :data:`BATCH`) over a RabbitMQSink: each batch published at once, its
  confirms awaited together.

Each figure is items per second from the first publish (or enqueue) until
the last confirm, checked against the queue's message count; the best of
:func:`~.sinks.rounds` rounds, each running both ways in turn.
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

#: The broker the part publishes to.
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The largest batch the sink gets, and the dispatcher's delay.
BATCH, DELAY = 1000, 0.01


def measure(options: BenchOptions, err: TextIO) -> List[Row]:
    try:
        import pika
        import pika.exceptions
    except ImportError:
        raise Unavailable('pika is not installed: pip install pika (the extra rabbitmq)') from None
    parameters = pika.URLParameters(URL)
    parameters.socket_timeout = 2
    try:
        connection: Any = pika.BlockingConnection(parameters)
    except pika.exceptions.AMQPError as exc:
        where = f"{parameters.host}:{parameters.port}"
        raise Unavailable(f"RabbitMQ does not answer on {where}: {type(exc).__name__}") from None
    queue = f"batchdispatch-bench-{uuid.uuid4().hex[:12]}"
    slow = fast = 0.0
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        for _ in range(rounds(options)):
            status(err, f"bench: RabbitMQ, {options.sink_per_item:,} publishes confirmed one by one")
            slow = max(slow, _per_item(pika, connection, queue, options.sink_per_item))
            channel.queue_purge(queue)
            status(err, f"bench: RabbitMQ, {options.sink_items:,} items through RabbitMQSink")
            fast = max(fast, _batched(channel, queue, options.sink_items))
            channel.queue_purge(queue)
    finally:
        if connection.is_open:
            connection.channel().queue_delete(queue)
            connection.close()
    return [("RabbitMQ, confirms", "basic_publish + confirm per item", slow, fast)]


def _count(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def _per_item(pika: Any, connection: Any, queue: str, count: int) -> float:
    channel = connection.channel()
    channel.confirm_delivery()
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    publish, dumps = channel.basic_publish, json.dumps
    started = time.perf_counter()
    for item in itertools.repeat(PAYLOAD, count):
        publish("", queue, dumps(item).encode(), properties, mandatory=True)
    elapsed = time.perf_counter() - started
    held = _count(channel, queue)
    channel.close()
    if held != count:
        raise BenchError(f"RabbitMQ per item: the queue holds {held:,} of {count:,} messages")
    return count / elapsed


def _batched(channel: Any, queue: str, count: int) -> float:
    from ..sinks.rabbitmq import RabbitMQSink

    sink = RabbitMQSink(URL, routing_key=queue)
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=BATCH, max_queue_size=None, name="bench-rabbitmq",
    )
    try:
        dispatcher.enqueue(PAYLOAD)  # warm-up: the worker runs and its connection is open
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT) or _count(channel, queue) != 1:
            error = dispatcher.stats().last_error
            raise BenchError(f"RabbitMQSink: the warm-up item was not delivered: {error!r}")
        enqueue = dispatcher.enqueue
        started = time.perf_counter()
        for item in itertools.repeat(PAYLOAD, count):
            enqueue(item)
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"RabbitMQSink: delivery took more than {DRAIN_TIMEOUT:g} s")
        elapsed = time.perf_counter() - started
        stats = dispatcher.stats()
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
        sink.close()
    held = _count(channel, queue)
    if stats.failed or stats.dropped or held != count + 1:
        raise BenchError(
            f"RabbitMQSink: the queue holds {held - 1:,} of {count:,} items"
            f" ({stats.failed:,} failed, {stats.dropped:,} dropped, last error: {stats.last_error!r})"
        )
    return count / elapsed
