"""The metrics page's /metrics next to a Flask app: ``python docs/snippets/metrics_flask.py``.

The app's test client fetches /metrics; metrics_flask.out is what it prints.
"""

from batchdispatch import BackgroundDispatcher

events = BackgroundDispatcher(lambda batch: None, delay=0.01, name="events")
events.enqueue({"event": "signup"})
assert events.flush(timeout=5)

# [start metrics-flask]
from flask import Flask
from prometheus_client import REGISTRY, make_wsgi_app
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from batchdispatch.contrib.prometheus import DispatcherCollector

app = Flask(__name__)  # your app, with its views
REGISTRY.register(DispatcherCollector())
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})
# [end metrics-flask]

answer = app.test_client().get("/metrics")
print(f"GET /metrics: {answer.status_code}")
print(next(line for line in answer.text.splitlines() if line.startswith("batchdispatch_items_dispatched")))
assert events.shutdown(timeout=5)
