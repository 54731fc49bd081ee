"""The batching engine behind every dispatcher.

Everything that is hard lives here: the buffer, the worker thread, the
wake-up rules, flush and shutdown deadlines, overflow, the exit hook and the
fork hook. Public classes are thin faces that validate their arguments and
inherit from :class:`Engine`.

Design notes
------------
The hot path (:meth:`Engine.enqueue`) takes no lock. Producers append to a
:class:`collections.deque`, which is atomic under the GIL, and compare the
length they saw against two thresholds that the worker publishes:

``_room``
    the queue length below which an item is admitted. It is
    ``max_queue_size`` while running, ``0`` before the worker has started
    (so the first enqueue takes the slow path and starts it) and ``-1``
    once closed. One comparison therefore covers "full", "not started" and
    "closed".

``_wake_at``
    the producer wakes the worker when the queue is longer than this after
    its append: ``0`` while the worker sleeps on an empty queue,
    ``max_batch_size - 1`` while it waits for the delay, "never" while it is
    busy, and ``-1`` once closing, so every late append is checked under the
    lock. The length is read again after the append, so two producers that
    fill a batch together cannot both miss the threshold.

The worker publishes a threshold *before* it looks at the queue, and a
producer reads it *after* appending, so one of the two always sees the
other (the store-then-load pattern that is sequentially consistent under
the GIL). That is what makes the lock-free append safe against lost
wake-ups, and what lets an idle worker wait with no timeout at all.

Every other transition (starting, draining, flushing, blocking, closing)
happens under one lock, through two conditions: ``_wakeup`` for the worker
and ``_progress`` for threads waiting on it. User code -- dispatch,
``on_error`` -- always runs with the lock released.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import itertools
import logging
import math
import os
import sys
import threading
import time
import types
import weakref
from typing import Any, Callable, Deque, Dict, Generic, List, Mapping, Optional, Tuple, TypeVar

from ._types import DispatchFunc, ErrorHandler
from .exceptions import QueueFullError

T = TypeVar("T")

log = logging.getLogger("batchdispatch")

#: The overflow policies ``enqueue`` understands when the queue is full.
OVERFLOW_POLICIES = ("drop_newest", "drop_oldest", "block", "raise")

_NEVER = sys.maxsize

# Lifecycle states.
_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"


def _real_monotonic() -> Callable[[], float]:
    """Return a monotonic clock that freezegun cannot freeze.

    freezegun replaces ``time.monotonic`` and every module attribute that is
    the real function. ``clock_gettime`` is left alone, and a
    ``functools.partial`` is not recognised by its module scan, so batching
    keeps real time inside a user's ``freeze_time()`` block.
    """
    if hasattr(time, "clock_gettime") and hasattr(time, "CLOCK_MONOTONIC"):
        return functools.partial(time.clock_gettime, time.CLOCK_MONOTONIC)
    return functools.partial(time.monotonic)  # pragma: no cover - not POSIX


#: The clock used for deadlines that must hold in real time.
monotonic: Callable[[], float] = _real_monotonic()


@dataclasses.dataclass(frozen=True)
class DispatcherStats:
    """A snapshot of a dispatcher's counters, from ``stats()``.

    Once the queue has drained, ``enqueued == dispatched + failed +
    evicted`` where *evicted* are the accepted items later dropped by
    ``overflow="drop_oldest"``.
    """

    #: The dispatcher's name (the worker thread is ``batchdispatch:<name>``).
    name: str
    #: Items accepted and not yet delivered or given up (queued or in flight).
    pending: int
    #: Items in the batch being dispatched right now.
    in_flight: int
    #: Items accepted by ``enqueue`` since the dispatcher was created.
    enqueued: int
    #: Items in batches whose dispatch returned normally.
    dispatched: int
    #: Calls to dispatch, successful or not.
    batches: int
    #: Items in batches whose dispatch raised.
    failed: int
    #: Items dropped, for any reason (the sum of ``dropped_by_reason``).
    dropped: int
    #: Drops by reason: ``"queue_full"``, ``"closed"``, ``"exit"``.
    dropped_by_reason: Mapping[str, int]
    #: The exception of the last failed dispatch, if any.
    last_error: Optional[BaseException]
    #: Whether the worker thread is running.
    worker_alive: bool


class _RateLimit:
    """Lets one event through per ``interval`` and counts the ones it holds back."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = -math.inf
        self.held = 0

    def ready(self) -> Optional[int]:
        """Return how many events were held back, or None to hold this one."""
        now = self.clock()
        if now < self.next_at:
            self.held += 1
            return None
        self.next_at = now + self.interval
        held, self.held = self.held, 0
        return held


class Engine(Generic[T]):
    """One queue, one worker thread, one dispatch callable.

    Not meant to be instantiated directly: use
    :class:`~batchdispatch.BackgroundDispatcher`, which validates the
    arguments. The attributes set here are the engine's whole state.
    """

    #: Seconds between two log lines about drops or failed dispatches.
    LOG_INTERVAL = 10.0

    def __init__(
        self,
        dispatch: DispatchFunc[T],
        *,
        delay: float,
        max_batch_size: Optional[int],
        max_queue_size: Optional[int],
        overflow: str,
        block_timeout: Optional[float],
        on_error: Optional[ErrorHandler[T]],
        name: str,
        flush_on_exit: bool,
        exit_timeout: float,
        clock: Optional[Callable[[], float]],
    ) -> None:
        self._dispatch = dispatch
        self._delay = delay
        self._batch_limit = max_batch_size or _NEVER
        self._queue_limit = max_queue_size or _NEVER
        self._overflow = overflow
        self._block_timeout = block_timeout
        self._on_error = on_error
        #: Names the worker thread ``batchdispatch:<name>`` and the log lines.
        self.name = name
        #: Whether the exit hook delivers what is pending at interpreter exit.
        self.flush_on_exit = flush_on_exit
        #: Seconds the exit hook (and the ``with`` block) waits at most.
        self.exit_timeout = exit_timeout
        self._clock = clock or monotonic
        self._reset()
        with _registry_lock:
            _registry.add(self)

    def _reset(self) -> None:
        """Set every piece of runtime state to that of a new dispatcher."""
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._items: Deque[T] = collections.deque()
        self._room = 0
        self._wake_at = 0
        self._state = _NEW
        self._worker: Optional[threading.Thread] = None
        self._exit_closed = False  # closed by the exit hook: deliver late items inline
        self._due_at: Optional[float] = None
        self._last_take = -math.inf
        self._taken = 0  # items removed from the queue (taken, evicted, inline)
        self._settled = 0  # of those, items whose fate is final
        self._in_flight = 0
        self._flush_upto = 0  # dispatch without delay until _taken reaches this
        self._blocked = 0  # producers waiting for room
        self._overflowing = False  # the worker was told the queue is full
        self._dispatched = 0
        self._failed = 0
        self._batches = 0
        self._dropped: Dict[str, int] = {}
        self._last_error: Optional[BaseException] = None
        self._drop_log = _RateLimit(self.LOG_INTERVAL, monotonic)
        self._error_log = _RateLimit(self.LOG_INTERVAL, monotonic)

    # -- the hot path -------------------------------------------------------

    def enqueue(self, item: T) -> bool:
        """Add *item* to the next batch without waiting for delivery.

        :returns: True if the item was accepted, False if it was dropped
            (queue full under ``"drop_newest"`` or ``"block"``, or the
            dispatcher is shut down). Every drop is counted in
            :meth:`stats` with its reason.
        :raises QueueFullError: when the queue is full and
            ``overflow="raise"``.
        """
        items = self._items
        if len(items) < self._room:
            items.append(item)
            if len(items) > self._wake_at:
                self._wake()
            return True
        return self._enqueue_slow(item)

    def _wake(self) -> None:
        """Slow half of an append: wake the worker, or rescue a late item."""
        with self._lock:
            if self._state == _CLOSED and self._items:
                # Appended after the worker drained and left: deliver here.
                batch = self._take(len(self._items))
                self._taken -= len(batch)  # _run_inline counts them
            else:
                if self._state == _RUNNING:
                    self._wake_at = _NEVER  # one notification is enough
                self._wakeup.notify()
                return
        self._run_inline(batch)

    def _enqueue_slow(self, item: T) -> bool:
        """Admission when the worker is not running or the queue is full."""
        with self._lock:
            if self._state == _NEW and not _exiting:
                self._start()
            state = self._state
            if state == _RUNNING:
                if len(self._items) < self._queue_limit:
                    self._append_locked(item)
                    return True
                return self._overflow_locked(item)
            # A dispatcher the user shut down refuses items. One closed by
            # the exit hook (or one that cannot start a thread because the
            # interpreter is exiting) still takes them: into the queue while
            # its worker drains, on the calling thread once it has finished.
            # A worker still stuck after the exit budget is never joined by
            # a second, overlapping call: that item is an "exit" drop.
            if state == _CLOSING and self._exit_closed and not _exit_done:
                self._append_locked(item)
                return True
            inline = state == _NEW or (state == _CLOSED and self._exit_closed)
            if state == _NEW:
                self._state = _CLOSED
                self._exit_closed = True
                self._room = self._wake_at = -1
            report = None
            if not inline:
                self._count_drop("exit" if self._exit_closed else "closed", 1)
                report = self._drop_report()
        if inline:
            self._run_inline([item])
            return True
        if report:
            log.warning(*report)
        return False

    def _append_locked(self, item: T) -> None:
        self._items.append(item)
        if len(self._items) > self._wake_at:
            if self._state == _RUNNING:
                self._wake_at = _NEVER
            self._wakeup.notify()

    def _overflow_locked(self, item: T) -> bool:
        """Apply the overflow policy. Called with the lock held; may release it."""
        policy = self._overflow
        if not self._overflowing:
            # A full queue is worth dispatching right away. Once per episode:
            # a drop must stay cheap when producers outrun the worker.
            self._overflowing = True
            self._flush_upto = max(self._flush_upto, self._taken + len(self._items))
            self._wakeup.notify()
        if policy == "drop_oldest":
            while len(self._items) >= self._queue_limit:
                try:
                    self._items.popleft()
                except IndexError:  # pragma: no cover - the worker took them
                    break
                self._taken += 1
                self._settled += 1
                self._count_drop("queue_full", 1)
            self._append_locked(item)
            return True
        if policy == "block" and threading.current_thread() is not self._worker:
            deadline = None if self._block_timeout is None else monotonic() + self._block_timeout
            self._blocked += 1
            try:
                while len(self._items) >= self._queue_limit and self._state == _RUNNING:
                    remaining = None if deadline is None else deadline - monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._progress.wait(remaining)
            finally:
                self._blocked -= 1
            if len(self._items) < self._queue_limit and self._state == _RUNNING:
                self._append_locked(item)
                return True
        self._count_drop("queue_full" if self._state == _RUNNING else "closed", 1)
        if policy == "raise":
            raise QueueFullError(self._queue_limit)
        report = self._drop_report()
        if report:
            # Log outside the lock: a logging handler may enqueue on us.
            self._lock.release()
            try:
                log.warning(*report)
            finally:
                self._lock.acquire()
        return False

    # -- the worker ---------------------------------------------------------

    def _start(self) -> None:
        """Start the worker. Called with the lock held, in state _NEW."""
        worker = threading.Thread(
            target=self._run, name=f"batchdispatch:{self.name}", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:
            # The interpreter is finalizing (Python 3.12+ refuses new
            # threads in atexit handlers): the caller delivers instead.
            return
        self._worker = worker
        self._state = _RUNNING
        self._room = self._queue_limit
        self._wake_at = 0

    def _run(self) -> None:
        batch: Optional[List[T]] = None
        error: Optional[BaseException] = None
        while True:
            with self._lock:
                if batch is not None:
                    self._in_flight = 0
                    self._settle(batch, error)
                batch = self._next_batch()
            if batch is None:
                return
            error = self._call_dispatch(batch)

    def _next_batch(self) -> Optional[List[T]]:
        """Wait until a batch is due and take it; None once drained and closing.

        Called with the lock held. An empty queue waits with no timeout, so
        an idle dispatcher costs nothing; a waiting batch sleeps once, until
        its deadline or until a producer reports a full batch.
        """
        items = self._items
        clock = self._clock
        while True:
            n = len(items)
            if n == 0:
                if self._state != _RUNNING:
                    self._state = _CLOSED
                    self._progress.notify_all()
                    return None
                self._due_at = None
                self._wake_at = 0
                if not items:  # re-check after publishing the threshold
                    self._wakeup.wait()
                continue
            now = clock()
            if self._due_at is None:
                self._due_at = max(now, self._last_take) + self._delay
            if (
                n >= self._batch_limit
                or now >= self._due_at
                or self._taken < self._flush_upto
                or self._blocked
                or self._state != _RUNNING
            ):
                self._last_take = now
                self._due_at = None
                batch = self._take(min(n, self._batch_limit))
                self._in_flight = len(batch)
                return batch
            if self._state == _RUNNING:
                self._wake_at = self._batch_limit - 1
            if len(items) < self._batch_limit:
                self._wakeup.wait(self._due_at - now)

    def _take(self, count: int) -> List[T]:
        """Pop *count* items off the front. Called with the lock held."""
        # Producers append without the lock, so the queue is popped item by
        # item (in C, via starmap) rather than copied and cleared.
        batch = list(itertools.starmap(self._items.popleft, itertools.repeat((), count)))
        self._taken += count
        self._overflowing = False
        if self._state == _RUNNING:
            self._wake_at = _NEVER
        if self._blocked:
            self._progress.notify_all()
        return batch

    def _call_dispatch(self, batch: List[T]) -> Optional[BaseException]:
        """Run the user's dispatch and on_error. Never called with the lock held."""
        try:
            self._dispatch(batch)
        except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
            self._handle_error(exc, batch)
            return exc
        return None

    def _handle_error(self, exc: BaseException, batch: List[T]) -> None:
        if self._on_error is None:
            held = self._error_log.ready()
            if held is not None:
                more = f" ({held} more failures since the last report)" if held else ""
                log.error(
                    "batchdispatch:%s: dispatch of %d items failed%s",
                    self.name, len(batch), more, exc_info=exc,
                )
            return
        try:
            self._on_error(exc, batch)
        except BaseException:
            log.exception("batchdispatch:%s: on_error raised", self.name)

    def _settle(self, batch: List[T], error: Optional[BaseException]) -> None:
        """Record the outcome of a dispatch. Called with the lock held."""
        self._batches += 1
        if error is None:
            self._dispatched += len(batch)
        else:
            self._failed += len(batch)
            self._last_error = error
        self._settled += len(batch)
        self._progress.notify_all()

    def _run_inline(self, batch: List[T]) -> None:
        """Dispatch on the calling thread, for items no worker will take."""
        with self._lock:
            self._taken += len(batch)
        error = self._call_dispatch(batch)
        with self._lock:
            self._settle(batch, error)

    # -- drops ---------------------------------------------------------------

    def _count_drop(self, reason: str, count: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _drop_report(self) -> Optional[Tuple[object, ...]]:
        """Arguments for a log line about drops, at most once per LOG_INTERVAL.

        Called with the lock held; the caller logs after releasing it.
        """
        if self._drop_log.ready() is None:
            return None
        dropped = sorted(self._dropped.items())
        return (
            "batchdispatch:%s: %d items dropped so far (%s); see stats()",
            self.name,
            sum(count for _, count in dropped),
            ", ".join(f"{reason}: {count}" for reason, count in dropped),
        )

    # -- flush and shutdown --------------------------------------------------

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Deliver everything enqueued so far, without waiting for the delay.

        :param timeout: seconds to wait at most, measured as one deadline;
            None waits as long as it takes.
        :returns: True once every item enqueued before the call has been
            dispatched or given up; False if the timeout passed first. Called
            from inside dispatch (on the worker thread), it cannot wait for
            itself: it asks for an immediate flush and returns False.
        """
        deadline = _deadline(timeout)
        with self._lock:
            target = self._taken + len(self._items)
            if self._settled >= target:
                return True
            self._flush_upto = max(self._flush_upto, target)
            self._wakeup.notify()
            if threading.current_thread() is self._worker:
                return False
            return self._wait_locked(lambda: self._settled >= target, deadline)

    def shutdown(self, timeout: Optional[float] = 5.0) -> bool:
        """Flush, stop the worker and refuse further items. Idempotent.

        :param timeout: seconds to wait at most, as one deadline; None waits
            as long as it takes.
        :returns: True if everything was delivered and the worker has
            stopped; False if the timeout passed first. What is still
            undelivered then is logged as a warning. Afterwards ``enqueue``
            returns False and counts a ``"closed"`` drop.
        """
        self._close(by_exit=False)
        return self._join(_deadline(timeout), reason="shutdown")

    def _close(self, by_exit: bool) -> None:
        # The dispatcher stays in the registry: if the user's shutdown timed
        # out, the exit hook still waits for the draining worker.
        with self._lock:
            if self._state in (_NEW, _RUNNING):
                self._exit_closed = by_exit
                self._state = _CLOSED if self._state == _NEW else _CLOSING
            self._room = self._wake_at = -1
            self._wakeup.notify()
            self._progress.notify_all()  # blocked producers give up

    def _join(self, deadline: Optional[float], reason: str) -> bool:
        worker = self._worker
        if worker is None or threading.current_thread() is worker:
            return worker is None
        with self._lock:
            done = self._wait_locked(lambda: self._state == _CLOSED, deadline)
            undelivered = len(self._items) + self._in_flight
        if done:
            worker.join(None if deadline is None else max(0.0, deadline - monotonic()))
            return True
        log.warning(
            "batchdispatch:%s: %s timed out with %d items undelivered",
            self.name, reason, undelivered,
        )
        return False

    def _wait_locked(self, done: Callable[[], bool], deadline: Optional[float]) -> bool:
        while not done():
            if deadline is None:
                self._progress.wait()
                continue
            remaining = deadline - monotonic()
            if remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    # -- introspection -------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """Return a consistent snapshot of the counters."""
        with self._lock:
            queued = len(self._items)
            return DispatcherStats(
                name=self.name,
                pending=queued + self._in_flight,
                in_flight=self._in_flight,
                enqueued=self._taken + queued,
                dispatched=self._dispatched,
                batches=self._batches,
                failed=self._failed,
                dropped=sum(self._dropped.values()),
                dropped_by_reason=types.MappingProxyType(dict(self._dropped)),
                last_error=self._last_error,
                worker_alive=self._worker is not None and self._worker.is_alive(),
            )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} state={self._state}"
            f" pending={len(self._items) + self._in_flight}>"
        )

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(timeout=self.exit_timeout)

    # -- process lifecycle ----------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Give the child a fresh dispatcher; the parent keeps its items."""
        state = self._state
        self._reset()
        if state in (_CLOSING, _CLOSED):
            self._state = _CLOSED
            self._room = self._wake_at = -1

    def _exit(self, deadline: float) -> None:
        """Called by the exit hook: shut down, warn about what is left."""
        if not self.flush_on_exit:
            # Discard what is queued (a batch already in flight may finish),
            # so that each item is counted exactly once.
            with self._lock:
                lost = len(self._items)
                self._take(lost)  # pops exactly these; later appends stay
                self._settled += lost
                self._count_drop("exit", lost)
            self._close(by_exit=False)
            if lost:
                log.warning(
                    "batchdispatch:%s: %d items discarded at exit (flush_on_exit=False)",
                    self.name, lost,
                )
            return
        self._join(deadline, reason="exit flush")


def _deadline(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    return monotonic() + max(0.0, timeout)


# -- process-wide hooks -------------------------------------------------------
#
# One atexit hook and one fork hook serve every dispatcher, through a WeakSet:
# a dispatcher that is shut down and unreferenced can be collected, and no
# per-instance hooks pile up in os.register_at_fork, which cannot unregister.

_registry: weakref.WeakSet[Engine[Any]] = weakref.WeakSet()
_registry_lock = threading.Lock()
_exiting = False  # the exit hook has started
_exit_done = False  # the exit hook has finished: nobody will drain a queue again


def _exit_hook() -> None:
    global _exiting, _exit_done
    _exiting = True
    with _registry_lock:
        engines = list(_registry)
    start = monotonic()
    for engine in engines:  # ask every worker to drain at once ...
        if engine.flush_on_exit:
            engine._close(by_exit=True)
    for engine in engines:  # ... then wait for each within its own budget
        engine._exit(start + engine.exit_timeout)
    _exit_done = True


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # may have been held by another thread
    for engine in list(_registry):
        engine._after_fork_in_child()


atexit.register(_exit_hook)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
