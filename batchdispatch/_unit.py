"""flush_after: flush a dispatcher when a unit of work ends, as a decorator or a ``with`` block."""

from __future__ import annotations

import functools
import inspect
import logging
from types import TracebackType
from typing import Any, Callable, Optional, Type, TypeVar, cast

from . import _validate

__all__ = ["flush_after"]

log = logging.getLogger("batchdispatch")

F = TypeVar("F", bound=Callable[..., Any])


def _pending(dispatcher: Any) -> Optional[int]:
    """The dispatcher's pending count, if it can tell; never raises."""
    try:
        return int(dispatcher.stats().pending)
    except Exception:  # noqa: BLE001 - only for a log line; any object with flush() is accepted
        return None


class flush_after:
    """Flush *dispatcher* when a unit of work ends, even when it raises.

    A cron job, a serverless handler, a management command or a task in a
    Celery or :mod:`multiprocessing` child may end without the interpreter
    running its exit hooks (the child leaves with ``os._exit``, the
    function is frozen between invocations), and what it enqueued would be
    lost. ``flush_after`` delivers it before the unit of work returns.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher, flush_after
        from batchdispatch.http import HttpSink

        events = BackgroundDispatcher(HttpSink("https://events.example.com/ingest"), delay=0.5)

        @flush_after(events, timeout=2)
        def handler(event, context):
            events.enqueue({"event": "invoked"})

        with flush_after(events, timeout=2):
            events.enqueue({"event": "cron ran"})

    The flush never waits past *timeout*: if it times out, a warning with
    the pending count goes to the ``batchdispatch`` logger and the unit of
    work ends anyway. An exception of the body always propagates; if the
    flush itself raises after the body raised, the flush error is logged
    and the body's exception propagates. One object may decorate many
    functions and be entered many times, from any thread.

    :param dispatcher: any object with a ``flush(timeout=...)`` method: a
        :class:`~batchdispatch.BackgroundDispatcher`, a
        :class:`~batchdispatch.KeyedDispatcher` or the Flask extension.
    :param timeout: seconds the flush waits at most; None waits as long as
        it takes (not advised where the platform kills slow functions).

    .. versionadded:: 0.2.0
    """

    __slots__ = ("dispatcher", "timeout")

    def __init__(self, dispatcher: Any, timeout: Optional[float] = 5.0) -> None:
        if not callable(getattr(dispatcher, "flush", None)):
            raise TypeError(
                f"dispatcher must have a callable flush(timeout=...) method, got {type(dispatcher).__name__}"
            )
        self.dispatcher = dispatcher
        self.timeout = _validate.optional_seconds("timeout", timeout)

    def __repr__(self) -> str:
        return f"flush_after({self.dispatcher!r}, timeout={self.timeout!r})"

    def flush(self) -> bool:
        """Flush now; warn (with the pending count) and return False if the timeout passed."""
        done = self.dispatcher.flush(timeout=self.timeout)
        if done is False:
            pending = _pending(self.dispatcher)
            log.warning(
                "flush_after: flushing %r timed out after %s s with %s items pending",
                self.dispatcher, self.timeout, "unknown" if pending is None else pending,
            )
        return done is not False

    def __enter__(self) -> flush_after:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc is None:
            self.flush()
            return
        try:
            self.flush()
        except Exception:
            # The body's exception is the one the caller needs to see.
            log.exception("flush_after: flushing %r failed while an exception propagated", self.dispatcher)

    def __call__(self, func: F) -> F:
        """Decorate *func*: every call flushes when it returns or raises."""
        if not callable(func):
            raise TypeError(f"flush_after decorates a callable, got {type(func).__name__}")
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError("flush_after cannot decorate an async function: it would flush before it runs")
        if inspect.isgeneratorfunction(func):
            raise TypeError("flush_after cannot decorate a generator function: it would flush before it runs")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, wrapper)
