"""Events: the listeners behind ``on``, ``once`` and ``off``, and the outbox that runs them.

The engine never calls user code under its lock. What happens under it
(a batch settled, items dropped) is posted to the :class:`Outbox` as an
event, with its payload made there and then; log lines that must not be
written under the lock wait there too. Whichever thread emits next (a
worker between batches, a producer after a drop, flush or shutdown) runs
the listeners, in the order the events happened, one thread at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _context
from ._deadlines import acquire, monotonic
from .events import EVENTS

log = logging.getLogger("batchdispatch")

Listener = Callable[[Any], object]


class Emitter:
    """Listeners per event name, copied on write so emitting takes no lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: Dict[str, Tuple[Tuple[Listener, bool], ...]] = {}

    def on(self, event: str, listener: Listener, once: bool = False) -> None:
        _check(event)
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        with self._lock:
            self._listeners[event] = (*self._listeners.get(event, ()), (listener, once))

    def off(self, event: str, listener: Optional[Listener] = None) -> None:
        """Remove *listener* (every registration of it), or all listeners of *event*."""
        _check(event)
        with self._lock:
            kept = tuple(
                entry for entry in self._listeners.get(event, ())
                if listener is not None and entry[0] != listener
            )
            self._listeners[event] = kept

    def wants(self, event: str) -> bool:
        return bool(self._listeners.get(event))

    def emit(self, event: str, payload: Any) -> None:
        entries = self._listeners.get(event, ())
        if any(once for _, once in entries):
            with self._lock:
                # Claim the once-listeners of this snapshot that are still
                # registered: each runs once, even if two threads emit, and
                # one registered meanwhile stays for the next emission.
                current = self._listeners.get(event, ())
                claimed = [e for e in entries if e[1] and any(e is c for c in current)]
                self._listeners[event] = tuple(c for c in current if not any(c is e for e in claimed))
                entries = tuple(e for e in entries if not e[1] or any(e is c for c in claimed))
        for listener, _ in entries:
            try:
                listener(payload)
            except BaseException:  # a listener must not stop a worker
                log.exception("batchdispatch: a listener for %r raised", event)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()


class Outbox:
    """Events and log lines queued under the engine lock, emitted after it, in order.

    *owner* is the engine: its ``_lock`` guards the queues and counters
    here, and its ``_notify_progress`` wakes a flush that waits for events
    to be emitted (``posted`` and ``emitted`` count them). The emit lock is
    held while listeners run, so that events reach them in the order they
    happened, whichever thread emits them.
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.listeners = Emitter()
        self.reset()

    def reset(self) -> None:
        """Empty the queues (a new dispatcher, or a forked child)."""
        self.emit_lock = threading.RLock()
        self.events: List[Tuple[str, Any]] = []  # to emit outside the lock
        self.logs: List[Tuple[Any, ...]] = []  # log lines to write outside the lock (with the events)
        self.posted = self.emitted = 0  # events queued and emitted, ever (flush waits for them)
        self.emitting = False  # a thread is emitting: the queue is its to empty
        self.listeners.reset_after_fork()

    def post(self, event: str, make: Callable[[], Any]) -> bool:
        """Queue *event* with the payload *make()* if it has listeners. Engine lock held.

        Returns True when it is the only event waiting and no thread is
        emitting: nobody is about to emit it, so an idle worker should.
        """
        if not self.listeners.wants(event):
            return False
        self.events.append((event, make()))
        self.posted += 1
        return len(self.events) == 1 and not self.emitting

    def log_later(self, *line: Any) -> None:
        """Queue a log line (``log.log``'s arguments). Engine lock held or not."""
        self.logs.append(line)

    def waiting(self) -> bool:
        """Whether events or log lines wait with no thread at work on them. Engine lock held."""
        return (bool(self.events) and not self.emitting) or bool(self.logs)

    def emit(self, deadline: Optional[float] = None, wait: bool = False) -> None:
        """Emit queued events, in order, one thread at a time. Never called with the engine lock held.

        A thread that finds another one emitting leaves its events to it,
        rather than wait behind a slow listener: the emitting thread looks
        at the queue again before it lets go. With *wait* (shutdown, exit)
        it waits instead, until *deadline* at most. Log lines queued with
        :meth:`log_later` are written first.
        """
        while self.logs:
            try:
                line = self.logs.pop(0)
            except IndexError:
                break  # another thread wrote it
            log.log(*line)
        while self.events:
            if not acquire(self.emit_lock, deadline, block=wait):
                return
            try:
                self._emit_batches(deadline)
            finally:
                with self.owner._lock:
                    self.emitting = False
                self.emit_lock.release()
            # Events posted while this thread released the emit lock, by a
            # thread that found it taken, are this thread's to emit: loop.

    def _emit_batches(self, deadline: Optional[float] = None) -> None:
        """Emit the queue until it is empty. The emit lock is held.

        Past *deadline*, events are not emitted but counted and logged.
        """
        owner = self.owner
        stack = _context.dispatching()
        while True:
            with owner._lock:
                posted, self.events = self.events, []
                self.emitting = bool(posted)
            if not posted:
                return
            # A listener that calls flush or shutdown must not wait for the
            # very events it is part of: it counts as dispatch code.
            stack.append(owner)
            try:
                for index, (event, payload) in enumerate(posted):
                    if deadline is not None and monotonic() >= deadline:
                        log.warning(
                            "batchdispatch:%s: %d events not emitted: the shutdown or exit deadline"
                            " passed (stats() counts their items)", owner.name, len(posted) - index,
                        )
                        break
                    self.listeners.emit(event, payload)
            finally:
                stack.pop()
                with owner._lock:
                    self.emitted += len(posted)
                    owner._notify_progress()


def _check(event: str) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of: {', '.join(EVENTS)}")

