# myapp/events.py
from django.conf import settings

from batchdispatch import KeyedDispatcher, RetryPolicy
from batchdispatch.sinks.redis import RedisStreamSink

sink = RedisStreamSink(settings.EVENTS_REDIS_URL, lambda team: f"audit:{team}")
audit = KeyedDispatcher(sink, delay=0.5, max_concurrent_batches=4, name="redis-audit",
                        retry=RetryPolicy(max_attempts=10, max_backoff=30))
