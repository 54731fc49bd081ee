"""``manage.py demo``: serve the project on 127.0.0.1 and ship its events to a local receiver."""

from __future__ import annotations

import threading
from typing import Any, ClassVar, List
from wsgiref.simple_server import WSGIRequestHandler, make_server

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.test import override_settings

from batchdispatch.contrib.django import dispatchers
from batchdispatch.testing import Receiver
from project.wsgi import application

#: Requests the demo sends.
DEMO_REQUESTS = 20


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request


class Command(BaseCommand):
    help = "Serve the project on 127.0.0.1, send it a few requests, and show what reached a local receiver."
    # BATCHDISPATCH_URL may be unset: the demo brings its own receiver.
    requires_system_checks: ClassVar[List[str]] = []

    def handle(self, *args: Any, **options: Any) -> None:
        with Receiver() as receiver, override_settings(
            BATCHDISPATCH={"default": {**settings.BATCHDISPATCH["default"], "URL": receiver.url}},
        ):
            server = make_server("127.0.0.1", 0, application, handler_class=QuietHandler)
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
            delivered = dispatchers["default"].flush(timeout=5)
            self.stdout.write(f"flush: {'delivered' if delivered else 'timed out'}; "
                              f"{dispatchers['default'].stats().dispatched} events")
            dispatchers.close_all(timeout=5)
            ids = sorted(int(item["id"]) for item in receiver.items)
            self.stdout.write(f"the receiver got {len(ids)} events in {receiver.request_count} request(s), "
                              f"the first: {receiver.items[0] if ids else None}")
        if ids != list(range(DEMO_REQUESTS)):
            raise CommandError("some events did not reach the receiver exactly once")
