"""Shipping analytics events over HTTP: run ``python examples/analytics_events.py``.

Four threads stand in for a web app's request threads: each records page
views on one shared BackgroundDispatcher, which returns at once. The
dispatcher's worker POSTs them in batches, signed, to a collector through an
HttpSink, and retries what fails.

The collector here is the small receiver that ships with batchdispatch for
demos and tests (a private module): it listens on 127.0.0.1, checks every
signature, and is told to answer the first request with a 503, so you can
see a batch retried under the same webhook-id.
"""

from __future__ import annotations

import collections
import threading
from typing import Dict

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.events import ItemsExhausted
from batchdispatch.http import HttpSink
from batchdispatch.testing import Receiver

#: Shared with the collector; in an app, read it from the environment.
SECRET = "demo-signing-secret"
THREADS, EVENTS_PER_THREAD = 4, 250

Event = Dict[str, object]


def handle_requests(thread: int, dispatcher: BackgroundDispatcher[Event]) -> None:
    for n in range(EVENTS_PER_THREAD):
        # In a view function: record the event and get on with the response.
        dispatcher.enqueue({"event": "page_view", "path": f"/articles/{n % 20}", "user": n % 97,
                            "thread": thread})


def on_given_up(event: ItemsExhausted) -> None:
    # The last resort: these events were not delivered after every retry.
    # A real app would write them to a spool file or a dead-letter table.
    print(f"gave up {len(event.items)} events after {event.attempts} attempts: {event.error}")


def main() -> int:
    with Receiver(secret=SECRET) as collector:
        collector.respond(503)  # the first request fails; urllib3 retries it
        sink = HttpSink(collector.url + "events", headers={"api-key": "demo-key"}, secret=SECRET,
                        timeout=(3.05, 10))
        dispatcher: BackgroundDispatcher[Event] = BackgroundDispatcher(
            sink, delay=0.2, max_batch_size=200, name="analytics",
            retry=RetryPolicy(max_attempts=3, backoff=0.5),
        )
        dispatcher.on("items_exhausted", on_given_up)

        threads = [threading.Thread(target=handle_requests, args=(k, dispatcher)) for k in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"enqueued {THREADS * EVENTS_PER_THREAD:,} events from {THREADS} request threads")

        # At the end of the process (an app does this in its shutdown hook).
        complete = dispatcher.shutdown(timeout=10)
        sink.close()
        stats = dispatcher.stats()
        print(f"shutdown complete: {complete}")
        print(f"stats: enqueued {stats.enqueued}, dispatched {stats.dispatched},"
              f" failed {stats.failed}, dropped {stats.dropped}")

        requests = collector.requests
        accepted = [r for r in requests if r.status == 200]
        signed = all(r.verified for r in requests)
        print(f"receiver: {collector.item_count:,} events in {len(accepted)} requests,"
              f" {'all signed and verified' if signed else 'SOME NOT VERIFIED'}")
        attempts = collections.Counter(r.headers["webhook-id"] for r in requests)
        for request in requests:
            if request.status != 200:
                batch_id = request.headers["webhook-id"]
                print(f"receiver: one request answered {request.status}; its batch was sent"
                      f" {attempts[batch_id]} times under the same webhook-id")
        delivered = collector.item_count == stats.enqueued == stats.dispatched
    return 0 if complete and delivered and signed else 1


if __name__ == "__main__":
    raise SystemExit(main())
