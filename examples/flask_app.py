"""A Flask app that records one event per request: run ``python examples/flask_app.py``.

That one command starts a receiver on 127.0.0.1
(:class:`batchdispatch.testing.Receiver`), serves this app on another port of
127.0.0.1, sends it a few requests, and prints what reached the receiver.

In a real deployment the configuration comes from the environment, as
Flask reads it with ``app.config.from_prefixed_env()``: a variable
``FLASK_BATCHDISPATCH_<KEY>`` sets the key ``BATCHDISPATCH_<KEY>`` (a JSON
value, or a plain string), and nothing is started for you::

    FLASK_BATCHDISPATCH_URL=https://events.example.com/ingest gunicorn -w 2 examples.flask_app:app
    FLASK_BATCHDISPATCH_URL=http://127.0.0.1:9000/ flask --app examples/flask_app.py run

Without ``FLASK_BATCHDISPATCH_URL``, importing the module fails at once with
``BATCHDISPATCH_URL is required``: only ``python examples/flask_app.py``
starts a receiver of its own. ``GET /view?id=<id>`` enqueues
``{"event": "page_view", "id": <id>, "pid": <worker pid>}`` and answers 202.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from typing import Any, Mapping, Optional

import requests
from flask import Flask, request
from werkzeug.serving import make_server

from batchdispatch.contrib.flask import BatchDispatch
from batchdispatch.testing import Receiver

#: Requests the one-command demo sends.
DEMO_REQUESTS = 20

events = BatchDispatch()


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Build the app from the environment, then *config*; no thread starts here."""
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_BATCHDISPATCH_URL=... sets BATCHDISPATCH_URL
    app.config.update(config or {})
    events.init_app(app)  # checks the config: an error names the bad key

    @app.get("/view")
    def view() -> Any:
        event = {"event": "page_view", "id": request.args.get("id") or uuid.uuid4().hex, "pid": os.getpid()}
        accepted = events.enqueue(event)  # returns at once; the worker ships it later
        return {"accepted": accepted}, 202

    return app


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with Receiver() as receiver:
        app = create_app({"BATCHDISPATCH_URL": receiver.url})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, name="demo-server")
        serving.start()
        try:
            with requests.Session() as http:
                for n in range(DEMO_REQUESTS):
                    answer = http.get(f"http://127.0.0.1:{server.server_port}/view",
                                      params={"id": n}, timeout=5)
                    answer.raise_for_status()
        finally:
            server.shutdown()
            serving.join()
            server.server_close()
        with app.app_context():
            delivered = events.flush(timeout=5)
            print(f"flush: {'delivered' if delivered else 'timed out'}; {events.stats().dispatched} events")
            events.shutdown(timeout=5)
        ids = sorted(int(item["id"]) for item in receiver.items)
        print(f"the receiver got {len(ids)} events in {receiver.request_count} request(s), "
              f"the first: {receiver.items[0] if ids else None}")
        return 0 if ids == list(range(DEMO_REQUESTS)) else 1


if __name__ == "__main__":
    sys.exit(main())
else:
    # gunicorn examples.flask_app:app, flask --app examples/flask_app.py run
    app = create_app()
