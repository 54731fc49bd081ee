"""The sinks: :class:`HttpSink` POSTs to one URL, :class:`WebhookSink` to one :class:`Endpoint` per key.

This module owns what the sinks add to :class:`~batchdispatch.http._transport._Transport`:
their arguments, their reprs (which never show a secret, a header value or a
query string), and the WebhookSink's endpoints and the ones a 410 disabled,
both replaced copy-on-write so that deliveries read them without a lock.
They are public as ``batchdispatch.http.HttpSink``, ``.WebhookSink`` and
``.Endpoint``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from types import MappingProxyType
from typing import Any, Hashable, List, Mapping, Optional, Tuple, Union

import requests
from urllib3.util import Retry

from .._standard_webhooks import Secret
from ..exceptions import DeliveryError, EndpointGoneError, UnknownEndpointError
from ._bodies import _check_max_body_bytes
from ._request import Timeout, _check_headers, _check_timeout, _check_url, _safe_url
from ._retries import _DEFAULT
from ._schemes import _check_secret_shape, _check_signature, _normalized_secret, _scheme
from ._serializers import Serializer
from ._sink_stats import SinkStats
from ._transport import _Target, _Transport

log = logging.getLogger("batchdispatch.http")


class HttpSink(_Transport):
    """A dispatch callable that POSTs each batch as one JSON array to *url*.

    .. code-block:: python

        import os
        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.http import HttpSink

        KEY = os.environ["LOGS_API_KEY"]
        with HttpSink("https://logs.example.com/ingest", headers={"api-key": KEY}) as sink, \\
                BackgroundDispatcher(sink, delay=0.1, retry=RetryPolicy(max_attempts=3)) as logs:
            logs.enqueue({"event": "signup"})

    Each batch is one POST of a JSON array, signed per `Standard Webhooks
    <https://www.standardwebhooks.com>`_ when a *secret* is given: headers
    ``webhook-id`` (the batch id, the same on every retry of that body),
    ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``, the
    HMAC-SHA256 of ``f"{id}.{timestamp}."`` + body. A receiver checks it
    with :func:`~batchdispatch.webhooks.verify_webhook`, or with any
    Standard Webhooks library. ``signature="x-webhook"`` sends the headers
    of batchdispatch 0.1 instead (weaker: its signature does not cover the
    id).

    Any 2xx answer is success. Otherwise the call raises
    :class:`~batchdispatch.exceptions.DeliveryError` once urllib3's *retries*
    are spent, with the status and the start of the answer's body, so the
    dispatcher's ``on_error``, events and :class:`~batchdispatch.RetryPolicy`
    see it. Connection errors, timeouts, 408, 429 and 5xx are retryable
    (whatever their ``Retry-After`` says). Any other 4xx (410 Gone
    included), a redirect, a TLS error, a header or URL that cannot be
    sent, or a serialization error is not retryable, so a RetryPolicy (or
    a spool) gives the items up at once instead of replaying them for ever.

    **Size.** With *max_body_bytes*, a batch whose JSON would be larger is
    sent as several POSTs, in order, each within the limit; an item larger
    on its own is never sent and fails with
    :class:`~batchdispatch.exceptions.ItemTooLargeError` (its index and
    size), raised in a :class:`~batchdispatch.PartialFailure` so that only
    it is given up. A body refused with 413 is sent as two halves instead,
    and each half refused again in halves, within the same deadline; a
    single item refused with 413 is final. :meth:`stats` counts the
    splits. A part that fails but may succeed later stops the call, so
    that the receiver gets the items in order: it and the parts after it
    are raised as a PartialFailure, for the dispatcher to retry.

    **Retry-After.** The sink never sleeps for a server's ``Retry-After``:
    an answer carrying a valid one (seconds or an HTTP date) ends the call
    with ``DeliveryError(retryable=True, retry_after=seconds)``, and the
    dispatcher waits that long for this key (capped by the policy's
    ``max_backoff``), with the worker free for other keys. A value that
    cannot be parsed is ignored.

    **Deadline.** The whole call, urllib3's retries and their backoff sleeps
    included, is over within ``connect + read`` seconds of *timeout* (twice
    a single-number *timeout*), or by
    :func:`~batchdispatch.current_deadline` when the dispatcher sets an
    earlier one (at exit and shutdown): each attempt's timeouts shrink to
    the time left, and a retry that would end past it is not made. Only the
    first 64 KiB of an answer's body are read (the rest is never
    downloaded: the connection is closed instead), and a 2xx is a success
    even if its body is still arriving at the deadline. The status line,
    the headers, and a chunked body's size lines and trailers are read
    against the deadline too, however slowly they come, and a reused
    connection sends within the call's own timeouts. Limits remain: DNS
    resolution is not bounded; with a *session* of your own, the status
    line and headers are bounded per byte by the read timeout, not as a
    whole, and on urllib3 1.26 a reused connection sends with the previous
    call's read timeout (the sink does not change your session's adapters).

    Secrets and header values never appear in reprs, messages or this
    library's logs: header names and values are checked when the sink is
    built (no CR, LF or other control character, no leading whitespace,
    latin-1 only; a ValueError names the header, never its value), and an
    error raised by requests or urllib3, whose text may quote the URL's
    query string or a header value, is replaced by one of the same type
    whose text is safe before it becomes the ``__cause__`` of the
    DeliveryError. URLs are shown without user info and query string (but
    urllib3's own logs show the query string, its retry WARNING included:
    keep credentials out of the URL and pass them in *headers*).

    Safe to call from several threads at once (a
    :class:`~batchdispatch.KeyedDispatcher` with several workers).

    :param url: an ``http://`` or ``https://`` URL.
    :param session: a ``requests.Session`` to send with. By default the sink
        creates one, pooled, with an ``HTTPAdapter(max_retries=retries)``
        (of a subclass that reads an answer's status line and headers
        against the deadline) mounted for ``http://`` and ``https://``, and
        closes it in :meth:`close`. Your own session is used exactly as it
        is: the sink mounts nothing on it and never closes it, so its
        adapters decide urllib3 retries, and passing *retries* as well is
        an error. Those
        retries are urllib3's own: they may sleep for a ``Retry-After``,
        which the deadline does not cover; mount a Retry with
        ``respect_retry_after_header=False`` to avoid it.
    :param headers: extra headers for every request (API keys, say). They
        may override ``Content-Type`` and ``User-Agent``, not the
        ``webhook-*`` headers (``X-Webhook-*`` with ``signature="x-webhook"``).
    :param timeout: seconds, or a ``(connect, read)`` pair, per attempt;
        each at most :data:`MAX_TIMEOUT`. Their sum bounds the whole call.
    :param retries: a urllib3 ``Retry``, an int (:func:`default_retry` with
        that *total*) or None (no urllib3 retries). Default:
        :func:`default_retry`.
    :param gzip: compress the body (``Content-Encoding: gzip``). The
        signature covers the uncompressed body.
    :param secret: sign every request. ``whsec_<base64>`` is the key it
        encodes; any other str (its UTF-8) or bytes is the key itself. A
        list or tuple of secrets signs with each (one ``v1,`` signature
        per secret), to rotate a key without downtime.
    :param serializer: ``serializer(batch) -> bytes`` (default:
        :func:`json_serializer`). Set ``Content-Type`` in *headers* if it
        does not produce JSON.
    :param verify: TLS certificate verification: True (default), False, or
        the path of a CA bundle.
    :param signature: ``"standard"`` (default): Standard Webhooks headers.
        ``"x-webhook"``: the headers of 0.1, ``X-Webhook-Id``,
        ``X-Webhook-Timestamp`` and ``X-Webhook-Signature: sha256=<hex>``
        of ``f"{timestamp}."`` + body, for receivers built on 0.1; one
        secret only, used as it is (``whsec_`` is not decoded).
    :param max_body_bytes: the largest body to POST, in bytes, serialized
        and before gzip (default None: no limit). See *Size* above.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        url: str,
        *,
        session: Optional[requests.Session] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Timeout = (3.05, 30),
        retries: Union[Retry, int, None] = _DEFAULT,
        gzip: bool = False,
        secret: Optional[Secret] = None,
        serializer: Optional[Serializer] = None,
        verify: Union[bool, str] = True,
        signature: str = "standard",
        max_body_bytes: Optional[int] = None,
    ) -> None:
        self.url = _check_url(url)
        scheme = _scheme(signature, secret)
        max_body_bytes = _check_max_body_bytes(max_body_bytes)
        super().__init__(
            session=session, headers=headers, timeout=timeout, retries=retries, gzip=gzip,
            serializer=serializer, verify=verify, pools=1,
        )
        self._target = self._target_for(url, scheme=scheme, headers={}, timeout=self._timeout,
                                        max_body_bytes=max_body_bytes)

    def __call__(self, batch: List[Any]) -> None:
        """POST *batch*; raise :class:`~batchdispatch.exceptions.DeliveryError` if it was not accepted.

        Raises a :class:`~batchdispatch.PartialFailure` when only some of
        its items were delivered (see *Size*).
        """
        self._post(self._target, batch)

    def __repr__(self) -> str:
        extras = [f"headers={sorted(self._headers)}"] if self._headers else []
        scheme = self._target.scheme
        if scheme.signed:
            extras.append("signed" if scheme.name == "standard" else "signed x-webhook")
        if self._target.max_body_bytes is not None:
            extras.append(f"max_body_bytes={self._target.max_body_bytes}")
        if self._gzip:
            extras.append("gzip")
        if self._closed:
            extras.append("closed")
        return f"<HttpSink {_safe_url(self.url)}{''.join(' ' + e for e in extras)}>"


@dataclasses.dataclass(frozen=True, repr=False)
class Endpoint:
    """Where a :class:`WebhookSink` delivers one endpoint id's batches.

    .. code-block:: python

        from batchdispatch.http import Endpoint

        Endpoint("https://a.example/hook", secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                 headers={"X-Tenant": "42"}, timeout=5, max_body_bytes=1_000_000)

    :param url: an ``http://`` or ``https://`` URL.
    :param secret: sign this endpoint's requests (never shown in the repr):
        ``whsec_<base64>``, a str or bytes used as the key, or a list or
        tuple of them, each adding a signature (key rotation). A list is
        kept as a tuple.
    :param headers: headers for this endpoint, over the sink's (values never
        shown in the repr).
    :param timeout: seconds or a ``(connect, read)`` pair (None: the sink's).
    :param signature: ``"standard"`` or ``"x-webhook"`` for this endpoint
        (None: the sink's), so that receivers built on 0.1 and new ones can
        share a sink.
    :param max_body_bytes: the largest body for this endpoint (None: the sink's).
    """

    url: str
    secret: Optional[Secret] = dataclasses.field(default=None, repr=False)
    headers: Optional[Mapping[str, str]] = None
    timeout: Optional[Timeout] = None
    signature: Optional[str] = None
    max_body_bytes: Optional[int] = None

    def __post_init__(self) -> None:
        _check_url(self.url, "Endpoint url")
        if self.signature is not None:
            _scheme(self.signature, self.secret, "Endpoint secret", "Endpoint signature")
        else:  # the sink's scheme reads it: the sink checks the rest when the Endpoint is added
            _check_secret_shape(self.secret, "Endpoint secret")
        object.__setattr__(self, "secret", _normalized_secret(self.secret))
        if self.headers is not None:
            object.__setattr__(self, "headers", _check_headers(self.headers, "Endpoint headers"))
        if self.timeout is not None:
            _check_timeout(self.timeout, "Endpoint timeout")
        _check_max_body_bytes(self.max_body_bytes, "Endpoint max_body_bytes")

    def __repr__(self) -> str:
        parts = [repr(_safe_url(self.url))]
        if isinstance(self.secret, tuple):
            parts.append(f"secret=<{len(self.secret)} set>")
        elif self.secret is not None:
            parts.append("secret=<set>")
        if self.headers:
            parts.append(f"headers={sorted(self.headers)}")
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout!r}")
        if self.signature is not None:
            parts.append(f"signature={self.signature!r}")
        if self.max_body_bytes is not None:
            parts.append(f"max_body_bytes={self.max_body_bytes!r}")
        return f"Endpoint({', '.join(parts)})"


class WebhookSink(_Transport):
    """A deliver callable for :class:`~batchdispatch.KeyedDispatcher`: one endpoint per key.

    .. code-block:: python

        from batchdispatch import KeyedDispatcher, RetryPolicy
        from batchdispatch.http import Endpoint, WebhookSink

        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        sink = WebhookSink({"ep-1": Endpoint("https://a.example/hook", secret=secret)})
        hooks = KeyedDispatcher(sink, delay=1.0, max_batch_size=100, retry=RetryPolicy(max_attempts=5))
        hooks.enqueue("ep-1", {"event": "message.sent"})
        sink.add("ep-2", Endpoint("https://b.example/hook", secret=b"another key"))
        hooks.shutdown(timeout=10)
        sink.close()

    ``sink(endpoint_id, batch)`` POSTs *batch* to that endpoint, as
    :class:`HttpSink` does, with the endpoint's secret, its headers over the
    sink's, and its timeout, *signature* and *max_body_bytes* (or the
    sink's). An id with no endpoint raises
    :class:`~batchdispatch.exceptions.UnknownEndpointError`, which is not
    retryable, so its items are given up at once. :meth:`add` and
    :meth:`remove` may be called from any thread while a dispatcher runs;
    a batch already being sent finishes with the endpoint it started with.

    **410 Gone.** An endpoint that answers 410 is disabled: that batch, and
    every later one for its id, fails with
    :class:`~batchdispatch.exceptions.EndpointGoneError` (not retryable)
    without a request, so the dispatcher gives its items up at once (with
    a spool, as dead letters), and a warning names the id. The other
    endpoints go on. :meth:`enable` turns it back on, and so does
    :meth:`add` with a different Endpoint for the id. ``stats().disabled``
    lists the disabled ids and ``stats().endpoint_gone`` counts their items.

    The keyword options are those of :class:`HttpSink`, for every endpoint.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        endpoints: Optional[Mapping[Hashable, Endpoint]] = None,
        *,
        session: Optional[requests.Session] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Timeout = (3.05, 30),
        retries: Union[Retry, int, None] = _DEFAULT,
        gzip: bool = False,
        serializer: Optional[Serializer] = None,
        verify: Union[bool, str] = True,
        signature: str = "standard",
        max_body_bytes: Optional[int] = None,
    ) -> None:
        endpoints = dict(endpoints or {})
        for endpoint_id, endpoint in endpoints.items():
            self._check_endpoint(endpoint_id, endpoint)
        self._signature = _check_signature(signature)
        self._max_body_bytes = _check_max_body_bytes(max_body_bytes)
        self._write_lock = threading.Lock()  # serialises add, remove, enable and disabling
        # Copy on write: deliveries read the current mappings without a lock.
        self._entries: Mapping[Hashable, Tuple[Endpoint, _Target]] = MappingProxyType({})
        self._disabled: Mapping[Hashable, None] = MappingProxyType({})  # ordered: oldest first
        super().__init__(
            session=session, headers=headers, timeout=timeout, retries=retries, gzip=gzip,
            serializer=serializer, verify=verify, pools=32,
        )
        try:
            self._entries = MappingProxyType(
                {key: (endpoint, self._endpoint_target(key, endpoint)) for key, endpoint in endpoints.items()}
            )
        except BaseException:
            self.close()  # the session it made
            raise

    @staticmethod
    def _check_endpoint(endpoint_id: Hashable, endpoint: object) -> None:
        hash(endpoint_id)
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"endpoint {endpoint_id!r} must be an Endpoint, got {type(endpoint).__name__}")

    def _endpoint_target(self, endpoint_id: Hashable, endpoint: Endpoint) -> _Target:
        scheme = _scheme(endpoint.signature or self._signature, endpoint.secret,
                         f"the secret of endpoint {endpoint_id!r}", "signature")
        limit = endpoint.max_body_bytes if endpoint.max_body_bytes is not None else self._max_body_bytes
        return self._target_for(
            endpoint.url, scheme=scheme, headers=endpoint.headers or {},
            timeout=endpoint.timeout if endpoint.timeout is not None else self._timeout, max_body_bytes=limit,
        )

    def __call__(self, endpoint_id: Hashable, batch: List[Any]) -> None:
        """POST *batch* to *endpoint_id*'s endpoint; raise a DeliveryError if it was not accepted."""
        entry = self._entries.get(endpoint_id)
        if entry is None:
            raise UnknownEndpointError(endpoint_id)
        target = entry[1]
        if endpoint_id in self._disabled:
            self._counters.add("endpoint_gone", len(batch))
            raise EndpointGoneError(
                f"endpoint {endpoint_id!r} ({target.safe}) is disabled since it answered 410 Gone:"
                f" not sent; sink.enable({endpoint_id!r}) turns it back on",
                endpoint_id, url=target.safe,
            )
        self._post(target, batch, endpoint_id)

    def _gone(self, slot: Hashable, target: _Target, error: DeliveryError) -> DeliveryError:
        with self._write_lock:
            newly = slot not in self._disabled and slot in self._entries
            if newly:
                self._disabled = MappingProxyType({**self._disabled, slot: None})
        if newly:
            log.warning(
                "endpoint %r (%s) answered 410 Gone: disabled; its items are given up without a request"
                " until sink.enable(%r)", slot, target.safe, slot,
            )
        return EndpointGoneError(
            f"{error}; endpoint {slot!r} is disabled, sink.enable({slot!r}) turns it back on",
            slot, url=target.safe, status=error.status, body=error.body,
        )

    def add(self, endpoint_id: Hashable, endpoint: Endpoint) -> None:
        """Add or replace *endpoint_id*'s endpoint; its next batch uses it.

        Replacing a disabled endpoint with a different one enables the id again.
        """
        self._check_endpoint(endpoint_id, endpoint)
        target = self._endpoint_target(endpoint_id, endpoint)
        with self._write_lock:
            current = self._entries.get(endpoint_id)
            self._entries = MappingProxyType({**self._entries, endpoint_id: (endpoint, target)})
            if current is not None and current[0] != endpoint:
                self._enable(endpoint_id)

    def remove(self, endpoint_id: Hashable) -> None:
        """Forget *endpoint_id*; its later batches fail with UnknownEndpointError. No error if unknown."""
        with self._write_lock:
            entries = dict(self._entries)
            entries.pop(endpoint_id, None)
            self._entries = MappingProxyType(entries)
            self._enable(endpoint_id)
        self._resume.forget(endpoint_id)

    def enable(self, endpoint_id: Hashable) -> bool:
        """Turn on again an endpoint a 410 disabled; True if it was disabled. Its next batch is sent."""
        with self._write_lock:
            return self._enable(endpoint_id)

    def _enable(self, endpoint_id: Hashable) -> bool:
        if endpoint_id not in self._disabled:
            return False
        disabled = dict(self._disabled)
        del disabled[endpoint_id]
        self._disabled = MappingProxyType(disabled)
        return True

    @property
    def disabled(self) -> Tuple[Hashable, ...]:
        """The endpoint ids a 410 disabled, oldest first."""
        return tuple(self._disabled)

    @property
    def endpoints(self) -> Mapping[Hashable, Endpoint]:
        """A read-only snapshot of the endpoints."""
        return MappingProxyType({key: entry[0] for key, entry in self._entries.items()})

    def stats(self) -> SinkStats:
        """What the sink has done since it was built; ``disabled`` lists the endpoints a 410 disabled."""
        return self._counters.snapshot(tuple(self._disabled))

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        disabled = f", {len(self._disabled)} disabled" if self._disabled else ""
        return f"<WebhookSink {len(self._entries)} endpoints{disabled}{closed}>"
