"""The RabbitMQ page's Django module and view: ``python docs/snippets/rabbitmq_django.py``.

myapp/ is in modules/rabbitmq_django/. It uses the shared broker on
127.0.0.1:5672, with queues of its own (a random prefix, in the setting
AMQP_PREFIX) that go with its connection. rabbitmq_django.out is what it
prints.
"""
# needs: rabbitmq

import json
import os
import sys
import uuid

import django
import pika
from django.conf import settings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules", "rabbitmq_django"))
settings.configure(AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2F",
                   AMQP_PREFIX=f"snippet-{uuid.uuid4().hex[:12]}-")
django.setup()
broker = pika.BlockingConnection(pika.URLParameters(settings.AMQP_URL))
channel = broker.channel()
for queue in ("thumbnails", "virus-scan"):
    channel.queue_declare(settings.AMQP_PREFIX + queue, exclusive=True)

from myapp.events import jobs, sink
from myapp.views import upload

print(f"upload: {upload(request=None).status_code}")  # the stand-in save_upload reads nothing of it
assert jobs.shutdown(timeout=10)  # a sync point: the broker confirmed both messages
sink.close()
for queue in ("thumbnails", "virus-scan"):
    method, _, body = channel.basic_get(settings.AMQP_PREFIX + queue, auto_ack=True)
    print(f"queue {queue}: {json.loads(body)}")
broker.close()  # the exclusive queues go with it
