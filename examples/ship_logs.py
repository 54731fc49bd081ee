"""Ship an application's logs over HTTP with BatchHandler: run ``python examples/ship_logs.py``.

A receiver on 127.0.0.1 (``batchdispatch.testing.Receiver``) stands in
for a log service. The script puts a :class:`~batchdispatch.handlers.BatchHandler`
on the root logger, over a ``BackgroundDispatcher(HttpSink(url))``, logs a
few records the way an application does, and prints what arrived:

* the log service answers its first request with 503, so urllib3 retries
  the POST and the batch still arrives once;
* urllib3 logs at DEBUG on the worker thread while it delivers: those
  records reach the handler, which skips them instead of shipping them
  (shipping them would cause more requests, which would log more, ...).
"""

from __future__ import annotations

import logging

from batchdispatch import BackgroundDispatcher
from batchdispatch.handlers import BatchHandler
from batchdispatch.http import HttpSink
from batchdispatch.testing import Receiver


def main() -> int:
    with Receiver() as receiver, HttpSink(receiver.url, headers={"api-key": "demo"}) as sink:
        receiver.respond(503)  # a hiccup: urllib3 tries again, then 200
        dispatcher = BackgroundDispatcher(sink, delay=0.5, max_batch_size=500)
        handler = BatchHandler(dispatcher)  # every level
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        logging.getLogger("urllib3").setLevel(logging.DEBUG)  # logged during delivery: skipped

        log = logging.getLogger("shop.checkout")
        log.info("order %s paid", "o-1001", extra={"amount_cents": 1250, "currency": "EUR"})
        log.warning("stock low for %s", "sku-42", extra={"left": 3})
        try:
            raise ConnectionError("payment provider unreachable")
        except ConnectionError:
            log.exception("refund of %s failed", "o-0999")
        log.debug("cart %s recalculated", "c-77")

        handler.close()  # delivers what is waiting (a dispatcher passed in stays up)
        root.removeHandler(handler)
        delivered = dispatcher.shutdown(timeout=10)
        stats = dispatcher.stats()

        for item in receiver.items:
            extra = f" {item['extra']}" if "extra" in item else ""
            print(f"{item['timestamp']} {item['level']:<7} {item['logger']}: {item['message']}{extra}")
            if "exception" in item:
                print(f"    {item['exception'].splitlines()[-1]}")
        statuses = ", ".join(str(request.status) for request in receiver.requests)
        print(
            f"{len(receiver.requests)} requests ({statuses}); {len(receiver.items)} records arrived;"
            f" {handler.skipped} records logged during delivery were not shipped"
        )
    return 0 if delivered and stats.dispatched == stats.enqueued == 4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
