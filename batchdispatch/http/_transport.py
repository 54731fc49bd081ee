"""The session and the POST that both sinks share: :class:`_Transport`.

This module owns a sink's ``requests`` session (created with a
:class:`~batchdispatch.http._deadline._DeadlineAdapter`, made anew in a
forked child, closed once), the deadline of each call, the loop that POSTs
the bodies a batch becomes (:mod:`batchdispatch.http._bodies`) in order,
halving one refused with 413, and what the call raises when not all were
delivered; and the sending of one POST, whose answer or failure
:mod:`batchdispatch.http._answers` judges. A POST on the sink's own session
goes straight to its adapter (:mod:`batchdispatch.http._direct`); one on a
session the user passed goes through ``session.post``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from typing import Any, Deque, Hashable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import requests
import urllib3.exceptions

from .. import current_batch_id, current_deadline
from ..exceptions import DeliveryError, ItemTooLargeError, PartialFailure
from ._answers import _answer_error, _failure
from ._bodies import _body_id, _halves, _Part, _plan, _Record, _Resume
from ._deadline import _MIN_WAIT, _call, _DeadlineAdapter, _DeadlineTimeout
from ._direct import _Route, _send
from ._request import Timeout, _build_post, _check_headers, _check_timeout, _merged_headers, _safe_url
from ._retries import _DEFAULT, _bounded_retry, _resolve_retries
from ._schemes import _Scheme
from ._serializers import Serializer, _serialize, json_serializer
from ._sink_stats import SinkStats, _Counters

_T = TypeVar("_T", bound="_Transport")


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
        self._counters = _Counters()
        self._resume = _Resume()
        self._pid = os.getpid()
        self._session: Optional[requests.Session] = session if session is not None else self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = _DeadlineAdapter(
            pool_connections=self._pools, pool_maxsize=10, max_retries=_bounded_retry(self._retries),
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

    def _target_for(
        self, url: str, *, scheme: _Scheme, headers: Mapping[str, str], timeout: Timeout,
        max_body_bytes: Optional[int],
    ) -> _Target:
        """The target of *url*: the sink's headers, then *headers*, then the scheme's own."""
        return _Target(url, scheme, _merged_headers(self._headers, headers, scheme), timeout, max_body_bytes)

    def stats(self) -> SinkStats:
        """What the sink has done since it was built: bodies posted, 413 splits, items given up by cause."""
        return self._counters.snapshot()

    def _gone(self, slot: Hashable, target: _Target, error: DeliveryError) -> DeliveryError:
        """The error a 410 answer fails with. HttpSink: *error* as it is (final); WebhookSink disables."""
        return error

    def _post(self, target: _Target, batch: List[Any], slot: Hashable = None) -> None:
        """POST *batch* as one body, or as several under the target's *max_body_bytes*, in order.

        A body refused with 413 is sent as two halves instead, and so on.
        All share the call's deadline. A part that fails and may succeed
        later (a 503, a timeout) stops the call: it and the parts after it
        are retried later, so the receiver sees the items in order. A part
        that can never succeed (too large alone, a 400) is given up and the
        call goes on; a 410 stops it, giving up the rest.

        Raised when not everything was delivered: the error itself when
        one error failed the whole batch, else a PartialFailure of the
        items not delivered, whose cause is the 410, else the error that
        stopped the call, else the last error (then final for all).
        """
        connect, read = target.timeout if isinstance(target.timeout, tuple) else (target.timeout,) * 2
        deadline = time.monotonic() + connect + read
        outer = current_deadline()
        if outer is not None and outer < deadline:
            deadline = outer
        record = self._resume.take(slot, batch)
        positions: Sequence[int]
        if record is not None:
            base, whole, positions = record.base, record.whole, record.positions
        else:
            base, whole = current_batch_id() or uuid.uuid4().hex, len(batch)
            positions = range(whole)
        parts, oversized = _plan(self._serializer, batch, target.max_body_bytes, target.safe)
        failed: List[int] = []
        errors: List[DeliveryError] = []
        if oversized:
            assert target.max_body_bytes is not None
            failed += [index for index, _ in oversized]
            errors.append(ItemTooLargeError(oversized, target.max_body_bytes, url=target.safe))
            self._counters.add("too_large", len(oversized))
        if len(parts) > 1:
            self._counters.add("chunked")
        todo: Deque[_Part] = collections.deque(parts)
        while todo:
            part = todo.popleft()
            if record is None and len(part.indices) == whole:
                webhook_id = base  # the whole batch, as almost always
            else:
                webhook_id = _body_id(base, whole, [positions[i] for i in part.indices])
            try:
                self._post_once(target, batch, part, webhook_id, deadline)
                continue
            except DeliveryError as exc:
                error = exc
            if error.status == 413 and len(part.indices) > 1:
                self._counters.split(target.safe, len(part.body or b""), len(part.indices))
                todo.extendleft(reversed(_halves(part)))
                continue
            if error.status == 413:
                self._counters.add("too_large")
            elif error.status == 410:
                error = self._gone(slot, target, error)
            failed += part.indices
            errors.append(error)
            if error.status == 410 or error.retryable is not False:
                rest = [i for later in todo for i in later.indices]
                failed += rest
                if error.status == 410:
                    self._counters.add("endpoint_gone", len(part.indices) + len(rest))
                break
        if not failed:
            return
        failed.sort()
        cause = errors[-1]  # the one that stopped the call, if any: a 410, or one that may succeed later
        if cause.retryable is not False:
            self._resume.keep(slot, _Record(base, whole, [positions[i] for i in failed],
                                            [batch[i] for i in failed]))
        if len(errors) == 1 and len(failed) == len(batch):
            raise cause  # nothing was delivered: the dispatcher keeps the batch's id
        raise PartialFailure([batch[i] for i in failed], cause)

    def _post_once(
        self, target: _Target, batch: List[Any], part: _Part, webhook_id: str, deadline: float,
    ) -> None:
        safe = target.safe
        if part.body is None:
            part.body = _serialize(self._serializer, [batch[i] for i in part.indices], safe)
        connect, read = target.timeout if isinstance(target.timeout, tuple) else (target.timeout,) * 2
        now = time.monotonic()
        if deadline - now < _MIN_WAIT:
            raise DeliveryError(f"POST {safe}: not sent, the dispatcher's deadline has passed", url=safe)
        data, sent = _build_post(part.body, webhook_id=webhook_id, scheme=target.scheme,
                                 headers=target.headers, gzip=self._gzip)
        session = self._current_session()
        response: Optional[requests.Response] = None
        failure: Optional[Tuple[DeliveryError, Optional[BaseException]]] = None
        self._counters.add("posts")
        outer_call, _call.deadline = getattr(_call, "deadline", None), deadline
        timeout = _DeadlineTimeout(connect, read, deadline)
        try:
            if self._own_session:
                route = target.route
                if route is None or route.session is not session:  # the first call, or a forked child's
                    route = target.route = _Route(session, target.url, self._verify)
                response = _send(route, data, sent, timeout)  # never follows a redirect
            else:
                response = session.post(
                    target.url, data=data, headers=sent, verify=self._verify, stream=True,
                    timeout=timeout,  # type: ignore[arg-type]
                    allow_redirects=False,  # a redirected POST may turn into a GET and lose the batch
                )
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ValueError) as exc:
            failure = _failure(exc, safe, target.timeout, session)
        finally:
            _call.deadline = outer_call
        if failure is not None:
            # Raised here, outside the except clause, so that the original
            # exception (whose text may show the query string or a header
            # value) is neither __cause__ nor __context__.
            error, cause = failure
            raise error from cause
        assert response is not None
        answer = _answer_error(response, safe, len(part.indices), deadline, now,
                               self._retries.respect_retry_after_header)
        response = None  # a raised error's traceback keeps this frame: let the answer and its socket go
        if answer is not None:
            raise answer


class _Target:
    """Where and how one call POSTs: built once per HttpSink and per Endpoint, read without a lock."""

    __slots__ = ("headers", "max_body_bytes", "route", "safe", "scheme", "timeout", "url")

    def __init__(self, url: str, scheme: _Scheme, headers: Mapping[str, str], timeout: Timeout,
                 max_body_bytes: Optional[int]) -> None:
        self.url = url
        self.safe = _safe_url(url)
        self.scheme = scheme
        self.headers = headers
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        #: How the sink's own session reaches *url* (made on first use, again in a forked child).
        self.route: Optional[_Route] = None
