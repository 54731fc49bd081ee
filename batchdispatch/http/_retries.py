"""urllib3 retries as the sinks use them: the default Retry, the *retries* argument, and Retry-After.

This module owns :func:`default_retry`, how a sink's *retries* argument
becomes a urllib3 Retry, the parsing of a ``Retry-After`` value, and
:class:`_DeadlineRetry`, the Retry that never sleeps for a ``Retry-After``
nor past the call's deadline (kept by :mod:`batchdispatch.http._deadline`).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Dict, Optional, Type

import urllib3.exceptions
from urllib3.util import Retry

from ._deadline import _MIN_WAIT, _cached_class, _call, _time_left

#: Statuses urllib3 retries by default; any other 4xx is final and not retryable.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)


class _Default:
    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()


def default_retry() -> Retry:
    """The urllib3 :class:`~urllib3.util.Retry` that sinks use unless told otherwise.

    Five retries in all, exponential backoff (0, 1, 2, 4, 8 seconds on urllib3
    2.x), on connection errors, read errors and the statuses 408, 429, 500,
    502, 503 and 504, for every method including POST. After the last one,
    the last answer is returned rather than raised, so the sink can report
    its status and body.

    The sink keeps any Retry it is given to its own rules: an answer with a
    valid ``Retry-After`` is not retried by urllib3 but reported at once
    (``DeliveryError.retry_after``, for the dispatcher's backoff), a
    ``Retry-After`` that cannot be parsed is ignored, and no retry or backoff
    sleep reaches past the call's deadline (see :class:`HttpSink`).

    .. code-block:: python

        from batchdispatch.http import HttpSink, default_retry

        patient = default_retry().new(total=10)
        sink = HttpSink("https://events.example.com/ingest", retries=patient)
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


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds asked for by a ``Retry-After`` value (delay-seconds or HTTP-date); None if unparsable.

    Unlike urllib3, which raises on a malformed value, a value that cannot be
    parsed (``soon-ish``, ``-5``) is ignored: the answer is still retried.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and value.isascii():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - time.time())


class _DeadlineRetry(Retry):
    """A urllib3 Retry that never sleeps for a ``Retry-After`` nor past the call's deadline.

    * an answer with a valid ``Retry-After`` ends the retries at once: the
      sink reports it (``DeliveryError.retry_after``) and the dispatcher
      waits, with the worker free;
    * a ``Retry-After`` that cannot be parsed is ignored (urllib3 would raise
      ``InvalidHeader`` and lose the answer);
    * a retry whose backoff would end past the deadline is not made;
    * the answer being retried is closed, not drained (its body may be huge
      or slow).
    """

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # Only the status decides; a Retry-After alone never makes a retry.
        return bool(super().is_retry(method, status_code, False))

    def increment(  # type: ignore[override]
        self,
        method: Optional[str] = None,
        url: Optional[str] = None,
        response: Any = None,
        error: Optional[Exception] = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if response is not None and self.respect_retry_after_header and \
                _retry_after(response.headers.get("Retry-After")):
            raise urllib3.exceptions.MaxRetryError(
                _pool, url or "", error or urllib3.exceptions.ResponseError("the answer has a Retry-After"),
            )
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline: Optional[float] = getattr(_call, "deadline", None)
        if deadline is not None and time.monotonic() + new.get_backoff_time() >= deadline:
            raise urllib3.exceptions.MaxRetryError(
                _pool, url or "", error or urllib3.exceptions.ResponseError("no time left for a retry"),
            )
        if response is not None:
            response.close()  # urllib3 would read the whole body to keep the connection
        return new

    def sleep(self, response: Any = None) -> None:
        wait = _time_left(self.get_backoff_time())
        if wait is not None and wait > _MIN_WAIT:
            time.sleep(wait)


_retry_classes: Dict[type, type] = {}


def _bounded_retry(retry: Retry) -> Retry:
    """A copy of *retry*, of a subclass of its class, that behaves as :class:`_DeadlineRetry`."""
    base = type(retry)

    def make() -> type:
        if base is Retry:
            return _DeadlineRetry
        return type(f"_Deadline{base.__name__}", (_DeadlineRetry, base), {})  # keeps the subclass's changes

    cls: Type[Retry] = _cached_class(_retry_classes, base, make)
    bounded: Retry = cls.__new__(cls)
    bounded.__dict__.update(retry.__dict__)
    # The last answer is always returned, so the sink can report its status and body.
    bounded.raise_on_status = False
    return bounded
