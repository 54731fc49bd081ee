"""Deliver batches over HTTP with requests and urllib3: :class:`HttpSink` and :class:`WebhookSink`.

.. code-block:: python

    from batchdispatch import BackgroundDispatcher, KeyedDispatcher
    from batchdispatch.http import Endpoint, HttpSink, WebhookSink

    logs = BackgroundDispatcher(HttpSink("https://logs.example.com/ingest",
                                         headers={"api-key": KEY}), delay=0.1)
    hooks = KeyedDispatcher(WebhookSink({"ep-1": Endpoint("https://a.example/hook", secret="s3cret")}),
                            delay=1.0)

Every request is a POST of the whole batch as one JSON array, with these headers:

* ``Content-Type: application/json`` and ``User-Agent: batchdispatch/<version>``
  (both can be overridden through *headers*), and ``Accept-Encoding: identity``
  (only the start of an answer's body is ever read);
* ``X-Webhook-Id``: one id per batch, the same on every retry of it, by urllib3
  or by the dispatcher's :class:`~batchdispatch.RetryPolicy`, so a receiver can
  deduplicate;
* ``X-Webhook-Timestamp``: Unix seconds when the batch was sent;
* with a secret, ``X-Webhook-Signature: sha256=<hex>``, the HMAC-SHA256 of
  ``f"{timestamp}." + body`` where *body* is the uncompressed JSON
  (see :func:`sign` and :func:`verify_signature`);
* with ``gzip=True``, ``Content-Encoding: gzip``.

Importing this module imports requests; ``import batchdispatch`` alone does not.
"""

from __future__ import annotations

from .._signing import sign, verify_signature
from ._answers import BODY_EXCERPT, BODY_READ_LIMIT
from ._request import MAX_TIMEOUT, USER_AGENT, Timeout
from ._retries import RETRY_STATUSES, default_retry
from ._serializers import Serializer, json_serializer
from ._sinks import Endpoint, HttpSink, WebhookSink

# Not public: the Flask and Django integrations check their settings with the
# sinks' own checks and show URLs as they do, importing these from here.
from ._request import _check_headers as _check_headers  # isort: skip
from ._request import _check_secret as _check_secret  # isort: skip
from ._request import _check_url as _check_url  # isort: skip
from ._request import _safe_url as _safe_url  # isort: skip

__all__ = [
    "BODY_EXCERPT",
    "BODY_READ_LIMIT",
    "MAX_TIMEOUT",
    "RETRY_STATUSES",
    "USER_AGENT",
    "Endpoint",
    "HttpSink",
    "Serializer",
    "Timeout",
    "WebhookSink",
    "default_retry",
    "json_serializer",
    "sign",
    "verify_signature",
]
