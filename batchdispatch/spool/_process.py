"""Processes: what each process holds for a spool, and what happens to it at fork.

A spool's connection, owner token, locks and write-ahead log belong to
one process. This module owns that state (:class:`Process`), the lock of
the connection, and the process-wide fork hooks: before a fork every open
spool closes its idle connection, so that the child inherits no SQLite
state; the child gets a new :class:`Process` for each (a new owner), and
never uses nor closes the parent's connection, claims or log.

One set of fork hooks serves every spool, through a WeakSet, as the
engine's hooks do: os.register_at_fork cannot unregister.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import threading
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Protocol, Tuple

from . import _owners

if TYPE_CHECKING:
    from ._wal import Segment


class Held(Protocol):
    """A spool's per-process state, as the fork hooks see it: the lock _before_fork takes."""

    @property
    def lock(self) -> ConnectionLock: ...


class ForkAware(Protocol):
    """What the fork hooks need of a spool (SqliteSpool, PostgresSpool)."""

    @property
    def _proc(self) -> Held: ...

    @property
    def _closed(self) -> bool: ...

    def _before_fork(self) -> bool: ...

    def _after_fork_in_child(self) -> object: ...


class ConnectionLock:
    """The lock of a process's connection: reentrant, with a count of the operations under it.

    A signal handler (or a finalizer) runs between two lines of its thread,
    which may be inside Database.hold: with a plain lock, one that
    lands after the acquire and calls the spool would wait for its own
    thread forever. Here it takes the lock again at once, and *entries*
    tells it whether its thread has started an operation under it (then it
    gives up, "locked") or not yet, or no more (then it runs its own
    operation whole before its thread goes on: harmless).
    """

    __slots__ = ("_lock", "entries")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.entries = 0  # operations running under the lock: 0 or 1

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        """Whether an operation holds the connection."""
        return self.entries > 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Process:
    """What one process holds for a spool: its connection, its owner token and lock, its log.

    A forked child gets a new one (see ``_after_fork_in_child``): it never
    uses the parent's connection, claims or log.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        # The owner recorded in the rows this spool claims, and in the names
        # of its log files. The pid is only there for people reading them;
        # liveness is the owner lock.
        self.token = f"{self.pid}-{secrets.token_hex(8)}"
        self.lock = ConnectionLock()  # the connection: one statement or transaction at a time
        # Set while an operation holds self.lock (see Database.hold):
        self.holder = 0  # the thread that holds it, to refuse a signal handler of that thread
        self.deadline: Optional[float] = None  # the operation's deadline (time.monotonic), or None
        self.conn: Optional[sqlite3.Connection] = None
        self.busy_ms = -1  # the connection's SQLite busy timeout
        self.file_id: Optional[Tuple[int, int]] = None  # (device, inode) of the file conn has open
        self.owner_id: Optional[Tuple[int, int]] = None  # the same for owner_fd
        self.replaced = False  # the file was removed under conn: make a fresh one, without its old companions
        self.notes: List[str] = []  # warnings to log once proc.lock is let go
        self.owner_fd = -1  # the owner file, locked while this process lives
        # Opening, rotating, acking and closing the log. Reentrant: append
        # opens or rotates a segment with it held, and a signal handler that
        # lands there and appends must not wait for its own thread (see
        # WriteAheadLog.open_segment, written to be entered again at any point).
        self.log_lock = threading.RLock()
        self.numbers = itertools.count()  # segment numbers: one each, even for a reentrant open
        self.log_depth = 0  # how deep log_lock is held by the thread holding it (2: a signal handler came in)
        self.segment: Optional[Segment] = None  # where appends go
        self.segments: Dict[int, Segment] = {}  # every open segment, by number
        self.closing = False  # close has copied the log: no new segment


_spools: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_spools_lock = threading.Lock()
_abandoned: List[Any] = []  # connections a forked child must never touch, kept referenced
_held: List[ForkAware] = []  # spools whose lock _before_fork holds, for the parent to release


def register(spool: ForkAware) -> None:
    """Have the fork hooks look after *spool* until it is closed."""
    with _spools_lock:
        _spools.add(spool)


def unregister(spool: ForkAware) -> None:
    with _spools_lock:
        _spools.discard(spool)


def abandon(conn: Any) -> None:
    """Keep a connection copied from the parent referenced for ever: closing it could touch
    the parent's locks."""
    _abandoned.append(conn)


def _before_fork() -> None:
    with _spools_lock:
        spools = list(_spools)
    for spool in spools:
        if spool._before_fork():
            _held.append(spool)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop()._proc.lock.release()


def _after_fork_in_child() -> None:
    global _spools_lock
    _spools_lock = threading.Lock()  # may have been held by another thread
    _held.clear()
    _owners.reset_after_fork()
    for spool in list(_spools):
        if not spool._closed:
            spool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child,
    )
