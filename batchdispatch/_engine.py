"""The batching engine behind every dispatcher.

:class:`Engine` holds a dispatcher's state (its lanes, counters and
lifecycle) under one lock, admits items that need the lock, and composes
the parts that do the rest, each in a module of its own. Public classes
are thin faces that validate their arguments and inherit from one of the
two engines; their ``enqueue`` is the engine's hot-path function itself.

The parts, in the order an item meets them:

==========================  ===================================================
``_single_lane``            SingleLaneEngine: BackgroundDispatcher's lock-free hot path
``_keyed_engine``           KeyedEngine: the keyed hot path, news, forgetting idle lanes
``_budget``                 QueueBudget: the keyed queue bound, as grants of room
``_lanes``                  Lane, PriorityLane, Batch: where items wait (storage only)
``_scheduler``              Scheduler: lane deadlines, the ready queue, taking a batch, waits
``_workers``                Workers: the threads, their loop, sleeping and waking
``_delivery``               Delivery: an attempt, its outcome, retries; callers' delivery
``_spool_bridge``           SpoolBridge: what goes to the spool and comes back
``_breaker``                Breaker: durable writes skip a spool that fails slowly
``_events``                 Outbox: events and log lines, emitted outside the lock
``_drain``                  Drain: flush, shutdown, the exit hook's part
``_stats``                  the ``stats()`` snapshots, histograms, rate-limited reports
``_lifecycle``              the states and their transitions
``_process``                the process-wide exit and fork hooks
``_threadless``             uWSGI without threads: where batches are delivered
``_gil``                    whether appends may go without the lock (the GIL)
``_context``                what runs on this thread (current_batch_id, ...)
``_deadlines``              the monotonic clock and bounded waits
==========================  ===================================================

Design notes
------------
Items wait in *lanes*, one per key. A lane goes out as a batch when it is
full, when its oldest item has waited ``delay`` (and ``delay`` has passed
since its previous batch), or at once on flush, shutdown or a full queue.
A lane never has two batches out at a time: a batch that failed and waits
to be retried keeps its lane's later items behind it. Up to
``max_concurrent_batches`` worker threads take due lanes, call the user's
code with the lock released, and settle the outcome.

BackgroundDispatcher has one lane, fed without a lock: producers append to
a :class:`collections.deque`, which is atomic under the GIL, and compare the
length against two thresholds that the worker publishes:

``_room``
    the queue length below which an item is admitted. It is
    ``max_queue_size`` while running, ``0`` before the worker has started
    (so the first enqueue takes the slow path and starts it) and ``-1``
    once closed. One comparison covers "full", "not started" and "closed".

``_wake_at``
    the producer wakes the worker when the queue is longer than this after
    its append: ``0`` while the worker sleeps with nothing to do,
    ``max_batch_size - 1`` while it waits for the delay, "never" while the
    lane is busy, and ``-1`` once closing, so every late append is checked
    under the lock.

The worker publishes a threshold *before* it looks at the queue, and a
producer reads it *after* appending, so one of the two always sees the
other (the store-then-load pattern that is sequentially consistent under
the GIL). That is what makes the lock-free append safe against lost
wake-ups, and what lets an idle worker wait with no timeout at all.

KeyedDispatcher uses the same scheme per lane: a producer looks its key's
lane up in a dict and appends to the lane's deque, against the lane's own
``room`` and ``wake_at``, which workers publish under the lock. A lane's
``wake_at`` is ``0`` while it is empty (the first item gives it a
deadline), ``max_batch_size - 1`` (less its other-priority items) while it
waits for the delay, "never" while it is ready or behind a batch that is
out (the first item behind the batch stamps the time it arrived), and
``-1`` once the dispatcher is closing or the lane is forgotten. New keys,
priorities other than 0 and a lane out of room take the lock (``_admit``).

Crossing ``wake_at`` takes no lock either: the producer stores "never"
(one report is enough until a worker looks) and appends the lane and the
time to ``_news``, which workers handle under the lock at the top of every
pass (``_take_news``). It wakes an idle worker only if one asked for news
since the last wake-up: a worker sets ``_news_wanted`` at the top of every
pass and again before it sleeps, each time before its look at ``_news``.
The producer's store of "never" may land on a lane being forgotten, or on
a closing dispatcher, and undo their -1; so each of those stores its flag
first (``lane.dead``, the state), and the producer reads both after its
store: seeing either, it takes the locked path, which puts the -1 back.

An idle lane is forgotten, so that memory does not grow with the keys ever
seen; a producer may still hold it. The worker publishes ``room = wake_at
= -1`` and then looks at the deque a last time, and the producer reads
``wake_at`` after appending: either the worker sees the item (and keeps
the lane), or the producer sees ``-1`` and, under the lock, moves what
landed in the dead lane to the key's live one, in order. A dead lane is
never taken from.

``max_queue_size`` bounds all keys together: each lane's ``room`` is its
*grant*, a share of the free room handed out under the lock (about a batch
at a time) and reclaimed when the lane is forgotten, or from every lane
when the free room runs out. The grants never add up to more than the
bound, so the queue can pass it only by one item per thread that was
appending at the instant a grant shrank, as BackgroundDispatcher's can.

Idle workers do not wait on a Condition: each waits on a lock of its own,
listed in ``Workers.sleepers``, and a waker pops one and releases it. A producer
can do that without the engine lock, which matters because a worker that
holds the lock may be waiting for the GIL the producer holds.

Every item has a *position* for flush. A lock-free append cannot draw a
number from a shared counter, so an item of the default priority is known
by its index in its lane (``Lane.taken`` counts those that left), and items
appended under the lock (other priorities, items delivered on a caller's
thread) draw an engine-wide sequence number (``_seq``). ``flush`` notes
every lane's next index and the next sequence number, and waits until no
lane holds, and no open batch contains, an item before them.

Some processes cannot run a worker thread: uWSGI before 2.0.27 without
``--enable-threads`` keeps the GIL between requests, so a thread runs only
while a request does. At a dispatcher's first enqueue (never on the hot
path) ``_threadless.threadless`` reads ``BATCHDISPATCH_INLINE`` and, once per process,
``uwsgi.has_threads``. Without threads, no worker starts and the callers do
the workers' job (``_caller_delivers``): the thresholds stay at 0
(``_room``) and keyed lanes get no room (``_lock_free``), so every enqueue
takes the lock, and after appending it runs ``Delivery.serve_here``, a worker's
pass without its waits: ``next_batch(wait=False)`` until nothing is due,
each batch delivered with the lock released and settled as a worker
would. Deadlines, retries, flush targets and lane ownership are the
workers' own, so several callers may serve at once, as several workers do.
``flush``, ``shutdown`` and the exit hook serve on the calling thread, and
the caller that finds a closing dispatcher drained marks it closed. A
backoff or a delay that ends between calls waits for the next call.

A uWSGI master that loads the app forks its workers from C, past
``os.register_at_fork``: a thread started there could hold the GIL at the
fork and hang every worker. While ``uwsgi.worker_id()`` is 0 a dispatcher
starts no thread and stays new, so each item is delivered at once on the
enqueuing thread (the master runs no atexit hooks). Every dispatcher
remembers its pid, and a slow path (``_admit``, which a dispatcher that
never ran lock-free always takes) that sees another one resets the
process's dispatchers, as the fork hook would have.

Locks
-----
Every lock the engine and its parts take, and what it guards. The order:

* ``Engine._lock`` is the innermost. While it is held, no other lock is
  waited for (a sleeper's lock is only released, which never blocks), the
  spool is not touched, and no user code runs but the ``clock=`` given to
  the constructor, which must be cheap and take no lock of its own.
* ``Delivery.inline_lock``, ``Outbox.emit_lock`` and ``SpoolBridge.io_lock``
  are taken with the engine lock released, and each takes the engine lock
  inside. User code may run while the first two are held, and may reach
  any of the three again (a listener that enqueues, a dispatch that
  flushes), so none of them is ever waited for without a deadline: each
  is either tried without waiting (the thread that finds it taken leaves
  its work to the holder) or waited for until the caller's deadline.
* The spool's own locks are taken with the engine lock released: under
  ``io_lock`` (queued writes), or under none (a durable append, a claim).

``Engine._lock`` (an RLock, with the ``_progress`` Condition on it)
    Everything in the engine and its parts: lanes' thresholds and
    deadlines, counters, the state, the scheduler's heaps, the budget,
    the outbox's queues, the bridge's queue of operations. Reentrant, so
    that a signal handler or a finalizer that enqueues on a thread inside
    a slow path does not deadlock. Never held while user code runs
    (dispatch, ``on_error``, listeners), nor while the spool is written
    or read: those happen after it is released. Methods named
    ``_x_locked``, and those documented "Lock held", expect it held.
``Delivery.inline_lock`` (RLock)
    Serialises batches delivered on callers' threads (at exit, or without
    worker threads), so that a key never has two batches out at once.
    Taken without the engine lock, within the exit budget.
``Outbox.emit_lock`` (RLock)
    Held while listeners run, so that events reach them in the order they
    happened. A thread that finds it taken leaves its events to the holder
    (it never waits for it, but at shutdown and exit, within a deadline).
``SpoolBridge.io_lock``
    One thread at a time makes the queued spool operations; a thread that
    finds it taken leaves its operations to the holder, so no thread waits
    for it while it may hold the engine lock further up its stack.
The sleepers' wait locks (``Workers.sleepers``)
    One per idle worker, acquired by the worker (with the engine lock
    released) and released by whoever wakes it, without the engine lock.
``_process._registry_lock``, ``Emitter._lock``
    Leaves: nothing else is taken while they are held.

The SQLite spool's own locks and their order are documented in
:mod:`batchdispatch.spool`.
"""

from __future__ import annotations

import abc
import itertools
import logging
import os
import random
import threading
import types
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Hashable,
    List,
    Optional,
    Set,
    Tuple,
    TypeVar,
)

from . import _context, _gil, _process, _threadless
from . import _lifecycle as lifecycle
from ._deadlines import SafeClock, deadline_after, monotonic, wait_slice
from ._delivery import Delivery
from ._drain import Drain
from ._events import Listener, Outbox
from ._lanes import NEVER, Batch, Lane
from ._lifecycle import CLOSED, EXIT_CLOSED, EXIT_DRAINING, EXIT_GIVEN_UP, NEW, RUNNING, SHUT
from ._retry import RetryPolicy
from ._scheduler import Scheduler
from ._spool_bridge import SpoolBridge
from ._spool_protocol import Spool
from ._stats import DispatcherStats, RateLimit
from ._workers import Workers
from .events import (
    ItemsDropped,
)
from .exceptions import QueueFullError

T = TypeVar("T")

log = logging.getLogger("batchdispatch")


class Engine(Generic[T], abc.ABC):
    """Lanes, worker threads and lifecycle shared by every dispatcher.

    Not meant to be instantiated directly: use
    :class:`~batchdispatch.BackgroundDispatcher` or
    :class:`~batchdispatch.KeyedDispatcher`, which validate the arguments.
    """

    #: Seconds between two log lines about drops or failed dispatches.
    LOG_INTERVAL = 10.0

    def __init__(
        self,
        call: Callable[[Hashable, List[T]], object],
        *,
        delay: float,
        max_batch_size: Optional[int],
        max_queue_size: Optional[int],
        overflow: str,
        block_timeout: Optional[float],
        on_error: Optional[Callable[[BaseException, List[T]], object]],
        name: str,
        flush_on_exit: bool,
        exit_timeout: float,
        clock: Optional[Callable[[], float]],
        retry: Optional[RetryPolicy],
        max_workers: int,
        spool: Optional[Spool] = None,
        spill_exhausted: bool = False,
        dead_letters: bool = True,
    ) -> None:
        self._call = call
        self._delay = delay
        self._batch_limit = max_batch_size or NEVER
        self._queue_limit = max_queue_size or NEVER
        self._overflow = overflow
        self._block_timeout = block_timeout
        self._on_error = on_error
        self._retry = retry
        self._max_workers = max_workers
        #: Names the worker threads ``batchdispatch:<name>`` and the log lines.
        self.name = name
        #: Whether the exit hook delivers what is pending at interpreter exit.
        self.flush_on_exit = flush_on_exit
        #: Seconds the exit hook (and the ``with`` block) waits at most.
        self.exit_timeout = exit_timeout
        self._clock = monotonic if clock is None else SafeClock(clock, self._clock_failed)
        # No GIL to rely on (a free-threaded build, or forced): every enqueue
        # takes the lock; the lock-free thresholds are never opened.
        self._locked_appends = _gil.appends_need_lock()
        self._outbox = Outbox(self)  # events and log lines, emitted outside the lock
        self._random = random.Random()
        #: The spool given as ``spool=`` (a :class:`~batchdispatch.spool.Spool`), or None.
        self.spool = spool
        self._spill_exhausted = spill_exhausted
        # Items given up go to the spool's dead letters (with a spool).
        self._dead_letters = dead_letters and spool is not None
        # The spool's state and traffic (see _spool_bridge).
        self._bridge = SpoolBridge(self, spool, replay_chunk=min(self._batch_limit, 1000) * max_workers)
        self._reset()
        if spool is not None and spool.durable:
            # Durable: every item goes to the spool before it is queued. The
            # instance attribute replaces the facade's plain enqueue, so a
            # dispatcher without a durable spool keeps its hot path as is.
            self.enqueue = self._durable_enqueue()
        _process.register(self)

    def _reset(self) -> None:
        """Set every piece of runtime state to that of a new dispatcher."""
        self._pid = os.getpid()  # a slow path that sees another pid resets (uWSGI forks past our hook)
        # Reentrant: a signal handler or a finalizer that runs on a thread
        # inside a slow path may enqueue again (logging does, through a
        # handler), and must not deadlock on the lock its own thread holds.
        self._lock = threading.RLock()
        # The worker threads, and the idle ones a producer wakes without the lock.
        self._workers = Workers(self)
        self._progress = threading.Condition(self._lock)
        self._watchers = 0  # threads waiting on _progress
        self._lanes: Dict[Hashable, Lane] = {}
        self._room = 0  # BackgroundDispatcher's thresholds (keyed lanes have their own)
        self._wake_at = 0
        self._state = NEW
        # No worker threads: callers deliver due batches (see Delivery.serve_here).
        self._caller_delivers = False
        # Bumped at fork, so a worker frame inherited by the child gives up.
        self._generation = getattr(self, "_generation", 0) + 1
        self._seq = 0  # sequence number of the next item accepted under the lock (not into a lane's deque)
        # Lane deadlines, the ready queue, and taking a lane's batch.
        self._scheduler = Scheduler(self)
        # Flush, shutdown and exit, each within its deadline.
        self._drain = Drain(self)
        self._open: Set[Batch] = set()  # taken and not settled (out, or waiting to retry)
        self._inflight: Set[Batch] = set()
        # Attempts and their outcomes, and delivery on callers' threads.
        self._delivery = Delivery(self)
        self._flush_upto = 0  # take at once every lane holding a sequence number before this
        # Dispatch calls must be over by then (monotonic), or None: set by a
        # shutdown or exit that waits with a deadline (see current_deadline).
        self._deliver_by: Optional[float] = None
        self._blocked = 0  # producers waiting for room
        self._overflowing = False  # the workers were told the queue is full
        self._dispatched = 0
        self._failed = 0
        self._retried = 0
        self._batches = 0
        self._dropped: Dict[str, int] = {}
        self._last_error: Optional[BaseException] = None
        self._drop_log = RateLimit(self.LOG_INTERVAL, monotonic)
        self._outbox.reset()
        self._bridge.reset()
        self._overflowed = 0  # items accepted straight into the spool (overflow="spill", or past exit)
        # Items appended (so counted by their lane) and then refused after
        # all: late past the exit budget, enqueue said False for them.
        self._uncounted = 0

    # -- events ----------------------------------------------------------------

    def on(self, event: str, listener: Listener) -> None:
        """Call *listener(payload)* each time *event* happens.

        Events: ``batch_started``, ``batch_succeeded``, ``batch_failed``,
        ``batch_retry_scheduled``, ``items_exhausted``, ``items_dropped`` and
        ``shutdown``; each payload is a small frozen dataclass (see
        :mod:`batchdispatch.events`). Listeners run on a worker thread,
        never under the dispatcher's lock; one that raises is logged.

        :raises ValueError: for an unknown event name.
        """
        self._outbox.listeners.on(event, listener)

    def once(self, event: str, listener: Listener) -> None:
        """Like :meth:`on`, for the next occurrence only."""
        self._outbox.listeners.on(event, listener, once=True)

    def off(self, event: str, listener: Optional[Listener] = None) -> None:
        """Remove *listener* from *event*, or every listener of it if None."""
        self._outbox.listeners.off(event, listener)

    def _post(self, event: str, make: Callable[[], Any]) -> None:
        """Queue an event for emission after the lock is released. Lock held."""
        # Posted by a producer (a drop): an idle worker emits it now rather
        # than after some unrelated batch.
        if self._outbox.post(event, make) and self._workers.sleepers and not self._dispatching_here():
            self._workers.kick()

    def _log_later(self, *line: Any) -> None:
        """Queue a log line (``log.log``'s arguments), written by the next
        thread that emits events, outside the lock. Lock held or not."""
        self._outbox.log_later(*line)
        if self._workers.sleepers and not self._dispatching_here():
            self._workers.kick()  # an idle worker writes it now

    def _clock_failed(self, problem: str) -> None:
        """The user's clock failed (see SafeClock): logged once, outside the lock."""
        self._log_later(
            logging.ERROR, "batchdispatch:%s: the clock %s; going on with the real monotonic"
            " time from its last good reading (logged once)", self.name, problem,
        )

    # -- the hot path (one lane, no lock) ---------------------------------------

    # -- what the single-lane and the keyed engines define ---------------------------

    @abc.abstractmethod
    def _durable_enqueue(self) -> Callable[..., bool]:
        """The ``enqueue`` of a durable dispatcher (the spool bridge's)."""

    @abc.abstractmethod
    def _replay_key(self, key: Hashable) -> Hashable:
        """The key under which an item spooled under *key* is delivered again."""

    @abc.abstractmethod
    def _lane_for(self, key: Hashable) -> Lane:
        """*key*'s lane, made if it has none. Lock held."""

    @abc.abstractmethod
    def _push(self, key: Hashable, item: T, priority: int) -> bool:
        """Add an item to its lane and schedule the lane; False if the queue
        has no room for it. Lock held."""

    @abc.abstractmethod
    def _enqueued_count(self) -> int:
        """Items accepted since the dispatcher was created. Lock held."""

    @abc.abstractmethod
    def _queued_below(self, count: int, reclaim: bool = True) -> bool:
        """Whether fewer than *count* items wait in lanes (not taken). Lock held."""

    @abc.abstractmethod
    def _oldest_lane(self) -> Optional[Lane]:
        """The lane to evict from under ``"drop_oldest"``. Lock held."""

    @abc.abstractmethod
    def _ask_for_news(self, seen: int) -> bool:
        """A worker is about to sleep, having seen *seen* items in the
        lock-free lane: publish that it waits for appends, then look.
        True if some came meanwhile (look again). Lock held."""

    @abc.abstractmethod
    def _after_batch(self, lane: Lane) -> None:
        """A lane's batch is settled: schedule its next items, or forget it. Lock held."""

    def _advance_position(self, count: int) -> None:
        """Count *count* items accepted outside any lane (delivered on a caller's thread)."""
        self._seq += count

    def _take_news(self) -> None:
        """Handle the lanes producers reported without the lock (keyed). Lock held."""

    def _discover(self, now: float) -> int:
        """Notice what producers appended to the lock-free lane (single lane); return its length."""
        return 0

    def _pick_when_full(self) -> Optional[Lane]:
        """With the queue full, a lane to take before its deadline (keyed), or None. Lock held."""
        return None

    def _taken(self, lane: Lane) -> None:
        """A batch was taken from *lane*. Lock held."""

    def _pop_lane(self, lane: Lane, count: int) -> Tuple[List[Any], int, int]:
        """Take *count* items off a lane (``Lane.pop``), keeping the counts right. Lock held."""
        return lane.pop(count)

    def _evict_oldest(self, lane: Lane, trash: List[Any]) -> None:
        """Drop a lane's oldest item to make room (``"drop_oldest"``). Lock held."""
        evicted = lane.pop_oldest()
        trash.append(evicted)
        self._drop(lane.key, [evicted], "queue_full")

    def _forget_if_idle(self, lane: Lane) -> None:
        """Drop an empty, settled lane (keyed), so memory does not grow with keys ever seen. Lock held."""

    def _lanes_emptied(self) -> None:
        """Every lane was emptied at once (exit, a worker's death). Lock held."""

    # -- admission under the lock -------------------------------------------------

    def _admit(self, key: Hashable, item: T, priority: int) -> bool:
        """Admission when the lock is needed: always for keys, else when not running or full."""
        trash: List[Any] = []  # evicted items, released after the lock
        report = None
        inline: Optional[Batch] = None
        threadless = None
        accepted: Optional[bool]
        spill = "queue_full"  # why, when the item goes to the spool (accepted is None)
        if self._pid != os.getpid():
            _process.after_fork_in_child()  # forked where os.register_at_fork did not run (uWSGI)
        with self._lock:
            if self._state == NEW and not _process.exiting:
                threadless = self._start()
            state = self._state
            if state in (RUNNING, EXIT_DRAINING):
                # While the exit hook drains, late items still join the queue.
                if self._push(key, item, priority):
                    if not self._caller_delivers:
                        return True
                    accepted = True
                elif state == RUNNING:
                    accepted, report = self._overflow_locked(key, item, priority, trash)
                else:
                    self._drop(key, [item], "queue_full")
                    accepted, report = False, self._drop_report()
            elif state in (NEW, EXIT_CLOSED):
                # No worker will take it: the interpreter is exiting, or no
                # thread could start (3.12 refuses them in atexit handlers;
                # or the process is out of threads). Deliver on this thread;
                # a later enqueue tries to start the worker again.
                if state == NEW and _process.exiting:
                    self._state = lifecycle.closed(True, state)
                    self._room = self._wake_at = -1
                if self._past_exit_budget():
                    # Exit's budget is spent: no more delivery on this thread.
                    if self.spool is not None:
                        accepted, spill = None, "exit"
                    else:
                        self._drop(key, [item], "exit")
                        accepted, report = False, self._drop_report()
                else:
                    inline = Batch(None, [item], NEVER, key, seq_first=self._seq)
                    self._advance_position(1)
                    accepted = True
            elif state is EXIT_GIVEN_UP and self.spool is not None:
                # Stuck past the exit budget, with a spool: into it, for the
                # next start (written below, after the lock).
                accepted, spill = None, "exit"
            else:
                # Shut down by the user, or stuck past the exit budget (a
                # second, overlapping dispatch call could hang exit again).
                self._drop(key, [item], "exit" if state is EXIT_GIVEN_UP else "closed")
                accepted, report = False, self._drop_report()
        del trash
        if threadless == "uwsgi":
            _threadless.warn()
        if accepted is None:
            accepted = self._bridge.spill_now(key, [item], spill, counted=False)
        if self._bridge.todo:
            self._bridge.io()  # a spill (overflow="spill"), or the row of a dropped durable item
        if inline is not None:
            return self._delivery.deliver_here(inline)
        if self._caller_delivers:
            self._delivery.serve_here()  # delivers what is due, emits the events
        elif self._state in SHUT:
            self._outbox.emit()  # no worker will: only then does enqueue run listeners
        if report:
            log.warning(*report)
        return accepted

    def _start(self) -> Optional[str]:
        """Start a new dispatcher: its first worker, or delivery on callers'
        threads. Returns why this process has no worker threads, if so. Lock held."""
        threadless = _threadless.threadless()
        if threadless is None:
            self._workers.start()
        elif threadless != "uwsgi-master":
            self._deliver_on_callers()
        # A uWSGI master stays new: each item is delivered on the enqueuing
        # thread as it comes (the master keeps no queue for its exit, which
        # runs no atexit hooks).
        return threadless

    def _overflow_locked(
        self, key: Hashable, item: T, priority: int, trash: List[Any]
    ) -> Tuple[Optional[bool], Optional[Tuple[object, ...]]]:
        """Apply the overflow policy; return (accepted, log line or None).
        *accepted* is None for ``"spill"``: the caller spills the item.

        Called with the lock held; "block" releases it while it waits.
        Evicted items go to *trash*, for the caller to release unlocked.
        """
        policy = self._overflow
        if not self._overflowing:
            # A full queue is worth dispatching right away: a worker takes the
            # lane with the earliest deadline (see Scheduler.pick). Once per take, so a
            # drop stays cheap when producers outrun the workers, and a batch
            # waiting for its retry keeps its backoff.
            self._overflowing = True
            if not self._workers.kick():
                self._workers.more()
        if policy == "spill":
            return None, None  # the caller writes it to the spool, after the lock
        if policy == "drop_oldest":
            # The push above found no room: evict until this item fits.
            lane = self._oldest_lane()
            while lane is not None:
                self._evict_oldest(lane, trash)
                if self._push(key, item, priority):
                    return True, None
                lane = self._oldest_lane()
        # Callers that deliver never wait for room: no worker would make it.
        if policy == "block" and not self._dispatching_here() and not self._caller_delivers:
            deadline = deadline_after(self._block_timeout)
            pushed: List[bool] = []

            def pushed_or_closed() -> bool:
                # The push is tried each time the queue looks to have room:
                # the grants may still refuse it (a lane past its grant by the
                # documented slack), and then the wait goes on.
                if self._state != RUNNING:
                    return True
                if self._queued_below(self._queue_limit) and self._push(key, item, priority):
                    pushed.append(True)
                return bool(pushed)

            self._blocked += 1
            try:
                self._wait_locked(pushed_or_closed, deadline)
            finally:
                self._blocked -= 1
            if pushed:
                return True, None
        self._drop(key, [item], "queue_full" if self._state == RUNNING else "closed")
        if policy == "raise":
            raise QueueFullError(self._queue_limit)
        return False, self._drop_report()

    # -- workers ---------------------------------------------------------------------

    def _dispatching_here(self) -> bool:
        """Whether this thread is inside this dispatcher's dispatch or on_error."""
        return self in _context.dispatching()

    def _exit_budget_end(self) -> Optional[float]:
        """When exit's budget for this dispatcher ends, once the exit hook has started; else None."""
        started = _process.exit_started
        return None if started is None else started + min(self.exit_timeout, threading.TIMEOUT_MAX)

    def _past_exit_budget(self) -> bool:
        end = self._exit_budget_end()
        return end is not None and monotonic() >= end

    # -- delivery on the callers' threads (no worker threads) ------------------

    def _deliver_on_callers(self) -> None:
        """Run without worker threads: callers deliver what is due. Lock held.

        The thresholds stay at 0 (BackgroundDispatcher) and keyed lanes get
        no room, so every enqueue takes the lock, and the slow path
        (``_admit``) then delivers whatever is due on the enqueuing thread.
        """
        self._caller_delivers = True
        self._state = RUNNING

    # -- drops ---------------------------------------------------------------

    def _count_drop(self, reason: str, count: int) -> None:
        if count:
            self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _drop(self, key: Hashable, items: List[Any], reason: str) -> None:
        items = self._bridge.forget_rows(key, items)
        self._count_drop(reason, len(items))
        self._post("items_dropped", lambda: ItemsDropped(key, tuple(items), reason))

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

    def shutdown(self, timeout: Optional[float] = 5.0) -> bool:
        """Flush, stop the workers and refuse further items. Idempotent.

        Retries still waiting are tried at once rather than after their
        backoff, and none is started after the deadline.

        :param timeout: seconds to wait at most, as one deadline; None waits
            as long as it takes.
        :returns: True if everything was delivered or given up and the
            workers have stopped; False if the timeout passed first. What is
            still undelivered then is logged as a warning, counted in
            :meth:`stats` and reported by the ``shutdown`` event. Afterwards
            ``enqueue`` returns False and counts a ``"closed"`` drop. Called
            from inside dispatch or on_error, it closes without waiting and
            returns False.
        """
        return self._drain.shutdown(timeout)

    def _close(self, by_exit: bool, deadline: Optional[float] = None) -> None:
        """Stop taking items and drain (see Drain.close); the exit hook's first step."""
        self._drain.close(by_exit, deadline)

    def _exit(self, deadline: float, interrupted: bool = False) -> None:
        """The exit hook's second step (see Drain.exit)."""
        self._drain.exit(deadline, interrupted)

    def _wait_locked(self, done: Callable[[], bool], deadline: Optional[float]) -> bool:
        """Wait on ``_progress`` until *done()* or the deadline, in slices
        on the main thread (see wait_slice). Lock held."""
        while not done():
            timeout = wait_slice(deadline)
            if timeout == 0:
                return False
            self._watchers += 1
            try:
                self._progress.wait(timeout)
            finally:
                self._watchers -= 1
        return True

    def _notify_progress(self) -> None:
        """Wake flush, shutdown and blocked producers to look again. Lock held.

        Called once per batch: skipped when nobody waits, since
        Condition.notify_all costs more than the rest of settling a batch.
        """
        if self._watchers:
            self._progress.notify_all()

    # -- introspection -------------------------------------------------------

    def _pending_count(self, queued: Optional[int] = None) -> int:
        """Items pending: *queued* in lanes (counted here if None), plus those in batches. Lock held."""
        if queued is None:
            queued = sum(lane.size() for lane in self._lanes.values())
        return queued + sum(
            len(b.items) for b in itertools.chain(self._open, self._delivery.inline, self._bridge.replay)
        )

    def _stats_fields(self, queued: Optional[int] = None, enqueued: Optional[int] = None) -> Dict[str, Any]:
        """The core counters, read with the lock held. A caller that has just
        counted the lanes passes what it found (*queued*, *enqueued*)."""
        in_flight = sum(len(b.items) for b in itertools.chain(self._inflight, self._delivery.inline))
        pending = self._pending_count(queued)
        oldest = self._scheduler.oldest_waiting()
        return {
            "name": self.name,
            "pending": pending,
            "oldest_pending_age": (
                (None if not pending else 0.0) if oldest is None else max(0.0, self._clock() - oldest)
            ),
            "batch_seconds": self._delivery.seconds.snapshot(),
            "batch_sizes": self._delivery.sizes.snapshot(),
            "in_flight": in_flight,
            "enqueued": self._enqueued_count() if enqueued is None else enqueued,
            "dispatched": self._dispatched,
            "batches": self._batches,
            "failed": self._failed,
            "dead_lettered": self._bridge.dead_lettered,
            "retried": self._retried,
            "dropped": sum(self._dropped.values()),
            "dropped_by_reason": types.MappingProxyType(dict(self._dropped)),
            "last_error": self._last_error,
            "worker_alive": any(worker.is_alive() for worker in self._workers.threads),
            "active_batches": len(self._inflight) + len(self._delivery.inline),
            "spilled": self._bridge.spilled,
            "replayed": self._bridge.replayed,
            "spool_faults": types.MappingProxyType(dict(self._bridge.faults)),
        }

    def stats(self) -> DispatcherStats:
        """Return a consistent snapshot of the counters."""
        with self._lock:
            fields = self._stats_fields()
            return DispatcherStats(**fields)

    def __repr__(self) -> str:
        with self._lock:
            name, state, pending = self.name, self._state, self._pending_count()
        return f"<{type(self).__name__} name={name!r} state={state} pending={pending}>"

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._drain.shutdown(timeout=self.exit_timeout)

    # -- process lifecycle ----------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Give the child a fresh dispatcher; the parent keeps its items."""
        state = self._state
        self._reset()
        if state not in (NEW, RUNNING):
            self._state = CLOSED
            self._room = self._wake_at = -1
