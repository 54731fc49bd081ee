"""A hypothesis state machine over both dispatchers (the property test of issue 6).

Each run builds a dispatcher with drawn options (delay, batch size, queue
bound and overflow policy, retry attempts, workers) and three long-lived
producer threads. Its steps hand chunks of items to a producer (waiting for
the chunk, or letting it run on while the next steps happen), flush (all,
or one key), plan failures of the next dispatch calls (the whole batch or
every other item through ``PartialFailure``, retryable or not) and shut
down; enqueueing goes on after shutdown, and is refused.

The sink checks, call by call, that no item comes after a later item of
its producer (and key), that a batch with new items of a producer carries
every earlier item of it still unsettled (retries stay ahead), and that
nothing settled comes again. After each flush and shutdown, every item
accepted before the call is settled. At the end, every accepted item was
delivered exactly once, given up after the attempts the policy allows, or
evicted by ``"drop_oldest"``, and every refused one was counted with its
reason; ``stats()`` agrees item for item.

The spooled machines run the same steps on dispatchers with a durable
spool. There, a batch that fails while the dispatcher shuts down goes to
the spool instead of through its retries, and at the end the file holds
exactly those items: every other one was acked.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
from typing import Any, Callable, Counter, Dict, List, Optional, Set, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, PartialFailure, QueueFullError, RetryPolicy
from batchdispatch.spool import SqliteSpool

PRODUCERS = 3
KEYS = ("a", "b", "c")
#: Injected failures per run at most, so that every run stays short.
MAX_FAULTS = 8
#: The bound of the bounded runs: smaller than two chunks.
QUEUE = 20
#: Chunks handed to producers before a run may shut its dispatcher down.
SHUTDOWN_AFTER = 15
#: Seconds any single wait of the machine may take before it counts as a hang.
WAIT = 20.0

Item = Tuple[int, int, Optional[str]]  # (producer, sequence number, key or None)


class Final(Exception):
    """An error the retry policy must not retry."""

    retryable = False


class Sink:
    """The dispatch callable: checks order and settlement as batches arrive."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.lock = threading.Lock()
        self.plan: collections.deque[str] = collections.deque()
        self.faults = 0
        self.presented: Counter[Item] = collections.Counter()
        self.delivered: Counter[Item] = collections.Counter()
        self.exhausted: Set[Item] = set()
        self.unsettled: Dict[Tuple[int, Optional[str]], Set[Item]] = collections.defaultdict(set)
        self.newest: Dict[Tuple[int, Optional[str]], int] = {}
        self.errors: List[str] = []

    def plan_faults(self, fault: str, times: int) -> None:
        with self.lock:
            self.plan.extend([fault] * times)
            self.faults += times

    def settled(self, item: Item) -> bool:
        with self.lock:
            return item in self.delivered or item in self.exhausted

    def send(self, batch: List[Item]) -> None:
        self.deliver(None, batch)

    def deliver(self, key: Optional[str], batch: List[Item]) -> None:
        with self.lock:
            fault = self._check(key, batch)
        if fault is None:
            return
        cause = Final("injected, final") if fault.endswith("final") else ConnectionError("injected")
        if fault.startswith("partial"):
            raise PartialFailure(batch[::2], cause)
        raise cause

    def _check(self, key: Optional[str], batch: List[Item]) -> Optional[str]:
        """Check one call and record its outcome; return the fault to raise. Lock held."""
        errors = self.errors
        if not batch:
            errors.append("an empty batch")
        last: Dict[Tuple[int, Optional[str]], int] = {}
        fresh = set()
        for item in batch:
            producer, seq, item_key = item
            stream = (producer, item_key)
            if item_key != key:
                errors.append(f"{item} delivered under key {key!r}")
            if item in self.delivered or item in self.exhausted:
                errors.append(f"{item} presented again after it was settled")
            if last.get(stream, -1) >= seq:
                errors.append(f"{item} out of order within its batch")
            last[stream] = seq
            if not self.presented[item]:
                if seq <= self.newest.get(stream, -1):
                    errors.append(f"{item} presented after a later item of its producer")
                self.newest[stream] = seq
                fresh.add(stream)
            self.presented[item] += 1
        for stream in fresh:
            behind = self.unsettled[stream].difference(batch)
            if behind:
                errors.append(f"new items of {stream} overtook unsettled {sorted(behind)}")
        fault = self.plan.popleft() if self.plan else None
        failed = set() if fault is None else set(batch[::2] if fault.startswith("partial") else batch)
        for item in batch:
            stream = (item[0], item[2])
            if item not in failed:
                self.delivered[item] += 1
                self.unsettled[stream].discard(item)
            elif fault.endswith("final") or self.presented[item] >= self.max_attempts:  # type: ignore[union-attr]
                self.exhausted.add(item)
                self.unsettled[stream].discard(item)
            else:
                self.unsettled[stream].add(item)
        return fault


class Producer:
    """A long-lived thread that runs the chunks it is handed, one after another."""

    def __init__(self, index: int) -> None:
        self.tasks: queue.Queue[Optional[Tuple[Callable[[], None], threading.Event]]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"producer-{index}")
        self.thread.start()

    def _run(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            work, done = task
            try:
                work()
            finally:
                done.set()

    def submit(self, work: Callable[[], None]) -> threading.Event:
        done = threading.Event()
        self.tasks.put((work, done))
        return done

    def stop(self) -> None:
        self.tasks.put(None)
        self.thread.join(WAIT)


class DispatchMachine(RuleBasedStateMachine):
    keyed = False
    spooled = False  # with a durable spool

    def __init__(self) -> None:
        super().__init__()
        self.d: Any = None
        self.producers: List[Producer] = []
        self.steps = 0
        self.closed = False
        self.shut_down = False  # shutdown() has returned
        self.next_seq = [0] * PRODUCERS
        # Per producer: (item, accepted, enqueued after shutdown returned).
        self.records: List[List[Tuple[Item, bool, bool]]] = [[] for _ in range(PRODUCERS)]
        self.events_lock = threading.Lock()
        self.dropped: List[Tuple[Item, str]] = []
        self.exhausted_events: List[Item] = []
        self.spool: Optional[SqliteSpool] = None
        self.spool_dir = ""

    @initialize(
        delay=st.sampled_from([0.001, 0.005, 0.02]),
        max_batch_size=st.sampled_from([None, 1, 3, 10]),
        bound=st.sampled_from([None, None, "drop_newest", "drop_oldest", "block", "raise"]),
        max_attempts=st.integers(1, 4),
        workers=st.integers(1, 3),
    )
    def start(
        self,
        delay: float,
        max_batch_size: Optional[int],
        bound: Optional[str],
        max_attempts: int,
        workers: int,
    ) -> None:
        self.sink = Sink(max_attempts)
        options: Dict[str, Any] = {
            "delay": delay,
            "max_batch_size": max_batch_size,
            "max_queue_size": None if bound is None else QUEUE,
            "overflow": bound or "drop_newest",
            "block_timeout": WAIT,
            "retry": RetryPolicy(max_attempts=max_attempts, backoff=0.001, max_backoff=0.002)
            if max_attempts > 1 else None,
            "on_error": lambda exc, batch: None,
        }
        if self.spooled:
            self.spool_dir = tempfile.mkdtemp(prefix="batchdispatch-stateful-")
            path = os.path.join(self.spool_dir, "events.db")
            self.spool = options["spool"] = SqliteSpool(path, durable=True)
        if self.keyed:
            self.d = KeyedDispatcher(self.sink.deliver, max_concurrent_batches=workers, **options)
        else:
            self.d = BackgroundDispatcher(self.sink.send, **options)
        self.d.on("items_dropped", self._on_dropped)
        self.d.on("items_exhausted", self._on_exhausted)
        self.producers = [Producer(i) for i in range(PRODUCERS)]

    def _on_dropped(self, event: Any) -> None:
        with self.events_lock:
            self.dropped.extend((item, event.reason) for item in event.items)

    def _on_exhausted(self, event: Any) -> None:
        with self.events_lock:
            self.exhausted_events.extend(event.items)

    # -- steps -------------------------------------------------------------------

    def _chunk(self, producer: int, count: int, key: str) -> None:
        """Runs on the producer's thread."""
        records = self.records[producer]
        for _ in range(count):
            seq = self.next_seq[producer]
            self.next_seq[producer] += 1
            item: Item = (producer, seq, key if self.keyed else None)
            after = self.shut_down
            try:
                accepted = self.d.enqueue(key, item) if self.keyed else self.d.enqueue(item)
            except QueueFullError:
                accepted = False
            records.append((item, bool(accepted), after))

    @rule(
        producer=st.integers(0, PRODUCERS - 1),
        count=st.integers(1, 30),
        key=st.sampled_from(KEYS),
        wait=st.booleans(),
    )
    def enqueue(self, producer: int, count: int, key: str, wait: bool) -> None:
        self.steps += 1
        done = self.producers[producer].submit(lambda: self._chunk(producer, count, key))
        if wait:
            assert done.wait(WAIT), "a producer hung in enqueue"

    @precondition(lambda self: self.sink.faults < MAX_FAULTS)
    @rule(
        fault=st.sampled_from(["whole", "whole-final", "partial", "partial-final"]),
        times=st.integers(1, 3),
    )
    def fail_next_calls(self, fault: str, times: int) -> None:
        self.sink.plan_faults(fault, times)

    @rule(key=st.sampled_from((None, *KEYS)))
    def flush(self, key: Optional[str]) -> None:
        before = [len(records) for records in self.records]
        if key is None or not self.keyed:
            flushed = self.d.flush(timeout=WAIT)
        else:
            flushed = self.d.flush(key=key, timeout=WAIT)
        if self.closed:
            return  # nothing left to flush: its result says nothing more
        assert flushed, "flush timed out"
        self._assert_settled(before, key if self.keyed else None)

    # Late in a run, so that most steps feed an open dispatcher; teardown
    # shuts down the runs that never got here.
    @precondition(lambda self: not self.closed and self.steps >= SHUTDOWN_AFTER)
    @rule()
    def shutdown(self) -> None:
        self.closed = True
        before = [len(records) for records in self.records]
        assert self.d.shutdown(timeout=WAIT), "shutdown timed out"
        self.shut_down = True
        self._assert_settled(before, None)

    def _assert_settled(self, counts: List[int], key: Optional[str]) -> None:
        """Every item accepted among the first *counts* records (of *key*) has left."""
        with self.events_lock:
            evicted = {item for item, _ in self.dropped}
        spilled = self._in_the_spool() if self.closed else set()
        for producer, count in enumerate(counts):
            for item, accepted, _ in self.records[producer][:count]:
                if accepted and (key is None or item[2] == key):
                    settled = self.sink.settled(item) or item in evicted or item in spilled
                    assert settled, f"{item} not settled"

    def _in_the_spool(self) -> Set[Item]:
        """The items written to the spool's table (spilled), as tuples; checks there is no duplicate."""
        if self.spool is None:
            return set()
        conn = sqlite3.connect(self.spool.path)
        try:
            rows = conn.execute("SELECT item FROM spool").fetchall()
        except sqlite3.OperationalError:  # never created: nothing spilled
            return set()
        finally:
            conn.close()
        items = [tuple(json.loads(item)) for (item,) in rows]
        assert len(items) == len(set(items)), "an item in the spool twice"
        return set(items)  # type: ignore[arg-type]

    @invariant()
    def sink_saw_nothing_wrong(self) -> None:
        if self.d is not None:
            with self.sink.lock:
                assert not self.sink.errors, self.sink.errors[:5]

    # -- the end -----------------------------------------------------------------

    def teardown(self) -> None:
        try:
            for producer in self.producers:
                producer.stop()
            assert not any(p.thread.is_alive() for p in self.producers), "a producer hung"
            if self.d is None:
                return
            if not self.closed:
                self.closed = True
                assert self.d.shutdown(timeout=WAIT), "shutdown timed out"
            self._check_the_books()
        finally:
            if self.d is not None:
                self.d.shutdown(timeout=WAIT)
            if self.spool is not None:
                self.spool.close()
                shutil.rmtree(self.spool_dir, ignore_errors=True)

    def _check_the_books(self) -> None:
        sink = self.sink
        assert not sink.errors, sink.errors[:5]
        records = [record for each in self.records for record in each]
        accepted = {item for item, ok, _ in records if ok}
        refused = {item for item, ok, _ in records if not ok}
        closed_refusals = {item for item, ok, after in records if not ok and after}
        dropped = collections.Counter(item for item, _ in self.dropped)
        assert all(count == 1 for count in dropped.values()), "an item dropped twice"
        reasons = dict(self.dropped)
        evicted = accepted & set(reasons)
        # Refused items were never delivered, and each drop names its reason.
        assert refused == set(reasons) - evicted
        assert not refused & set(sink.presented)
        assert all(reasons[item] == "closed" for item in closed_refusals)
        assert all(reasons[item] == "queue_full" for item in evicted)
        # With a spool, a batch that failed while closing went to it: closing
        # the spool copies in any append not acked, so the file then holds
        # exactly the spilled items.
        spilled: Set[Item] = set()
        if self.spool is not None:
            self.spool.close()
            spilled = self._in_the_spool()
            assert not spilled & set(sink.delivered), "an item spilled and delivered"
        exhausted = sink.exhausted - spilled
        # Accepted: delivered once, given up as the policy says, evicted, or spilled.
        assert all(count == 1 for count in sink.delivered.values()), "an item delivered twice"
        assert not evicted & set(sink.presented)
        assert set(sink.delivered) | exhausted | evicted | spilled == accepted
        assert not set(sink.delivered) & sink.exhausted
        assert sorted(self.exhausted_events) == sorted(exhausted)
        stats = self.d.stats()
        assert stats.enqueued == len(accepted)
        assert stats.dispatched == len(sink.delivered)
        assert stats.failed == len(exhausted)
        assert stats.spilled == len(spilled)
        assert not stats.spool_faults
        assert dict(stats.dropped_by_reason) == dict(collections.Counter(reasons.values()))
        assert stats.pending == 0


class KeyedDispatchMachine(DispatchMachine):
    keyed = True


class SpooledDispatchMachine(DispatchMachine):
    spooled = True


class SpooledKeyedDispatchMachine(DispatchMachine):
    keyed = True
    spooled = True


_settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestBackgroundDispatcherStateMachine = DispatchMachine.TestCase
TestBackgroundDispatcherStateMachine.settings = _settings
TestKeyedDispatcherStateMachine = KeyedDispatchMachine.TestCase
TestKeyedDispatcherStateMachine.settings = _settings
# Fewer runs with a spool: each makes a file, and a durable enqueue costs microseconds.
_spooled_settings = settings(_settings, max_examples=60)
TestSpooledDispatcherStateMachine = SpooledDispatchMachine.TestCase
TestSpooledDispatcherStateMachine.settings = _spooled_settings
TestSpooledKeyedDispatcherStateMachine = SpooledKeyedDispatchMachine.TestCase
TestSpooledKeyedDispatcherStateMachine.settings = _spooled_settings
