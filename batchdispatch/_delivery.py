"""Delivery: one attempt of a batch, and what its outcome does.

:meth:`Delivery.attempt` calls the user's code with the engine lock
released, and times the call; :meth:`Delivery.settle` then records the
outcome under the lock (the call's duration and size among it, in
``seconds`` and ``sizes``):
the items delivered, a ``PartialFailure``'s failed items kept, a retry
scheduled (its backoff, or the receiver's ``Retry-After`` within the
policy's cap), or the items given up, to the spool where one keeps them.

Batches are also delivered on the caller's thread where no worker will
take them: items that arrive after the dispatcher closed at exit
(:meth:`Delivery.deliver_here`, within the exit budget), and every due
batch in a process that runs no worker threads (:meth:`Delivery.serve_here`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Hashable, List, Optional, Set, Tuple, Union

from . import _context
from . import _lifecycle as lifecycle
from ._deadlines import acquire, monotonic
from ._lanes import Batch
from ._lifecycle import DRAINING, EXIT_CLOSED, NO_RETRIES, RUNNING
from ._retry import retryable
from ._stats import DURATION_BOUNDS, SIZE_BOUNDS, Buckets, RateLimit
from ._workers import Signal
from .events import BatchFailed, BatchRetryScheduled, BatchSucceeded, ItemsExhausted
from .exceptions import PartialFailure

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("batchdispatch")


class Delivery:
    """An engine's attempts and their outcomes (see the module's notes)."""

    def __init__(self, engine: Engine[Any]) -> None:
        self.engine = engine
        # Batches delivered on a caller's thread (no worker could): never
        # retried, and serialised, so a key never has two at once.
        self.inline: Set[Batch] = set()
        self.inline_lock = threading.RLock()
        self.error_log = RateLimit(engine.LOG_INTERVAL, monotonic)
        # Each dispatch call's duration and size, counted by settle (lock held).
        self.seconds = Buckets(DURATION_BOUNDS)
        self.sizes = Buckets(SIZE_BOUNDS)

    def attempt(self, batch: Batch, deadline: Optional[float] = None) -> Optional[BaseException]:
        """Call the user's code for one attempt. Never called with the lock held.

        *deadline*, or the dispatcher's ``_deliver_by`` (the sooner), is
        what :func:`current_deadline` answers during the call.
        """
        engine = self.engine
        if engine._deliver_by is not None and (deadline is None or engine._deliver_by < deadline):
            deadline = engine._deliver_by
        saved = _context.enter_call(self.engine, batch, deadline)
        try:
            started = time.perf_counter()
            try:
                engine._call(batch.key, batch.items)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                batch.took = time.perf_counter() - started  # the call's, not on_error's
                self._handle_error(exc, self.failed_items(exc, batch.items, report=True))
                return exc
            batch.took = time.perf_counter() - started
            return None
        finally:
            _context.leave_call(saved)

    def failed_items(self, error: BaseException, items: List[Any], report: bool = False) -> List[Any]:
        """The items an attempt failed: all of them, or a PartialFailure's."""
        if isinstance(error, PartialFailure):
            if len(error.failed_items) <= len(items):
                return error.failed_items
            if not report:
                return items
            # More "failed" items than were sent cannot be right: retry the
            # batch as sent rather than count items never accepted.
            log.error(
                "batchdispatch:%s: PartialFailure listed %d failed items for a batch of %d;"
                " treating the whole batch as failed",
                self.engine.name, len(error.failed_items), len(items),
            )
        return items

    def _handle_error(self, exc: BaseException, batch: List[Any]) -> None:
        engine = self.engine
        if engine._on_error is None:
            held = self.error_log.ready()
            if held is not None:
                more = f" ({held} more failures since the last report)" if held else ""
                log.error(
                    "batchdispatch:%s: dispatch of %d items failed%s",
                    engine.name, len(batch), more, exc_info=exc,
                )
            return
        try:
            engine._on_error(exc, batch)
        except BaseException:
            log.exception("batchdispatch:%s: on_error raised", engine.name)

    def settle(self, batch: Batch, error: Optional[BaseException]) -> Optional[BaseException]:
        """Record an attempt's outcome: deliver, retry or give up. Lock held.

        Returns the replaced ``last_error`` for the caller to release
        unlocked, since its traceback may hold items.
        """
        engine = self.engine
        lane, key = batch.lane, batch.key
        engine._inflight.discard(batch)
        engine._batches += 1
        self.seconds.observe(batch.took)
        self.sizes.observe(len(batch.items))
        if batch in engine._bridge.exit_spilled:
            engine._bridge.exit_spilled.discard(batch)  # in the spool already; the dispatcher is closed
            engine._open.discard(batch)
            engine._notify_progress()
            return None
        old_error = None
        attempt = batch.attempt
        if error is None:
            engine._dispatched += len(batch.items)
            engine._bridge.ack_rows(batch)
            done = True
            engine._post("batch_succeeded", lambda: BatchSucceeded(key, tuple(batch.items), attempt))
        else:
            old_error, engine._last_error = engine._last_error, error
            failed = self.failed_items(error, batch.items)
            if len(failed) != len(batch.items):
                batch.id = None  # other items than the ones a receiver saw under the old id
                if batch.rows is not None:
                    engine._bridge.keep_rows(batch, failed)
            engine._dispatched += len(batch.items) - len(failed)
            batch.items = list(failed)
            engine._post("batch_failed", lambda: BatchFailed(key, tuple(failed), attempt, error))
            done = self._retry_or_give_up(batch, error)
        if done:
            engine._open.discard(batch)
            engine._bridge.replay_out.discard(batch)
            if lane is not None and lane.batch is batch:
                lane.batch = None
                engine._after_batch(lane)
        engine._notify_progress()
        return old_error

    def _retry_or_give_up(self, batch: Batch, error: BaseException) -> bool:
        """Schedule a retry, or give the items up; True if the batch is settled."""
        engine = self.engine
        lane, items, key = batch.lane, batch.items, batch.key
        policy = engine._retry
        if not items:
            return True
        if engine.spool is not None and retryable(error):
            if lane is None or engine._state != RUNNING:
                # Not lost: a batch that fails while the dispatcher closes (or
                # on a caller's thread at exit) goes to the spool for the next
                # start, rather than through its retries at once; so does
                # what its lane holds behind it, to keep their order.
                engine._bridge.to_spool(key, items, batch.rows, park=False, reason="failed")
                if lane is not None:
                    lane.spilling = True
                return True
            if engine._spill_exhausted and (policy is None or policy.gives_up(batch.attempt, error)):
                # Given up after its retries: parked in the spool, held by this
                # process until it ends, then replayed by the next start.
                engine._bridge.to_spool(key, items, batch.rows, park=True, reason="failed")
                return True
        stopped = engine._state in NO_RETRIES
        if policy is None or lane is None or stopped or policy.gives_up(batch.attempt, error):
            engine._failed += len(items)
            attempts = batch.attempt
            buried = engine._dead_letters
            if buried:
                engine._bridge.bury(batch, error)  # kept apart, for an operator to look at
            else:
                engine._bridge.ack_rows(batch)  # given up: not replayed either
            engine._post(
                "items_exhausted", lambda: ItemsExhausted(key, tuple(items), attempts, error, buried),
            )
            return True
        wait = policy.backoff_for(batch.attempt, engine._random)
        asked = retry_after(error)
        if asked is not None:
            # The receiver said when (Retry-After): this key waits that
            # long, within the policy's cap, and the worker is free meanwhile.
            wait = min(asked, policy.max_backoff)
        now = engine._clock()
        batch.not_before = now + wait
        if engine._state != RUNNING or engine._scheduler.flushes(batch, lane):
            engine._scheduler.mark_ready(lane)  # flush or shutdown: the backoff ends early
        else:
            lane.due_at = batch.not_before
            engine._scheduler.push_timer(batch.not_before, lane)
        engine._retried += len(items)
        attempt = batch.attempt + 1
        engine._post("batch_retry_scheduled", lambda: BatchRetryScheduled(key, tuple(items), attempt, wait))
        return False

    def deliver_here(self, batch: Batch) -> bool:
        """Deliver on the calling thread, once, for items no worker will take.

        Once the exit hook has started, only within its budget (the hook's
        start plus *exit_timeout*): the dispatch call learns that deadline
        (:func:`current_deadline`), and items that would wait past it for
        another caller's delivery go to the spool, or count as ``"exit"``
        drops. Returns False if the items were dropped.
        """
        engine = self.engine
        deadline = engine._exit_budget_end()
        got = acquire(self.inline_lock, deadline)
        if not got or engine._past_exit_budget():
            if got:
                self.inline_lock.release()
            return self._give_up_late(batch)
        try:
            with engine._lock:
                if engine._bridge.wrapped:
                    engine._bridge.unwrap(batch)
                self.inline.add(batch)
            batch.attempt = 1
            error = self.attempt(batch, deadline)
            with engine._lock:
                self.inline.discard(batch)
                old_error = self.settle(batch, error)
            del old_error
        finally:
            self.inline_lock.release()
        if engine._bridge.todo:
            engine._bridge.io(wait=deadline is not None, deadline=deadline)
        engine._outbox.emit()
        return True

    def take_late(
        self, key: Hashable, late: List[Any], first: int
    ) -> Tuple[Optional[Batch], Optional[Tuple[object, ...]]]:
        """Items appended after the workers drained the lanes and left, taken
        off their lane: at exit, a batch to deliver on this thread; otherwise
        refused like any enqueue after shutdown, and the log line about it. Lock held."""
        engine = self.engine
        if engine._state is EXIT_CLOSED:  # accepted: delivered on this thread
            inline = Batch(None, late, first, key, seq_first=engine._seq)
            engine._seq += len(late)
            return inline, None
        engine._drop(key, late, "closed")
        return None, engine._drop_report()

    def after_late(self, inline: Optional[Batch], report: Optional[Tuple[object, ...]]) -> bool:
        """The rest of :meth:`take_late`, with the lock released: deliver the
        batch, or write the dropped items' rows and emit their events. Returns enqueue's answer."""
        engine = self.engine
        if inline is not None:
            return self.deliver_here(inline)
        if engine._bridge.todo:
            engine._bridge.io()  # the rows of dropped durable items
        engine._outbox.emit()  # closed: no worker will emit them
        if report:
            log.warning(*report)
        return False

    def _give_up_late(self, batch: Batch) -> bool:
        """Items that came after exit's budget was spent: to the spool, or
        dropped as ``"exit"``. True if all of them are in the spool. Lock not held."""
        engine = self.engine
        if engine.spool is not None:
            return engine._bridge.spill_now(batch.key, batch.items, "exit", counted=True)
        with engine._lock:
            engine._drop(batch.key, batch.items, "exit")
            engine._uncounted += len(batch.items)  # enqueue says False: not accepted after all
            report = engine._drop_report()
        if engine._bridge.todo:
            engine._bridge.io()  # the rows of dropped durable items
        engine._outbox.emit()
        if report:
            log.warning(*report)
        return False

    def serve_here(self, deadline: Optional[float] = None) -> None:
        """A worker's passes on the calling thread, without its waits.

        Takes every batch that is due now (full, past its delay, flushed,
        closing, or a retry whose backoff ended), delivers it with the lock
        released, settles it and looks again; returns when nothing is due,
        or when *deadline* has passed (a batch already in dispatch runs to
        its end). The thread that finds a closing dispatcher drained closes it.
        """
        engine = self.engine
        if engine._dispatching_here():
            return  # inside this dispatcher's dispatch: that pass looks again after it
        generation = engine._generation
        batch: Optional[Batch] = None
        error: Optional[BaseException] = None
        while True:
            old_error = None
            taken: Union[Batch, Signal, None] = None
            with engine._lock:
                if engine._generation != generation:
                    return  # os.fork() was called from dispatch: this is the child
                if batch is not None:
                    old_error = self.settle(batch, error)
                done, batch = batch, None
                if deadline is None or monotonic() < deadline:
                    taken = engine._workers.next_batch(wait=False)
                if taken is None and engine._state in DRAINING and not engine._inflight \
                        and not engine._scheduler.has_work():
                    engine._state = lifecycle.drained(engine._state)
                    engine._notify_progress()
            del done, error, old_error  # outside the lock: an item's finalizer may enqueue
            if engine._bridge.todo:
                engine._bridge.io()
            engine._outbox.emit()
            if taken is None:
                return
            if isinstance(taken, Signal):
                if taken is Signal.CLAIM:
                    engine._bridge.claim_backlog()
                continue  # and look again
            batch = taken
            error = self.attempt(batch)


def retry_after(error: BaseException) -> Optional[float]:
    """The wait a failed attempt's error asks for (``retry_after``, or its
    cause's for a PartialFailure), if it is a finite number of seconds.

    Read defensively: a property that raises must not kill the worker.
    """
    try:
        asked = getattr(error, "retry_after", None)
        if asked is None and isinstance(error, PartialFailure):
            asked = getattr(error.cause, "retry_after", None)
        if isinstance(asked, bool) or not isinstance(asked, (int, float)):
            return None
        seconds = float(asked)
    except Exception:  # noqa: BLE001 - the user's error class: treat as "no hint"
        return None
    return max(0.0, seconds) if seconds - seconds == 0 else None
