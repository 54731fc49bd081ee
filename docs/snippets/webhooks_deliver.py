"""The webhooks page's deliver functions, against receivers: ``python docs/snippets/webhooks_deliver.py``.

webhooks_deliver.out is what it prints.
"""

import os

from batchdispatch.testing import Receiver, Response

shop, crm = Receiver().start(), Receiver().start()
os.environ.update(ENDPOINT_1_URL=shop.url, ENDPOINT_2_URL=crm.url)
# The bulk endpoint of the second answers which items it refused.
crm.respond(Response(200, body=b'{"rejected": [1]}'))

# [start deliver]
import os

import requests

from batchdispatch import KeyedDispatcher, RetryPolicy

ENDPOINTS = {"endpoint-1": os.environ["ENDPOINT_1_URL"], "endpoint-2": os.environ["ENDPOINT_2_URL"]}
session = requests.Session()


def post_json(url, batch):
    """POST the batch as JSON; raise for an HTTP error; return the items the endpoint refused."""
    answer = session.post(url, json=batch, timeout=(3.05, 10))
    answer.raise_for_status()
    refused = answer.json().get("rejected", []) if answer.content else []
    return [batch[i] for i in refused]


def deliver(endpoint_id, batch):
    post_json(ENDPOINTS[endpoint_id], batch)   # raise to fail the batch


hooks = KeyedDispatcher(
    deliver, delay=5.0, max_batch_size=100, max_concurrent_batches=10,
    retry=RetryPolicy(max_attempts=3, backoff=1.0, multiplier=2.0, max_backoff=60.0),
)
hooks.enqueue("endpoint-1", {"event": "message.sent"})
# [end deliver]
assert hooks.shutdown(timeout=10)
print(f"endpoint-1 got {shop.items}")

# [start partial]
from batchdispatch import PartialFailure


class RejectedError(Exception):
    retryable = False  # refused for its content: trying again would not help


def deliver(endpoint_id, batch):
    rejected = post_json(ENDPOINTS[endpoint_id], batch)   # the items refused
    if rejected:
        raise PartialFailure(rejected, RejectedError("schema"))
# [end partial]


hooks = KeyedDispatcher(deliver, delay=0.01, retry=RetryPolicy(max_attempts=3, backoff=0.01), name="partial")
hooks.enqueue("endpoint-2", {"event": "a"})
hooks.enqueue("endpoint-2", {"event": "b, refused"})
assert hooks.shutdown(timeout=10)
stats = hooks.stats()
print(f"endpoint-2: {stats.dispatched} delivered, {stats.failed} given up at once, "
      f"{crm.request_count} request")
session.close()
shop.close()
crm.close()
