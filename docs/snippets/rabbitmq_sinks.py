"""The RabbitMQ page's sinks: ``python docs/snippets/rabbitmq_sinks.py``.

It uses the shared broker on 127.0.0.1:5672 with exchanges and queues of
its own: a random prefix, passed in AMQP_PREFIX, names them; the queues
are exclusive and go with the connection, the exchanges are deleted at
the end. rabbitmq_sinks.out is what it prints.
"""
# needs: rabbitmq

import json
import os
import uuid

import pika

prefix = f"snippet-{uuid.uuid4().hex[:12]}-"
os.environ.update(AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2F", AMQP_PREFIX=prefix)
broker = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
channel = broker.channel()
channel.queue_declare(prefix + "events", exclusive=True)
for exchange, binding in (("orders", "order.created"), ("audit", "audit.*")):
    channel.exchange_declare(prefix + exchange, "topic", auto_delete=True)
    channel.queue_declare(prefix + exchange, exclusive=True)
    channel.queue_bind(prefix + exchange, prefix + exchange, binding)


def received(queue):
    """The messages waiting in *queue*: (routing key without the prefix, properties we set, body)."""
    found = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        ours = {"message_id": properties.message_id, "headers": properties.headers}
        found.append((method.routing_key.removeprefix(prefix), {k: v for k, v in ours.items() if v},
                      json.loads(body)))


# [start rabbitmq-sink]
import os

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.rabbitmq import RabbitMQSink

URL = os.environ["AMQP_URL"]                  # amqp://app:secret@mq.internal:5672/%2F, say
PREFIX = os.environ.get("AMQP_PREFIX", "")    # exchange and queue names are PREFIX + "events", and so on
sink = RabbitMQSink(URL, routing_key=PREFIX + "events")
events = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500,
                              retry=RetryPolicy(max_attempts=10, max_backoff=30))
events.enqueue({"event": "signup", "user": 42})
...
events.shutdown(timeout=10)   # delivers what is left
sink.close()                  # closes the sink's connections
# [end rabbitmq-sink]

print(f"queue events: {received(prefix + 'events')}")

# [start rabbitmq-properties]
import pika

sink = RabbitMQSink(
    URL, exchange=PREFIX + "orders", routing_key="order.created",
    properties=lambda order: pika.BasicProperties(message_id=order["id"], headers={"v": 2}),
)
# [end rabbitmq-properties]

sink([{"id": "o-1001", "total": 1250}])  # a sink is the dispatch callable: one batch, confirmed
sink.close()
print(f"exchange orders: {received(prefix + 'orders')}")

# [start rabbitmq-keyed]
from batchdispatch import KeyedDispatcher

sink = RabbitMQSink(URL, exchange=PREFIX + "audit", routing_key=lambda tenant: f"audit.{tenant}")
audit = KeyedDispatcher(sink, delay=0.5, max_concurrent_batches=4,
                        retry=RetryPolicy(max_attempts=10))
audit.enqueue("acme", {"who": 7, "did": "login"})
# [end rabbitmq-keyed]

assert audit.shutdown(timeout=10)
sink.close()
print(f"exchange audit: {received(prefix + 'audit')}")
broker.close()  # the exclusive queues go with it, and the exchanges with their last queue
