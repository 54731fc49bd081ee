"""The WSGI app that tests/with_server/test_uwsgi.py runs under a real uWSGI.

``GET /?n=7`` enqueues the event ``{"n": 7, "pid": <worker pid>}`` on a
BackgroundDispatcher that POSTs batches to ``BATCHDISPATCH_TEST_URL``, and
answers with the worker's pid and whether uWSGI gave it threads.
``GET /ready`` enqueues nothing. The dispatcher is built at import, in the
master unless ``--lazy-apps``, and starts (or decides it cannot) at a
worker's first enqueue.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, List, Tuple

import uwsgi  # type: ignore[import-not-found]

from batchdispatch import BackgroundDispatcher
from batchdispatch.http import HttpSink

BATCH = int(os.environ.get("BATCHDISPATCH_TEST_BATCH", "5"))

events: BackgroundDispatcher[Any] = BackgroundDispatcher(
    HttpSink(os.environ["BATCHDISPATCH_TEST_URL"]),
    delay=float(os.environ.get("BATCHDISPATCH_TEST_DELAY", "60")),
    max_batch_size=BATCH,
    name="uwsgi-test",
)

if os.environ.get("BATCHDISPATCH_TEST_AT_IMPORT"):
    # Enqueued while the app loads: in the master unless --lazy-apps, before
    # uWSGI forks the workers from C.
    events.enqueue({"n": -1, "pid": os.getpid()})


def application(environ: Any, start_response: Callable[[str, List[Tuple[str, str]]], Any]) -> Iterable[bytes]:
    query = environ.get("QUERY_STRING", "")
    accepted = None
    if environ.get("PATH_INFO") != "/ready":
        n = int(query.partition("n=")[2])
        accepted = events.enqueue({"n": n, "pid": os.getpid()})
    body = json.dumps({"pid": os.getpid(), "has_threads": uwsgi.has_threads, "accepted": accepted})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
