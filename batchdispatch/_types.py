"""Protocols for the callables a user plugs into a dispatcher."""

from __future__ import annotations

from typing import Callable, List, Protocol, TypeVar

T = TypeVar("T")

#: A clock returning monotonic seconds, as :func:`time.monotonic` does.
Clock = Callable[[], float]


class DispatchFunc(Protocol[T]):
    """Delivers one batch. Raising marks every item of the batch as failed."""

    def __call__(self, batch: List[T], /) -> object: ...


class ErrorHandler(Protocol[T]):
    """Called with the exception and the batch when a dispatch raises."""

    def __call__(self, exc: BaseException, batch: List[T], /) -> object: ...
