"""The two ways a sink names and signs a request: Standard Webhooks, and the ``X-Webhook-*`` headers of 0.1.

This module owns the *signature* argument (``"standard"``, the default, or
``"x-webhook"``), the keys a *secret* stands for under each scheme, and the
headers each scheme adds to one body: its id, its timestamp and, with a
secret, its signature. The keys are computed once, when the sink or the
Endpoint is built; a bad secret is an error then, naming the argument and
never showing its value.
"""

from __future__ import annotations

from typing import FrozenSet, List, Optional, Tuple, Union

from .._signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from .._standard_webhooks import WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, _signatures, webhook_keys

#: The values *signature* takes: Standard Webhooks, or the headers of batchdispatch 0.1.
SIGNATURES = ("standard", "x-webhook")


class _Scheme:
    """How one sink or endpoint names and signs its requests."""

    #: The *signature* value this scheme answers to.
    name = ""
    #: Lower-case names of the headers the scheme sets: the sink's and the caller's headers cannot set them.
    reserved: FrozenSet[str] = frozenset()

    @property
    def signed(self) -> bool:
        raise NotImplementedError

    def headers(self, body: bytes, webhook_id: str, timestamp: str) -> List[Tuple[str, str]]:
        """The id, timestamp and (with a secret) signature headers of *body*, uncompressed."""
        raise NotImplementedError


class _StandardScheme(_Scheme):
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64> ...``, one per key."""

    name = "standard"
    reserved = frozenset((WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE))

    def __init__(self, keys: Tuple[bytes, ...]) -> None:
        self._keys = keys

    @property
    def signed(self) -> bool:
        return bool(self._keys)

    def headers(self, body: bytes, webhook_id: str, timestamp: str) -> List[Tuple[str, str]]:
        sent = [(WEBHOOK_ID, webhook_id), (WEBHOOK_TIMESTAMP, timestamp)]
        if self._keys:
            sent.append((WEBHOOK_SIGNATURE, _signatures(self._keys, webhook_id, timestamp, body)))
        return sent


class _LegacyScheme(_Scheme):
    """``X-Webhook-Id``, ``X-Webhook-Timestamp`` and ``X-Webhook-Signature: sha256=<hex>``, as in 0.1.

    The signature covers the timestamp and the body, not the id.
    """

    name = "x-webhook"
    reserved = frozenset(h.lower() for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))

    def __init__(self, key: Optional[bytes]) -> None:
        self._key = key

    @property
    def signed(self) -> bool:
        return self._key is not None

    def headers(self, body: bytes, webhook_id: str, timestamp: str) -> List[Tuple[str, str]]:
        sent = [(ID_HEADER, webhook_id), (TIMESTAMP_HEADER, timestamp)]
        if self._key is not None:
            sent.append((SIGNATURE_HEADER, sign(body, self._key, timestamp)))
        return sent


def _check_signature(signature: object, name: str = "signature") -> str:
    if signature not in SIGNATURES:
        choices = " or ".join(repr(s) for s in SIGNATURES)
        shown = repr(signature) if isinstance(signature, str) else type(signature).__name__
        raise ValueError(f"{name} must be {choices}, got {shown}")
    return str(signature)


def _scheme(signature: object, secret: object, name: str = "secret",
            signature_name: str = "signature") -> _Scheme:
    """The scheme *signature* names, with the keys *secret* stands for (None: unsigned).

    :raises ValueError: naming *name* or *signature_name*, never showing a secret.
    :raises TypeError: naming *name*, for a secret of the wrong type.
    """
    kind = _check_signature(signature, signature_name)
    if kind == "standard":
        return _StandardScheme(() if secret is None else webhook_keys(secret, name))
    if secret is None:
        return _LegacyScheme(None)
    if isinstance(secret, (list, tuple)):
        if len(secret) != 1:
            raise ValueError(
                f"{name}: {signature_name}='x-webhook' signs with one secret, got {len(secret)};"
                f" several secrets (key rotation) need {signature_name}='standard'"
            )
        return _LegacyScheme(_legacy_key(secret[0], f"{name}[0]"))
    return _LegacyScheme(_legacy_key(secret, name))


def _legacy_key(secret: object, name: str) -> bytes:
    """The key of 0.1: a str is its UTF-8, as it is (a ``whsec_`` prefix is not decoded)."""
    if isinstance(secret, bool) or not isinstance(secret, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a str or bytes, got {type(secret).__name__}")
    if not secret:
        raise ValueError(f"{name} must not be empty")
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def _check_secret_shape(secret: object, name: str) -> None:
    """What every scheme asks of a secret: None, or non-empty str or bytes, or a non-empty list of them.

    For an Endpoint without a *signature* of its own: the sink checks the
    rest (``whsec_`` base64, one secret for ``"x-webhook"``) when it adds it.
    """
    if secret is None:
        return
    if isinstance(secret, (list, tuple)):
        if not secret:
            raise ValueError(f"{name} must hold at least one secret")
        for index, one in enumerate(secret):
            _legacy_key(one, f"{name}[{index}]")
        return
    _legacy_key(secret, name)


def _normalized_secret(secret: object) -> Union[str, bytes, Tuple[Union[str, bytes], ...], None]:
    """*secret* as an Endpoint keeps it: a list becomes a tuple (Endpoints are immutable)."""
    if isinstance(secret, list):
        return tuple(secret)
    return secret  # type: ignore[return-value]
