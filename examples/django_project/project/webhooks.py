"""Views that receive signed webhooks: ``POST /hooks`` and ``POST /hooks/standardwebhooks``.

Both verify Standard Webhooks signatures, one with batchdispatch's
``verify_webhook``, the other with the specification's own library
(``pip install standardwebhooks``); either one is enough in a project.
The secrets come from the ``WEBHOOK_SECRETS`` setting: one in normal
times, the old and the new one while a key is rotated.
``manage.py receive_demo`` sends them requests.
"""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any, Dict, List

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from standardwebhooks import Webhook, WebhookVerificationError

from batchdispatch.webhooks import verify_webhook

# webhook-id -> events. Keep ids longer than the 5 minute window (a model
# with a unique field, say): a sender retries when an answer is lost.
processed: Dict[str, int] = {}
lock = threading.Lock()


def body(request: HttpRequest) -> bytes:
    # The signature covers the body before compression.
    if request.headers.get("Content-Encoding") == "gzip":
        return gzip.decompress(request.body)
    return request.body


def process(request: HttpRequest, events: List[Any]) -> HttpResponse:
    webhook_id = request.headers["webhook-id"]
    with lock:
        if webhook_id in processed:
            return HttpResponse("duplicate, already processed")  # 2xx: the sender must stop retrying
        processed[webhook_id] = len(events)
    # A real project queues the events here and answers at once.
    return HttpResponse(f"accepted {len(events)} events")


@csrf_exempt  # the signature is what authenticates the sender
@require_POST
def hooks(request: HttpRequest) -> HttpResponse:
    data = body(request)
    if not verify_webhook(data, request.headers, settings.WEBHOOK_SECRETS):
        return HttpResponse("bad signature", status=401)
    return process(request, json.loads(data))


@csrf_exempt
@require_POST
def hooks_standardwebhooks(request: HttpRequest) -> HttpResponse:
    data = body(request)
    for secret in settings.WEBHOOK_SECRETS:  # the library checks one secret at a time
        try:
            events = Webhook(secret).verify(data, dict(request.headers))
            break
        except WebhookVerificationError:
            continue
    else:
        return HttpResponse("bad signature", status=401)
    return process(request, events)
