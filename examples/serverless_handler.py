"""A serverless handler that delivers its events before it returns: ``python examples/serverless_handler.py``.

AWS Lambda and its kin freeze the process as soon as the handler returns,
worker thread included, and may discard it without running the exit hook.
So the handler flushes before it returns, within a bounded time.

The command calls the handler as a platform would, three times, against a
receiver on 127.0.0.1, then once more with the receiver stalled, to show
that the handler still returns within its flush timeout. It exits 0 when
each invocation's event arrived before the invocation ended.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict

from batchdispatch import BackgroundDispatcher, flush_after
from batchdispatch.http import HttpSink
from batchdispatch.testing import Receiver, Response

if __name__ == "__main__":
    # The demo: a receiver on 127.0.0.1 stands in for the collector.
    demo_receiver = Receiver().start()
    os.environ["BATCHDISPATCH_URL"] = demo_receiver.url

# Module level: warm invocations reuse the dispatcher and its pooled connections.
# retries=1: a collector that is down must not eat the invocation's time.
events = BackgroundDispatcher(
    HttpSink(os.environ.get("BATCHDISPATCH_URL", "http://127.0.0.1:9/"), timeout=(1.0, 2.0), retries=1),
    delay=0.5, max_batch_size=500, name="lambda",
)


@flush_after(events, timeout=2)  # well inside the function's own time limit
def handler(event: Dict[str, Any], context: Any) -> Dict[str, Any]:
    events.enqueue({"event": "invoked", "id": event["id"]})
    return {"statusCode": 200}


def main(receiver: Receiver) -> int:
    ok = True
    with receiver:
        for n in range(3):
            answer = handler({"id": n}, None)
            arrived = [item["id"] for item in receiver.items]
            print(f"invocation {n}: {answer['statusCode']}; arrived so far: {arrived}")
            ok = ok and arrived == list(range(n + 1))
        receiver.respond(Response(200, delay=30))  # the collector stalls
        started = time.monotonic()
        handler({"id": 3}, None)
        took = time.monotonic() - started
        print(f"invocation 3, collector stalled: returned after {took:.0f} s; "
              f"not yet delivered: {events.stats().pending}")
        ok = ok and took < 4
        events.shutdown(timeout=0.5)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(demo_receiver))
