"""The Redis page's Django module and view: ``python docs/snippets/redis_django.py``.

myapp/events.py and myapp/views.py are in modules/redis_django/. It uses
the shared server on 127.0.0.1:6379; the team is a random name, so the
stream (audit:<team>) is its own, deleted at the end. redis_django.out is
what it prints.
"""
# needs: redis

import atexit
import os
import sys
import uuid
from types import SimpleNamespace

import django
import redis
from django.conf import settings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules", "redis_django"))
settings.configure(EVENTS_REDIS_URL="redis://127.0.0.1:6379/0")
django.setup()
team = f"snippet-{uuid.uuid4().hex[:12]}"
reader = redis.Redis.from_url(settings.EVENTS_REDIS_URL, decode_responses=True)


@atexit.register
def delete_stream():  # even when a check below fails
    reader.delete(f"audit:{team}")
    reader.close()


from myapp.events import audit, sink
from myapp.views import rename_project

request = SimpleNamespace(user=SimpleNamespace(pk=42))  # what the view reads of Django's request
answer = rename_project(request, team, "billing")
print(f"rename_project: {answer.status_code}")
assert audit.shutdown(timeout=10)  # a sync point: the entry is written
sink.close()
print(f"audit:<team>: {[fields for _, fields in reader.xrange(f'audit:{team}')]}")
