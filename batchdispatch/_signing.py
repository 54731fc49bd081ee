"""Webhook signatures: :func:`sign` for senders, :func:`verify_signature` for receivers.

Standard library only, so that a receiving application can check
signatures without importing requests; :mod:`batchdispatch.http` re-exports
both functions.
"""

from __future__ import annotations

import hashlib
import hmac
import math
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
    """The HMAC key; an empty or missing secret is a configuration error, never a key."""
    if isinstance(secret, bool) or not isinstance(secret, (str, bytes, bytearray)):
        raise TypeError(f"secret must be a str or bytes, got {type(secret).__name__}")
    if not secret:
        # An unset environment variable must not make a signature anyone can compute.
        raise ValueError("secret must not be empty")
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def _check_tolerance(tolerance: object) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise TypeError(f"tolerance must be a number of seconds, got {type(tolerance).__name__}")
    if math.isnan(tolerance) or math.isinf(tolerance) or tolerance < 0:
        # nan and inf would accept any timestamp: no replay protection at all.
        raise ValueError(f"tolerance must be a finite number of seconds >= 0, got {tolerance!r}")
    return float(tolerance)


def sign(body: bytes, secret: Union[str, bytes], timestamp: Union[int, str]) -> str:
    """Return ``"sha256=<hex>"``, the HMAC-SHA256 of ``f"{timestamp}." + body`` under *secret*.

    *body* is the uncompressed JSON: a gzip-encoded request is signed before
    compression, and a receiver checks the body after decoding it.

    .. code-block:: python

        from batchdispatch.webhooks import sign

        sign(b'[{"n":1}]', "s3cret", 1700000000)   # 'sha256=…'

    :raises ValueError: if *secret* is empty.
    :raises TypeError: if *secret* is not a str or bytes.
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
    returns False rather than raising. A wrong configuration raises: an
    empty *secret* (an unset environment variable, say) would accept
    signatures anyone can compute, and a *tolerance* of ``nan`` or ``inf``
    would accept any timestamp.

    .. code-block:: python

        from batchdispatch.webhooks import verify_signature


        def genuine(body, headers, secret):  # body: bytes, after undoing gzip
            return verify_signature(body, headers["X-Webhook-Signature"], secret,
                                    headers["X-Webhook-Timestamp"])

    :param body: the request body as received, after any gzip decoding.
    :param signature: the ``X-Webhook-Signature`` header value.
    :param secret: the secret shared with the sender.
    :param timestamp: the ``X-Webhook-Timestamp`` header value.
    :param tolerance: seconds of clock difference accepted: finite, >= 0.
    :raises ValueError: if *secret* is empty or *tolerance* is negative, ``nan`` or infinite.
    :raises TypeError: if *secret* is not a str or bytes, or *tolerance* not a number.
    """
    key = _key(secret)
    tolerance = _check_tolerance(tolerance)
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
        expected = sign(body, key, stamp)
        return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - documented: never raises on malformed input
        return False
