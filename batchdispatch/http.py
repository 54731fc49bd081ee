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
  (both can be overridden through *headers*);
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

import dataclasses
import gzip as _gzip
import logging
import os
import threading
import time
import urllib.parse
import uuid
from types import MappingProxyType
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Tuple, TypeVar, Union

import requests
import requests.adapters
from urllib3.util import Retry

from . import __version__, _json
from ._engine import current_batch_id
from ._signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
from .exceptions import DeliveryError, SerializationError, UnknownEndpointError

__all__ = [
    "Endpoint",
    "HttpSink",
    "Serializer",
    "WebhookSink",
    "default_retry",
    "json_serializer",
    "sign",
    "verify_signature",
]

log = logging.getLogger(__name__)

#: A serializer turns a batch into the request body.
Serializer = Callable[[List[Any]], bytes]
Timeout = Union[float, Tuple[float, float]]
_T = TypeVar("_T", bound="_Transport")

#: Statuses urllib3 retries by default; any other 4xx is final and not retryable.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
#: Characters of the response body kept in a DeliveryError.
BODY_EXCERPT = 200
#: The User-Agent sent unless *headers* says otherwise.
USER_AGENT = f"batchdispatch/{__version__}"


class _Default:
    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()


def default_retry() -> Retry:
    """The urllib3 :class:`~urllib3.util.Retry` that sinks use unless told otherwise.

    Five retries in all, exponential backoff (0, 1, 2, 4, 8 seconds on urllib3
    2.x), on connection errors, read errors and the statuses 408, 429, 500,
    502, 503 and 504, for every method including POST, honouring
    ``Retry-After``. After the last one, the last answer is returned rather
    than raised, so the sink can report its status and body.

    .. code-block:: python

        patient = default_retry().new(total=10)
        sink = HttpSink(URL, retries=patient)
    """
    return Retry(
        total=5,
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # None: every method; POST is not retried by default
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def _resolve_retries(retries: Any) -> Retry:
    if retries is _DEFAULT:
        return default_retry()
    if retries is None:
        return Retry(total=0, raise_on_status=False)
    if isinstance(retries, bool) or not isinstance(retries, (int, Retry)):
        raise TypeError(f"retries must be a urllib3 Retry, an int or None, got {type(retries).__name__}")
    if isinstance(retries, int):
        if retries < 0:
            raise ValueError(f"retries must be at least 0, got {retries!r}")
        return default_retry().new(total=retries)
    return retries


def json_serializer(batch: List[Any]) -> bytes:
    """The default serializer: the batch as one compact JSON array, UTF-8.

    A value JSON cannot represent (a ``datetime``, a ``set``, ``NaN``, ...)
    raises :class:`~batchdispatch.exceptions.SerializationError` naming the
    item's index and the offending type, never the value itself.
    """
    try:
        return _json.dumps(batch).encode("utf-8")
    except (TypeError, ValueError) as exc:
        for index, item in enumerate(batch):
            try:
                _json.dumps(item)
            except (TypeError, ValueError) as item_exc:
                raise SerializationError(
                    f"item {index} of the batch is not JSON serializable: {_json.what(item_exc)}",
                    index=index,
                ) from item_exc
        raise SerializationError(f"the batch is not JSON serializable: {type(exc).__name__}") from exc


def _safe_url(url: str) -> str:
    """*url* without user info, query or fragment: what messages and reprs may show."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid url>"
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def _check_url(url: object, name: str = "url") -> str:
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str, got {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL: {_safe_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host, got {_safe_url(url)!r}")
    return url


def _check_timeout(timeout: object, name: str = "timeout") -> Timeout:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if isinstance(timeout, tuple) and len(timeout) != 2:
        raise ValueError(f"{name} must be a number or a (connect, read) pair, got {len(timeout)} values")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number or a (connect, read) pair of numbers, "
                            f"got {type(value).__name__}")
        if not 0 < value < float("inf"):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return timeout  # type: ignore[return-value]


def _check_secret(secret: object, name: str = "secret") -> Union[str, bytes, None]:
    if secret is None:
        return None
    if not isinstance(secret, (str, bytes)):
        raise TypeError(f"{name} must be a str, bytes or None, got {type(secret).__name__}")
    if not secret:
        raise ValueError(f"{name} must not be empty")
    return secret


def _check_headers(headers: object, name: str = "headers") -> Mapping[str, str]:
    if headers is None:
        return MappingProxyType({})
    if not isinstance(headers, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str, got {type(headers).__name__}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{name} must map str to str; the header {key!r} does not")
    return MappingProxyType(dict(headers))


def _cause_text(exc: BaseException) -> str:
    """The OS error behind a requests exception (``Connection refused``), without URLs."""
    todo: List[BaseException] = [exc]
    seen = 0
    while todo and seen < 20:
        current = todo.pop(0)
        seen += 1
        if isinstance(current, OSError) and current.strerror:
            return f": {current.strerror}"
        todo += [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        todo += [c for c in (reason, current.__cause__, current.__context__) if isinstance(c, BaseException)]
    return ""


class _Transport:
    """What both sinks share: the session, its retries, and one POST of a batch."""

    def __init__(
        self,
        *,
        session: Optional[requests.Session],
        headers: Optional[Mapping[str, str]],
        timeout: Timeout,
        retries: Any,
        gzip: bool,
        serializer: Optional[Serializer],
        verify: Union[bool, str],
        pools: int,
    ) -> None:
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError(f"session must be a requests.Session or None, got {type(session).__name__}")
        if session is not None and retries is not _DEFAULT:
            raise ValueError(
                "retries applies only to the session the sink creates; with your own session, "
                "mount requests.adapters.HTTPAdapter(max_retries=...) on it yourself"
            )
        if not isinstance(gzip, bool):
            raise TypeError(f"gzip must be a bool, got {type(gzip).__name__}")
        if serializer is not None and not callable(serializer):
            raise TypeError(f"serializer must be callable or None, got {type(serializer).__name__}")
        if not isinstance(verify, (bool, str)):
            raise TypeError(f"verify must be a bool or a CA bundle path, got {type(verify).__name__}")
        self._headers = _check_headers(headers)
        self._timeout = _check_timeout(timeout)
        self._retries = _resolve_retries(retries)
        self._gzip = gzip
        self._serializer: Serializer = serializer or json_serializer
        self._verify = verify
        self._pools = pools
        self._own_session = session is None
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._session: Optional[requests.Session] = session if session is not None else self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=self._pools, pool_maxsize=10, max_retries=self._retries,
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _current_session(self) -> requests.Session:
        with self._lock:
            if self._closed or self._session is None:
                raise DeliveryError(f"{type(self).__name__} is closed", retryable=False)
            if self._own_session and os.getpid() != self._pid:
                # A forked child must not share the parent's pooled sockets.
                self._session = self._new_session()
                self._pid = os.getpid()
            return self._session

    def close(self) -> None:
        """Close the session if the sink created it (yours stays open). Idempotent."""
        with self._lock:
            session, self._session = self._session, None
            self._closed = True
        if session is not None and self._own_session:
            session.close()

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post(
        self,
        url: str,
        batch: List[Any],
        *,
        secret: Union[str, bytes, None],
        headers: Mapping[str, str],
        timeout: Timeout,
    ) -> None:
        safe = _safe_url(url)
        try:
            body = self._serializer(batch)
        except SerializationError as exc:
            exc.url = safe
            raise
        except Exception as exc:  # any serializer failure is final for this batch
            raise SerializationError(
                f"the serializer failed on the batch for {safe}: {type(exc).__name__}", url=safe,
            ) from exc
        if not isinstance(body, (bytes, bytearray)):
            raise SerializationError(
                f"the serializer must return bytes, got {type(body).__name__}", url=safe,
            )
        timestamp = str(int(time.time()))
        sent: Dict[str, str] = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        sent.update(self._headers)
        sent.update(headers)
        sent[ID_HEADER] = current_batch_id() or uuid.uuid4().hex
        sent[TIMESTAMP_HEADER] = timestamp
        if secret is not None:
            sent[SIGNATURE_HEADER] = sign(body, secret, timestamp)
        data = bytes(body)
        if self._gzip:
            data = _gzip.compress(data, compresslevel=5, mtime=0)
            sent["Content-Encoding"] = "gzip"
        session = self._current_session()
        started = time.monotonic()
        try:
            response = session.post(
                url, data=data, headers=sent, timeout=timeout, verify=self._verify,
                allow_redirects=False,  # a redirected POST may turn into a GET and lose the batch
            )
        except requests.exceptions.Timeout as exc:
            kind = "connect timed out" if isinstance(exc, requests.exceptions.ConnectTimeout) else "timed out"
            raise DeliveryError(f"POST {safe} {kind} after {timeout} s", url=safe) from exc
        except requests.exceptions.SSLError as exc:
            raise DeliveryError(
                f"POST {safe}: TLS error{_cause_text(exc)}", url=safe, retryable=False,
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise DeliveryError(f"POST {safe}: connection failed{_cause_text(exc)}", url=safe) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader,
                requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
            raise DeliveryError(f"POST {safe}: {type(exc).__name__}", url=safe, retryable=False) from exc
        except requests.exceptions.RequestException as exc:
            raise DeliveryError(f"POST {safe}: {type(exc).__name__}{_cause_text(exc)}", url=safe) from exc
        with response:
            status = response.status_code
            excerpt = response.content[:BODY_EXCERPT].decode("utf-8", "replace")
        elapsed = time.monotonic() - started
        if 200 <= status < 300:
            log.debug("POST %s: %d items, HTTP %d in %.3f s", safe, len(batch), status, elapsed)
            return
        retryable = status in RETRY_STATUSES or status >= 500
        reason = f" {response.reason}" if response.reason else ""
        detail = f": {excerpt}" if excerpt else ""
        raise DeliveryError(
            f"POST {safe} answered {status}{reason}{detail}",
            url=safe, status=status, body=excerpt, retryable=retryable,
        )


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
    see it. Connection errors and timeouts are retryable; a 4xx other than
    408 and 429, a redirect, a TLS error or a serialization error is not,
    so a RetryPolicy gives the items up at once.

    Secrets and header values never appear in reprs, messages or this
    library's logs; URLs are shown without user info and query string (but
    urllib3's own debug log shows the query string: keep credentials out of
    the URL and pass them in *headers*).

    Safe to call from several threads at once (a
    :class:`~batchdispatch.KeyedDispatcher` with several workers).

    :param url: an ``http://`` or ``https://`` URL.
    :param session: a ``requests.Session`` to send with. By default the sink
        creates one, pooled, with an ``HTTPAdapter(max_retries=retries)``
        mounted for ``http://`` and ``https://``, and closes it in
        :meth:`close`. Your own session is used exactly as it is: the sink
        mounts nothing on it and never closes it, so its adapters decide
        urllib3 retries, and passing *retries* as well is an error.
    :param headers: extra headers for every request (API keys, say). They
        may override ``Content-Type`` and ``User-Agent``, not the
        ``X-Webhook-*`` headers.
    :param timeout: seconds, or a ``(connect, read)`` pair, per attempt.
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
