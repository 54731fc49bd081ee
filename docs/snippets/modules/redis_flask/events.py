# events.py
import os

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.redis import RedisStreamSink

PREFIX = os.environ.get("STREAM_PREFIX", "")  # stream names are PREFIX + "events", and so on
sink = RedisStreamSink(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), PREFIX + "events",
                       maxlen=1_000_000)
events = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500, name="redis-events",
                              retry=RetryPolicy(max_attempts=10, max_backoff=30))
