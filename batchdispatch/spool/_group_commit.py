"""Group commit: durable appends of concurrent threads, written to a server together.

A durable ``append`` returns only once its item is stored on the server,
which costs a round trip. Threads that append at the same time should
not pay one each: the first to arrive becomes the *leader* and writes
every item waiting, in one statement or pipeline; the others wait for
that write and take their ids from it. While the leader writes, new
arrivals queue up for the next write, so under load each round trip
carries as many items as arrived during the previous one.

A signal handler (or a finalizer) that appends on a thread already
inside an append must not wait for that thread: it gets
:class:`~batchdispatch.exceptions.SpoolError` kind ``"locked"`` at once.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, List, Optional, Set, TypeVar

from ..exceptions import SpoolError

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("done", "error", "result", "value")

    def __init__(self, value: T) -> None:
        self.value = value
        self.done = False
        self.result = 0
        self.error: Optional[BaseException] = None


class GroupCommit(Generic[T]):
    """Writes values submitted by concurrent threads in groups: ``write(values) -> ids``."""

    def __init__(self, write: Callable[[List[T]], List[int]], path: str) -> None:
        self._write = write
        self._path = path
        self._cond = threading.Condition(threading.Lock())
        self._waiting: List[_Slot[T]] = []
        self._leader: Optional[int] = None  # ident of the thread writing now
        self._inside: Set[int] = set()  # threads inside submit (a signal handler may land there)

    def submit(self, value: T) -> int:
        """Have *value* written (with others'); return its id once it is stored.

        :raises SpoolError: what the write raised, for every value of its
            group; ``"locked"`` at once for a thread already inside.
        """
        me = threading.get_ident()
        if me in self._inside:  # read without the lock: only this thread adds or removes itself
            raise SpoolError(
                f"spool {self._path}: an append was called again by the thread making one"
                " (a signal handler?)", path=self._path, kind="locked",
            )
        self._inside.add(me)
        try:
            return self._submit(me, _Slot(value))
        finally:
            self._inside.discard(me)

    def _submit(self, me: int, slot: _Slot[T]) -> int:
        cond = self._cond
        with cond:
            self._waiting.append(slot)
            while not slot.done:
                if self._leader is None:
                    group, self._waiting = self._waiting, []
                    self._leader = me
                    cond.release()
                    try:
                        self._write_group(group)
                    finally:
                        cond.acquire()
                        self._leader = None
                        cond.notify_all()
                else:
                    cond.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _write_group(self, group: List[_Slot[T]]) -> None:
        try:
            ids = self._write([slot.value for slot in group])
        except BaseException as exc:  # every waiter gets it; a KeyboardInterrupt too
            for slot in group:
                slot.error = exc
                slot.done = True
            if not isinstance(exc, Exception):
                raise
            return
        for slot, row_id in zip(group, ids):
            slot.result = row_id
            slot.done = True

    def reset_after_fork(self) -> None:
        """In a forked child: no thread of the parent is writing or waiting here."""
        self._cond = threading.Condition(threading.Lock())
        self._waiting = []
        self._leader = None
        self._inside = set()
