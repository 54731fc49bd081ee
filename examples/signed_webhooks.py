"""Signed webhooks per endpoint with WebhookSink: run ``python examples/signed_webhooks.py``.

It starts three receivers on 127.0.0.1 (the small test receiver that comes
with batchdispatch), then ships 20 events to each endpoint with a
KeyedDispatcher, one key per endpoint, signed per Standard Webhooks:

* ``ep-shop`` checks every request's ``webhook-signature`` with its own
  secret; the sink signs with two secrets, as while a key is rotated, and
  the receiver knows only the new one;
* ``ep-flaky`` answers 503 once: urllib3 retries at once, with the same
  ``webhook-id``, so the receiver could tell a retry from a new batch;
* ``ep-gone`` answers 410 Gone: the sink disables the endpoint, so its
  items are given up after one attempt, and the 20 events enqueued for it
  afterwards are given up without a request.
"""

from __future__ import annotations

from batchdispatch import KeyedDispatcher, RetryPolicy
from batchdispatch.http import Endpoint, WebhookSink
from batchdispatch.testing import Receiver, Response

# Standard Webhooks secrets: "whsec_" and the key in base64. In an app, read them from the environment.
SHOP_OLD = "whsec_c2hvcC1vbGQta2V5LWV4YW1wbGUtb25seQ=="
SHOP_NEW = "whsec_c2hvcC1uZXcta2V5LWV4YW1wbGUtb25seQ=="
FLAKY = "whsec_Zmxha3kta2V5LWV4YW1wbGUtb25seQ=="


def main() -> int:
    with Receiver(secret=SHOP_NEW) as shop, Receiver(secret=FLAKY) as flaky, Receiver() as gone:
        flaky.respond(503)
        gone.respond(Response(410, body=b"this endpoint was deleted"))
        sink = WebhookSink(
            {
                # Both keys while the receiver moves from the old to the new one.
                "ep-shop": Endpoint(shop.url, secret=[SHOP_OLD, SHOP_NEW], headers={"X-Tenant": "shop"}),
                "ep-flaky": Endpoint(flaky.url, secret=FLAKY),
                "ep-gone": Endpoint(gone.url),
            },
            timeout=(3.05, 10),
        )
        with sink:
            hooks = KeyedDispatcher(sink, delay=0.2, max_batch_size=100, max_concurrent_batches=3,
                                    retry=RetryPolicy(max_attempts=4, backoff=0.5))
            for n in range(20):
                for endpoint_id in ("ep-shop", "ep-flaky", "ep-gone"):
                    hooks.enqueue(endpoint_id, {"event": "order.paid", "order": n})
            hooks.flush(timeout=30)
            for n in range(20, 40):  # the endpoint is disabled by now: no request
                hooks.enqueue("ep-gone", {"event": "order.paid", "order": n})
            done = hooks.shutdown(timeout=30)  # delivers everything, then stops the workers

        requests = shop.requests
        signatures = len(requests[0].headers["webhook-signature"].split())
        verified = "verified with the new key" if all(r.verified for r in requests) else "NOT verified"
        print(f"ep-shop: delivered {len(shop.items)} events in {len(requests)} request,"
              f" {signatures} signatures, {verified}")
        first, second = flaky.requests
        same_id = first.headers["webhook-id"] == second.headers["webhook-id"]
        print(f"ep-flaky: {first.status}, then delivered {len(flaky.items)} events"
              f" with {'the same' if same_id else 'a different'} webhook-id")
        stats = sink.stats()
        print(f"ep-gone: answered 410 to {gone.request_count} request; disabled {list(stats.disabled)},"
              f" {stats.endpoint_gone} events given up")
        totals = hooks.stats()
        print(f"delivered {totals.dispatched}, failed {totals.failed}")
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
