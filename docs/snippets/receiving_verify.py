"""The receiving page's verifying code: ``python docs/snippets/receiving_verify.py``.

It feeds each function signed, tampered and stale requests;
receiving_verify.out is what it prints.
"""

import os
import time
from types import SimpleNamespace

from batchdispatch.webhooks import sign, sign_webhook

os.environ["WEBHOOK_SECRET"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# [start receiving-handle]
import json
import os

from batchdispatch.webhooks import verify_webhook

SECRET = os.environ["WEBHOOK_SECRET"]  # whsec_..., the string the sender has
processed = set()  # the ids done; in production a table, kept longer than the tolerance


def process(events):
    print(f"processing {len(events)} events")


def handle(headers, body):                   # body: bytes, after undoing gzip
    if not verify_webhook(body, headers, SECRET, tolerance=300):
        return 401                           # forged, altered, replayed, or another key
    if headers["webhook-id"] in processed:
        return 200                           # a retry: acknowledge, do nothing
    process(json.loads(body))                # a JSON array of events, in order
    processed.add(headers["webhook-id"])
    return 200
# [end receiving-handle]


body = b'[{"event":"invoice.paid"},{"event":"invoice.sent"}]'
now = str(int(time.time()))
headers = {"webhook-id": "msg_1", "webhook-timestamp": now,
           "webhook-signature": sign_webhook(body, SECRET, "msg_1", now)}
print(f"genuine: {handle(headers, body)}")
print(f"the same request again: {handle(headers, body)}")
print(f"tampered: {handle(headers, body.replace(b'paid', b'void'))}")

# [start receiving-verify]
import base64
import hashlib
import hmac
import time


def verify(body: bytes, headers, key: bytes) -> bool:
    webhook_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
        return False
    mac = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())
# [end receiving-verify]


key = base64.b64decode(SECRET[len("whsec_"):])
print(f"verify, without the library: {verify(body, headers, key)}, "
      f"tampered {verify(body + b' ', headers, key)}, "
      f"stamped 10 minutes ago {verify(body, {**headers, 'webhook-timestamp': str(int(now) - 600)}, key)}")

# [start receiving-both]
from batchdispatch.webhooks import verify_signature


def verified(request, body):
    if "webhook-signature" in request.headers:
        ok = verify_webhook(body, request.headers, SECRET)
    else:
        ok = verify_signature(body, request.headers.get("X-Webhook-Signature", ""), SECRET,
                              request.headers.get("X-Webhook-Timestamp", ""))
    return ok
# [end receiving-both]


old = SimpleNamespace(headers={"X-Webhook-Timestamp": now, "X-Webhook-Signature": sign(body, SECRET, now)})
print(f"signed as 0.1 did: {verified(old, body)}; per Standard Webhooks: "
      f"{verified(SimpleNamespace(headers=headers), body)}; unsigned: "
      f"{verified(SimpleNamespace(headers={}), body)}")
