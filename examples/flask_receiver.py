"""A Flask app that receives signed webhooks: run ``python examples/flask_receiver.py``.

Two routes verify the same Standard Webhooks signatures two ways; either
one is enough in an app:

* ``POST /hooks`` with batchdispatch's ``verify_webhook`` (no dependency
  beyond batchdispatch);
* ``POST /hooks/standardwebhooks`` with the specification's own library
  (``pip install standardwebhooks``), which needs no code of ours.

Both take the secrets from ``WEBHOOK_SECRETS`` (space-separated, each
``whsec_<base64>``): one in normal times, the old and the new one while a
key is rotated. That one command serves the app on 127.0.0.1, ships three
events to each route with an HttpSink signed with both keys (a rotation in
progress), then sends a signed request twice (as a retry does) and a
tampered copy of it, and prints what the app answered. The Django example
project has the same views (``examples/django_project/project/webhooks.py``).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Tuple

import requests
from flask import Flask, abort, request
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server

from batchdispatch.http import HttpSink
from batchdispatch.webhooks import sign_webhook, verify_webhook

OLD = "whsec_b2xkLWtleS1leGFtcGxlLW9ubHktMzItYnl0ZXM="
NEW = "whsec_bmV3LWtleS1leGFtcGxlLW9ubHktMzItYnl0ZXM="
SECRETS = os.environ.get("WEBHOOK_SECRETS", f"{OLD} {NEW}").split()
ROUTES = ("/hooks", "/hooks/standardwebhooks")
#: A request the demo signs by hand, to send it twice and then tampered with.
BODY = b'[{"event":"order.paid","order":3},{"event":"order.paid","order":4}]'


def create_app(secrets: List[str]) -> Flask:
    app = Flask(__name__)
    # webhook-id -> events. Keep ids longer than the 5 minute window (a table
    # with a unique key, say): a sender retries when an answer is lost.
    processed: Dict[str, int] = {}
    lock = threading.Lock()

    def body() -> bytes:
        raw = request.get_data()
        # The signature covers the body before compression.
        return gzip.decompress(raw) if request.content_encoding == "gzip" else raw

    def process(events: List[Any]) -> Tuple[str, int]:
        webhook_id = request.headers["webhook-id"]
        with lock:
            if webhook_id in processed:
                return "duplicate, already processed", 200  # 2xx: the sender must stop retrying
            processed[webhook_id] = len(events)
        # A real app queues the events here and answers at once.
        return f"accepted {len(events)} events", 200

    @app.post("/hooks")
    def hooks() -> Tuple[str, int]:
        data = body()
        if not verify_webhook(data, request.headers, secrets):  # the id, timestamp and body are signed
            abort(401)
        return process(json.loads(data))

    @app.post("/hooks/standardwebhooks")
    def hooks_standardwebhooks() -> Tuple[str, int]:
        data = body()
        for secret in secrets:  # the library checks one secret at a time
            try:
                events = Webhook(secret).verify(data, dict(request.headers))
                break
            except WebhookVerificationError:
                continue
        else:
            abort(401)
        return process(events)

    return app


def main() -> int:
    app = create_app(SECRETS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request, nor per 401
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="flask-receiver")
    serving.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for route in ROUTES:
            with HttpSink(base + route, secret=[OLD, NEW], gzip=True) as sink:
                sink([{"event": "order.paid", "order": n} for n in range(3)])  # raises unless 2xx
            print(f"{route}: from an HttpSink signed with the old and the new key: delivered")
        body, now = BODY, int(time.time())
        with requests.Session() as session:
            for route in ROUTES:
                webhook_id = f"msg_{route}"
                headers = {"webhook-id": webhook_id, "webhook-timestamp": str(now),
                           "webhook-signature": sign_webhook(body, NEW, webhook_id, now)}
                first = session.post(base + route, data=body, headers=headers)
                again = session.post(base + route, data=body, headers=headers)  # a retry: the same id
                print(f"{route}: {first.text}; the same request again: {again.text}")
                forged = body.replace(b"paid", b"refunded")
                tampered = session.post(base + route, data=forged, headers=headers)
                print(f"{route}: a tampered body: {tampered.status_code}")
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
