"""Verify and sign webhooks, for receivers: standard library only, no requests imported.

:func:`verify_webhook` checks a request signed per `Standard Webhooks
<https://www.standardwebhooks.com>`_, the scheme the sinks of
:mod:`batchdispatch.http` use by default (and Svix, Zapier, Twilio and
Kong); :func:`verify_signature` checks the ``X-Webhook-Signature`` scheme of
batchdispatch 0.1 (``signature="x-webhook"``).

.. code-block:: python

    from batchdispatch.webhooks import verify_webhook

    processed = set()                    # the webhook ids handled (a table, in production)


    def handle(headers, body):           # body: bytes, after undoing gzip
        if not verify_webhook(body, headers, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"):
            return 401                   # forged, altered, replayed, or signed with another key
        if headers["webhook-id"] in processed:
            return 200                   # a retry: acknowledge, do nothing
        processed.add(headers["webhook-id"])
        ...

:func:`sign_webhook` and :func:`sign` compute the signature headers, for
tests of a receiver. The same names are importable from
:mod:`batchdispatch.http`.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from ._signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
from ._standard_webhooks import (
    SECRET_PREFIX,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
    Secret,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "ID_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_ID",
    "WEBHOOK_SIGNATURE",
    "WEBHOOK_TIMESTAMP",
    "Secret",
    "sign",
    "sign_webhook",
    "verify_signature",
    "verify_webhook",
]
