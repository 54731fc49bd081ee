"""Signed webhooks per endpoint with WebhookSink: run ``python examples/signed_webhooks.py``.

It starts three receivers on 127.0.0.1 (the small test receiver that comes
with batchdispatch), then ships 20 events to each endpoint with a
KeyedDispatcher, one key per endpoint:

* ``ep-shop`` checks every request's signature with its own secret;
* ``ep-flaky`` answers 503 once: urllib3 retries at once, with the same
  ``X-Webhook-Id``, so the receiver could tell a retry from a new batch;
* ``ep-gone`` answers 410 Gone, a permanent failure: the dispatcher gives
  the items up after one attempt instead of retrying them.
"""

from __future__ import annotations

from batchdispatch import KeyedDispatcher, RetryPolicy
from batchdispatch.events import ItemsExhausted
from batchdispatch.http import Endpoint, WebhookSink
from batchdispatch.testing import Receiver, Response


def main() -> int:
    with Receiver(secret="shop-secret") as shop, Receiver(secret="flaky-secret") as flaky, Receiver() as gone:
        flaky.respond(503)
        gone.respond(Response(410, body=b"this endpoint was deleted"))
        sink = WebhookSink(
            {
                "ep-shop": Endpoint(shop.url, secret="shop-secret", headers={"X-Tenant": "shop"}),
                "ep-flaky": Endpoint(flaky.url, secret="flaky-secret"),
                "ep-gone": Endpoint(gone.url),
            },
            timeout=(3.05, 10),
        )

        def gave_up(event: ItemsExhausted) -> None:
            status = getattr(event.error, "status", None)
            print(f"{event.key}: gave up {len(event.items)} events after {event.attempts} attempt:"
                  f" HTTP {status}")

        with sink:
            hooks = KeyedDispatcher(sink, delay=0.2, max_batch_size=100, max_concurrent_batches=3,
                                    retry=RetryPolicy(max_attempts=4, backoff=0.5))
            hooks.on("items_exhausted", gave_up)
            for n in range(20):
                for endpoint_id in ("ep-shop", "ep-flaky", "ep-gone"):
                    hooks.enqueue(endpoint_id, {"event": "order.paid", "order": n})
            done = hooks.shutdown(timeout=30)  # delivers everything, then stops the workers

        requests = shop.requests
        verified = all(r.verified for r in requests)
        print(f"ep-shop: delivered {len(shop.items)} events in {len(requests)} request,"
              f" signature {'verified' if verified else 'NOT verified'}")
        first, second = flaky.requests
        same_id = first.headers["x-webhook-id"] == second.headers["x-webhook-id"]
        print(f"ep-flaky: {first.status}, then delivered {len(flaky.items)} events"
              f" with {'the same' if same_id else 'a different'} X-Webhook-Id")
        stats = hooks.stats()
        print(f"delivered {stats.dispatched}, failed {stats.failed}")
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
