# events.py
import os

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.rabbitmq import RabbitMQSink

PREFIX = os.environ.get("AMQP_PREFIX", "")  # exchange and queue names are PREFIX + "events", and so on
sink = RabbitMQSink(os.environ["AMQP_URL"], exchange=PREFIX + "events", routing_key="web")
events = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500, name="rabbitmq-events",
                              retry=RetryPolicy(max_attempts=10, max_backoff=30))
