"""The events a dispatcher emits, and the payload each one carries.

Register a listener with ``dispatcher.on(name, listener)``; it is called
as ``listener(payload)``, where the payload is one of the frozen
dataclasses below. Import them for type hints::

    from batchdispatch.events import BatchFailed

    def alert(event: BatchFailed) -> None:
        print(f"{event.key}: attempt {event.attempt} failed: {event.error}")

    hooks.on("batch_failed", alert)

Listeners run on a worker thread (or the thread calling ``shutdown``),
never while the dispatcher's lock is held, one event at a time in the
order the events happened. A listener that raises is logged and changes
nothing about delivery.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Hashable, Optional, Tuple

__all__ = [
    "EVENTS",
    "BatchFailed",
    "BatchRetryScheduled",
    "BatchStarted",
    "BatchSucceeded",
    "ItemsDropped",
    "ItemsExhausted",
    "ShutdownEvent",
]


@dataclasses.dataclass(frozen=True)
class BatchStarted:
    """``batch_started``: an attempt to deliver a batch begins."""

    key: Optional[Hashable]
    items: Tuple[Any, ...]
    attempt: int


@dataclasses.dataclass(frozen=True)
class BatchSucceeded:
    """``batch_succeeded``: a batch (or what was left of it) was delivered."""

    key: Optional[Hashable]
    items: Tuple[Any, ...]
    attempt: int


@dataclasses.dataclass(frozen=True)
class BatchFailed:
    """``batch_failed``: one attempt failed; *items* are the ones that failed."""

    key: Optional[Hashable]
    items: Tuple[Any, ...]
    attempt: int
    error: BaseException


@dataclasses.dataclass(frozen=True)
class BatchRetryScheduled:
    """``batch_retry_scheduled``: *items* will be tried again as *attempt* in *delay* seconds."""

    key: Optional[Hashable]
    items: Tuple[Any, ...]
    attempt: int
    delay: float


@dataclasses.dataclass(frozen=True)
class ItemsExhausted:
    """``items_exhausted``: *items* are given up after *attempts* attempts.

    *dead_lettered*: they were handed to the spool's dead letters (see
    ``dead_letters=``); a spool fault, counted in ``spool_faults`` and
    logged, may still have kept them out. False without a spool.
    """

    key: Optional[Hashable]
    items: Tuple[Any, ...]
    attempts: int
    error: Optional[BaseException]
    dead_lettered: bool = False


@dataclasses.dataclass(frozen=True)
class ItemsDropped:
    """``items_dropped``: *items* were not accepted or were discarded, for *reason*."""

    key: Optional[Hashable]
    items: Tuple[Any, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class ShutdownEvent:
    """``shutdown``: the dispatcher stopped; *undelivered* items were left."""

    completed: bool
    undelivered: int


#: Event names, and the payload each one carries.
EVENTS: Dict[str, type] = {
    "batch_started": BatchStarted,
    "batch_succeeded": BatchSucceeded,
    "batch_failed": BatchFailed,
    "batch_retry_scheduled": BatchRetryScheduled,
    "items_exhausted": ItemsExhausted,
    "items_dropped": ItemsDropped,
    "shutdown": ShutdownEvent,
}
