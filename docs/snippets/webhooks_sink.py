"""The webhooks page's WebhookSink, against two receivers: ``python docs/snippets/webhooks_sink.py``.

Each receiver checks the signatures with its endpoint's secret;
webhooks_sink.out is what it prints.
"""

import os

from batchdispatch.testing import Receiver

shop = Receiver(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").start()
crm = Receiver(secret="whsec_c2Vjb25kLWtleS1leGFtcGxlLW9ubHktMzItYnl0ZXM=").start()
os.environ.update(EP1_URL=shop.url, EP1_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                  EP2_URL=crm.url, EP2_SECRET="whsec_c2Vjb25kLWtleS1leGFtcGxlLW9ubHktMzItYnl0ZXM=")

# [start webhooks-sink]
import os

from batchdispatch import KeyedDispatcher, RetryPolicy
from batchdispatch.http import Endpoint, WebhookSink

sink = WebhookSink({
    "ep-1": Endpoint(os.environ["EP1_URL"], secret=os.environ["EP1_SECRET"]),  # whsec_...
    "ep-2": Endpoint(os.environ["EP2_URL"], secret=os.environ["EP2_SECRET"], max_body_bytes=500_000),
})
hooks = KeyedDispatcher(sink, delay=1.0, max_batch_size=100, max_concurrent_batches=10,
                        retry=RetryPolicy(max_attempts=5, backoff=2.0, max_backoff=300.0))
hooks.enqueue("ep-1", {"event": "invoice.paid", "invoice": 1001})
# [end webhooks-sink]

hooks.enqueue("ep-2", {"event": "contact.created", "contact": 7})
assert hooks.shutdown(timeout=10)  # a sync point: both batches answered
sink.close()
for name, receiver in (("ep-1", shop), ("ep-2", crm)):
    (request,) = receiver.requests
    print(f"{name}: {receiver.items}, verified {request.verified}, "
          f"headers {sorted(h for h in request.headers if h.startswith('webhook-'))}")
    receiver.close()
