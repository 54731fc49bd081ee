"""The Redis page's stream sinks: ``python docs/snippets/redis_streams.py``.

It uses the shared server on 127.0.0.1:6379, with stream names of its own
(a random prefix, passed in STREAM_PREFIX), deleted at the end.
redis_streams.out is what it prints.
"""
# needs: redis

import atexit
import os
import uuid

import redis

os.environ.update(REDIS_URL="redis://127.0.0.1:6379/0", STREAM_PREFIX=f"snippet-{uuid.uuid4().hex[:12]}-")
reader = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


@atexit.register
def delete_streams():  # even when a check below fails
    names = list(reader.scan_iter(f"{os.environ['STREAM_PREFIX']}*"))
    if names:
        reader.delete(*names)
    reader.close()


# [start redis-sink]
import os

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.redis import RedisStreamSink

PREFIX = os.environ.get("STREAM_PREFIX", "")  # stream names are PREFIX + "events", and so on
sink = RedisStreamSink(os.environ["REDIS_URL"], PREFIX + "events", maxlen=1_000_000)
events = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500,
                              retry=RetryPolicy(max_attempts=10, max_backoff=30))
events.enqueue({"event": "signup", "user": 42})
...
events.shutdown(timeout=10)   # delivers what is left
sink.close()                  # closes the client the sink made from the URL
# [end redis-sink]

print(f"events: {[fields for _, fields in reader.xrange(PREFIX + 'events')]}")

# [start redis-fields]
import redis

client = redis.Redis.from_url(os.environ["REDIS_URL"])
logins = RedisStreamSink(client, PREFIX + "logins",
                         fields=lambda item: {"user": item["user"], "at": item["at"]})
# [end redis-fields]

logins([{"user": 42, "at": "2026-12-01T10:00:00Z"}])  # a sink is the dispatch callable: one batch
print(f"logins: {[fields for _, fields in reader.xrange(PREFIX + 'logins')]}")
logins.close()

# [start redis-keyed]
from batchdispatch import KeyedDispatcher

sink = RedisStreamSink(client, lambda tenant: f"{PREFIX}events:{tenant}", maxlen=100_000)
events = KeyedDispatcher(sink, delay=0.2, max_concurrent_batches=4,
                         retry=RetryPolicy(max_attempts=10))
events.enqueue("acme", {"event": "login"})
# [end redis-keyed]

events.enqueue("globex", {"event": "logout"})
assert events.shutdown(timeout=10)
for tenant in ("acme", "globex"):
    print(f"events:{tenant}: {[fields for _, fields in reader.xrange(f'{PREFIX}events:{tenant}')]}")
sink.close()
client.close()  # yours: the sink never closes a client it was given
