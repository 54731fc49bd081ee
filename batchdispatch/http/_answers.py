"""What came back, or why nothing did: one POST's answer or failure, as success or a DeliveryError.

This module owns reading an answer (at most :data:`BODY_READ_LIMIT` bytes of
its body, by the call's deadline), judging it (a 2xx is success; which
statuses are retryable; its ``Retry-After``; an excerpt of its body), and
turning an exception of requests or urllib3 into a DeliveryError whose
cause has a safe text (no query string, no header value).
"""

from __future__ import annotations

import http.client
import logging
import ssl
import time
import zlib
from typing import List, Optional, Tuple, Type

import requests
import urllib3.exceptions

from ..exceptions import DeliveryError
from ._deadline import _DeadlineReader
from ._request import Timeout, _session_header_problem
from ._retries import RETRY_STATUSES, _retry_after

#: Characters of the response body kept in a DeliveryError.
BODY_EXCERPT = 200
#: Bytes of a response body the sink reads at most; the rest is never read
#: (the connection is closed instead of drained).
BODY_READ_LIMIT = 64 * 1024

# The package's name, as before the split into modules: logging filters and levels are set on it.
log = logging.getLogger("batchdispatch.http")


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


def _chain_has(exc: BaseException, kinds: Tuple[Type[BaseException], ...],
               unless: Tuple[Type[BaseException], ...] = ()) -> bool:
    """Whether *exc* or what it wraps (args, ``reason``, causes) is one of *kinds*."""
    todo: List[BaseException] = [exc]
    seen = 0
    while todo and seen < 20:
        current = todo.pop(0)
        seen += 1
        if isinstance(current, kinds) and not isinstance(current, unless):
            return True
        todo += [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        todo += [c for c in (reason, current.__cause__, current.__context__) if isinstance(c, BaseException)]
    return False


def _read_prefix(response: requests.Response, deadline: float) -> Tuple[bytes, bool]:
    """Up to BODY_READ_LIMIT bytes of the body, read by *deadline*; and whether that was all of it.

    Reads go to the http.client response under urllib3's, one receive at a
    time (``read1``), through a :class:`_DeadlineReader` put under it for
    the while: a server that drips its body (or a chunked body's size
    lines and trailers) a byte at a time cannot hold the call past its
    deadline, nor a huge body fill the memory.
    """
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse):  # not what urllib3 1.26 to 2.x build: read nothing
        return b"", False
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    inner = fp.fp
    if sock is None or inner is None:  # already closed: a body of 0 bytes, or none at all
        return b"", fp.isclosed()
    # Restored after: urllib3 sends the next request on a reused socket with the timeout it has.
    sock_timeout = sock.gettimeout()
    reader = _DeadlineReader(inner, sock, deadline)
    fp.fp = reader  # type: ignore[assignment]  # what http.client reads from
    chunks: List[bytes] = []
    size = 0
    try:
        while size < BODY_READ_LIMIT and not fp.isclosed():
            if deadline <= time.monotonic():
                break
            chunk = fp.read1(BODY_READ_LIMIT - size)
            if not chunk:
                if fp.length == 0 and not fp.isclosed():
                    fp.read()  # an empty body: this marks the response complete
                break
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, http.client.HTTPException, ValueError):
        return b"".join(chunks), False
    finally:
        if fp.fp is not None:  # else http.client closed it: the body is complete
            fp.fp = inner
        try:
            sock.settimeout(sock_timeout)
        except OSError:
            pass
    return b"".join(chunks), fp.isclosed()


def _excerpt(prefix: bytes, encoding: Optional[str]) -> str:
    """The first BODY_EXCERPT characters of a body, decoded from gzip or deflate if need be."""
    encoding = (encoding or "").strip().lower()
    if prefix and encoding in ("gzip", "x-gzip", "deflate"):
        try:
            # 47: a gzip or zlib header, detected; a stream cut short is fine.
            prefix = zlib.decompressobj(47).decompress(prefix, BODY_EXCERPT * 4)
        except zlib.error:
            return ""
    return prefix[:BODY_EXCERPT * 4].decode("utf-8", "replace")[:BODY_EXCERPT]


def _answer_error(response: requests.Response, safe: str, size: int, deadline: float, started: float,
                  respect_retry_after: bool) -> Optional[DeliveryError]:
    """None if *response* is a 2xx; else the DeliveryError that reports it, for the caller to raise.

    Either way the response is closed, or its connection released to the pool
    when its whole body was read. Returned, not raised: a raised error's
    traceback would keep this frame, and with it the response, whose reader
    holds its socket open even once the session has closed the connection
    (``stats().last_error`` keeps the last error for good).
    """
    status = response.status_code
    try:
        prefix, complete = _read_prefix(response, deadline)
        if complete:  # the connection goes back to the pool, ready for the next request
            response.raw.release_conn()
    finally:
        response.close()  # closes the connection unless it was released above
    elapsed = time.monotonic() - started
    if 200 <= status < 300:
        log.debug("POST %s: %d items, HTTP %d in %.3f s", safe, size, status, elapsed)
        return None
    excerpt = _excerpt(prefix, response.headers.get("Content-Encoding"))
    # A single item too large (413) can never go through; a batch of
    # several is split by _post, and its halves may.
    retryable = size > 1 if status == 413 else status in RETRY_STATUSES or status >= 500
    retry_after: Optional[float] = None
    if retryable and respect_retry_after:
        retry_after = _retry_after(response.headers.get("Retry-After"))
    reason = f" {response.reason}" if response.reason else ""
    detail = f": {excerpt}" if excerpt else ""
    wait = f" (Retry-After: {retry_after:g} s)" if retry_after else ""
    return DeliveryError(
        f"POST {safe} answered {status}{reason}{wait}{detail}",
        url=safe, status=status, body=excerpt, retryable=retryable, retry_after=retry_after,
    )


def _failure(
    exc: BaseException, safe: str, timeout: Timeout, session: requests.Session,
) -> Tuple[DeliveryError, Optional[BaseException]]:
    """The DeliveryError for a request that got no answer, and a cause whose text is safe.

    The exceptions of requests and urllib3 may quote the URL with its
    query string, or a header value; neither may reach a message or a
    log, so the cause is a new exception of the same type with a safe
    text (the OS error, such as ``Connection refused``).
    """
    os_error = _cause_text(exc)
    retryable = True
    if isinstance(exc, requests.exceptions.SSLError):
        # A certificate that does not verify stays so; a handshake cut
        # short (a server or load balancer restarting) may go through later.
        text = f"TLS error{os_error}"
        retryable = not _chain_has(exc, (ssl.SSLCertVerificationError,))
    elif isinstance(exc, requests.exceptions.Timeout) or _chain_has(
        exc, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError),
        unless=(urllib3.exceptions.NewConnectionError,),
    ):
        connect = isinstance(exc, requests.exceptions.ConnectTimeout) or _chain_has(
            exc, (urllib3.exceptions.ConnectTimeoutError,),
            unless=(urllib3.exceptions.NewConnectionError,),
        )
        text = f"{'connect timed out' if connect else 'timed out'} (timeout {timeout} s)"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        text = f"connection failed{os_error}"
    elif _chain_has(exc, (urllib3.exceptions.InvalidHeader,)):
        # urllib3 raises it for an answer's header it cannot parse (Retry-After)
        text = "the answer has a header that cannot be parsed"
    elif isinstance(exc, requests.exceptions.InvalidHeader) or (
        isinstance(exc, ValueError) and _session_header_problem(session)
    ):
        # Our own headers were checked when the sink was built: the session's are wrong.
        problem = _session_header_problem(session)
        text, retryable = "a request header is not valid" + (f": {problem}" if problem else ""), False
    elif isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                          requests.exceptions.InvalidSchema, requests.exceptions.URLRequired,
                          urllib3.exceptions.LocationValueError)):
        text, retryable = f"the URL cannot be used ({type(exc).__name__})", False
    elif isinstance(exc, UnicodeError):
        text, retryable = "a header or the URL cannot be encoded (not latin-1 or not ASCII)", False
    elif isinstance(exc, requests.exceptions.RetryError):
        text = "urllib3 gave up retrying"
    elif isinstance(exc, (requests.exceptions.RequestException, urllib3.exceptions.HTTPError)):
        text = f"{type(exc).__name__}{os_error}"
    else:  # a ValueError while building the request: trying again cannot help
        text, retryable = f"the request cannot be built ({type(exc).__name__})", False
    cause: Optional[BaseException] = None
    if isinstance(exc, requests.exceptions.RequestException):
        try:
            cause = type(exc)(text)
        except Exception:  # noqa: BLE001 - a subclass with another signature: no cause then
            cause = None
    return DeliveryError(f"POST {safe}: {text}", url=safe, retryable=retryable), cause
