"""One POST through the sink's own session, without the work ``Session.request`` repeats per call.

``requests.Session.post`` works out, on every call, what never changes for
a sink's session and URL: the proxy and CA bundle environment variables
(a walk over ``os.environ``), ``~/.netrc``, the session's default headers
merged with the request's, the URL parsed and normalised. For a batch of
100 small events that was about half of the worker's CPU time per batch.

This module owns :class:`_Route`, that work done once per session and URL
(what ``Session.request`` would do, with the same functions of requests),
and :func:`_send`, which builds the prepared request from it and hands it
to the session's adapter, as ``Session.send`` does: the adapter's pools,
retries, proxies, TLS settings and exception translation are requests'
own. The session's cookie jar is kept as ``Session.send`` keeps it: cookies
an answer sets are sent back.

A session the user passed is never sent through here: ``session.post``
keeps whatever it was configured to do (hooks, auth, adapters of its own).
Environment variables are read when a route is made, once per sink (and
again in a forked child, whose session is new), not on every request.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import requests
from requests.cookies import extract_cookies_to_jar, get_cookie_header
from requests.structures import CaseInsensitiveDict


class _Route:
    """What ``Session.request`` works out for a POST to *url*, worked out once for *session*."""

    __slots__ = ("adapter", "cert", "headers", "proxies", "session", "url", "verify")

    def __init__(self, session: requests.Session, url: str, verify: Union[bool, str]) -> None:
        self.session = session
        # The session's default headers and netrc auth, and the URL normalised, as prepare_request does.
        template = session.prepare_request(requests.Request("POST", url))
        self.url: str = template.url or url
        self.headers: Mapping[str, str] = CaseInsensitiveDict(template.headers)
        settings = session.merge_environment_settings(self.url, {}, True, verify, None)
        self.proxies: Dict[str, str] = dict(settings["proxies"])
        self.verify: Union[bool, str] = verify if settings["verify"] is None else settings["verify"]
        self.cert: Any = settings["cert"]
        self.adapter = session.get_adapter(self.url)


def _send(route: _Route, data: bytes, headers: Mapping[str, str], timeout: Any) -> requests.Response:
    """POST *data* with *headers* (over the session's) on *route*; the answer is not read (``stream``)."""
    prepared = requests.PreparedRequest()
    prepared.method = "POST"
    prepared.url = route.url
    merged: CaseInsensitiveDict[str] = CaseInsensitiveDict(route.headers)
    merged.update(headers)
    merged["Content-Length"] = str(len(data))
    prepared.headers = merged
    prepared.body = data
    prepared.hooks = {"response": []}
    jar = route.session.cookies
    prepared._cookies = jar  # type: ignore[attr-defined]  # what build_response's cookie code reads
    if len(jar):
        cookie = get_cookie_header(jar, prepared)  # type: ignore[no-untyped-call]
        if cookie is not None:
            merged["Cookie"] = cookie
    response: requests.Response = route.adapter.send(
        prepared, stream=True, timeout=timeout, verify=route.verify, cert=route.cert, proxies=route.proxies,
    )
    raw: Optional[Any] = response.raw
    if raw is not None and raw.headers.get("Set-Cookie") is not None:
        extract_cookies_to_jar(jar, prepared, raw)  # type: ignore[no-untyped-call]
    return response
