"""Webhook signatures: :func:`sign` for senders, :func:`verify_signature` for receivers.

Standard library only, so that a receiving application can check
signatures without importing requests; :mod:`batchdispatch.http` re-exports
both functions.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Union

__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "verify_signature"]

#: Header carrying the batch id, the same on every retry of one batch.
ID_HEADER = "X-Webhook-Id"
#: Header carrying the Unix time (whole seconds) at which the request was sent.
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
#: Header carrying ``sha256=<hex>``, the HMAC of ``"{timestamp}." + body``.
SIGNATURE_HEADER = "X-Webhook-Signature"

_SIGNATURE_PREFIX = "sha256="


def _key(secret: Union[str, bytes]) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def sign(body: bytes, secret: Union[str, bytes], timestamp: Union[int, str]) -> str:
    """Return ``"sha256=<hex>"``, the HMAC-SHA256 of ``f"{timestamp}." + body`` under *secret*.

    *body* is the uncompressed JSON: a gzip-encoded request is signed before
    compression, and a receiver checks the body after decoding it.

    .. code-block:: python

        sign(b'[{"n":1}]', "s3cret", 1700000000)   # 'sha256=…'
    """
    message = f"{timestamp}.".encode("ascii") + bytes(body)
    return _SIGNATURE_PREFIX + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    signature: str,
    secret: Union[str, bytes],
    timestamp: Union[int, str],
    tolerance: float = 300,
) -> bool:
    """Check a request signed by :func:`sign`; True only if it is genuine and fresh.

    The comparison takes constant time (:func:`hmac.compare_digest`). A
    *timestamp* more than *tolerance* seconds away from ``time.time()``, in
    either direction, is rejected, so that a captured request cannot be
    replayed later. Malformed input (a missing or non-numeric timestamp, a
    signature without the ``sha256=`` prefix, a value of the wrong type)
    returns False rather than raising.

    .. code-block:: python

        ok = verify_signature(request.body, request.headers["X-Webhook-Signature"],
                              SECRET, request.headers["X-Webhook-Timestamp"])

    :param body: the request body as received, after any gzip decoding.
    :param signature: the ``X-Webhook-Signature`` header value.
    :param secret: the secret shared with the sender.
    :param timestamp: the ``X-Webhook-Timestamp`` header value.
    :param tolerance: seconds of clock difference accepted (>= 0).
    """
    try:
        if not isinstance(signature, str) or not signature.startswith(_SIGNATURE_PREFIX):
            return False
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, str)):
            return False
        stamp = str(timestamp).strip()
        # int() accepts "1_000" and surrounding spaces; the sender writes plain digits.
        if not stamp.lstrip("-").isdigit() or not stamp.isascii():
            return False
        if abs(time.time() - int(stamp)) > tolerance:
            return False
        expected = sign(body, secret, stamp)
        return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - documented: never raises on malformed input
        return False
