"""The small emitter behind ``on``, ``once`` and ``off``."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Optional, Tuple

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


def _check(event: str) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of: {', '.join(EVENTS)}")

