"""Receive signed webhooks and verify them: run ``python examples/receive_webhooks.py``.

The sender signs per Standard Webhooks (https://www.standardwebhooks.com).
A receiver checks three things before it trusts a request:

1. the signature: ``verify_webhook`` recomputes the HMAC of
   ``"{webhook-id}.{webhook-timestamp}." + body`` with the shared secret
   (after gzip decoding) and compares it in constant time; since the id is
   signed too, a captured request cannot be replayed under another id;
2. the timestamp: a request older (or newer) than five minutes is refused,
   so a captured request cannot be replayed later;
3. the ``webhook-id``: a retried batch carries the same id, so a batch
   already processed is acknowledged and not processed twice.

The receiver below is plain ``http.server``; the same few lines fit a
Flask or Django view. The sender is an HttpSink, plus a few hand-made
requests that a receiver must refuse.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
from typing import Any, Dict, List

import requests

from batchdispatch.http import HttpSink
from batchdispatch.webhooks import sign_webhook, verify_webhook

# "whsec_" and the key in base64, as Standard Webhooks writes secrets. Read it from the environment.
SECRET = "whsec_d2hzZWMtZXhhbXBsZS1vbmx5LWtleQ=="
processed: Dict[str, int] = {}  # webhook-id -> events; a real receiver keeps this for a day or so
lock = threading.Lock()


class WebhookReceiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        if not verify_webhook(body, self.headers, SECRET, tolerance=300):
            self.reply(401, "rejected")
            return
        webhook_id = self.headers["webhook-id"]
        with lock:
            duplicate = webhook_id in processed
            if not duplicate:
                processed[webhook_id] = len(json.loads(body))
        # Answer 2xx to a duplicate too: the sender must stop retrying it.
        text = "ignored, already processed" if duplicate else f"accepted {processed[webhook_id]} events"
        self.reply(200, text)

    def reply(self, status: int, text: str) -> None:
        outcomes.append(f"{text} ({status})" if status != 200 else text)  # before the client sees it
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


outcomes: List[str] = []


def signed(body: bytes, webhook_id: str, timestamp: int) -> Dict[str, str]:
    """The headers of a request signed with SECRET, as a sender makes them."""
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(body, SECRET, webhook_id, timestamp)}


def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        with HttpSink(url, secret=SECRET, gzip=True) as sink:
            sink([{"event": "order.paid", "order": n} for n in range(3)])
        print(f"genuine request: {outcomes[-1]}")

        body = json.dumps([{"event": "order.paid", "order": 1}]).encode()
        now = int(time.time())
        with requests.Session() as session:
            tampered = body.replace(b"order.paid", b"order.refunded")
            session.post(url, data=tampered, headers=signed(body, "a1", now))
            print(f"tampered body: {outcomes[-1]}")

            captured = signed(body, "b2", now)
            session.post(url, data=body, headers={**captured, "webhook-id": "b2-again"})
            print(f"replayed under another webhook-id: {outcomes[-1]}")

            then = now - 600  # a genuine request, captured ten minutes ago and sent again
            session.post(url, data=body, headers=signed(body, "c3", then))
            print(f"replayed after 10 minutes: {outcomes[-1]}")

            headers = signed(body, "d4", now)
            session.post(url, data=body, headers=headers)
            session.post(url, data=body, headers=headers)  # a retry of the same batch
            print(f"duplicate webhook-id: {outcomes[-1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
