"""Cutoff: a server that stops answering never holds a spool operation past its deadline.

A spool on a server bounds its waits with the server's own timeouts (for
PostgreSQL, ``lock_timeout`` and ``statement_timeout``). Those hold only
while the server runs: a server that is paused, swapping, or behind a
network that drops packets answers nothing, and the kernel's TCP timers
take minutes. Two things here hold the deadline on the client side:

* :class:`Cutoff`: one daemon thread per process watches the operations in
  flight, and shuts down the socket of one still running at its deadline
  (``shutdown(SHUT_RDWR)``, never ``close``: the descriptor stays the
  connection's). The blocked call wakes with an error that the spool
  reports as ``"unreachable"``, and the connection is made again by the
  next operation.
* :func:`connect_by`: psycopg's ``connect_timeout`` counts whole seconds,
  at least 2; a connection is made on a thread of its own and waited for
  until the deadline. One made after the caller gave up is closed. At
  interpreter exit, where no thread starts (3.12+), the caller's own
  bounded connect runs in place (:mod:`._pg_connect`).

Operations register and unregister under one short lock; the thread
only wakes for the earliest deadline in flight, which is at most one per
spool (each runs one operation at a time). Spools :meth:`~Cutoff.attach`
when they open and :meth:`~Cutoff.detach` when they close: the thread
ends once none is open, and starts again with the next operation.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from typing import Callable, Dict, Iterator, Optional, TypeVar

T = TypeVar("T")


class Watch:
    """One operation in flight: the socket to cut at *deadline*, and whether it was cut."""

    __slots__ = ("cut", "deadline", "fd")

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.cut = False


class Cutoff:
    """The process's watcher of operations in flight (see the module's docstring)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._reset()
        self._users = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        """Start empty, without a thread: at creation, and in a forked child (whose
        spools are still open: the count of users is kept)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watches: Dict[int, Watch] = {}
        self._waiting_until: Optional[float] = None  # the thread's wake-up, None while idle
        self._thread: Optional[threading.Thread] = None

    def attach(self) -> None:
        """A spool that uses the cutoff opened."""
        with self._lock:
            self._users += 1

    def detach(self) -> None:
        """A spool that used the cutoff closed: with none left, the thread ends."""
        with self._lock:
            self._users -= 1
            self._changed.notify()

    @contextlib.contextmanager
    def by(self, fd: int, deadline: float) -> Iterator[Watch]:
        """Cut the socket *fd* if the block still runs at *deadline* (time.monotonic()).

        The socket is never touched once the block has left: close it only after.
        """
        watch = Watch(fd, deadline)
        with self._lock:
            if self._thread is None and not self._start():
                watch.deadline = math.inf  # at interpreter exit: the server's timeouts only
            self._watches[id(watch)] = watch
            if self._waiting_until is not None and deadline < self._waiting_until:
                self._changed.notify()
        try:
            yield watch
        finally:
            with self._lock:
                del self._watches[id(watch)]

    def _start(self) -> bool:
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # the interpreter is shutting down (3.12+)
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        with self._lock:
            while self._watches or self._users > 0:
                now = time.monotonic()
                earliest = math.inf
                for watch in self._watches.values():
                    if watch.cut:
                        continue
                    if watch.deadline <= now:
                        watch.cut = True
                        _shut(watch.fd)
                    elif watch.deadline < earliest:
                        earliest = watch.deadline
                self._waiting_until = earliest
                wait = None if earliest == math.inf else min(earliest - now, threading.TIMEOUT_MAX)
                self._changed.wait(wait)
            self._thread = self._waiting_until = None


def _shut(fd: int) -> None:
    """Shut the connection on *fd* down both ways, leaving the descriptor open."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


def connect_by(
    connect: Callable[[float], T], deadline: float, close: Callable[[T], None], name: str,
    in_place: Callable[[float], T],
) -> T:
    """``connect(seconds)`` on a thread of its own, waited for until *deadline*.

    *seconds* is what is left, for the connect's own timeout. Raises
    :class:`TimeoutError` at the deadline; a connection made later is closed
    by *close*. At interpreter exit, where no thread starts (3.12+),
    ``in_place(deadline)`` connects on this thread, by the deadline itself
    (a driver's connect timeout may count whole seconds, 2 at least).
    """
    left = deadline - time.monotonic()
    done = threading.Event()
    lock = threading.Lock()
    outcome: Dict[str, object] = {}

    def run() -> None:
        try:
            made: object = connect(left)
            key = "made"
        except BaseException as exc:  # noqa: BLE001 - handed over to the caller
            made, key = exc, "error"
        with lock:
            if outcome.get("abandoned"):
                if key == "made":
                    close(made)  # type: ignore[arg-type]
                return
            outcome[key] = made
        done.set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:  # the interpreter is shutting down (3.12+)
        return in_place(deadline)
    done.wait(max(0.0, deadline - time.monotonic()))
    with lock:
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        if "made" in outcome:
            return outcome["made"]  # type: ignore[return-value]
        outcome["abandoned"] = True
    raise TimeoutError("the connection was not made by the deadline")
