"""The HTTP page's sinks, against local receivers: ``python docs/snippets/http_sinks.py``.

An HttpSink with a session of its own, one on a session you pass, then a
WebhookSink whose endpoints each check their signatures.
http_sinks.out is what it prints.
"""

import base64
import logging
import os

from batchdispatch.testing import Receiver

logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # the given-up batch's error, on stderr


def new_secret():
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


log_service = Receiver().start()
os.environ.update(LOG_URL=log_service.url, LOG_API_KEY="example-only", LOG_TOKEN="example-token")

# [start http-sink]
import os

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.http import HttpSink

sink = HttpSink(os.environ["LOG_URL"], headers={"api-key": os.environ["LOG_API_KEY"]})
logs = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500,
                            retry=RetryPolicy(max_attempts=5, backoff=1.0))
logs.enqueue({"event": "signup", "user": 42})
...
logs.shutdown(timeout=10)   # delivers what is left
sink.close()                # closes the session the sink created
# [end http-sink]

(request,) = log_service.requests
print(f"{request.items}, api-key {request.headers['api-key']}, "
      f"signed with a webhook-id: {bool(request.headers['webhook-id'])}")
log_service.clear()

# [start http-session]
import requests
from requests.adapters import HTTPAdapter

from batchdispatch.http import HttpSink, default_retry

LOG_URL = os.environ["LOG_URL"]  # https://logs.example.com/ingest, say
session = requests.Session()
session.auth = ("ingest", os.environ["LOG_TOKEN"])
session.mount(LOG_URL, HTTPAdapter(max_retries=default_retry()))
sink = HttpSink(LOG_URL, session=session)
# [end http-session]

log_service.respond(503)  # the mounted adapter's urllib3 retry sends it again
sink([{"event": "login", "user": 42}])
print(f"{[r.status for r in log_service.requests]}, "
      f"authorization {log_service.requests[-1].headers['authorization'][:6]}...")
sink.close()
session.close()  # yours: the sink never closes a session it was given
log_service.close()

secrets = {"1": new_secret(), "2": new_secret(), "0": "old-secret", "3": new_secret()}
endpoints = {n: Receiver(secret=secret).start() for n, secret in secrets.items()}
for n, receiver in endpoints.items():
    os.environ.update({f"URL_{n}": receiver.url, f"SECRET_{n}": secrets[n]})
os.environ["NEW_SECRET_1"] = new_secret()

# [start http-webhooks]
from batchdispatch import KeyedDispatcher, RetryPolicy
from batchdispatch.http import Endpoint, WebhookSink

env = os.environ  # each endpoint's URL and secret; in real life, from your endpoint registry
sink = WebhookSink({
    "ep-1": Endpoint(env["URL_1"], secret=env["SECRET_1"]),
    "ep-2": Endpoint(env["URL_2"], secret=env["SECRET_2"], headers={"X-Tenant": "b"}, timeout=5),
    "ep-0": Endpoint(env["URL_0"], secret=env["SECRET_0"], signature="x-webhook"),  # on 0.1
}, max_body_bytes=1_000_000)
hooks = KeyedDispatcher(sink, delay=1.0, max_batch_size=100, max_concurrent_batches=10,
                        retry=RetryPolicy(max_attempts=5, backoff=2.0))
hooks.enqueue("ep-1", {"event": "invoice.paid", "invoice": 1001})

sink.add("ep-3", Endpoint(env["URL_3"], secret=env["SECRET_3"]))   # while running
sink.add("ep-1", Endpoint(env["URL_1"], secret=[env["SECRET_1"], env["NEW_SECRET_1"]]))  # rotating
sink.remove("ep-2")
# [end http-webhooks]

for key in ("ep-0", "ep-3", "ep-2"):
    hooks.enqueue(key, {"event": "invoice.paid", "key": key})
assert hooks.shutdown(timeout=10)
sink.close()
for n, receiver in sorted(endpoints.items()):
    print(f"ep-{n}: {len(receiver.items)} items, verified {[r.verified for r in receiver.requests]}")
    receiver.close()
print(f"given up at once: {hooks.stats().failed} (ep-2, removed: UnknownEndpointError)")
