"""Worker threads: starting them, their loop, and how idle ones sleep and are woken.

Up to ``max_workers`` threads, started as work appears, each running
:meth:`Workers._work`: take the next due batch (:meth:`Workers.next_batch`,
under the engine lock), deliver it with the lock released, settle it, and
go on; a worker with nothing due sleeps until the earliest deadline, or
with no timeout at all when nothing waits.

Idle workers do not wait on a Condition: each waits on a lock of its own,
listed in ``sleepers``, and a waker pops one and releases it
(:meth:`Workers.kick`). A producer can do that without the engine lock,
which matters because a worker that holds the lock may be waiting for the
GIL the producer holds, and a Condition's notify would make the producer
wait for both.
"""

from __future__ import annotations

import enum
import heapq
import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from . import _context, _process
from . import _lifecycle as lifecycle
from ._lanes import INF, Batch
from ._lifecycle import NEW, RUNNING

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("batchdispatch")


class Signal(enum.Enum):
    """What :meth:`Workers.next_batch` may ask of its caller instead of a batch."""

    #: Events (or log lines) posted by producers wait: emit them, then look again.
    EMIT = "emit"
    #: Spooled items wait to be claimed: claim them, then look again.
    CLAIM = "claim"


class Workers:
    """An engine's worker threads and its idle ones (see the module's notes)."""

    def __init__(self, engine: Engine[Any]) -> None:
        self.engine = engine
        self.threads: List[threading.Thread] = []
        # Idle workers, each waiting on a lock of its own that a waker releases.
        self.sleepers: List[Any] = []
        #: The timeout of each sleeping worker's wait, by thread ident (None:
        #: no timeout). Written and read under the engine lock: an entry
        #: means that worker has let go of the lock and waits.
        self.waiting: Dict[int, Optional[float]] = {}

    def start(self) -> None:
        """Start a worker. Called with the lock held."""
        engine = self.engine
        if engine._caller_delivers:
            return  # no worker threads in this process: callers deliver
        number = len(self.threads) + 1
        suffix = "" if engine._max_workers == 1 else f"-{number}"
        worker = threading.Thread(
            target=self._run,
            args=(engine._generation,),
            name=f"batchdispatch:{engine.name}{suffix}",
            daemon=True,
        )
        try:
            worker.start()
        except RuntimeError:
            return  # no worker: the caller delivers on its own thread
        self.threads.append(worker)
        if engine._state == NEW:
            engine._state = RUNNING
            engine._room = 0 if engine._locked_appends else engine._queue_limit
            engine._wake_at = 0

    def _run(self, generation: int) -> None:
        engine = self.engine
        try:
            self._work(generation)
        except BaseException:
            log.exception("batchdispatch:%s: a worker stopped on an internal error", engine.name)
            with engine._lock:
                if engine._generation == generation:
                    engine._state = lifecycle.drained(engine._state)
                    engine._room = engine._wake_at = -1
                    engine._count_drop("worker_died", sum(len(b.items) for b in engine._open))
                    for lane in list(engine._lanes.values()):
                        lane.room = lane.wake_at = -1  # a late append is refused (see _wake_lane)
                        left, _, _ = lane.pop(lane.size())
                        engine._count_drop("worker_died", len(left))
                    engine._lanes_emptied()
                    engine._open.clear()
                    engine._inflight.clear()
                    # Claimed from the spool by this process: freed when it ends, replayed then.
                    engine._bridge.replay.clear()
                    engine._bridge.replay_out.clear()
                    engine._bridge.backlog = None
                    engine._bridge.claiming = False
                    engine._notify_progress()
                    self.kick_all()  # the other workers see the state and stop
            raise

    def _work(self, generation: int) -> None:
        # A worker thread never waits for its own dispatcher: flush or
        # shutdown called from a listener it runs returns at once.
        engine = self.engine
        _context.dispatching().append(self.engine)
        batch: Union[Batch, Signal, None] = None
        while True:
            if batch is None:
                with engine._lock:
                    if engine._generation != generation:
                        return  # os.fork() was called from dispatch: this is the child
                    batch = self.next_batch()
                if engine._bridge.todo:
                    engine._bridge.io()  # a lane spilled on the way (SpoolBridge.spill_lane)
                engine._outbox.emit()
                if batch is None:
                    return
            if isinstance(batch, Signal):
                if batch is Signal.CLAIM:
                    engine._bridge.claim_backlog()
                batch = None  # and look again
                continue
            error = engine._delivery.attempt(batch)
            with engine._lock:
                if engine._generation != generation:
                    return
                old_error = engine._delivery.settle(batch, error)
                # The next batch in the same critical section, when one is
                # due and no event waits: one lock round trip per batch.
                done, batch = batch, None if engine._outbox.events else self.next_batch(wait=False)
            # Release the settled batch outside the lock: an item's
            # finalizer may enqueue or log.
            del done, error, old_error
            if engine._bridge.todo:
                engine._bridge.io()  # acks of delivered spooled items
            engine._outbox.emit()

    def next_batch(self, wait: bool = True) -> Union[Batch, Signal, None]:
        """Wait until a lane is due and take its batch; None when this worker should stop.

        Called with the lock held. With nothing waiting, workers wait with no
        timeout, so an idle dispatcher costs nothing; otherwise they sleep
        once, until the earliest deadline or until a producer wakes them.
        Without *wait*, it returns None at once when no lane is due.
        """
        engine = self.engine
        clock = engine._clock
        while True:
            engine._take_news()
            now = clock()
            poll_at = engine._bridge.poll_due(now)
            if engine._bridge.backlog is not None or engine._bridge.replay:
                if engine._bridge.take_claim():
                    return Signal.CLAIM
                engine._bridge.inject_replays(now)
            seen = engine._discover(now)
            lane = engine._scheduler.pick(now)
            if lane is not None:
                if lane.spilling and lane.batch is None:
                    engine._bridge.spill_lane(lane)
                    continue
                return engine._scheduler.take(lane, now)
            if not wait:
                return None
            if engine._state != RUNNING and not engine._scheduler.has_work():
                if not engine._inflight:
                    engine._state = lifecycle.drained(engine._state)
                    engine._notify_progress()
                    self.kick_all()
                return None
            timers = engine._scheduler.timers
            while timers and (
                timers[0][2].due_at != timers[0][0] or not timers[0][2].awaits_take()
            ):
                heapq.heappop(timers)  # stale: the lane was taken or rescheduled
            until = min(timers[0][0] if timers else INF, poll_at)
            if engine._outbox.waiting():
                return Signal.EMIT  # events posted by producers (drops): emit before sleeping
            # Queue up as a sleeper first, then publish the threshold (keyed:
            # that news is wanted), then look a last time: an append after
            # that look sees the threshold and finds this worker to wake.
            waiter = threading.Lock()
            waiter.acquire()
            self.sleepers.append(waiter)
            if engine._ask_for_news(seen):
                self._unsleep(waiter)  # appended meanwhile: look again
                continue
            self._sleep(waiter, None if until == INF else min(max(until - now, 0.0), threading.TIMEOUT_MAX))

    def _sleep(self, waiter: Any, timeout: Optional[float]) -> None:
        """Wait, with the lock released, until woken or *timeout* seconds passed.

        Called from next_batch, whose caller holds the lock exactly once.
        """
        engine = self.engine
        here = threading.get_ident()
        self.waiting[here] = timeout
        engine._lock.release()
        try:
            if timeout is None:
                waiter.acquire()
            else:
                waiter.acquire(True, timeout)
        finally:
            engine._lock.acquire()
            del self.waiting[here]
            self._unsleep(waiter)  # timed out: nobody woke it

    def _unsleep(self, waiter: Any) -> None:
        """Take a waiter off ``sleepers``, unless a waker just popped it."""
        try:
            self.sleepers.remove(waiter)
        except ValueError:
            pass  # popped without the lock by kick: it was woken, and looks anyway

    def kick(self) -> bool:
        """Wake one idle worker; False if none was idle. Lock not needed."""
        try:
            waiter = self.sleepers.pop()
        except IndexError:
            return False
        waiter.release()
        return True

    def kick_all(self) -> None:
        while self.kick():
            pass

    def more(self) -> None:
        """Start another worker if work waits and every worker is busy."""
        engine = self.engine
        if (
            len(self.threads) < engine._max_workers
            and not self.sleepers
            and len(engine._inflight) >= len(self.threads)
            and engine._state == RUNNING
            and not _process.exiting
        ):
            self.start()
