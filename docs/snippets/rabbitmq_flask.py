"""The RabbitMQ page's Flask app and its dispatcher's module: ``python docs/snippets/rabbitmq_flask.py``.

events.py and app.py are in modules/rabbitmq_flask/. It uses the shared
broker on 127.0.0.1:5672, with an exchange and a queue of its own (a
random prefix, passed in AMQP_PREFIX) that go with its connection.
rabbitmq_flask.out is what it prints.
"""
# needs: rabbitmq

import json
import os
import sys
import uuid

import pika

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules", "rabbitmq_flask"))
prefix = f"snippet-{uuid.uuid4().hex[:12]}-"
os.environ.update(AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2F", AMQP_PREFIX=prefix)
broker = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
channel = broker.channel()
channel.exchange_declare(prefix + "events", "direct", auto_delete=True)
channel.queue_declare(prefix + "web", exclusive=True)
channel.queue_bind(prefix + "web", prefix + "events", "web")

from app import app
from events import events, sink

answer = app.test_client().post("/orders/1001/paid")
print(f"POST /orders/1001/paid: {answer.status_code}")
assert events.shutdown(timeout=10)  # a sync point: the broker confirmed the message
sink.close()
method, _, body = channel.basic_get(prefix + "web", auto_ack=True)
print(f"routed with key {method.routing_key!r}: {json.loads(body)}")
broker.close()  # the exclusive queue goes with it, and the exchange with its last queue
