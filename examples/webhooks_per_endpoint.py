"""Webhooks per endpoint with KeyedDispatcher: run ``python examples/webhooks_per_endpoint.py``.

It starts a small receiver on 127.0.0.1 with three endpoints, then ships
events to them in batches, one key per endpoint:

* ``ep-ok`` accepts everything;
* ``ep-flaky`` answers 503 to its first request, so its batch is retried
  after a backoff while the other endpoints go on;
* ``ep-strict`` rejects events it does not know, so deliver raises
  PartialFailure for those items only, marked not worth retrying.

Standard library only (the HTTP sinks built on requests come separately).
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from typing import Any, ClassVar, Dict, List

from batchdispatch import KeyedDispatcher, PartialFailure, RetryPolicy


class Receiver(http.server.BaseHTTPRequestHandler):
    """POST /<endpoint> with a JSON array; answers with the indexes it rejected."""

    seen: ClassVar[Dict[str, int]] = {}  # requests per endpoint

    def do_POST(self) -> None:
        endpoint = self.path.strip("/")
        events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen[endpoint] = self.seen.get(endpoint, 0) + 1
        if endpoint == "ep-flaky" and self.seen[endpoint] == 1:
            self.send_response(503)
            self.end_headers()
            return
        rejected = [i for i, event in enumerate(events) if event["event"] == "unknown"]
        body = json.dumps({"rejected": rejected}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the example's output short


class Rejected(Exception):
    """The endpoint refused these events: sending them again will not help."""

    retryable = False


def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def deliver(endpoint: str, batch: List[Dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{base}/{endpoint}", data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # raises on 503
            rejected = json.load(response)["rejected"]
        if rejected:
            raise PartialFailure([batch[i] for i in rejected], Rejected(f"{len(rejected)} unknown events"))

    hooks = KeyedDispatcher(
        deliver, delay=0.2, max_batch_size=50, max_concurrent_batches=3,
        retry=RetryPolicy(max_attempts=4, backoff=0.2, multiplier=2.0, jitter=True),
    )
    hooks.on("batch_succeeded", lambda e: print(f"{e.key}: {len(e.items)} delivered (attempt {e.attempt})"))
    hooks.on("batch_failed", lambda e: print(f"{e.key}: attempt {e.attempt} failed: {e.error}"))
    hooks.on("batch_retry_scheduled", lambda e: print(f"{e.key}: retry in {e.delay:.2f} s"))
    hooks.on("items_exhausted", lambda e: print(f"{e.key}: gave up {len(e.items)} items"))

    for n in range(30):
        hooks.enqueue("ep-ok", {"event": "message.sent", "n": n})
        hooks.enqueue("ep-flaky", {"event": "message.sent", "n": n})
        hooks.enqueue("ep-strict", {"event": "unknown" if n % 10 == 0 else "message.sent", "n": n})
    hooks.enqueue("ep-ok", {"event": "account.closed"}, priority=10)  # goes first in its key

    done = hooks.shutdown(timeout=10)
    stats = hooks.stats()
    print(f"shutdown complete: {done}; enqueued {stats.enqueued}, dispatched {stats.dispatched},"
          f" failed {stats.failed}, retried {stats.retried}, batches {stats.batches}")
    server.shutdown()
    return 0 if done and stats.dispatched + stats.failed == stats.enqueued else 1


if __name__ == "__main__":
    raise SystemExit(main())
