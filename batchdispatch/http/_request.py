"""What a request is made of: the sinks' options checked, URLs made safe to show, one POST built.

This module owns the checks of a URL, a timeout, a secret and headers
(a bad header is named, its value never shown), :func:`_safe_url`, the
form of a URL that messages and reprs may show, and :func:`_build_post`,
the body and headers of one POST: defaults, the sink's headers, the
endpoint's, then the id, timestamp and signature headers of the signature
scheme (:mod:`batchdispatch.http._schemes`), gzipped if asked.
"""

from __future__ import annotations

import gzip as _gzip
import re
import time
import urllib.parse
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import requests

from .. import __version__
from ._schemes import _normalized_secret, _Scheme, _scheme

#: Seconds, or a ``(connect, read)`` pair: a sink's or an Endpoint's *timeout*.
Timeout = Union[float, Tuple[float, float]]
#: The largest *timeout* accepted, in seconds (one day).
MAX_TIMEOUT = 86400.0
#: The User-Agent sent unless *headers* says otherwise.
USER_AGENT = f"batchdispatch/{__version__}"


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
        if not 0 < value <= MAX_TIMEOUT:
            raise ValueError(f"{name} must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {value!r}")
    return timeout  # type: ignore[return-value]


def _check_secret(secret: object, name: str = "secret", signature: object = "standard") -> Any:
    """*secret* checked as the *signature* scheme reads it (a list becomes a tuple); None stays None.

    Errors name *name*, never the value: an empty secret, an empty list, a
    ``whsec_`` secret that is not base64, several secrets for ``"x-webhook"``.
    """
    _scheme(signature, secret, name)
    return _normalized_secret(secret)


# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than tab: CR and LF would end the header early.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_problem(key: str, value: str) -> Optional[str]:
    """What is wrong with one header, naming its key and never showing its value; None if nothing."""
    if not _HEADER_NAME.fullmatch(key):
        return f"{key!r} is not a valid header name"
    if "\r" in value or "\n" in value:
        return f"the value of header {key!r} contains a line break (CR or LF); strip it (a trailing newline?)"
    if _CONTROL.search(value):
        return f"the value of header {key!r} contains a control character"
    if value[:1] in (" ", "\t"):
        return f"the value of header {key!r} starts with whitespace"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"the value of header {key!r} has characters outside latin-1; encode it (base64, say)"
    return None


def _check_headers(headers: object, name: str = "headers") -> Mapping[str, str]:
    if headers is None:
        return MappingProxyType({})
    if not isinstance(headers, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str, got {type(headers).__name__}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{name} must map str to str; the header {key!r} does not")
        problem = _header_problem(key, value)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
    return MappingProxyType(dict(headers))


def _session_header_problem(session: requests.Session) -> str:
    """What is wrong with the session's own headers, naming the header; "" if nothing is found."""
    for key, value in session.headers.items():
        if isinstance(key, str) and isinstance(value, str):
            problem = _header_problem(key, value)
            if problem is not None:
                return problem
    return ""


def _merged_headers(sink_headers: Mapping[str, str], headers: Mapping[str, str],
                    scheme: _Scheme) -> Mapping[str, str]:
    """The headers every request to one target carries: defaults, the sink's, then the endpoint's,
    without the ones *scheme* sets itself (in whatever case they were written)."""
    # identity: only a short excerpt of an answer is ever read, so it is not worth compressing.
    merged: Dict[str, str] = {
        "Content-Type": "application/json", "User-Agent": USER_AGENT, "Accept-Encoding": "identity",
    }
    merged.update(sink_headers)
    merged.update(headers)
    return MappingProxyType({k: v for k, v in merged.items() if k.lower() not in scheme.reserved})


def _build_post(
    body: bytes, *, webhook_id: str, scheme: _Scheme, headers: Mapping[str, str], gzip: bool,
) -> Tuple[bytes, Dict[str, str]]:
    """The data and headers of one POST of *body*: *headers*, then the scheme's id, timestamp and
    signature (which covers *body* uncompressed); gzipped if *gzip*."""
    sent = dict(headers)
    sent.update(scheme.headers(body, webhook_id, str(int(time.time()))))
    data = bytes(body)
    if gzip:
        data = _gzip.compress(data, compresslevel=5, mtime=0)
        sent["Content-Encoding"] = "gzip"
    return data, sent
