"""Deliver batches over HTTP with requests and urllib3: :class:`HttpSink` and :class:`WebhookSink`.

.. code-block:: python

    import os
    from batchdispatch import BackgroundDispatcher, KeyedDispatcher
    from batchdispatch.http import Endpoint, HttpSink, WebhookSink

    KEY, WHSEC = os.environ["LOGS_API_KEY"], os.environ["WEBHOOK_SECRET"]
    logs = BackgroundDispatcher(HttpSink("https://logs.example.com/ingest",
                                         headers={"api-key": KEY}), delay=0.1)
    hooks = KeyedDispatcher(WebhookSink({"ep-1": Endpoint("https://a.example/hook", secret=WHSEC)}),
                            delay=1.0)

Every request is a POST of the whole batch as one JSON array (or of
several, in order, each within *max_body_bytes*), with these headers:

* ``Content-Type: application/json`` and ``User-Agent: batchdispatch/<version>``
  (both can be overridden through *headers*), and ``Accept-Encoding: identity``
  (only the start of an answer's body is ever read);
* ``webhook-id``: the batch id, the same on every retry of that body, by urllib3
  or by the dispatcher's :class:`~batchdispatch.RetryPolicy`, so a receiver can
  deduplicate; a body holding part of a batch has an id of its own;
* ``webhook-timestamp``: Unix seconds when the body was sent;
* with a secret, ``webhook-signature: v1,<base64>``, the HMAC-SHA256 of
  ``f"{id}.{timestamp}." + body`` where *body* is the uncompressed JSON, per
  `Standard Webhooks <https://www.standardwebhooks.com>`_ (see
  :func:`verify_webhook` and :func:`sign_webhook`); one signature per secret
  when several are given;
* with ``gzip=True``, ``Content-Encoding: gzip``.

``signature="x-webhook"`` sends the headers of batchdispatch 0.1 instead:
``X-Webhook-Id``, ``X-Webhook-Timestamp`` and ``X-Webhook-Signature:
sha256=<hex>`` of ``f"{timestamp}." + body`` (:func:`sign`,
:func:`verify_signature`), whose signature does not cover the id.

Importing this module imports requests; ``import batchdispatch`` alone does not.
"""

from __future__ import annotations

from .._signing import sign, verify_signature
from .._standard_webhooks import Secret, sign_webhook, verify_webhook
from ._answers import BODY_EXCERPT, BODY_READ_LIMIT
from ._request import MAX_TIMEOUT, USER_AGENT, Timeout
from ._retries import RETRY_STATUSES, default_retry
from ._schemes import SIGNATURES
from ._serializers import Serializer, json_serializer, orjson_serializer
from ._sink_stats import SinkStats
from ._sinks import Endpoint, HttpSink, WebhookSink

# Not public: the Flask and Django integrations check their settings with the
# sinks' own checks and show URLs as they do, importing these from here.
from ._bodies import _check_max_body_bytes as _check_max_body_bytes  # isort: skip
from ._request import _check_headers as _check_headers  # isort: skip
from ._request import _check_secret as _check_secret  # isort: skip
from ._request import _check_url as _check_url  # isort: skip
from ._request import _safe_url as _safe_url  # isort: skip
from ._schemes import _check_signature as _check_signature  # isort: skip

__all__ = [
    "BODY_EXCERPT",
    "BODY_READ_LIMIT",
    "MAX_TIMEOUT",
    "RETRY_STATUSES",
    "SIGNATURES",
    "USER_AGENT",
    "Endpoint",
    "HttpSink",
    "Secret",
    "Serializer",
    "SinkStats",
    "Timeout",
    "WebhookSink",
    "default_retry",
    "json_serializer",
    "orjson_serializer",
    "sign",
    "sign_webhook",
    "verify_signature",
    "verify_webhook",
]
