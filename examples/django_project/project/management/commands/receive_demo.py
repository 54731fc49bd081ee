"""``manage.py receive_demo``: serve the project on 127.0.0.1 and send its webhook views signed requests."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, List
from wsgiref.simple_server import WSGIRequestHandler, make_server

import requests
from django.conf import settings
from django.core.management.base import BaseCommand

from batchdispatch.http import HttpSink
from batchdispatch.webhooks import sign_webhook
from project.wsgi import application

ROUTES = ("/hooks", "/hooks/standardwebhooks")
#: A request the demo signs by hand, to send it twice and then tampered with.
BODY = b'[{"event":"order.paid","order":3},{"event":"order.paid","order":4}]'


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request


class Command(BaseCommand):
    help = "Serve the project on 127.0.0.1 and send its webhook views signed, retried and tampered requests."
    requires_system_checks: ClassVar[List[str]] = []

    def handle(self, *args: Any, **options: Any) -> None:
        old, new = settings.WEBHOOK_SECRETS  # a rotation in progress: the sender signs with both
        server = make_server("127.0.0.1", 0, application, handler_class=QuietHandler)
        serving = threading.Thread(target=server.serve_forever, name="demo-server")
        serving.start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            for route in ROUTES:
                with HttpSink(base + route, secret=[old, new], gzip=True) as sink:
                    sink([{"event": "order.paid", "order": n} for n in range(3)])  # raises unless 2xx
                self.stdout.write(f"{route}: from an HttpSink signed with the old and the new key: delivered")
            body, now = BODY, int(time.time())
            with requests.Session() as session:
                for route in ROUTES:
                    webhook_id = f"msg_{route}"
                    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(now),
                               "webhook-signature": sign_webhook(body, new, webhook_id, now)}
                    first = session.post(base + route, data=body, headers=headers)
                    again = session.post(base + route, data=body, headers=headers)  # a retry: the same id
                    self.stdout.write(f"{route}: {first.text}; the same request again: {again.text}")
                    tampered = session.post(base + route, data=body.replace(b"paid", b"refunded"),
                                            headers=headers)
                    self.stdout.write(f"{route}: a tampered body: {tampered.status_code}")
        finally:
            server.shutdown()
            serving.join()
            server.server_close()
