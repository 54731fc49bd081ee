"""Draining: flush, shutdown and the exit hook's part, each within its deadline.

``flush`` notes every lane's next position and the next sequence number,
rushes the lanes that hold items before them, and waits until none holds
one, no open batch contains one, the spool has made its writes and the
listeners have run. ``shutdown`` closes the dispatcher (``enqueue``
refuses from then on), lets the workers drain what was accepted, and past
its deadline gives up the retries, to the spool where there is one. At
interpreter exit, the process hook (:mod:`._process`) closes every
dispatcher at once and then calls :meth:`Drain.exit` for each, within its
own ``exit_timeout``: what is still queued then goes to the spool, or is
counted as ``"exit"`` drops. With a spool, the exit flush stops a fifth of
the budget (a second at most) before its end, to leave the writes time to
wait for another process's (``SPILL_SHARE``).

Listeners run on another thread while shutdown and exit wait for them,
so that a slow one cannot hold either past its deadline
(``EVENTS_ALLOWANCE``, :meth:`Drain.emit_within`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from . import _lifecycle as lifecycle
from . import _process, _threadless, _validate
from ._deadlines import deadline_after, join_thread, monotonic
from ._lanes import ALL, Lane
from ._lifecycle import NEW, RUNNING, SHUT
from .events import ItemsExhausted, ShutdownEvent

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("batchdispatch")

#: Seconds shutdown and exit wait for listeners past their deadline at
#: most (the listeners run on another thread, see Drain.emit_within).
EVENTS_ALLOWANCE = 0.25
#: With a spool, the share of the exit budget the exit flush leaves to the
#: spill of what it could not deliver, and its cap in seconds: processes
#: that share a spool file and stop together (gunicorn's workers at
#: SIGTERM) reach their deadlines together, and each write must be able to
#: wait for the others' instead of finding the file locked and dropping.
SPILL_SHARE, SPILL_RESERVE = 0.2, 1.0


class Drain:
    """An engine's flush, shutdown and exit (see the module's notes)."""

    def __init__(self, engine: Engine[Any]) -> None:
        self.engine = engine

    def _settled_before(self, targets: Dict[Lane, int], seq: int, lane: Optional[Lane] = None) -> bool:
        """Whether every item before the flush targets has left: *targets*
        holds each lane's next position at the flush, *seq* the next
        sequence number; *lane* limits the check to that lane. Lock held."""
        engine = self.engine
        if lane is None:
            lanes: Any = engine._lanes.values()
            batches: Any = itertools.chain(engine._open, engine._delivery.inline)
        else:
            lanes = [lane]
            batches = [b for b in engine._open if b.lane is lane]
        for batch in batches:
            if batch.seq_first < seq or (batch.lane is not None and batch.first < targets.get(batch.lane, 0)):
                return False
        for each, target in targets.items():
            if each.min_position() < target:
                return False
        return all(each.min_seq() >= seq for each in lanes)

    def flush(self, key: Any, timeout: Optional[float]) -> bool:
        """Flush one lane (*key*), or every lane when *key* is ``ALL``."""
        engine = self.engine
        deadline = deadline_after(_validate.optional_seconds("timeout", timeout))
        threadless = None
        with engine._lock:
            if engine._state == NEW and engine._bridge.backlog is not None and not _process.exiting:
                threadless = engine._start()  # flush delivers what the spool holds, too
            elif (key is ALL and engine.spool is not None and engine._bridge.backlog is None
                  and engine._state == RUNNING):
                # Look at the file again: rows other processes released (or
                # left, dying) since the last claim are delivered too.
                engine._bridge.backlog = "room"
            lane = None if key is ALL else engine._lanes.get(key)
            forgotten = key is not ALL and lane is None  # nothing pending for that key
            lanes = list(engine._lanes.values()) if lane is None else [lane]
            targets = {each: each.taken + len(each.items) for each in lanes if not forgotten}
            seq = engine._seq
            settled = forgotten or self._settled_before(targets, seq, lane)
            settled = settled and engine._bridge.settled(key is ALL)
            if not settled:
                for each, target in targets.items():
                    each.flush_upto = max(each.flush_upto, target)
                if lane is None:
                    engine._flush_upto = max(engine._flush_upto, seq)
                    engine._scheduler.rush()
                else:
                    lane.flush_seq = max(lane.flush_seq, seq)
                    engine._scheduler.make_ready(lane)
            if engine._dispatching_here():
                return settled
        if threadless == "uwsgi":
            _threadless.warn()
        if engine._caller_delivers and not settled:
            engine._delivery.serve_here(deadline)
        with engine._lock:
            # Then the events of those batches: listeners have run when flush returns.
            events: List[int] = []

            def done() -> bool:
                if not events:
                    if not forgotten and not self._settled_before(targets, seq, lane):
                        return False
                    if not engine._bridge.settled(key is ALL):
                        return False
                    events.append(engine._outbox.posted)
                return engine._outbox.emitted >= events[0]

            return engine._wait_locked(done, deadline)

    def shutdown(self, timeout: Optional[float]) -> bool:
        """Flush, stop the workers and refuse further items (``Engine.shutdown``)."""
        engine = self.engine
        deadline = deadline_after(_validate.optional_seconds("timeout", timeout))  # checked before it closes
        self.close(by_exit=False, deadline=deadline)
        completed = self.join(deadline, reason="shutdown")
        with engine._lock:
            if not completed and not engine._dispatching_here():
                # The deadline passed: no retry outlives shutdown. (Called
                # from inside dispatch, it did not wait; retries go on.)
                self.abandon_retries()
            undelivered = engine._pending_count()
            engine._post("shutdown", lambda: ShutdownEvent(completed, undelivered))
        if engine.spool is not None:
            # Retries given up at the deadline go to the spool.
            engine._bridge.io(wait=True, deadline=deadline)
        self.emit_within(deadline)
        return completed

    def close(self, by_exit: bool, deadline: Optional[float] = None) -> None:
        """Stop taking items and drain; dispatch calls from now on learn
        *deadline* (:func:`current_deadline`), the one of the latest call.
        Idempotent."""
        engine = self.engine
        # The dispatcher stays in the registry: if the user's shutdown timed
        # out, the exit hook still waits for the draining workers.
        with engine._lock:
            engine._deliver_by = deadline  # the latest caller's: a shutdown(None) lifts an earlier one
            engine._state = lifecycle.closed(by_exit, engine._state)
            engine._room = engine._wake_at = -1
            # Every late append to a keyed lane now looks under the lock
            # (see _wake_lane); rush then finds what came before.
            for lane in engine._lanes.values():
                lane.room = lane.wake_at = -1
            engine._scheduler.rush()
            engine._notify_progress()  # blocked producers give up

    def join(self, deadline: Optional[float], reason: str) -> bool:
        """Wait for the workers to drain and stop; warn if the deadline passes."""
        engine = self.engine
        if engine._caller_delivers:
            engine._delivery.serve_here(deadline)  # no workers: this thread drains
        with engine._lock:
            if engine._dispatching_here():
                return False

            def stopped() -> bool:
                return engine._state in SHUT and not engine._inflight and not engine._delivery.inline

            done = engine._wait_locked(stopped, deadline)
            queued = sum(lane.size() for lane in engine._lanes.values())
            out = sum(len(b.items) for b in itertools.chain(engine._open, engine._delivery.inline))
        if done:
            for worker in list(engine._workers.threads):
                if worker is not threading.current_thread():
                    join_thread(worker, deadline)
                    if worker.is_alive():
                        # Still running a listener: not stopped yet.
                        log.warning(
                            "batchdispatch:%s: %s timed out waiting for %s", engine.name, reason, worker.name
                        )
                        return False
            return True
        log.warning(
            "batchdispatch:%s: %s timed out with %d items undelivered (%d queued, %d in dispatch or retry)",
            engine.name, reason, queued + out, queued, out,
        )
        return False

    def exit(self, deadline: float, interrupted: bool = False) -> None:
        """Called by the exit hook: deliver within the budget, count (or spill) the rest,
        and report what this dispatcher did not deliver in its life.

        *interrupted*: a KeyboardInterrupt or SystemExit cut the exit hook's
        wait short (it may have been this dispatcher's, half done): give up
        at once. Every step here is safe to run again.
        """
        self._exit(deadline, interrupted)
        self.report_losses()

    def report_losses(self) -> None:
        """Log one line if this dispatcher dropped, gave up, spilled or abandoned
        items in its life; nothing if it delivered everything. Lock not held.

        A WARNING: where the application configured no logging it reaches
        stderr all the same (see :mod:`._log`), so a script learns at exit
        what it lost.
        """
        engine = self.engine
        with engine._lock:
            dropped = sorted(engine._dropped.items())
            failed, dead, spilled = engine._failed, engine._bridge.dead_lettered, engine._bridge.spilled
            abandoned = sum(
                len(batch.items) for batch in itertools.chain(engine._inflight, engine._delivery.inline)
                if batch not in engine._bridge.exit_spilled
            )
        parts = []
        if dropped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in dropped)
            parts.append(f"{sum(count for _, count in dropped)} dropped ({reasons})")
        if failed:
            parts.append(f"{failed} failed" + (f" ({dead} kept as dead letters)" if dead else ""))
        if abandoned:
            parts.append(f"{abandoned} abandoned in dispatch")
        if spilled:
            parts.append(f"{spilled} spilled to the spool for a later start")
        if parts:
            log.warning(
                "batchdispatch:%s: at exit, not delivered in this process: %s; see stats()",
                engine.name, "; ".join(parts),
            )

    def _exit(self, deadline: float, interrupted: bool) -> None:
        engine = self.engine
        flush_until = deadline
        if engine.spool is not None:
            flush_until -= min(SPILL_RESERVE, SPILL_SHARE * max(0.0, deadline - monotonic()))
        if not interrupted and engine.flush_on_exit and self.join(flush_until, reason="exit flush"):
            if engine.spool is not None:
                engine._bridge.io(wait=True, deadline=deadline)
            return
        left: List[Any] = []
        with engine._lock:
            # Give up what is still queued, counted once, so that a worker
            # still running cannot also deliver it. A batch already inside
            # dispatch may yet finish; no retry starts after this. With a
            # spool, all of it goes there instead, for the next start.
            self.abandon_retries()
            for lane in list(engine._lanes.values()):
                # Handed over first, taken off the lane after: an interrupt
                # between the two makes the hook's next try hand them over
                # again (at least once), where the other order loses them.
                # What is taken is what was handed over: items appended
                # meanwhile go behind them, and keyed producers take the
                # lock from here on (room -1), as none come between levels.
                lane.room = -1
                items = lane.peek()
                if engine.spool is not None:
                    engine._bridge.spill(lane.key, items, "exit")
                else:
                    left.extend(items)
                    engine._drop(lane.key, items, "exit")
                lane.pop(len(items))
            engine._lanes_emptied()
            if engine.spool is not None:
                # Batches in dispatch may never finish (a hung endpoint), and
                # claimed ones never started: into the spool. One that does
                # finish is delivered twice, which at-least-once allows.
                while engine._bridge.replay:
                    batch = engine._bridge.replay[0]  # handed over, then removed (as above)
                    engine._bridge.to_spool(batch.key, batch.items, batch.rows, park=False, reason="exit")
                    engine._bridge.replay.popleft()
                for batch in itertools.chain(engine._inflight, engine._delivery.inline):
                    if batch not in engine._bridge.exit_spilled:
                        engine._bridge.to_spool(batch.key, batch.items, batch.rows, park=False, reason="exit")
                        engine._bridge.exit_spilled.add(batch)
        self.close(by_exit=False, deadline=deadline)
        if engine.spool is not None:
            # The process ends next: the writes must be made now, within the
            # budget (a spool locked by another process fails as "locked").
            engine._bridge.io(wait=True, deadline=deadline)
        self.emit_within(deadline)
        if left and (interrupted or not engine.flush_on_exit):  # else join said it
            log.warning(
                "batchdispatch:%s: %d items discarded at exit (%s)",
                engine.name, len(left), "interrupted" if interrupted else "flush_on_exit=False",
            )

    def abandon_retries(self) -> None:
        """Give up every batch waiting for a retry: a deadline passed. Lock held.

        With a spool, their items go to it instead, for a later start.
        """
        engine = self.engine
        engine._state = lifecycle.stopped(engine._state)
        for batch in [b for b in engine._open if b.not_before is not None]:
            if engine.spool is not None:
                engine._bridge.to_spool(batch.key, batch.items, batch.rows, park=False, reason="failed")
                if batch.lane is not None:
                    batch.lane.spilling = True  # the items behind it follow it there
            else:
                engine._failed += len(batch.items)
                engine._post("items_exhausted", functools.partial(
                    ItemsExhausted, batch.key, tuple(batch.items), batch.attempt, engine._last_error
                ))
            engine._open.discard(batch)
            engine._bridge.replay_out.discard(batch)
            lane = batch.lane
            if lane is not None and lane.batch is batch:
                lane.batch = None
                engine._after_batch(lane)
        engine._notify_progress()

    def emit_within(self, deadline: Optional[float]) -> None:
        """Emit the posted events, returning by *deadline* (shutdown, exit). Lock not held.

        Listeners run on another thread, and this one waits for them until
        the deadline, or ``EVENTS_ALLOWANCE`` seconds from now if that is
        later, so that a slow listener cannot hold shutdown or exit past
        it: a thread started for them or, where none can start (Python 3.12
        and later refuse new threads in an exit hook), a live worker, which
        emits before it stops. Where neither can run them (a process
        without threads) they run here, each only while the deadline has
        not passed: the allowance is then the one listener call running
        when it does.
        """
        engine = self.engine
        if deadline is None or engine._dispatching_here():
            engine._outbox.emit(deadline, wait=True)
            return
        with engine._lock:
            target = engine._outbox.posted
            if engine._outbox.emitted >= target and not engine._outbox.logs:
                return
        until = max(deadline, monotonic() + EVENTS_ALLOWANCE)
        if not engine._caller_delivers:
            helper = threading.Thread(
                target=engine._outbox.emit, kwargs={"wait": True},
                name=f"batchdispatch:{engine.name}-events", daemon=True,
            )
            try:
                helper.start()
                started = True
            except RuntimeError:
                started = False  # no new threads here: a worker may do it
            here = threading.current_thread()
            with engine._lock:
                if started or any(w.is_alive() and w is not here for w in engine._workers.threads):
                    if not started:
                        engine._workers.kick_all()
                    engine._wait_locked(lambda: engine._outbox.emitted >= target, until)
                    return
        engine._outbox.emit(deadline, wait=True)
