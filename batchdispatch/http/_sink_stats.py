"""What a sink counts: :class:`SinkStats`, and the warning an operator gets when bodies are too large.

This module owns the counters behind ``sink.stats()`` (bodies posted,
413 splits, batches sent in several bodies, items given up as too large or
because their endpoint is gone), the lock that guards them, and the
rate-limited warning logged when a receiver refuses a body as too large,
which says to lower *max_body_bytes*.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Hashable, Tuple

from .._stats import RateLimit

log = logging.getLogger("batchdispatch.http")


@dataclasses.dataclass(frozen=True)
class SinkStats:
    """What a sink has done since it was built (``sink.stats()``).

    .. code-block:: python

        from batchdispatch.http import HttpSink

        sink = HttpSink("https://events.example.com/ingest", max_body_bytes=1_000_000)
        ...
        stats = sink.stats()
        if stats.splits:
            print(f"{stats.splits} bodies refused with 413: lower max_body_bytes")

    :ivar posts: bodies the sink sent, or tried to (urllib3's retries of one body are not counted again).
    :ivar splits: bodies refused with 413 Content Too Large and sent as two
        halves instead. More than a few means *max_body_bytes* is above the
        receiver's limit, or not set.
    :ivar chunked: batches sent as several bodies to stay within *max_body_bytes*.
    :ivar too_large: items given up as too large: over *max_body_bytes* on
        their own (never sent), or refused with 413 on their own.
    :ivar endpoint_gone: items given up because their endpoint answered
        410 Gone, including, for a :class:`~batchdispatch.http.WebhookSink`,
        the later items of an endpoint it disabled.
    :ivar disabled: the endpoint ids a 410 has disabled and that were not
        enabled again, oldest first (a WebhookSink's; always empty for an HttpSink).

    .. versionadded:: 0.2.0
    """

    posts: int = 0
    splits: int = 0
    chunked: int = 0
    too_large: int = 0
    endpoint_gone: int = 0
    disabled: Tuple[Hashable, ...] = ()


class _Counters:
    """A sink's counters, under a lock of their own (never held while sending or logging)."""

    #: Seconds between two warnings about bodies refused as too large.
    WARN_INTERVAL = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the counts and _warned
        self._counts = {"posts": 0, "splits": 0, "chunked": 0, "too_large": 0, "endpoint_gone": 0}
        self._warned = RateLimit(self.WARN_INTERVAL, time.monotonic)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counts[name] += count

    def split(self, safe: str, size: int, items: int) -> None:
        """Count a body refused with 413 and split; warn at most once a minute."""
        with self._lock:
            self._counts["splits"] += 1
            held = self._warned.ready()
        if held is None:
            return
        more = f" ({held} more since the last warning)" if held else ""
        log.warning(
            "POST %s answered 413 to a body of %d bytes (%d items): sending it in halves%s;"
            " set max_body_bytes below the receiver's limit to save the round trips",
            safe, size, items, more,
        )

    def snapshot(self, disabled: Tuple[Hashable, ...] = ()) -> SinkStats:
        with self._lock:
            return SinkStats(disabled=disabled, **self._counts)
