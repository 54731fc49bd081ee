"""The sinks: :class:`HttpSink` POSTs to one URL, :class:`WebhookSink` to one :class:`Endpoint` per key.

This module owns what the sinks add to :class:`~batchdispatch.http._transport._Transport`:
their arguments, their reprs (which never show a secret, a header value or a
query string), and the WebhookSink's endpoints, replaced copy-on-write so
that deliveries read them without a lock. They are public as
``batchdispatch.http.HttpSink``, ``.WebhookSink`` and ``.Endpoint``.
"""

from __future__ import annotations

import dataclasses
import threading
from types import MappingProxyType
from typing import Any, Hashable, List, Mapping, Optional, Union

import requests
from urllib3.util import Retry

from ..exceptions import UnknownEndpointError
from ._request import Timeout, _check_headers, _check_secret, _check_timeout, _check_url, _safe_url
from ._retries import _DEFAULT
from ._serializers import Serializer
from ._transport import _Transport


class HttpSink(_Transport):
    """A dispatch callable that POSTs each batch as one JSON array to *url*.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.http import HttpSink

        with HttpSink("https://logs.example.com/ingest", headers={"api-key": KEY}) as sink, \\
                BackgroundDispatcher(sink, delay=0.1, retry=RetryPolicy(max_attempts=3)) as logs:
            logs.enqueue({"event": "signup"})

    Any 2xx answer is success. Otherwise the call raises
    :class:`~batchdispatch.exceptions.DeliveryError` once urllib3's *retries*
    are spent, with the status and the start of the answer's body, so the
    dispatcher's ``on_error``, events and :class:`~batchdispatch.RetryPolicy`
    see it. Connection errors, timeouts, 408, 429 and 5xx are retryable
    (whatever their ``Retry-After`` says). A 413 is final for a batch of one
    item, which can never fit; a batch of several is split, each half
    POSTed on its own, within the same deadline, and what still fails is
    raised as a :class:`~batchdispatch.PartialFailure`. Any other 4xx,
    a redirect, a TLS error, a header or URL that cannot be sent, or a
    serialization error is not retryable, so a RetryPolicy (or a spool)
    gives the items up at once instead of replaying them for ever.

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
        ``X-Webhook-*`` headers.
    :param timeout: seconds, or a ``(connect, read)`` pair, per attempt;
        each at most :data:`MAX_TIMEOUT`. Their sum bounds the whole call.
    :param retries: a urllib3 ``Retry``, an int (:func:`default_retry` with
        that *total*) or None (no urllib3 retries). Default:
        :func:`default_retry`.
    :param gzip: compress the body (``Content-Encoding: gzip``). The
        signature covers the uncompressed body.
    :param secret: sign every request with this secret (``X-Webhook-Signature``).
    :param serializer: ``serializer(batch) -> bytes`` (default:
        :func:`json_serializer`). Set ``Content-Type`` in *headers* if it
        does not produce JSON.
    :param verify: TLS certificate verification: True (default), False, or
        the path of a CA bundle.

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
        secret: Union[str, bytes, None] = None,
        serializer: Optional[Serializer] = None,
        verify: Union[bool, str] = True,
    ) -> None:
        self.url = _check_url(url)
        self._secret = _check_secret(secret)
        super().__init__(
            session=session, headers=headers, timeout=timeout, retries=retries, gzip=gzip,
            serializer=serializer, verify=verify, pools=1,
        )

    def __call__(self, batch: List[Any]) -> None:
        """POST *batch*; raise :class:`~batchdispatch.exceptions.DeliveryError` if it was not accepted."""
        self._post(self.url, batch, secret=self._secret, headers={}, timeout=self._timeout)

    def __repr__(self) -> str:
        extras = [f"headers={sorted(self._headers)}"] if self._headers else []
        if self._secret is not None:
            extras.append("signed")
        if self._gzip:
            extras.append("gzip")
        if self._closed:
            extras.append("closed")
        return f"<HttpSink {_safe_url(self.url)}{''.join(' ' + e for e in extras)}>"


@dataclasses.dataclass(frozen=True, repr=False)
class Endpoint:
    """Where a :class:`WebhookSink` delivers one endpoint id's batches.

    .. code-block:: python

        Endpoint("https://a.example/hook", secret="s3cret", headers={"X-Tenant": "42"}, timeout=5)

    :param url: an ``http://`` or ``https://`` URL.
    :param secret: sign this endpoint's requests (never shown in the repr).
    :param headers: headers for this endpoint, over the sink's (values never
        shown in the repr).
    :param timeout: seconds or a ``(connect, read)`` pair (None: the sink's).
    """

    url: str
    secret: Union[str, bytes, None] = dataclasses.field(default=None, repr=False)
    headers: Optional[Mapping[str, str]] = None
    timeout: Optional[Timeout] = None

    def __post_init__(self) -> None:
        _check_url(self.url, "Endpoint url")
        _check_secret(self.secret, "Endpoint secret")
        if self.headers is not None:
            object.__setattr__(self, "headers", _check_headers(self.headers, "Endpoint headers"))
        if self.timeout is not None:
            _check_timeout(self.timeout, "Endpoint timeout")

    def __repr__(self) -> str:
        parts = [repr(_safe_url(self.url))]
        if self.secret is not None:
            parts.append("secret=<set>")
        if self.headers:
            parts.append(f"headers={sorted(self.headers)}")
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout!r}")
        return f"Endpoint({', '.join(parts)})"


class WebhookSink(_Transport):
    """A deliver callable for :class:`~batchdispatch.KeyedDispatcher`: one endpoint per key.

    .. code-block:: python

        from batchdispatch import KeyedDispatcher, RetryPolicy
        from batchdispatch.http import Endpoint, WebhookSink

        sink = WebhookSink({"ep-1": Endpoint("https://a.example/hook", secret="s3cret")})
        hooks = KeyedDispatcher(sink, delay=1.0, max_batch_size=100, retry=RetryPolicy(max_attempts=5))
        hooks.enqueue("ep-1", {"event": "message.sent"})
        sink.add("ep-2", Endpoint("https://b.example/hook", secret="other"))
        hooks.shutdown(timeout=10)
        sink.close()

    ``sink(endpoint_id, batch)`` POSTs *batch* to that endpoint, as
    :class:`HttpSink` does, with the endpoint's secret, its headers over the
    sink's, and its timeout (or the sink's). An id with no endpoint raises
    :class:`~batchdispatch.exceptions.UnknownEndpointError`, which is not
    retryable, so its items are given up at once. :meth:`add` and
    :meth:`remove` may be called from any thread while a dispatcher runs;
    a batch already being sent finishes with the endpoint it started with.

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
    ) -> None:
        endpoints = dict(endpoints or {})
        for endpoint_id, endpoint in endpoints.items():
            self._check_endpoint(endpoint_id, endpoint)
        # Copy on write: deliveries read the current dict without a lock.
        self._endpoints: Mapping[Hashable, Endpoint] = MappingProxyType(endpoints)
        self._write_lock = threading.Lock()
        super().__init__(
            session=session, headers=headers, timeout=timeout, retries=retries, gzip=gzip,
            serializer=serializer, verify=verify, pools=32,
        )

    @staticmethod
    def _check_endpoint(endpoint_id: Hashable, endpoint: object) -> None:
        hash(endpoint_id)
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"endpoint {endpoint_id!r} must be an Endpoint, got {type(endpoint).__name__}")

    def __call__(self, endpoint_id: Hashable, batch: List[Any]) -> None:
        """POST *batch* to *endpoint_id*'s endpoint; raise a DeliveryError if it was not accepted."""
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            raise UnknownEndpointError(endpoint_id)
        self._post(
            endpoint.url, batch, secret=endpoint.secret, headers=endpoint.headers or {},
            timeout=endpoint.timeout if endpoint.timeout is not None else self._timeout,
        )

    def add(self, endpoint_id: Hashable, endpoint: Endpoint) -> None:
        """Add or replace *endpoint_id*'s endpoint; its next batch uses it."""
        self._check_endpoint(endpoint_id, endpoint)
        with self._write_lock:
            self._endpoints = MappingProxyType({**self._endpoints, endpoint_id: endpoint})

    def remove(self, endpoint_id: Hashable) -> None:
        """Forget *endpoint_id*; its later batches fail with UnknownEndpointError. No error if unknown."""
        with self._write_lock:
            endpoints = dict(self._endpoints)
            endpoints.pop(endpoint_id, None)
            self._endpoints = MappingProxyType(endpoints)

    @property
    def endpoints(self) -> Mapping[Hashable, Endpoint]:
        """A read-only snapshot of the endpoints."""
        return self._endpoints

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return f"<WebhookSink {len(self._endpoints)} endpoints{closed}>"
