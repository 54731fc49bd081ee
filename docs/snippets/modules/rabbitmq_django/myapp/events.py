# myapp/events.py
from django.conf import settings

from batchdispatch import KeyedDispatcher, RetryPolicy
from batchdispatch.sinks.rabbitmq import RabbitMQSink

# Keys are queue names, on the default exchange (routing_key=None).
sink = RabbitMQSink(settings.AMQP_URL)
jobs = KeyedDispatcher(sink, delay=0.2, max_concurrent_batches=2, name="rabbitmq-jobs",
                       retry=RetryPolicy(max_attempts=10, max_backoff=30))
