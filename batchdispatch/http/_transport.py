"""The session and the POST that both sinks share: :class:`_Transport`.

This module owns a sink's ``requests`` session (created with a
:class:`~batchdispatch.http._deadline._DeadlineAdapter`, made anew in a
forked child, closed once), the deadline of each call, the split of a batch
refused with 413 into halves that are POSTed in turn, and the sending of one
POST, whose answer or failure :mod:`batchdispatch.http._answers` judges.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any, List, Mapping, Optional, Tuple, TypeVar, Union

import requests
import urllib3.exceptions

from .. import current_batch_id, current_deadline
from ..exceptions import DeliveryError, PartialFailure
from ._answers import _check_answer, _failure
from ._deadline import _MIN_WAIT, _call, _DeadlineAdapter, _DeadlineTimeout
from ._request import Timeout, _build_post, _check_headers, _check_timeout, _safe_url
from ._retries import _DEFAULT, _bounded_retry, _resolve_retries
from ._serializers import Serializer, _serialize, json_serializer

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
        #: Batches split in two after a 413 (read by tests and operators; see issue 15 for more).
        self._splits = 0
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

    def _post(
        self,
        url: str,
        batch: List[Any],
        *,
        secret: Union[str, bytes, None],
        headers: Mapping[str, str],
        timeout: Timeout,
    ) -> None:
        """POST *batch*; on a 413, POST each half of it instead, and so on.

        The halves share the call's deadline. Each body has an id of its
        own (``<batch id>.<first>-<end>``, the same on every retry of that
        body). What still fails is raised as a PartialFailure with the
        error of its last failure: only a single item refused with 413 is
        final on its own.
        """
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        now = time.monotonic()
        deadline = now + connect + read
        outer = current_deadline()
        if outer is not None and outer < deadline:
            deadline = outer
        self._post_parts(url, batch, 0, current_batch_id() or uuid.uuid4().hex, deadline, None,
                         secret=secret, headers=headers, timeout=timeout)

    def _post_parts(
        self, url: str, batch: List[Any], first: int, batch_id: str, deadline: float, part: Optional[str],
        **options: Any,
    ) -> None:
        try:
            self._post_once(url, batch, options["secret"], options["headers"], options["timeout"],
                            deadline, batch_id if part is None else f"{batch_id}.{part}")
            return
        except DeliveryError as exc:
            if exc.status != 413 or len(batch) < 2:
                raise
            self._splits += 1
        failed: List[Any] = []
        errors: List[BaseException] = []
        half = len(batch) // 2
        for start, items in ((first, batch[:half]), (first + half, batch[half:])):
            try:
                self._post_parts(url, items, start, batch_id, deadline, f"{start}-{start + len(items)}",
                                 **options)
            except PartialFailure as exc:
                failed += exc.failed_items
                errors.append(exc.cause or exc)
            except DeliveryError as exc:
                failed += items
                errors.append(exc)
        if failed:
            # Retryable if any part may go through later; else (413s of single items) final.
            retryable = [error for error in errors if getattr(error, "retryable", True) is not False]
            raise PartialFailure(failed, (retryable or errors)[-1])

    def _post_once(
        self, url: str, batch: List[Any], secret: Union[str, bytes, None], headers: Mapping[str, str],
        timeout: Timeout, deadline: float, batch_id: str,
    ) -> None:
        safe = _safe_url(url)
        body = _serialize(self._serializer, batch, safe)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        now = time.monotonic()
        if deadline - now < _MIN_WAIT:
            raise DeliveryError(f"POST {safe}: not sent, the dispatcher's deadline has passed", url=safe)
        data, sent = _build_post(body, batch_id=batch_id, secret=secret, sink_headers=self._headers,
                                 headers=headers, gzip=self._gzip)
        session = self._current_session()
        response: Optional[requests.Response] = None
        failure: Optional[Tuple[DeliveryError, Optional[BaseException]]] = None
        outer_call, _call.deadline = getattr(_call, "deadline", None), deadline
        try:
            response = session.post(
                url, data=data, headers=sent, verify=self._verify, stream=True,
                timeout=_DeadlineTimeout(connect, read, deadline),  # type: ignore[arg-type]
                allow_redirects=False,  # a redirected POST may turn into a GET and lose the batch
            )
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ValueError) as exc:
            failure = _failure(exc, safe, timeout, session)
        finally:
            _call.deadline = outer_call
        if failure is not None:
            # Raised here, outside the except clause, so that the original
            # exception (whose text may show the query string or a header
            # value) is neither __cause__ nor __context__.
            error, cause = failure
            raise error from cause
        assert response is not None
        _check_answer(response, safe, len(batch), deadline, now, self._retries.respect_retry_after_header)
