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
        # Reentrant: a signal handler or a finalizer that runs on a thread
        # inside a slow path may enqueue again (logging does, through a
        # handler), and must not deadlock on the lock its own thread holds.
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._items: Deque[T] = collections.deque()
        self._room = 0
        self._wake_at = 0
        self._state = _NEW
        self._worker: Optional[threading.Thread] = None
        # Bumped at fork, so a worker frame inherited by the child gives up.
        self._generation = getattr(self, "_generation", 0) + 1
        self._exit_closed = False  # closed by the exit hook: late items still go out
        self._exit_expired = False  # the exit hook gave up waiting for this one
        self._due_at: Optional[float] = None
        self._last_take = -math.inf
        # Items leave the queue in enqueue order, so a count is a position:
        # item number _taken is the next one out. _active maps the position
        # of each batch being dispatched to its size. Everything before
        # position p is settled when _taken >= p and no active batch starts
        # before p; that is what flush waits for.
        self._taken = 0
        self._active: Dict[int, int] = {}
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
                return self._wake()
            return True
        return self._enqueue_slow(item)

    def _wake(self) -> bool:
        """Slow half of an append: wake the worker, or deal with a late item."""
        with self._lock:
            if self._state != _CLOSED or not self._items:
                if self._state == _RUNNING:
                    self._wake_at = _NEVER  # one notification is enough
                self._wakeup.notify()
                return True
            # Appended after the worker drained the queue and left. The
            # exit hook's dispatchers still deliver, on this thread; one the
            # user shut down drops it (and any other such late arrival).
            start, late = self._take(len(self._items))
            if not self._exit_closed:
                del self._active[start]
                self._count_drop("closed", len(late))
                report = self._drop_report()
        if self._exit_closed:
            self._dispatch_here(start, late)
            return True
        if report:
            log.warning(*report)
        return False

    def _enqueue_slow(self, item: T) -> bool:
        """Admission when the worker is not running or the queue is full."""
        trash: List[T] = []  # evicted items, released after the lock
        report = None
        with self._lock:
            if self._state == _NEW and not _exiting:
                self._start()
            state = self._state
            if state == _RUNNING:
                if len(self._items) < self._queue_limit:
                    self._append_locked(item)
                    return True
                accepted, report = self._overflow_locked(item, trash)
            elif state == _NEW:
                # No thread could start: the interpreter is exiting (3.12
                # refuses threads in atexit handlers) or is out of threads.
                # Deliver on this thread; a later enqueue tries again.
                if _exiting:
                    self._state = _CLOSED
                    self._exit_closed = True
                    self._room = self._wake_at = -1
                start = self._taken
                self._taken += 1
                self._active[start] = 1
                accepted = None
            elif state == _CLOSING and self._exit_closed and not self._exit_expired:
                # The exit hook is draining: the worker takes late items too.
                if len(self._items) < self._queue_limit:
                    self._append_locked(item)
                    return True
                self._count_drop("queue_full", 1)
                accepted, report = False, self._drop_report()
            elif state == _CLOSED and self._exit_closed:
                start = self._taken  # after the exit hook: deliver here
                self._taken += 1
                self._active[start] = 1
                accepted = None
            else:
                # Shut down by the user, or stuck past the exit budget (a
                # second, overlapping dispatch call could hang exit again).
                self._count_drop("exit" if self._exit_closed else "closed", 1)
                accepted, report = False, self._drop_report()
        del trash
        if accepted is None:
            self._dispatch_here(start, [item])
            return True
        if report:
            log.warning(*report)
        return accepted

    def _append_locked(self, item: T) -> None:
        self._items.append(item)
        if len(self._items) > self._wake_at:
            if self._state == _RUNNING:
                self._wake_at = _NEVER
            self._wakeup.notify()

    def _overflow_locked(self, item: T, trash: List[T]) -> Tuple[bool, Optional[Tuple[object, ...]]]:
        """Apply the overflow policy; return (accepted, log line or None).

        Called with the lock held; "block" releases it while it waits.
        Evicted items go to *trash*, for the caller to release unlocked.
        """
        policy = self._overflow
        if not self._overflowing:
            # A full queue is worth dispatching right away. Once per episode:
            # a drop must stay cheap when producers outrun the worker.
            self._overflowing = True
            self._wakeup.notify()
        if policy == "drop_oldest":
            excess = len(self._items) - self._queue_limit + 1
            if excess > 0:
                trash.extend(self._pop(excess))
                self._count_drop("queue_full", excess)
            self._append_locked(item)
            return True, None
        if policy == "block" and not self._dispatching_here():
            deadline = _deadline(self._block_timeout)
            self._blocked += 1
            try:
                self._wait_locked(
                    lambda: len(self._items) < self._queue_limit or self._state != _RUNNING, deadline
                )
            finally:
                self._blocked -= 1
            if len(self._items) < self._queue_limit and self._state == _RUNNING:
                self._append_locked(item)
                return True, None
        self._count_drop("queue_full" if self._state == _RUNNING else "closed", 1)
        if policy == "raise":
            raise QueueFullError(self._queue_limit)
        return False, self._drop_report()

    # -- the worker ---------------------------------------------------------

    def _start(self) -> None:
        """Start the worker. Called with the lock held, in state _NEW."""
        worker = threading.Thread(
            target=self._run, args=(self._generation,), name=f"batchdispatch:{self.name}", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:
            return  # the caller delivers on its own thread; state stays _NEW
        self._worker = worker
        self._state = _RUNNING
        self._room = self._queue_limit
        self._wake_at = 0

    def _run(self, generation: int) -> None:
        try:
            self._work(generation)
        except BaseException:
            log.exception("batchdispatch:%s: the worker stopped on an internal error", self.name)
            with self._lock:
                if self._generation == generation:
                    self._state = _CLOSED
                    self._room = self._wake_at = -1
                    left = self._pop(len(self._items))
                    self._count_drop("worker_died", len(left))
                    self._active.clear()
                    self._progress.notify_all()
            raise

    def _work(self, generation: int) -> None:
        while True:
            with self._lock:
                if self._generation != generation:
                    return  # os.fork() was called from dispatch: this is the child
                taken = self._next_batch()
            if taken is None:
                return
            start, batch = taken
            error = self._call_dispatch(batch)
            with self._lock:
                if self._generation != generation:
                    return
                old_error = self._settle(start, batch, error)
            # Release the batch before waiting for the next one, and outside
            # the lock: an item's finalizer may enqueue or log.
            del taken, batch, error, old_error

    def _next_batch(self) -> Optional[Tuple[int, List[T]]]:
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
                or n >= self._queue_limit
                or now >= self._due_at
                or self._taken < self._flush_upto
                or self._blocked
                or self._state != _RUNNING
            ):
                self._last_take = now
                self._due_at = None
                return self._take(min(n, self._batch_limit))
            if self._state == _RUNNING:
                self._wake_at = self._batch_limit - 1
            if len(items) < self._batch_limit:
                self._wakeup.wait(min(self._due_at - now, threading.TIMEOUT_MAX))

    def _pop(self, count: int) -> List[T]:
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

    def _take(self, count: int) -> Tuple[int, List[T]]:
        """Pop a batch for dispatch and mark it active. Called with the lock held."""
        start = self._taken
        batch = self._pop(count)
        self._active[start] = count
        return start, batch

    def _call_dispatch(self, batch: List[T]) -> Optional[BaseException]:
        """Run the user's dispatch and on_error. Never called with the lock held."""
        stack = _dispatching()
        stack.append(self)
        try:
            try:
                self._dispatch(batch)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                self._handle_error(exc, batch)
                return exc
            return None
        finally:
            stack.pop()

    def _dispatching_here(self) -> bool:
        """Whether this thread is inside this dispatcher's dispatch or on_error."""
        return self in _dispatching()

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

    def _settle(self, start: int, batch: List[T], error: Optional[BaseException]) -> Optional[BaseException]:
        """Record the outcome of a dispatch; return what the caller must release.

        Called with the lock held. The previous ``last_error`` is handed
        back rather than dropped here, since its traceback may hold items.
        """
        self._active.pop(start, None)
        self._batches += 1
        old_error = None
        if error is None:
            self._dispatched += len(batch)
        else:
            self._failed += len(batch)
            old_error, self._last_error = self._last_error, error
        self._progress.notify_all()
        return old_error

    def _dispatch_here(self, start: int, batch: List[T]) -> None:
        """Dispatch on the calling thread, for items no worker will take."""
        error = self._call_dispatch(batch)
        with self._lock:
            old_error = self._settle(start, batch, error)
        del old_error

    # -- drops ---------------------------------------------------------------

    def _count_drop(self, reason: str, count: int) -> None:
        if count:
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

    def _settled_before(self, position: int) -> bool:
        return self._taken >= position and all(start >= position for start in self._active)

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Deliver everything enqueued so far, without waiting for the delay.

        :param timeout: seconds to wait at most, measured as one deadline;
            None waits as long as it takes.
        :returns: True once every item enqueued before the call has been
            dispatched or given up; False if the timeout passed first. Called
            from inside dispatch or on_error, it cannot wait for itself: it
            asks for an immediate flush and returns False.
        """
        deadline = _deadline(timeout)
        with self._lock:
            target = self._taken + len(self._items)
            if self._settled_before(target):
                return True
            self._flush_upto = max(self._flush_upto, target)
            self._wakeup.notify()
            if self._dispatching_here():
                return False
            return self._wait_locked(lambda: self._settled_before(target), deadline)

    def shutdown(self, timeout: Optional[float] = 5.0) -> bool:
        """Flush, stop the worker and refuse further items. Idempotent.

        :param timeout: seconds to wait at most, as one deadline; None waits
            as long as it takes.
        :returns: True if everything was delivered and the worker has
            stopped; False if the timeout passed first. What is still
            undelivered then is logged as a warning. Afterwards ``enqueue``
            returns False and counts a ``"closed"`` drop. Called from inside
            dispatch or on_error, it closes without waiting and returns False.
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
        """Wait for the worker to drain and stop; warn if the deadline passes."""
        with self._lock:
            if self._dispatching_here():
                return False
            done = self._wait_locked(lambda: self._state == _CLOSED and not self._active, deadline)
            queued, in_flight = len(self._items), sum(self._active.values())
        worker = self._worker
        if done:
            if worker is not None and worker is not threading.current_thread():
                remaining = None if deadline is None else max(0.0, deadline - monotonic())
                worker.join(None if remaining is None else min(remaining, threading.TIMEOUT_MAX))
            return True
        log.warning(
            "batchdispatch:%s: %s timed out with %d items undelivered (%d queued, %d in dispatch)",
            self.name, reason, queued + in_flight, queued, in_flight,
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
            self._progress.wait(min(remaining, threading.TIMEOUT_MAX))
        return True

    # -- introspection -------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """Return a consistent snapshot of the counters."""
        with self._lock:
            queued = len(self._items)
            in_flight = sum(self._active.values())
            return DispatcherStats(
                name=self.name,
                pending=queued + in_flight,
                in_flight=in_flight,
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
            f" pending={len(self._items) + sum(self._active.values())}>"
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
        """Called by the exit hook: deliver within the budget, count the rest."""
        if self.flush_on_exit and self._join(deadline, reason="exit flush"):
            return
        with self._lock:
            # Give up what is still queued, counted once, so that a worker
            # still running cannot also deliver it. A batch already inside
            # dispatch may yet finish.
            self._exit_expired = True
            left = self._pop(len(self._items))
            self._count_drop("exit", len(left))
        self._close(by_exit=False)
        if left and not self.flush_on_exit:
            log.warning(
                "batchdispatch:%s: %d items discarded at exit (flush_on_exit=False)",
                self.name, len(left),
            )


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
_local = threading.local()


def _dispatching() -> List[Engine[Any]]:
    """The dispatchers whose dispatch or on_error runs on this thread."""
    try:
        stack: List[Engine[Any]] = _local.stack
    except AttributeError:
        stack = _local.stack = []
    return stack


def _exit_hook() -> None:
    global _exiting
    _exiting = True
    with _registry_lock:
        engines = list(_registry)
    start = monotonic()
    for engine in engines:  # ask every worker to drain at once ...
        if engine.flush_on_exit:
            engine._close(by_exit=True)
    for engine in engines:  # ... then wait for each within its own budget
        try:
            engine._exit(start + min(engine.exit_timeout, threading.TIMEOUT_MAX))
        except Exception:
            log.exception("batchdispatch:%s: exit flush failed", engine.name)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # may have been held by another thread
    for engine in list(_registry):
        engine._after_fork_in_child()


atexit.register(_exit_hook)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
