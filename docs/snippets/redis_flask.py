"""The Redis page's Flask app, its dispatcher in a module of its own: ``python docs/snippets/redis_flask.py``.

events.py and app.py are in modules/redis_flask/. It uses the shared
server on 127.0.0.1:6379, with a stream name of its own (a random prefix,
passed in STREAM_PREFIX), deleted at the end. redis_flask.out is what it
prints.
"""
# needs: redis

import atexit
import os
import sys
import uuid

import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules", "redis_flask"))
os.environ.update(REDIS_URL="redis://127.0.0.1:6379/0", STREAM_PREFIX=f"snippet-{uuid.uuid4().hex[:12]}-")
reader = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


@atexit.register
def delete_streams():  # even when a check below fails
    names = list(reader.scan_iter(f"{os.environ['STREAM_PREFIX']}*"))
    if names:
        reader.delete(*names)
    reader.close()


from app import app
from events import PREFIX, events, sink

answer = app.test_client().post("/signup", data={"email": "ada@example.com"})
print(f"POST /signup: {answer.status_code}")
assert events.shutdown(timeout=10)  # a sync point: the entry is written
sink.close()
print(f"events: {[fields for _, fields in reader.xrange(PREFIX + 'events')]}")
