"""The analytics page's dispatcher and view: ``python docs/snippets/analytics_views.py``.

A local Receiver stands in for the collector and checks the signature;
analytics_views.out is what it prints.
"""

import os
from types import SimpleNamespace

from batchdispatch.testing import Receiver

secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
collector = Receiver(secret=secret).start()
os.environ.update(COLLECTOR_URL=collector.url, COLLECTOR_API_KEY="example-only", COLLECTOR_SECRET=secret)

# [start analytics]
import os

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.http import HttpSink

sink = HttpSink(
    os.environ["COLLECTOR_URL"],                 # https://collector.example/v1/events, say
    headers={"api-key": os.environ["COLLECTOR_API_KEY"]},
    secret=os.environ.get("COLLECTOR_SECRET"),   # signs each request (optional)
)
analytics = BackgroundDispatcher(
    sink, delay=1.0, max_batch_size=500,
    retry=RetryPolicy(max_attempts=3, backoff=2.0),
    name="analytics",
)


def article(request, slug):
    analytics.enqueue({"event": "page_view", "path": request.path, "user": request.user.id})
    ...
# [end analytics]


for user in (7, 8):  # two requests, as a framework would pass them
    article(SimpleNamespace(path="/articles/batching/", user=SimpleNamespace(id=user)), "batching")
assert analytics.shutdown(timeout=10)  # a sync point: every batch answered
sink.close()
print(f"the collector got {collector.items}, "
      f"signed: {all(request.verified for request in collector.requests)}")
collector.close()
