"""The bridge between the engine and its spool: what goes to the spool, when, and what comes back.

With ``spool=``, what cannot be delivered from memory goes to the spool
instead of being lost, and is claimed back later:

* durable: enqueue writes each item first (``Spool.append``, a record in
  this process's log) and queues it wrapped as ``Spooled(id, item)``; the
  id is acked once the item is delivered, so a crash loses nothing
  accepted.
* spills: items left at the exit deadline, batches that fail while
  closing (and what their lane holds behind them), retries given up at a
  shutdown deadline, items over the queue limit (``overflow="spill"``) and
  items given up after their retries (``spill_exhausted``, parked: held by
  this process until it ends) become rows. A durable item is put and its
  log record then acked; a claimed row is released, not written again.
* replay: a worker claims the oldest free rows before its first batch, and
  again (once the queue has room) after this process spilled or at a
  flush. They go out as batches of their own on their key's lane
  (:meth:`SpoolBridge.inject_replays`), ahead of the items queued there,
  with retries like any batch, and are acked once delivered.

Nothing touches the spool under the engine lock: operations are queued on
``todo`` and made by :meth:`SpoolBridge.io`, after the lock, by the thread
that queued them. A failure is logged and counted in ``spool_faults``, and
the dispatcher goes on in memory; a spill that could not be written is
counted as a drop (or a failure) after all.

The bridge owns the spool's state in the engine (the queue of operations,
the backlog to claim, the claimed batches, the spool counters) and reaches
the engine's own (its lock, lanes and counters) through ``engine``.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING, Any, Deque, Dict, Hashable, List, Optional, Set, Tuple

from ._breaker import Breaker
from ._deadlines import acquire, monotonic
from ._lanes import INF, NEVER, Batch, Lane, Spooled
from ._lifecycle import RUNNING
from ._spool_protocol import Spool
from ._stats import RateLimit
from .exceptions import SpoolError

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("batchdispatch")


def split_rows(items: List[Any]) -> Tuple[List[Any], List[int]]:
    """Unwrap spooled items: (the items, each one's row or 0)."""
    raw: List[Any] = []
    rows: List[int] = []
    for item in items:
        if type(item) is Spooled:
            raw.append(item.item)
            rows.append(item.row)
        else:
            raw.append(item)
            rows.append(0)
    return raw, rows


class Burial:
    """A bury operation queued for after the lock: the entries and what ended them."""

    __slots__ = ("attempts", "entries", "error")

    def __init__(self, entries: List[Tuple[int, Hashable, Any]], error: BaseException, attempts: int) -> None:
        self.entries = entries
        self.error = error
        self.attempts = attempts


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an item's __eq__ may raise
        return False


class SpoolBridge:
    """An engine's traffic with its spool (or, without one, the empty state of it)."""

    def __init__(self, engine: Engine[Any], spool: Optional[Spool], replay_chunk: int) -> None:
        self.engine = engine
        #: The spool given as ``spool=``, or None.
        self.spool = spool
        # Durable: lanes may hold Spooled wrappers, unwrapped as batches are taken.
        self.wrapped = spool is not None and spool.durable
        # Spooled items come back a chunk at a time: about a batch per worker.
        self.replay_chunk = replay_chunk
        self.reset()

    def reset(self) -> None:
        """The state of a new dispatcher (also in a forked child)."""
        # Operations queued under the engine lock, made after it by
        # whichever thread queued them.
        self.todo: List[Tuple[str, Hashable, List[Any], str, List[int]]] = []
        self.busy = 0  # operations queued or running: flush waits for them
        self.io_lock = threading.Lock()
        # Spooled items wait to be claimed: "start" (whatever an earlier
        # process left, claimed before the first batch), "room" (this process
        # spilled, or a flush asks to look again, since other processes free
        # rows too: claimed once the queue has room) or None.
        self.backlog: Optional[str] = "start" if self.spool is not None else None
        self.spills = 0  # spills committed: a claim that found the spool empty may have missed one
        self.replay: Deque[Batch] = collections.deque()  # claimed, waiting for their lane
        self.replay_out: Set[Batch] = set()  # claimed and on their lane, not settled
        # A worker is claiming (one at a time): its rows are out of the spool
        # and not yet in replay, so a flush must wait for it.
        self.claiming = False
        self.spilled = 0
        self.replayed = 0
        self.dead_lettered = 0
        self.faults: Dict[str, int] = {}
        self.fault_log = RateLimit(self.engine.LOG_INTERVAL, monotonic)
        self.breaker = Breaker(monotonic)  # durable writes skip a spool that fails slowly
        self.exit_spilled: Set[Batch] = set()  # in dispatch when exit spilled them: settled already
        # A spool shared by a fleet (poll_interval): look again this often for
        # pairs other owners freed (a host that died), while running.
        self.poll: Optional[float] = getattr(self.spool, "poll_interval", None)
        self.next_poll: Optional[float] = None

    @property
    def store(self) -> Spool:
        """The spool, where the engine only calls on the bridge when it has one."""
        assert self.spool is not None
        return self.spool

    def forget_rows(self, key: Hashable, items: List[Any]) -> List[Any]:
        """Items dropped: unwrap them, and remove the durable ones from the spool
        (counted as dropped, they are not replayed either). Lock held."""
        if not self.wrapped:
            return items
        items, rows = split_rows(items)
        self.later("ack", key, [row for row in rows if row], "")
        return items

    def write_ahead(self, key: Hashable, item: Any) -> Any:
        """Write *item* to the spool; return what to queue: it wrapped with
        its row, or the item alone if the write failed or was skipped (kept
        in memory; see :mod:`._breaker`)."""
        breaker = self.breaker
        if breaker.until and breaker.skips():
            self.skipped()
            return item
        started = monotonic()
        try:
            row = self.store.append(key, item)
        except Exception as exc:  # noqa: BLE001 - a spool fault must not fail enqueue
            with self.engine._lock:
                opened = breaker.failed(started, getattr(exc, "kind", None) or "io")
            note = "" if opened is None else (
                f"; it waited {breaker.waited:.1f} s, so enqueue skips the spool for {opened:g} s"
            )
            self.fault(exc, "writing an item", note=note)
            return item
        if breaker.until:
            with self.engine._lock:
                skipped = breaker.stored()
            if skipped is not None:
                log.warning(
                    "batchdispatch:%s: the spool answers again: enqueue writes to it again (%d items"
                    " enqueued while it was skipped are kept in memory only)", self.engine.name, skipped,
                )
        return Spooled(row, item)

    def skipped(self) -> None:
        """A durable write skipped the spool (the breaker is open): counted as a fault
        of the kind that opened it, and reported like one. Lock not held."""
        breaker = self.breaker
        more = self.count_fault(breaker.kind)
        if more is None:
            return
        log.error(
            "batchdispatch:%s: writing an item skipped the spool, going on in memory: a write failed"
            " (%s) after waiting %.1f s, and enqueue tries it again in %.1f s%s",
            self.engine.name, breaker.kind, breaker.waited, max(0.0, breaker.until - monotonic()), more,
        )

    def spill_now(self, key: Hashable, items: List[Any], reason: str, *, counted: bool) -> bool:
        """Write items turned away (wrapped or not) to the spool, now, on this
        thread; True if every one of them is stored. One that cannot be
        written is dropped for *reason*, so that ``enqueue`` never says True
        for an item it has lost; a durable one stays in this process's log,
        where the next start finds it. *counted*: the items were counted as
        enqueued already. Past the exit budget the write does not wait for
        the file's locks. Lock not held.
        """
        engine = self.engine
        raw, logged = split_rows(items)
        end = engine._exit_budget_end()
        timeout = None if end is None else max(0.0, end - monotonic())
        written = set(range(len(raw)))
        try:
            self.store.put([(key, item) for item in raw], timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - counted below; enqueue must not fail
            self.fault(exc, f"spilling {len(raw)} items")
            written = self._partly_written(exc, "put", raw)
        lost = [item for n, (item, row) in enumerate(zip(raw, logged)) if not row and n not in written]
        with engine._lock:
            self.later("ack", key, [row for n, row in enumerate(logged) if row and n in written], "")
            self.spilled += len(raw)  # account takes the lost ones back
            if counted:
                engine._uncounted += len(lost)  # enqueue says False for them: not accepted after all
            else:
                engine._overflowed += len(raw) - len(lost)
            reports = self.account([(key, lost, reason)] if lost else [],
                                             bool(written) and reason == "queue_full")
        if self.todo:
            self.io(wait=end is not None, deadline=end)
        engine._outbox.emit()
        for report in reports:
            log.log(*report)
        return not lost

    def unwrap(self, batch: Batch) -> None:
        """Put the items of a new batch in place of their wrappers, noting their rows. Lock held."""
        items = batch.items
        rows: Optional[List[int]] = None
        for index, item in enumerate(items):
            if type(item) is Spooled:
                if rows is None:
                    rows = [0] * len(items)
                rows[index] = item.row
                items[index] = item.item
        batch.rows = rows

    def bury(self, batch: Batch, error: BaseException) -> None:
        """Send a batch given up to the spool's dead letters: its rows move there,
        its other items are written there. Lock held."""
        rows = batch.rows or [0] * len(batch.items)
        entries = [(row, batch.key, item) for item, row in zip(batch.items, rows)]
        self.later("bury", batch.key, [Burial(entries, error, batch.attempt)], "failed")

    def ack_rows(self, batch: Batch) -> None:
        """Remove a settled batch's items from the spool, those that are in it. Lock held."""
        if batch.rows is not None:
            self.later("ack", batch.key, [row for row in batch.rows if row], "")

    def keep_rows(self, batch: Batch, failed: List[Any]) -> None:
        """A PartialFailure: ack the rows of the delivered items, keep those of *failed*. Lock held.

        Failed items are matched to the batch's by identity, then by equality.
        """
        rows = batch.rows
        assert rows is not None
        unused: Dict[int, List[int]] = {}
        for index, item in enumerate(batch.items):
            unused.setdefault(id(item), []).append(index)
        kept: List[int] = []
        taken: Set[int] = set()
        for item in failed:
            slots = unused.get(id(item))
            while slots and slots[0] in taken:
                slots.pop(0)
            if slots:
                index = slots.pop(0)
            else:
                index = next(
                    (i for i, other in enumerate(batch.items) if i not in taken and _equal(other, item)), -1
                )
            if index >= 0:
                taken.add(index)
            kept.append(index)
        delivered = [row for index, row in enumerate(rows) if row and index not in taken]
        self.later("ack", batch.key, delivered, "")
        batch.rows = [rows[index] if index >= 0 else 0 for index in kept]

    def spill(self, key: Hashable, items: List[Any], reason: str) -> None:
        """Send *items* (wrapped or not) to the spool as free rows. Lock held."""
        self.to_spool(key, *split_rows(items), park=False, reason=reason)

    def to_spool(
        self, key: Hashable, items: List[Any], rows: Optional[List[int]], *, park: bool, reason: str
    ) -> None:
        """Queue *items* for the spool: write those without a row, free (or,
        with *park*, keep) those with one. *reason* is what they count as
        if the write fails. Lock held."""
        if not items:
            return
        self.spilled += len(items)
        if rows is None:
            rows = [0] * len(items)
        # Written now: items without a row, and durable ones (their append is
        # in this process's log, acked once the row is written). Claimed
        # rows are only given back, or, parked, kept.
        written = [(item, row) for item, row in zip(items, rows) if row <= 0]
        claimed = [row for row in rows if row > 0]
        if written:
            self.later(
                "park" if park else "put", key, [item for item, _ in written], reason,
                [row for _, row in written] if any(row for _, row in written) else None,
            )
        if claimed and not park:
            self.later("release", key, claimed, reason)

    def later(
        self, op: str, key: Hashable, payload: List[Any], reason: str, logged: Optional[List[int]] = None
    ) -> None:
        """Queue a spool operation for after the lock. *logged*: for a put, each
        item's appended id (0 for none), acked once the put succeeded. Lock held."""
        if payload:
            self.todo.append((op, key, payload, reason, logged or []))
            self.busy += 1

    def io(self, wait: bool = False, deadline: Optional[float] = None) -> None:
        """Make the spool operations queued so far. Lock not held.

        One thread at a time. A caller that finds another at work leaves its
        operations to it (that thread looks at the queue again after letting
        go), so a thread never waits here for the lock while it may hold the
        engine lock further up its stack (a finalizer or a signal handler
        that enqueues). *wait*: shutdown and the exit hook, which must see
        their writes made before they return, until *deadline* at most:
        each operation then waits for the file's locks only as long as is
        left (a spool locked by another process fails as ``"locked"``).
        """
        # With wait, also for the operations another thread is making (it
        # took them off the queue, and counts them busy until they are made).
        while self.todo or (wait and self.busy):
            if not acquire(self.io_lock, deadline, block=wait):
                return
            try:
                reports = self._make_queued(deadline)
            finally:
                self.io_lock.release()
            # Logged once no lock is held: a handler may enqueue here again.
            for report in reports:
                log.log(*report)
            if deadline is not None and monotonic() >= deadline:
                return

    def _make_queued(self, deadline: Optional[float] = None) -> List[Tuple[Any, ...]]:
        """io's work, with its lock held; returns the log lines to write after it.

        Interrupt-safe: a KeyboardInterrupt or SystemExit raised in the
        middle (Ctrl-C at exit) puts the operations not yet made back on
        the queue, with the acks of the puts that were made, and accounts
        for what those puts lost, so that the exit hook can go on.
        """
        engine = self.engine
        spool = self.store
        reports: List[Tuple[Any, ...]] = []
        todo: List[Tuple[str, Hashable, List[Any], str, List[int]]] = []
        made: Set[int] = set()  # indices in todo of the operations made (or failed and accounted)

        def limit() -> Optional[float]:
            return None if deadline is None else max(0.0, deadline - monotonic())

        lost: List[Tuple[Hashable, List[Any], str]] = []
        freed = [False]  # free rows written or released for overflow: claim them back
        buried = [0]  # dead letters made
        put_acks: List[int] = []  # log records of durable items now in the table
        try:
            with engine._lock:
                todo, self.todo = self.todo, []
            for index, (op, key, payload, reason, logged) in enumerate(todo):
                if op == "ack":
                    continue
                if op == "bury":
                    buried[0] += self._bury(payload[0], limit(), reports)
                    made.add(index)
                    continue
                written = set(range(len(payload)))
                try:
                    if op == "release":
                        spool.release(payload, timeout=limit())
                    else:
                        spool.put([(key, item) for item in payload], claim=op == "park", timeout=limit())
                except Exception as exc:  # noqa: BLE001 - never fail the caller
                    written = self._partly_written(exc, op, payload)
                    reports += self.fault(exc, f"spilling {len(payload)} items", log_now=False)
                    if op != "release":
                        # Lost, but for those written after all, and durable
                        # items: their appends stay in the log.
                        rows = logged or [0] * len(payload)
                        gone = [item for n, (item, row) in enumerate(zip(payload, rows))
                                if not row and n not in written]
                        if gone:
                            lost.append((key, gone, reason))
                put_acks += [row for n, row in enumerate(logged) if row and n in written]
                freed[0] = freed[0] or (bool(written) and reason == "queue_full")
                made.add(index)
            acks = put_acks + [row for op, _, payload, _, _ in todo if op == "ack" for row in payload]
            if acks:
                try:
                    spool.ack(acks, timeout=limit())
                except Exception as exc:  # noqa: BLE001 - acked later never: delivered again
                    reports += self.fault(exc, f"removing {len(acks)} delivered items", log_now=False)
            put_acks = []
            made.update(index for index, entry in enumerate(todo) if entry[0] == "ack")
        except BaseException:
            # Interrupted: what was not made goes back, ahead of what came
            # since, and the acks of the puts that were made with it.
            with engine._lock:
                back = [entry for index, entry in enumerate(todo) if index not in made]
                if put_acks:
                    back.append(("ack", None, put_acks, "", []))
                    self.busy += 1
                self.todo[:0] = back
                self.busy -= len(made)
                self.dead_lettered += buried[0]
                reports += self.account(lost, freed[0])
            for report in reports:
                engine._log_later(*report)
            raise
        with engine._lock:
            self.dead_lettered += buried[0]
            reports += self.account(lost, freed[0])
            self.busy -= len(todo)
            engine._notify_progress()
        return reports

    def _bury(self, burial: Burial, timeout: Optional[float], reports: List[Tuple[Any, ...]]) -> int:
        """Make a queued burial; return how many dead letters it made. A
        failure is a fault: the items count as failed already, and rows the
        spool holds for this process are freed when it ends (replayed, and
        given up again, by a later start). Lock not held."""
        entries = burial.entries
        try:
            return self.store.bury(entries, error=burial.error, attempts=burial.attempts, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - never fail the caller
            what = f"keeping {len(entries)} items given up as dead letters"
            reports += self.fault(exc, what, log_now=False)
            refused = getattr(exc, "refused", None)
            if getattr(exc, "kind", None) == "encode" and isinstance(refused, list):
                return len(entries) - len(refused)  # the others were made
            return 0

    def account(
        self, lost: List[Tuple[Hashable, List[Any], str]], freed: bool
    ) -> List[Tuple[Any, ...]]:
        """Count what spool writes lost (drops or failures), and have freed
        rows claimed back. Returns the log lines to write. Lock held."""
        engine = self.engine
        reports: List[Tuple[Any, ...]] = []
        for key, items, reason in lost:
            self.spilled -= len(items)
            if reason == "failed":
                engine._failed += len(items)
            else:
                engine._drop(key, items, reason)
                report = engine._drop_report()
                if report:
                    reports.append((logging.WARNING, *report))
        if freed:
            self.spills += 1
            if self.backlog is None and engine._state == RUNNING:
                self.backlog = "room"
                engine._workers.kick()
        return reports

    @staticmethod
    def _partly_written(exc: BaseException, op: str, payload: List[Any]) -> Set[int]:
        """Indices of *payload* that a failed put wrote after all: a put that
        refused only items it could not encode wrote the others
        (``SpoolError.refused``)."""
        refused = getattr(exc, "refused", None)
        if op == "release" or not isinstance(refused, list):
            return set()
        return set(range(len(payload))) - set(refused)

    def fault(
        self, exc: BaseException, what: str, log_now: bool = True, note: str = "",
    ) -> List[Tuple[Any, ...]]:
        """Count a failed spool operation and log it, *note* appended (or, without
        *log_now*, return the log line); the dispatcher goes on in memory. Lock not held."""
        engine = self.engine
        more = self.count_fault(getattr(exc, "kind", None) or "io")
        if more is None:
            return []
        cause = str(exc) if isinstance(exc, SpoolError) else f"spool {self.spool!r}: {exc!r}"
        line: Tuple[Any, ...] = (
            logging.ERROR, "batchdispatch:%s: %s failed, going on in memory: %s%s%s",
            engine.name, what, cause, note, more,
        )
        if not log_now:
            return [line]
        log.log(*line, exc_info=None if isinstance(exc, SpoolError) else exc)
        return []

    def count_fault(self, kind: str) -> Optional[str]:
        """Count a fault of *kind*. Returns None to report nothing (one report per
        interval), else what to append to the report: how many were held back."""
        with self.engine._lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1
            held = self.fault_log.ready()
        if held is None:
            return None
        return f" ({held} more spool faults since the last report)" if held else ""

    def poll_due(self, now: float) -> float:
        """With a ``poll_interval``, ask for a claim once per interval; return when the
        next one is due (INF without). Lock held."""
        if self.poll is None or self.engine._state != RUNNING:
            return INF
        if self.next_poll is None:
            self.next_poll = now + self.poll
        elif now >= self.next_poll:
            self.next_poll = now + self.poll
            if self.backlog is None:
                self.backlog = "room"
        return self.next_poll

    def take_claim(self) -> bool:
        """Take the claim if spooled items should be claimed before the next batch:
        True makes it this worker's, to do with :meth:`claim_backlog` (one
        worker claims at a time). Lock held."""
        engine = self.engine
        if self.backlog is None or engine._state != RUNNING or self.claiming:
            return False
        if self.replay or self.replay_out:
            return False
        # Without taking back the lanes' spare room (that would send their
        # producers to the lock): the grants bound the queue from above.
        half = max(1, engine._queue_limit // 2)
        self.claiming = self.backlog == "start" or engine._queued_below(half, reclaim=False)
        return self.claiming

    def claim_backlog(self) -> None:
        """Claim the oldest spooled items and queue them as batches for their lanes. Lock not held."""
        engine = self.engine
        with engine._lock:
            spills, limit = self.spills, self.replay_chunk
        try:
            rows = self.store.claim(limit)
        except Exception as exc:  # noqa: BLE001 - the dispatcher goes on without the backlog
            self.fault(exc, "claiming spooled items")
            rows = []
        except BaseException:
            with engine._lock:
                self.claiming = False
                engine._notify_progress()
            raise
        with engine._lock:
            self.claiming = False
            if len(rows) < limit and self.spills == spills:
                self.backlog = None  # drained (or failing): until this process spills again
            if not rows:
                engine._notify_progress()
                return
            if engine._state != RUNNING:  # closed meanwhile: leave them to the next claim
                self.later("release", None, [row for row, _, _ in rows], "")
            else:
                self.replayed += len(rows)
                groups: Dict[Hashable, Tuple[List[Any], List[int]]] = {}
                for row, key, item in rows:
                    items, ids = groups.setdefault(engine._replay_key(key), ([], []))
                    items.append(item)
                    ids.append(row)
                size = min(engine._batch_limit, limit)
                for key, (items, ids) in groups.items():
                    for start in range(0, len(items), size):
                        batch = Batch(None, items[start:start + size], NEVER, key)
                        batch.rows = ids[start:start + size]
                        self.replay.append(batch)
                engine._notify_progress()
        if self.todo:
            self.io()

    def inject_replays(self, now: float) -> None:
        """Put claimed batches on their lanes, ahead of the items queued there,
        as retries whose backoff is over; a lane with a batch out keeps its
        replay waiting. Lock held."""
        engine = self.engine
        for _ in range(len(self.replay)):
            batch = self.replay.popleft()
            lane = engine._lane_for(batch.key)
            if lane.batch is not None:
                self.replay.append(batch)
                continue
            batch.lane = lane
            batch.not_before = now
            lane.batch = batch
            engine._open.add(batch)
            self.replay_out.add(batch)
            engine._scheduler.mark_ready(lane)

    def spill_lane(self, lane: Lane) -> None:
        """Send what a spilling lane holds to the spool, in order, instead of out. Lock held."""
        engine = self.engine
        items, _, _ = engine._pop_lane(lane, lane.size())
        lane.first_at = lane.due_at = None
        self.spill(lane.key, items, "failed")
        engine._notify_progress()
        engine._forget_if_idle(lane)

    def settled(self, everything: bool) -> bool:
        """Whether a flush has nothing to wait for in the spool: no write
        pending, and (for a flush of *everything*) no backlog. Lock held."""
        if self.spool is None:
            return True
        if self.busy:
            return False
        if not everything:
            return True
        claimable = self.backlog is not None and self.engine._state == RUNNING
        return not (claimable or self.claiming or self.replay or self.replay_out)
