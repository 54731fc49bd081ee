"""Standard Webhooks signatures: the keys a secret stands for, :func:`sign_webhook`, :func:`verify_webhook`.

The scheme of https://www.standardwebhooks.com (Svix, Zapier, Twilio, Kong)
byte for byte: three headers, ``webhook-id``, ``webhook-timestamp`` (Unix
seconds) and ``webhook-signature``, whose value is ``v1,`` and the base64
of HMAC-SHA256(key, ``f"{id}.{timestamp}."`` + body), once per key,
separated by spaces. A secret written ``whsec_<base64>`` stands for the
key it encodes; any other str (UTF-8) or bytes is the key itself.

Standard library only, so that a receiving application can verify without
importing requests; :mod:`batchdispatch.webhooks` and
:mod:`batchdispatch.http` make it public. The scheme of 0.1
(``X-Webhook-Signature``) lives in :mod:`batchdispatch._signing`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._signing import _check_tolerance

__all__ = [
    "SECRET_PREFIX",
    "WEBHOOK_ID",
    "WEBHOOK_SIGNATURE",
    "WEBHOOK_TIMESTAMP",
    "Secret",
    "sign_webhook",
    "verify_webhook",
    "webhook_keys",
]

#: One secret (``whsec_<base64>``, or a str or bytes used as the key), or several, for key rotation.
Secret = Union[str, bytes, Sequence[Union[str, bytes]]]

#: Header carrying the message id: the batch id, the same on every retry of one body.
WEBHOOK_ID = "webhook-id"
#: Header carrying the Unix time, in whole seconds, at which the request was signed.
WEBHOOK_TIMESTAMP = "webhook-timestamp"
#: Header carrying ``v1,<base64>`` signatures, separated by spaces.
WEBHOOK_SIGNATURE = "webhook-signature"
#: The prefix of a secret that holds its key in base64, as Svix and the specification write them.
SECRET_PREFIX = "whsec_"

_VERSION = "v1,"


def _one_key(secret: object, name: str) -> bytes:
    if isinstance(secret, bool) or not isinstance(secret, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a str or bytes, or a list of them, got {type(secret).__name__}")
    if isinstance(secret, str) and secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        try:
            # The specification's secrets are padded; some tools drop the padding.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: what follows {SECRET_PREFIX!r} is not valid base64") from None
        if not key:
            raise ValueError(f"{name}: a {SECRET_PREFIX!r} secret has no key after its prefix")
        return key
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        # An unset environment variable must not make a signature anyone can compute.
        raise ValueError(f"{name} must not be empty")
    return key


def webhook_keys(secret: object, name: str = "secret") -> Tuple[bytes, ...]:
    """The HMAC keys *secret* stands for: one, or one per secret of a list or tuple.

    :raises ValueError: naming *name* (never showing a value) for an empty
        secret, an empty list, or a ``whsec_`` secret that is not base64.
    :raises TypeError: for anything but a str, bytes, or a list or tuple of them.
    """
    if isinstance(secret, (list, tuple)):
        if not secret:
            raise ValueError(f"{name} must hold at least one secret")
        return tuple(_one_key(one, f"{name}[{index}]") for index, one in enumerate(secret))
    return (_one_key(secret, name),)


def _signatures(keys: Tuple[bytes, ...], webhook_id: str, timestamp: str, body: bytes) -> str:
    prefix = f"{webhook_id}.{timestamp}.".encode()
    signatures = []
    for key in keys:
        mac = hmac.new(key, prefix, hashlib.sha256)
        mac.update(body)  # no copy of a large body
        signatures.append(_VERSION + base64.b64encode(mac.digest()).decode("ascii"))
    return " ".join(signatures)


def sign_webhook(body: bytes, secret: Secret, webhook_id: str, timestamp: Union[int, str]) -> str:
    """Return the ``webhook-signature`` value for *body*: ``v1,<base64>``, one per secret.

    What :class:`~batchdispatch.http.HttpSink` sends, for tests of a
    receiver. *body* is the uncompressed body.

    .. code-block:: python

        import time
        from batchdispatch.webhooks import sign_webhook

        body, now = b'[{"event":"signup"}]', int(time.time())
        signature = sign_webhook(body, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", now)
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}

    :raises ValueError: if a secret is empty or a ``whsec_`` secret is not base64.
    :raises TypeError: if *secret* is not a str, bytes, or a list or tuple of them.

    .. versionadded:: 0.2.0
    """
    return _signatures(webhook_keys(secret), str(webhook_id), str(timestamp), bytes(body))


def _header_values(headers: Any) -> Dict[str, List[str]]:
    """The three headers' values, by lower-case name, from any mapping (repeated names kept)."""
    found: Dict[str, List[str]] = {}
    for name, value in headers.items():
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        name = name.strip().lower()
        if name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE):
            found.setdefault(name, []).append(value.strip())
    return found


def _only(values: Optional[List[str]]) -> Optional[str]:
    """The header's one value; None if it is missing, empty, or given twice with different values."""
    if not values or len(set(values)) != 1 or not values[0]:
        return None
    return values[0]


def verify_webhook(body: bytes, headers: Any, secret: Secret, *, tolerance: float = 300) -> bool:
    """Check a request signed per Standard Webhooks; True only if it is genuine and fresh.

    The signed content is ``webhook-id``, ``webhook-timestamp`` and the body,
    so none of them can be changed, and a request replayed under another
    id fails. A ``webhook-timestamp`` more than *tolerance* seconds from
    ``time.time()``, either way, is refused: a captured request cannot be
    replayed later. Any one of the signatures in ``webhook-signature`` may
    match, under any one of the secrets: the sender signs with the old key
    and the new one while a key is rotated. Comparisons take constant time
    (:func:`hmac.compare_digest`).

    What a request carries never raises: missing headers, a timestamp that
    is not whole seconds, a signature of another version (``v1a,``), a body
    of the wrong type all give False. A wrong configuration raises: an
    empty secret (an unset environment variable, say) would accept
    signatures anyone can compute, and a negative, ``nan`` or infinite
    *tolerance* would accept any timestamp.

    .. code-block:: python

        import os
        from flask import Flask, abort, request
        from batchdispatch.webhooks import verify_webhook

        app = Flask(__name__)
        SECRET = os.environ["WEBHOOK_SECRET"]  # whsec_...


        @app.post("/hooks")
        def hooks():
            if not verify_webhook(request.get_data(), request.headers, SECRET):
                abort(401)
            ...

    :param body: the body as received, after undoing ``Content-Encoding: gzip``
        (bytes; a str is taken as UTF-8).
    :param headers: the request's headers: any mapping (a dict, Flask's or
        Django's ``request.headers``, an :class:`email.message.Message`),
        names in any case.
    :param secret: ``whsec_<base64>``, or a str (UTF-8) or bytes used as the
        key; or a list or tuple of them, any of which may match.
    :param tolerance: seconds of clock difference accepted: finite, >= 0.
    :raises ValueError: if a secret is empty or not valid, or *tolerance* is
        negative, ``nan`` or infinite.
    :raises TypeError: if *secret* or *tolerance* has the wrong type, or
        *headers* is not a mapping.

    .. versionadded:: 0.2.0
    """
    keys = webhook_keys(secret)
    tolerance = _check_tolerance(tolerance)
    if not callable(getattr(headers, "items", None)):
        raise TypeError(f"headers must be a mapping of header names to values, got {type(headers).__name__}")
    try:
        found = _header_values(headers)
        webhook_id, stamp = _only(found.get(WEBHOOK_ID)), _only(found.get(WEBHOOK_TIMESTAMP))
        offered = " ".join(found.get(WEBHOOK_SIGNATURE, ())).split()
        if webhook_id is None or stamp is None or not offered:
            return False
        # Whole seconds, as the specification writes them; int() would also take "1_000" or " 1".
        if not stamp.isdigit() or not stamp.isascii():
            return False
        if abs(time.time() - int(stamp)) > tolerance:
            return False
        data = body.encode("utf-8") if isinstance(body, str) else bytes(memoryview(body))
        expected = [s.encode("ascii") for s in _signatures(keys, webhook_id, str(int(stamp)), data).split()]
        matched = False
        for candidate in offered:
            given = candidate.encode("utf-8", "replace")
            for signature in expected:
                # Every pair is compared, so the time taken does not say which key matched.
                matched |= hmac.compare_digest(signature, given)
        return matched
    except Exception:  # noqa: BLE001 - documented: never raises on what a request carries
        return False
