"""Dispatchers with a spool: durable mode, spills, replay, faults, and processes killed for real."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from typing import Any, Callable, List

import pytest

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, PartialFailure, RetryPolicy
from batchdispatch._deadlines import monotonic
from batchdispatch.spool import SqliteSpool

from .conftest import ROOT, KeyedRecorder, Recorder, run_python
from .services import Spools
from .test_spool import tiny_fs  # noqa: F401 - a fixture

NO_JITTER = RetryPolicy(max_attempts=3, backoff=0.01, jitter=False)


def owners(path: str) -> List[Any]:
    conn = sqlite3.connect(path)
    try:
        return [owner for (owner,) in conn.execute("SELECT owner FROM spool ORDER BY id")]
    finally:
        conn.close()


# -- options -----------------------------------------------------------------------


def test_spool_options_are_checked_and_named(spools: Callable[..., SqliteSpool]) -> None:
    with pytest.raises(TypeError, match=r"spool must be a Spool \(such as SqliteSpool\) or None, got str"):
        BackgroundDispatcher(print, spool="events.db")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow='spill' needs a spool"):
        BackgroundDispatcher(print, overflow="spill")
    with pytest.raises(ValueError, match="spill_exhausted=True needs a spool"):
        KeyedDispatcher(print, spill_exhausted=True)
    with pytest.raises(TypeError, match="spill_exhausted must be a bool"):
        BackgroundDispatcher(print, spool=spools(), spill_exhausted="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"overflow must be one of .*'spill'"):
        BackgroundDispatcher(print, overflow="disk")


# -- durable mode ------------------------------------------------------------------------


def test_durable_items_are_on_disk_when_enqueue_returns_and_gone_once_delivered(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spool = spools(durable=True)
    gate = threading.Event()
    recorder = Recorder()

    def send(batch: List[Any]) -> None:
        gate.wait(10)
        recorder(batch)

    dispatcher = make(send, delay=0.01, max_batch_size=10, spool=spool)
    for n in range(25):
        assert dispatcher.enqueue({"n": n})
        assert spool.count() == n + 1  # written before enqueue returned
    gate.set()
    assert dispatcher.flush(timeout=10)
    assert recorder.items == [{"n": n} for n in range(25)]
    assert spool.count() == 0  # acked as delivered, before flush returned
    stats = dispatcher.stats()
    assert (stats.dispatched, stats.spilled, stats.replayed, dict(stats.spool_faults)) == (25, 0, 0, {})


def test_durable_keyed_acks_each_key_and_priority(
    make_keyed: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spool = spools(durable=True)
    gate = threading.Event()
    recorder = KeyedRecorder()

    def deliver(key: Any, batch: List[Any]) -> None:
        gate.wait(10)
        recorder(key, batch)

    hooks = make_keyed(deliver, delay=0.01, max_batch_size=5, spool=spool)
    for n in range(30):
        assert hooks.enqueue(f"endpoint-{n % 3}", n, priority=n % 2)
    with pytest.raises(TypeError, match="priority must be an int"):
        hooks.enqueue("endpoint-0", "bad", priority="high")
    assert spool.count() == 30  # the refused item was never written
    gate.set()
    assert hooks.flush(timeout=10)
    delivered = [item for n in range(3) for item in recorder.items(f"endpoint-{n}")]
    assert sorted(delivered) == list(range(30))
    assert spool.count() == 0


def test_a_partial_failure_acks_only_what_was_delivered(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spool = spools(durable=True)
    calls: List[List[Any]] = []
    left: List[int] = []

    def send(batch: List[Any]) -> None:
        calls.append(list(batch))
        if len(calls) == 1:
            left.append(spool.count())
            raise PartialFailure([batch[1], batch[3]])

    # delay 60: the five go out together at the flush, however slowly a
    # spool on a loaded server takes each append.
    dispatcher = make(send, delay=60, max_batch_size=5, retry=NO_JITTER, spool=spool)
    for n in range(5):
        dispatcher.enqueue({"n": n})
    assert dispatcher.flush(timeout=10)
    assert calls == [[{"n": n} for n in range(5)], [{"n": 1}, {"n": 3}]]
    assert left == [5]
    assert spool.count() == 0


def test_a_durable_item_refused_by_overflow_raise_leaves_nothing_behind(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    from batchdispatch import QueueFullError

    spool = spools(durable=True)
    gate = threading.Event()
    dispatcher = make(
        lambda batch: gate.wait(10), delay=0.01, max_queue_size=2, overflow="raise", spool=spool,
    )
    accepted = 0
    refused = None
    for n in range(100):
        try:
            dispatcher.enqueue(n)
        except QueueFullError as exc:
            refused = exc
            break
        accepted += 1
    assert refused is not None
    assert spool.count() == accepted  # the refused item's record is acked at once
    gate.set()
    assert dispatcher.flush(timeout=10)
    assert spool.count() == 0


# -- spills and replay ----------------------------------------------------------------------


def test_what_fails_at_shutdown_is_spilled_and_replayed_first_by_the_next_dispatcher(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spool = spools()

    def down(batch: List[Any]) -> None:
        raise ConnectionError("endpoint down")

    first = make(down, delay=0.01, spool=spool, on_error=lambda exc, batch: None)
    for n in range(10):
        first.enqueue(n)
    assert first.shutdown(timeout=10)
    stats = first.stats()
    assert (stats.spilled, stats.failed, stats.dropped) == (10, 0, 0)
    assert spool.count() == 10

    recorder = Recorder()
    second = make(recorder, delay=0.01, spool=spool)
    second.enqueue("new")
    assert second.flush(timeout=10)
    assert recorder.items == [*range(10), "new"]  # oldest first, before new items
    assert spool.count() == 0
    stats = second.stats()
    assert (stats.replayed, stats.enqueued, stats.dispatched) == (10, 1, 11)


def test_flush_replays_what_an_earlier_process_left_without_any_enqueue(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spools().put([(None, n) for n in range(7)])
    recorder = Recorder()
    dispatcher = make(recorder, delay=0.01, max_batch_size=3, spool=spools())
    assert dispatcher.flush(timeout=10)
    assert recorder.items == list(range(7))
    assert max(len(batch) for batch in recorder.batches) <= 3


def test_flush_delivers_rows_another_process_freed_since_the_start(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    recorder = Recorder()
    dispatcher = make(recorder, delay=0.01, spool=spools())
    dispatcher.enqueue("first")
    assert dispatcher.flush(timeout=10)  # the backlog at the start: none
    spools().put([(None, "released"), (None, "by another")])  # as a process that let go of its claim
    assert dispatcher.flush(timeout=10)
    assert recorder.items == ["first", "released", "by another"]
    assert dispatcher.stats().replayed == 2


def test_overflow_spill_takes_everything_and_delivers_it_once_there_is_room(
    make_keyed: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spool = spools()
    gate = threading.Event()
    recorder = KeyedRecorder()

    def deliver(key: Any, batch: List[Any]) -> None:
        gate.wait(10)
        recorder(key, batch)

    hooks = make_keyed(
        deliver, delay=0.01, max_batch_size=5, max_queue_size=10, overflow="spill", spool=spool,
    )
    for n in range(100):
        assert hooks.enqueue(n % 3, n)
    stats = hooks.stats()
    assert stats.spilled > 0
    assert stats.dropped == 0
    assert spool.count() == stats.spilled
    gate.set()
    assert hooks.flush(timeout=20)
    delivered = [item for key in range(3) for item in recorder.items(key)]
    assert sorted(delivered) == list(range(100))
    assert all(item % 3 == key for key in range(3) for item in recorder.items(key))
    assert spool.count() == 0
    stats = hooks.stats()
    assert stats.enqueued + stats.replayed == stats.dispatched + stats.spilled == 100 + stats.spilled


class HeldClaim:
    """A spool (of any kind) whose first claim that finds rows holds them, in the worker that
    claimed, until *go* is set; the claims made meanwhile are counted. With ``poll_interval``
    (the Spool contract's optional attribute), a running dispatcher claims again this often."""

    poll_interval = 0.05

    def __init__(self, spool: Any) -> None:
        self.spool = spool
        self.holding, self.go = threading.Event(), threading.Event()
        self.meanwhile: List[int] = []  # how many rows each claim made while one is held found

    def claim(self, limit: int, *, timeout: Any = None) -> List[Any]:
        during = self.holding.is_set() and not self.go.is_set()
        rows = self.spool.claim(limit, timeout=timeout)
        if during:
            self.meanwhile.append(len(rows))
        elif rows and not self.holding.is_set():
            self.holding.set()
            assert self.go.wait(30)
        return rows

    # The rest of the Spool contract, as it is: defined here, since Python 3.12's
    # isinstance() against a Protocol does not see what __getattr__ gives.
    @property
    def durable(self) -> bool:
        return bool(self.spool.durable)

    def append(self, *args: Any, **kwargs: Any) -> Any:
        return self.spool.append(*args, **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        return self.spool.put(*args, **kwargs)

    def ack(self, *args: Any, **kwargs: Any) -> Any:
        return self.spool.ack(*args, **kwargs)

    def bury(self, *args: Any, **kwargs: Any) -> Any:
        return self.spool.bury(*args, **kwargs)

    def release(self, *args: Any, **kwargs: Any) -> Any:
        return self.spool.release(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else (count, close)
        return getattr(self.spool, name)


def test_one_worker_claims_at_a_time_and_a_flush_waits_for_its_claim(
    make_keyed: Any, spools: Callable[..., SqliteSpool]
) -> None:
    """Two workers claiming at once: the one that found the spool empty marked the
    backlog drained while the other still held rows outside the engine, and a
    flush returned before they were delivered (seen on Redis under load).

    Here four workers run; one claim holds its rows while an item enqueued meanwhile
    is delivered by another worker, which looks at the backlog on its way: it must not
    claim too, and a flush must wait for the held rows."""
    held = HeldClaim(spools())
    recorder = KeyedRecorder()
    together = threading.Barrier(4, timeout=30)

    def deliver(key: Any, batch: List[Any]) -> None:
        if key in ("a", "b", "c", "d"):
            together.wait()  # four batches out at once: four worker threads
        recorder(key, batch)

    hooks = make_keyed(deliver, delay=0.01, spool=held, max_concurrent_batches=4)
    for key in ("a", "b", "c", "d"):
        assert hooks.enqueue(key, key)
    assert hooks.flush(timeout=30)
    try:
        held.put([(None, n) for n in range(5)])  # the next poll's claim holds them
        assert held.holding.wait(10)
        assert hooks.enqueue("live", "meanwhile")
        deadline = monotonic() + 30
        while recorder.items("live") != ["meanwhile"]:
            assert monotonic() < deadline
            held.go.wait(0.01)  # polls the delivery, with a deadline (go is not set: a pause)
        assert held.meanwhile == []  # the other worker did not claim meanwhile ...
        assert not hooks.flush(timeout=0.5)  # ... and a flush waits for the held rows
    finally:
        held.go.set()
    assert hooks.flush(timeout=10)
    assert sorted(recorder.items(None)) == list(range(5))


def test_overflow_spill_with_a_queue_of_one_still_replays(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    gate = threading.Event()
    recorder = Recorder()

    def send(batch: List[Any]) -> None:
        gate.wait(10)
        recorder(batch)

    dispatcher = make(send, delay=0.01, max_queue_size=1, overflow="spill", spool=spools())
    for n in range(5):
        assert dispatcher.enqueue(n)
    gate.set()
    assert dispatcher.flush(timeout=10)
    assert sorted(recorder.items) == list(range(5))
    assert dispatcher.stats().replayed == dispatcher.stats().spilled > 0


def test_spill_exhausted_parks_items_until_the_process_ends(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    spool = spools()
    attempts: List[int] = []

    def down(batch: List[Any]) -> None:
        attempts.append(len(batch))
        raise ConnectionError("endpoint down")

    dispatcher = make(
        down, delay=0.01, retry=NO_JITTER, spill_exhausted=True, spool=spool, on_error=lambda exc, batch: None
    )
    dispatcher.enqueue("a")
    dispatcher.enqueue("b")
    assert dispatcher.flush(timeout=10)
    assert attempts == [2, 2, 2]
    stats = dispatcher.stats()
    assert (stats.failed, stats.spilled) == (0, 2)
    assert spool.count() == 2
    assert spools().claim(10) == []  # held by this process: not replayed elsewhere
    spool.close()  # what the end of the process does too
    recorder = Recorder()
    later = make(recorder, delay=0.01, spool=spools())
    assert later.flush(timeout=10)
    assert recorder.items == ["a", "b"]


def test_a_batch_that_is_not_retryable_fails_rather_than_spills(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    class Rejected(Exception):
        retryable = False

    def reject(batch: List[Any]) -> None:
        raise Rejected("400 Bad Request")

    spool = spools()
    dispatcher = make(reject, delay=0.01, spill_exhausted=True, spool=spool, on_error=lambda exc, batch: None)
    dispatcher.enqueue("poison")
    assert dispatcher.shutdown(timeout=10)
    assert (dispatcher.stats().failed, dispatcher.stats().spilled, spool.count()) == (1, 0, 0)


# -- faults ------------------------------------------------------------------------------------


def test_a_corrupt_spool_is_logged_counted_and_the_dispatcher_goes_on_in_memory(
    make: Any, path: str, caplog: Any
) -> None:
    with open(path, "w") as f:
        f.write("not a database\n" * 300)
    spool = SqliteSpool(path, durable=True)
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="batchdispatch"):
        dispatcher = make(recorder, delay=0.01, spool=spool)
        for n in range(5):
            assert dispatcher.enqueue(n)
        assert dispatcher.flush(timeout=10)
    spool.close()
    assert recorder.items == list(range(5))
    faults = dict(dispatcher.stats().spool_faults)
    assert faults.get("corrupt", 0) >= 1  # the claim at start; durable appends go to the log
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert path in errors[0]
    assert "going on in memory" in errors[0]
    assert len(errors) <= 2  # rate-limited, not one line per item


def test_a_handler_that_enqueues_on_a_spool_fault_does_not_deadlock(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    """A fault is logged; an app handler may turn that log line into one more item, and spill it."""
    spool = spools()
    started, gate = threading.Event(), threading.Event()

    def send(batch: List[Any]) -> None:
        started.set()
        gate.wait(10)

    dispatcher = make(send, delay=0.01, max_queue_size=2, max_batch_size=1, overflow="spill", spool=spool)

    class ToDispatcher(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            dispatcher.enqueue({"log": record.levelname})

    handler = ToDispatcher()
    logger = logging.getLogger("batchdispatch")
    logger.addHandler(handler)
    try:
        dispatcher.enqueue(0)
        assert started.wait(10)
        dispatcher.enqueue(1)
        dispatcher.enqueue(2)  # the queue is full
        spool.close()  # from now on every spool write is a fault
        producer = threading.Thread(target=dispatcher.enqueue, args=("over",))
        producer.start()  # spill -> fault -> log -> handler -> enqueue -> spill -> fault ...
        producer.join(10)
        assert not producer.is_alive(), "enqueue deadlocked"
        gate.set()
        assert dispatcher.flush(timeout=10)
    finally:
        logger.removeHandler(handler)
        gate.set()
    stats = dispatcher.stats()
    assert stats.spool_faults.get("closed", 0) >= 1
    assert stats.dropped_by_reason.get("queue_full", 0) >= 1  # the spills that could not be written


def test_a_handler_that_enqueues_while_a_dead_log_is_copied_does_not_deadlock(make: Any, path: str) -> None:
    left = run_python(f"""
import os
from batchdispatch.spool import SqliteSpool
SqliteSpool({path!r}, durable=True).append(None, "left behind")
os._exit(0)  # no close: the log stays, its owner dead
""")
    assert left.returncode == 0, left.stderr
    recorder = Recorder()
    spool = SqliteSpool(path, durable=True, timeout=2.0)  # SQLite's own: its write-ahead log
    dispatcher = make(recorder, delay=0.01, spool=spool)

    class Audit(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            dispatcher.enqueue({"log": record.getMessage().rsplit(": ", 1)[-1]})

    handler = Audit()
    logger = logging.getLogger("batchdispatch.spool")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert dispatcher.flush(timeout=10)  # claims, copying the dead log: logged at INFO
        assert dispatcher.flush(timeout=10)  # and the handler's item
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert recorder.items[0] == "left behind"
    assert recorder.items[1:] == [{"log": "1 items a process left in its log go back in"}]
    dispatcher.shutdown(timeout=10)
    spool.close()


def test_a_locked_spool_holds_up_neither_enqueue_nor_flush_past_its_timeout(make: Any, path: str) -> None:
    spool = SqliteSpool(path, durable=True, timeout=0.2)
    spool.count()  # create the file
    other = sqlite3.connect(path, isolation_level=None)
    recorder = Recorder()
    try:
        dispatcher = make(recorder, delay=0.01, spool=spool)
        other.execute("BEGIN EXCLUSIVE")
        assert dispatcher.enqueue("while locked")  # durable: in the log, which the lock does not hold up
        assert dispatcher.flush(timeout=10)  # the claim of the backlog gives up after the spool's timeout
        other.execute("COMMIT")
        assert dispatcher.enqueue("after")
        assert dispatcher.flush(timeout=10)
    finally:
        other.close()
        spool.close()
    assert recorder.items == ["while locked", "after"]
    assert dict(dispatcher.stats().spool_faults) == {"locked": 1}


def test_an_item_json_cannot_store_is_an_encode_fault_and_still_delivered(
    make: Any, spools: Callable[..., SqliteSpool]
) -> None:
    recorder = Recorder()
    dispatcher = make(recorder, delay=0.01, spool=spools(durable=True))
    assert dispatcher.enqueue({1, 2})
    assert dispatcher.flush(timeout=10)
    assert recorder.items == [{1, 2}]
    assert dict(dispatcher.stats().spool_faults) == {"encode": 1}


def test_a_full_disk_at_spill_time_counts_the_items_as_dropped(
    make: Any, tiny_fs: str  # noqa: F811 - the fixture
) -> None:
    spool = SqliteSpool(os.path.join(tiny_fs, "events.db"), timeout=1.0)
    gate = threading.Event()
    try:
        dispatcher = make(
            lambda batch: gate.wait(10), delay=0.01, max_queue_size=2, overflow="spill", spool=spool,
        )
        accepted = sum(dispatcher.enqueue("x" * 4000) for _ in range(200))
        gate.set()
        assert dispatcher.flush(timeout=20)
        stats = dispatcher.stats()
        on_disk = spool.count()  # spilled; a full disk refuses even the claim that would replay them
    finally:
        spool.close()
    assert stats.spool_faults.get("full", 0) >= 1
    assert stats.dropped_by_reason.get("queue_full", 0) >= 1
    # enqueue said False for each item it dropped (it said True for all 200 before), and
    # nothing it accepted vanished: each was delivered or is on disk (a delivered one too, if
    # the full disk refused the delete: it comes again, at least once).
    assert accepted + stats.dropped == 200
    assert stats.dispatched <= accepted <= stats.dispatched + on_disk


def test_a_read_only_place_keeps_a_durable_dispatcher_working_in_memory(
    make: Any, tiny_fs: str, caplog: Any  # noqa: F811 - the fixture
) -> None:
    path = os.path.join(tiny_fs, "events.db")
    subprocess.run(["mount", "-o", "remount,ro", tiny_fs], check=True)
    spool = SqliteSpool(path, durable=True, timeout=1.0)
    recorder = Recorder()
    try:
        with caplog.at_level(logging.ERROR, logger="batchdispatch"):
            dispatcher = make(recorder, delay=0.01, spool=spool)
            for n in range(20):
                assert dispatcher.enqueue(n)
            assert dispatcher.flush(timeout=10)
    finally:
        spool.close()
    assert recorder.items == list(range(20))
    faults = dict(dispatcher.stats().spool_faults)
    assert faults.get("read_only", 0) >= 20  # each durable write, and the claim at start
    assert any(path in record.getMessage() for record in caplog.records)


# -- processes: exit, kill, sharing ---------------------------------------------------------------

CHILD = """
import json, os, sys
from batchdispatch import BackgroundDispatcher
{imports}

out = open({delivered!r}, "a")

def send(batch):
    # A SIGKILL may cut a write at a page boundary: the leading newline keeps
    # the next process's first line off the cut one.
    out.write("".join("\\n" + json.dumps(item) for item in batch) + "\\n")
    out.flush()
"""


def delivered_items(delivered: str) -> List[Any]:
    items = []
    with open(delivered) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError:
                pass  # the line a kill cut short: its item was not acked, so it comes again
    return items


def accepted_lines(proc: subprocess.Popen[str], count: int, errors: List[str]) -> List[int]:
    """Read *count* lines (items enqueue accepted), SIGKILL *proc*, and return every complete line.
    What it wrote to stderr (a spool fault's report, say) is added to *errors*."""
    assert proc.stdout is not None
    lines = []
    for _ in range(count):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    if err.strip():
        errors.append(err)
    text = "".join(lines) + rest
    complete = text[: text.rfind("\n") + 1]  # a line cut short by the kill is not counted
    return [int(line) for line in complete.split()]


def test_sigkill_in_durable_mode_loses_nothing_that_enqueue_accepted(tmp_path: Any, spools: Spools) -> None:
    """20 kills at random points (10 on a server spool), then a restart: every accepted item is delivered.

    An item is delivered twice only if it was in flight at a kill: delivered,
    not yet acked. So the duplicates are at most a batch (50) per kill.
    """
    delivered = str(tmp_path / "delivered.jsonl")
    open(delivered, "w").close()
    child = CHILD.format(delivered=delivered, imports=spools.imports) + f"""
d = BackgroundDispatcher(send, delay=0.005, max_batch_size=50, spool={spools.source(durable=True)})
base = int(sys.argv[1])
for n in range(base, base + 1_000_000):
    if d.enqueue({{"n": n}}):  # an object: a line cut short never reads as an item
        sys.stdout.write(f"{{n}}\\n")
        sys.stdout.flush()
"""
    env = dict(os.environ, PYTHONPATH=ROOT)
    rng = random.Random(20261203)
    accepted: List[int] = []
    errors: List[str] = []  # the children's stderr: a spool fault there would say why an item was lost
    # On a server spool each durable enqueue of this one producer thread waits for its own commit
    # (PostgreSQL's, 1.5 to 2 ms on this machine, with its fsync), and each child spends half a second
    # starting: 20 runs of up to 3,000 items would take PostgreSQL's case 28 s. The server spools
    # take 10 kills, each still at a random point, after runs of up to 1,000 items: still many
    # batches delivered, acked and in flight at every kill, and a backlog replayed by each start.
    kills = 20 if spools.kind == "sqlite" else 10
    most = 3000 if spools.kind == "sqlite" else 1000
    for round_ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(child), str(round_ * 1_000_000)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        accepted += accepted_lines(proc, rng.randint(1, most), errors)
    before_restart = delivered_items(delivered)
    result = run_python(CHILD.format(delivered=delivered, imports=spools.imports) + f"""
d = BackgroundDispatcher(send, delay=0.005, max_batch_size=500, spool={spools.source(durable=True)})
print(d.flush(timeout=120), d.stats().replayed, d.spool.count())
""", timeout=180)
    assert result.returncode == 0, result.stderr
    flushed, replayed, left = result.stdout.split()
    assert (flushed, left) == ("True", "0")
    items = [item["n"] for item in delivered_items(delivered)]
    assert len(accepted) >= kills
    lost = sorted(set(accepted) - set(items))
    assert not lost, f"{len(lost)} accepted items were lost: {lost[:20]}; the children said: {errors[-3:]}"
    assert int(replayed) == len(items) - len(before_restart)
    assert len(items) - len(set(items)) <= kills * 50


def test_endpoint_down_at_exit_spills_and_the_next_start_delivers_everything(
    tmp_path: Any, spools: Spools
) -> None:
    delivered = str(tmp_path / "delivered.jsonl")
    open(delivered, "w").close()
    down = run_python(f"""
from batchdispatch import BackgroundDispatcher, RetryPolicy
{spools.imports}

def send(batch):
    raise ConnectionError("connection refused")

d = BackgroundDispatcher(send, delay=0.01, exit_timeout=2.0, retry=RetryPolicy(max_attempts=3, backoff=0.01),
                         spool={spools.source()}, on_error=lambda exc, batch: None)
for n in range(1000):
    d.enqueue({{"n": n}})
print("exiting")
""")
    assert down.returncode == 0, down.stderr
    assert down.stdout.split() == ["exiting"]
    with spools() as spool:
        assert spool.count() == 1000
    up = run_python(CHILD.format(delivered=delivered, imports=spools.imports) + f"""
d = BackgroundDispatcher(send, delay=0.01, spool={spools.source()})
d.enqueue({{"n": "new"}})
print(d.flush(timeout=30), d.stats().replayed)
""")
    assert up.returncode == 0, up.stderr
    assert up.stdout.split() == ["True", "1000"]
    assert delivered_items(delivered) == [{"n": n} for n in range(1000)] + [{"n": "new"}]


def test_a_hung_endpoint_at_exit_spills_the_batch_in_dispatch(spools: Spools) -> None:
    result = run_python(f"""
import threading
from batchdispatch import BackgroundDispatcher
{spools.imports}

d = BackgroundDispatcher(lambda batch: threading.Event().wait(60), delay=0.01, exit_timeout=0.5,
                         max_batch_size=10, spool={spools.source()})
for n in range(25):
    d.enqueue(n)
""")
    assert result.returncode == 0, result.stderr
    with spools() as spool:
        assert sorted(item for _, _, item in spool.claim(100)) == list(range(25))


def test_at_exit_the_spill_is_written_before_another_process_takes_the_file(path: str) -> None:
    """Two gunicorn workers on one spool file get SIGTERM together and reach their exit deadlines
    together: each writes what it could not deliver at the same moment, and the one that found the
    file locked by the other dropped its items (the app bench lost 486 of 7,921 events so). The
    exit flush now leaves part of the budget to the spill: here another connection takes the file
    for a second across the deadline, and everything is in the file all the same."""
    result = run_python(f"""
import atexit, sqlite3, threading, time
from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool

EXIT_TIMEOUT = 5.0
d = BackgroundDispatcher(lambda batch: threading.Event().wait(60), delay=0.01, exit_timeout=EXIT_TIMEOUT,
                         max_batch_size=10, spool=SqliteSpool({path!r}))
for n in range(25):
    d.enqueue(n)
d.spool.count()  # the file exists

def other_worker(exiting):  # the file is the other worker's from 0.5 s before the deadline to after it
    other = sqlite3.connect({path!r}, isolation_level=None)
    time.sleep(max(0.0, exiting + EXIT_TIMEOUT - 0.5 - time.monotonic()))
    other.execute("BEGIN IMMEDIATE")
    time.sleep(1.0)
    other.execute("COMMIT")

# Registered after batchdispatch's exit hook, so it runs first, as that hook starts.
atexit.register(lambda: threading.Thread(target=other_worker, args=(time.monotonic(),), daemon=True).start())
""", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "dropped" not in result.stderr, result.stderr
    with SqliteSpool(path) as spool:
        assert sorted(item for _, _, item in spool.claim(100)) == list(range(25))


def test_an_item_enqueued_after_the_exit_hook_gave_up_goes_to_the_spool(spools: Spools) -> None:
    """logging's own shutdown, say: an atexit handler registered before batchdispatch runs after its hook."""
    result = run_python(f"""
import atexit, threading
late = []
atexit.register(lambda: print(late, d.stats().spilled))  # handlers run last in, first out
atexit.register(lambda: late.append(d.enqueue("late")))

from batchdispatch import BackgroundDispatcher
{spools.imports}

d = BackgroundDispatcher(lambda batch: threading.Event().wait(60), delay=0.01, exit_timeout=0.3,
                         spool={spools.source()})
d.enqueue("first")
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[True]", "2"]  # accepted; the hung batch and it spilled
    with spools() as spool:
        assert [item for _, _, item in spool.claim(10)] == ["first", "late"]


def test_forks_of_a_durable_dispatcher_replaying_a_backlog_deliver_each_item_once(
    tmp_path: Any, spools: Spools
) -> None:
    """The parent replays old items and four threads enqueue while it forks five children,
    each of which enqueues, shuts down and closes the spool: every item exactly once."""
    out = str(tmp_path / "delivered")
    result = run_python(f"""
import collections, json, os, threading, warnings
from batchdispatch import BackgroundDispatcher
{spools.imports}

with {spools.source()} as old:
    old.put([(None, f"old{{n}}") for n in range(300)])
spool = {spools.source(durable=True)}
went = threading.Event()

def deliver(batch):
    with open({out!r}, "a") as f:
        f.write("".join(f"{{item}}\\n" for item in batch))
    went.set()

d = BackgroundDispatcher(deliver, delay=0.002, max_batch_size=10, spool=spool)

def produce(p):
    for n in range(300):
        d.enqueue(f"p{{p}}-{{n}}")

threads = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
for thread in threads:
    thread.start()
children = []
for k in range(5):
    went.clear()
    d.enqueue(f"before-fork-{{k}}")
    assert went.wait(10)  # a batch went out since the last fork
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking a threaded process
        pid = os.fork()
    if pid == 0:
        for n in range(50):
            d.enqueue(f"c{{k}}-{{n}}")
        ok = d.shutdown(timeout=20)
        spool.close()
        os._exit(0 if ok else 3)
    children.append(pid)
for thread in threads:
    thread.join()
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
done = d.flush(timeout=30) and d.shutdown(timeout=10)
spool.close()
with open({out!r}) as f:
    counts = collections.Counter(line.rstrip("\\n") for line in f)
with {spools.source()} as after:
    left = after.count()
logs = [name for name in os.listdir({str(tmp_path)!r}) if "-log-" in name]
print(json.dumps([codes, done, left, logs, sorted(counts.values())[-1], len(counts)]))
""", timeout=120)
    assert result.returncode == 0, result.stderr
    codes, done, left, logs, most, distinct = json.loads(result.stdout)
    assert codes == [0] * 5
    assert done is True
    assert left == 0
    # SqliteSpool keeps durable appends in per-process log files beside the database until they
    # are acked (spool/_wal.py); none may be left. The server spools keep no files to check.
    assert logs == []
    assert most == 1  # nothing delivered twice
    assert distinct == 300 + 4 * 300 + 5 + 5 * 50  # and nothing missing


def test_processes_sharing_a_spool_replay_each_item_once(tmp_path: Any, spools: Spools) -> None:
    with spools() as spool:
        spool.put([(None, n) for n in range(3000)])
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = []
    for number in range(4):
        delivered = str(tmp_path / f"delivered-{number}.jsonl")
        code = CHILD.format(delivered=delivered, imports=spools.imports) + f"""
d = BackgroundDispatcher(send, delay=0.005, max_batch_size=100, spool={spools.source()})
print(d.flush(timeout=60))
"""
        procs.append(subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        ))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.split() == ["True"]
    each = [delivered_items(str(tmp_path / f"delivered-{number}.jsonl")) for number in range(4)]
    everything = [item for items in each for item in items]
    assert sorted(everything) == list(range(3000))  # each item exactly once
    assert all(items == sorted(items) for items in each)  # oldest first in each process
