"""The WSGI app that tests/with_server/test_prometheus_gunicorn.py runs under a real gunicorn.

``GET /order`` enqueues one item on the BackgroundDispatcher ``orders``
(delay a minute: nothing goes out while serving), counts it in the app's
own ``app_orders_total`` and answers with the worker's pid. ``GET
/metrics`` serves the app's own metrics, added up over the workers by
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``); the
dispatchers' figures are served by each worker on its own port
(examples/gunicorn_metrics.conf.py).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest, multiprocess

from batchdispatch import BackgroundDispatcher

orders: BackgroundDispatcher[Any] = BackgroundDispatcher(lambda batch: None, delay=60, name="orders")
ORDERS = Counter("app_orders", "Orders taken, all workers together.")


def app(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    headers: List[Any]
    if path == "/order":
        orders.enqueue({"order": environ.get("QUERY_STRING", "")})
        ORDERS.inc()
        body, headers = str(os.getpid()).encode(), [("Content-Type", "text/plain")]
    elif path == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body, headers = generate_latest(registry), [("Content-Type", CONTENT_TYPE_LATEST)]
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", headers)
    return [body]
