"""SqliteSpool under the faults of issue 12: items that cannot be encoded,
files removed while in use, signal handlers that append, locks held by
another process. Real files, real processes, real signals."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List

import pytest

from batchdispatch._deadlines import monotonic
from batchdispatch.exceptions import SpoolError
from batchdispatch.spool import LOG_SEGMENT_BYTES, SqliteSpool
from batchdispatch.spool._connection import Database

from .conftest import ROOT, run_python
from .spools import held_by_another_thread


def stored(path: str) -> List[Any]:
    """Every item in the file, in row order, read with a plain sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return [json.loads(item) for (item,) in conn.execute("SELECT item FROM spool ORDER BY id")]
    finally:
        conn.close()


# -- 2. one item that cannot be encoded does not sink the others --------------------


def test_a_spill_with_one_unencodable_item_writes_the_100_good_ones(spool: SqliteSpool, path: str) -> None:
    pairs = [("k", {"n": n}) for n in range(100)]
    pairs.insert(57, ("k", {"at": datetime.datetime(2024, 5, 6, 7, 8, 9)}))
    with pytest.raises(SpoolError) as info:
        spool.put(pairs)
    exc = info.value
    assert exc.kind == "encode"
    assert exc.refused == [57]
    assert exc.rows is not None
    assert len(exc.rows) == 101
    assert exc.rows[57] == 0
    assert all(row > 0 for index, row in enumerate(exc.rows) if index != 57)
    assert exc.rows[:57] + exc.rows[58:] == sorted(exc.rows[:57] + exc.rows[58:])
    assert "item 57 is not JSON serializable: datetime" in str(exc)
    assert "1 of 101 items refused" in str(exc)
    assert "2024" not in str(exc)
    spool.close()
    assert stored(path) == [{"n": n} for n in range(100)]


def test_the_rows_of_a_partial_put_are_the_ones_claimed(spool: SqliteSpool) -> None:
    with pytest.raises(SpoolError) as info:
        spool.put([(None, "a"), (None, {1, 2}), (("t", 1), "b")])
    rows = info.value.rows
    assert rows is not None
    assert spool.claim(10) == [(rows[0], None, "a"), (rows[2], ("t", 1), "b")]


def test_a_refusal_names_the_first_three_by_index_and_type_and_counts_the_rest(spool: SqliteSpool) -> None:
    secret = "hunter2"
    pairs: List[Any] = [(None, n) for n in range(10)]
    for index in (1, 3, 4, 8, 9):
        pairs[index] = (None, {secret: {secret}})
    pairs[4] = (frozenset([secret]), 4)  # a key that cannot be encoded
    with pytest.raises(SpoolError) as info:
        spool.put(pairs)
    exc = info.value
    assert exc.refused == [1, 3, 4, 8, 9]
    text = str(exc)
    assert "5 of 10 items refused (the other 5 were written)" in text
    assert "item 1 is not JSON serializable: set; item 3 is not JSON serializable: set;" in text
    assert "the key of item 4 is not JSON serializable: frozenset; and 2 more" in text
    assert "item 8" not in text
    assert secret not in text
    assert spool.count() == 5


def test_a_put_of_only_unencodable_items_writes_nothing_and_says_so(spool: SqliteSpool, path: str) -> None:
    with pytest.raises(SpoolError, match="nothing was written") as info:
        spool.put([(None, object()), (None, float("inf"))])
    assert info.value.refused == [0, 1]
    assert info.value.rows == [0, 0]
    assert not os.path.exists(path)  # not even opened
    assert spool.count() == 0


def test_a_failing_dumps_refuses_only_its_items(path: str) -> None:
    def dumps(item: Any) -> str:
        if item == "bad":
            raise RuntimeError("secret detail")
        return json.dumps(item)

    with SqliteSpool(path, dumps=dumps, loads=json.loads) as spool:
        with pytest.raises(SpoolError, match="dumps failed on item 1: RuntimeError") as info:
            spool.put([(None, "good"), (None, "bad"), (None, "fine")], claim=True)
        assert "secret" not in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert info.value.refused == [1]
        assert spool.count() == 2
    assert stored(path) == ["good", "fine"]  # claimed, then freed at close


def test_other_errors_carry_no_refused_or_rows(path: str) -> None:
    with SqliteSpool(path, timeout=0.1) as spool:
        spool.put([(None, 1)])
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(SpoolError) as info:
                spool.put([(None, 2), (None, object())])
        finally:
            other.close()
        assert info.value.kind == "locked"
        assert info.value.refused is None
        assert info.value.rows is None
        assert spool.count() == 1


# -- 9. every operation that may wait takes a timeout ----------------------------------


@contextmanager
def locked_by_another_process(path: str) -> Iterator[None]:
    """Hold *path* in an exclusive transaction in a second process until the block ends."""
    code = f"""
        import sqlite3, sys
        conn = sqlite3.connect({path!r}, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("INSERT INTO spool (key, item) VALUES ('null', '\\"other\\"')")
        print("locked", flush=True)
        sys.stdin.read()
        conn.execute("COMMIT")
        print("done", flush=True)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n"
        yield
    finally:
        out, _ = proc.communicate("", timeout=30)
        assert proc.returncode == 0
        assert out == "done\n"


def open_in(directory: str) -> List[str]:
    """The files in *directory* this process has open, from its descriptors in /proc/self/fd."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor of the listing itself, closed meanwhile
            continue
        if os.path.dirname(target) == directory:
            found.append(os.path.basename(target))
    return sorted(found)


def gives_up(operation: Callable[[], Any]) -> SpoolError:
    """Run *operation*: it must raise SpoolError "locked", well within a generous bound."""
    started = monotonic()
    with pytest.raises(SpoolError) as info:
        operation()
    assert monotonic() - started < 3
    assert info.value.kind == "locked", info.value
    return info.value


def test_each_operation_gives_up_at_its_own_timeout_on_another_process_lock(path: str) -> None:
    spool = SqliteSpool(path, timeout=60)  # the spool's own timeout would wait a minute
    spool.put([(None, n) for n in range(4)])
    claimed = [row for row, _, _ in spool.claim(2)]
    with locked_by_another_process(path):
        gives_up(lambda: spool.put([(None, "late")], timeout=0.5))
        gives_up(lambda: spool.claim(5, timeout=0.5))
        gives_up(lambda: spool.ack(claimed[:1], timeout=0.5))
        gives_up(lambda: spool.release(claimed[1:], timeout=0.5))
        gives_up(lambda: spool.put([(None, "later")], claim=True, timeout=0))
        error = gives_up(lambda: spool.close(timeout=0.5))
        assert "could not free claimed rows at close" in str(error)
    with pytest.raises(SpoolError, match="closed"):
        spool.count()
    # Nothing was changed by the operations that gave up; the claims of the
    # closed spool are freed by the next claim (its owner lock is gone).
    with SqliteSpool(path) as other:
        assert sorted((item for _, _, item in other.claim(10)), key=str) == [0, 1, 2, 3, "other"]


def test_an_operation_gives_up_at_its_timeout_when_another_thread_holds_the_spool(path: str) -> None:
    spool = SqliteSpool(path, timeout=60)
    spool.put([(None, 0)])
    outcome: List[Any] = []
    with locked_by_another_process(path):
        writer = threading.Thread(target=lambda: outcome.append(spool.put([(None, 1)])))
        writer.start()
        deadline = monotonic() + 30
        while not held_by_another_thread(spool):  # the writer waits inside the spool, for the other process
            assert monotonic() < deadline
            writer.join(0.001)
        gives_up(lambda: spool.count(timeout=0.5))
        gives_up(lambda: spool.claim(1, timeout=0.5))
        error = gives_up(lambda: spool.close(timeout=0.5))
        assert "another thread of this process held the spool" in str(error)
        assert writer.is_alive()
        assert open_in(os.path.dirname(path))  # (the connection and the owner file, for the check below)
    writer.join(30)
    assert not writer.is_alive()
    assert len(outcome) == 1  # the put made it once the other process let go
    # The writer, leaving last, closed the connection (file, WAL, shared memory) and the
    # owner file that close could not: this process has nothing in the directory open.
    assert open_in(os.path.dirname(path)) == []
    with SqliteSpool(path) as other:
        assert sorted((item for _, _, item in other.claim(10)), key=str) == [0, 1, "other"]


def test_without_a_timeout_an_operation_waits_for_the_spools_timeout(path: str) -> None:
    with SqliteSpool(path, timeout=0.2) as spool:
        spool.put([(None, 0)])
        with locked_by_another_process(path):
            gives_up(lambda: spool.put([(None, 1)]))
            assert spool.count() == 1  # WAL: reading does not wait for the writer
        assert spool.put([(None, 2)])


@pytest.mark.parametrize("timeout", [-1, float("nan"), "1"])
def test_a_bad_timeout_names_the_parameter(spool: SqliteSpool, timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="timeout must be"):
        spool.put([(None, 1)], timeout=timeout)


# -- 7. a signal handler that appends never waits for its own thread ----------------------


def test_a_signal_handler_appending_while_its_thread_rotates_the_log_completes(path: str) -> None:
    """SIGALRM every 2 ms appends a 100 kB item while the main thread appends and acks 100 kB
    items; segments rotate every few items, so the handler lands in a rotation or an ack (with
    the log lock held) again and again. Every item not acked is in the file after close."""
    code = f"""
        import signal, sys, time
        import batchdispatch.spool._wal as spool_module
        from batchdispatch.spool import SqliteSpool

        spool_module.LOG_SEGMENT_BYTES = 512 * 1024  # a rotation every five items
        PAD = "x" * 100_000
        spool = SqliteSpool({path!r}, durable=True)
        appended = []  # (id, n): list.append is atomic, the handler uses it too
        counter = iter(range(10**9))
        handled = [0]
        inside = [False]  # the handler is running

        def on_alarm(signum, frame):
            # An alarm in the handler itself is let go: handlers nested without end (each
            # append slower than the 2 ms interval, on a busy disk) would exhaust the stack.
            if inside[0]:
                return
            inside[0] = True
            try:
                n = next(counter)
                appended.append((spool.append("h", {{"n": n, "pad": PAD}}), n))
                handled[0] += 1
            finally:
                inside[0] = False

        # The log is opened before the first alarm: a handler that lands in its thread's
        # very first append, while that opens the log, is refused (SpoolError), by design.
        spool.ack([spool.append("m", {{"n": -1}})])
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
        kept = set()
        done = 0
        end = time.monotonic() + 4
        while time.monotonic() < end or handled[0] < 200:
            n = next(counter)
            appended.append((spool.append("m", {{"n": n, "pad": PAD}}), n))
            # Ack all but every tenth item, main's and the handler's alike.
            # len first: the handler may append between the two (it is acked next time).
            upto = len(appended)
            batch, done = appended[done:upto], upto
            spool.ack([row for row, n in batch if n % 10])
            kept.update(n for _, n in batch if n % 10 == 0)
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        kept.update(n for _, n in appended[done:])
        spool.close()
        with SqliteSpool({path!r}) as again:
            found = [item["n"] for _, _, item in again.claim(10**6)]
        assert len(found) == len(set(found)), "an item came back twice"
        assert set(found) == kept, sorted(set(found) ^ kept)[:10]
        print(handled[0], len(appended), len(kept))
    """
    result = run_python(code, timeout=90)  # the deadline catches the old deadlock
    assert result.returncode == 0, result.stderr[-3000:]
    handled, appended, kept = map(int, result.stdout.split())
    assert handled >= 200
    assert kept >= appended // 10


def test_a_handler_that_calls_the_spool_anywhere_in_an_operation_of_its_thread_never_waits_for_it(
    path: str,
) -> None:
    """A signal handler runs between any two lines of its thread. A trace function stands in for
    one here: at every line of the outer count's connection block, it calls count again from the
    same thread. Each nested call either runs (the outer has not started its statement, or is
    done with it) or raises "locked" at once; none waits for the lock its own thread holds."""
    spool = SqliteSpool(path)
    spool.put([(None, 1)])
    block = Database.hold.__wrapped__.__code__  # type: ignore[attr-defined]
    outcomes: List[Any] = []
    nested = [False]

    def on_line(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and not nested[0]:
            nested[0] = True
            started = monotonic()
            try:
                outcomes.append(("ran", spool.count(timeout=5), monotonic() - started))
            except SpoolError as exc:
                outcomes.append((exc.kind, str(exc), monotonic() - started))
            finally:
                nested[0] = False
        return on_line

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        return on_line if frame.f_code is block and not nested[0] else None

    sys.settrace(on_call)
    try:
        total = spool.count()
    finally:
        sys.settrace(None)
    spool.close()
    assert total == 1
    assert outcomes
    for outcome in outcomes:
        assert outcome[0] in ("ran", "locked"), outcome
        assert "another thread" not in str(outcome[1]), outcome  # it waited for its own thread
        assert outcome[2] < 2.5, outcome  # the nested call's timeout is 5 s
    assert {outcome[0] for outcome in outcomes} == {"ran", "locked"}


# -- 5. a file or directory removed while in use --------------------------------------------


def test_a_spool_file_removed_while_in_use_is_made_again_and_later_spills_reach_it(
    path: str, caplog: Any,
) -> None:
    spool = SqliteSpool(path)
    spool.put([(None, "before") for _ in range(10)])
    os.unlink(path)  # as `rm events.db` would: the -wal and -shm stay
    with caplog.at_level("WARNING", logger="batchdispatch.spool"):
        spool.put([(None, n) for n in range(51)])
    assert "removed or replaced while in use" in caplog.text
    assert "lost" in caplog.text
    spool.close()
    with SqliteSpool(path) as again:  # the next start replays all 51
        assert [item for _, _, item in again.claim(100)] == list(range(51))


def test_a_spool_file_replaced_while_in_use_is_followed_to_the_new_file(path: str) -> None:
    spool = SqliteSpool(path)
    spool.put([(None, "old")])
    for suffix in ("", "-wal", "-shm"):
        os.rename(path + suffix, path + suffix + ".moved")
    with SqliteSpool(path) as other:  # a fresh spool file at the path, by another spool
        other.put([(None, "new")])
    spool.put([(None, "mine")])
    assert [item for _, _, item in spool.claim(10)] == ["new", "mine"]
    spool.close()


def test_a_spool_directory_removed_while_in_use_is_a_removed_fault(tmp_path: Any) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    path = str(directory / "events.db")
    spool = SqliteSpool(path)
    spool.put([(None, "before")])
    spool.claim(1)
    shutil.rmtree(directory)
    for operation in (lambda: spool.put([(None, "after")]), lambda: spool.count(), lambda: spool.claim(1)):
        with pytest.raises(SpoolError, match=r"is gone|No such file") as info:
            operation()
        assert info.value.kind == "removed", info.value
    directory.mkdir()  # put back: the spool goes on in a fresh file
    spool.put([(None, "back")])
    assert [item for _, _, item in spool.claim(10)] == ["back"]
    spool.close()


def test_the_owner_file_removed_while_in_use_is_made_again(path: str) -> None:
    spool = SqliteSpool(path)
    spool.put([(None, n) for n in range(3)])
    assert len(spool.claim(3)) == 3
    owners = [name for name in os.listdir(os.path.dirname(path)) if "-owner-" in name]
    assert len(owners) == 1
    os.unlink(os.path.join(os.path.dirname(path), owners[0]))
    assert spool.count() == 3  # a transaction: notices, and locks a new owner file
    result = run_python(f"""
        from batchdispatch.spool import SqliteSpool
        with SqliteSpool({path!r}) as other:
            print(len(other.claim(10)))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0\n"  # still this process's: not handed out twice
    spool.close()


def test_a_log_segment_removed_while_in_use_is_copied_back_and_survives_a_kill(path: str) -> None:
    code = f"""
        import glob, os, signal
        from batchdispatch.spool import SqliteSpool
        spool = SqliteSpool({path!r}, durable=True)
        ids = [spool.append("k", n) for n in range(20)]
        [segment] = glob.glob({path!r} + "-log-*")
        os.unlink(segment)
        spool.ack(ids[:5])  # notices the segment gone, and copies it back
        assert os.path.exists(segment)
        ids += [spool.append("k", n) for n in range(20, 25)]
        os.kill(os.getpid(), signal.SIGKILL)
    """
    result = run_python(code)
    assert result.returncode == -signal.SIGKILL, result.stderr
    with SqliteSpool(path) as spool:
        assert sorted(item for _, _, item in spool.claim(100)) == list(range(5, 25))


def test_a_log_segment_removed_while_in_use_is_copied_back_at_close(path: str) -> None:
    spool = SqliteSpool(path, durable=True)
    for n in range(10):
        spool.append(None, n)
    for name in os.listdir(os.path.dirname(path)):
        if "-log-" in name:
            os.unlink(os.path.join(os.path.dirname(path), name))
    spool.close()
    with SqliteSpool(path) as again:
        assert [item for _, _, item in again.claim(100)] == list(range(10))


def test_the_log_directory_removed_while_in_use_is_a_removed_fault(tmp_path: Any) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    spool = SqliteSpool(str(directory / "events.db"), durable=True)
    ids = [spool.append(None, n) for n in range(3)]
    shutil.rmtree(directory)
    with pytest.raises(SpoolError, match="removed while in use") as info:
        spool.ack(ids[:1])
    assert info.value.kind == "removed"
    with pytest.raises(SpoolError) as info:  # a rotation needs a new file: none can be made
        spool.append(None, "x" * LOG_SEGMENT_BYTES)  # written to the open segment, which it fills
    assert info.value.kind == "removed"
    assert "cannot create the log" in str(info.value)
    with pytest.raises(SpoolError) as info:
        spool.close(timeout=5)
    assert info.value.kind == "removed"


def test_an_append_still_being_written_when_its_segment_is_removed_is_in_the_copy(path: str) -> None:
    """Appends write without a lock, and a reader may see a record half written. Here the one
    os.write of a record is held halfway (its first half in the file) while the segment is
    removed and an ack notices it: the record must be in the copy at the path once written, and
    so survive a kill. The write is split in the test process, the rest is the real thing."""
    code = f"""
        import glob, os, signal, threading
        from batchdispatch.spool import SqliteSpool
        spool = SqliteSpool({path!r}, durable=True)
        ids = [spool.append("k", n) for n in range(10)]
        assert spool.ack(ids[:5]) == 5
        half_written, finish = threading.Event(), threading.Event()
        real_write = os.write

        def held_write(fd, data):
            if threading.current_thread() is not appender or not data.startswith(b"\\x1e"):
                return real_write(fd, data)
            half = len(data) // 2
            assert real_write(fd, data[:half]) == half
            half_written.set()
            assert finish.wait(60)
            return half + real_write(fd, data[half:])

        os.write = held_write
        appender = threading.Thread(target=spool.append, args=("k", "late"))
        appender.start()
        assert half_written.wait(60)
        [segment] = glob.glob({path!r} + "-log-*")
        os.unlink(segment)
        assert spool.ack(ids[:5]) == 0  # writes nothing; notices the removal while "late" is half written
        finish.set()
        appender.join(60)
        assert not appender.is_alive()
        os.write = real_write
        spool.ack(ids[5:6])  # a later check, with no append in flight
        os.kill(os.getpid(), signal.SIGKILL)
    """
    result = run_python(code)
    assert result.returncode == -signal.SIGKILL, result.stderr
    with SqliteSpool(path) as spool:
        assert sorted((item for _, _, item in spool.claim(100)), key=str) == [6, 7, 8, 9, "late"]


# A file size limit stands in for a full disk: writes past it fail with EFBIG, for real.
SIZE_LIMITED = """
    import glob, json, os, resource, signal
    from batchdispatch.exceptions import SpoolError
    from batchdispatch.spool import LOG_SEGMENT_BYTES, SqliteSpool
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(size):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    def files():
        names = os.listdir(os.path.dirname({path!r}))
        return sorted(name.rpartition("-")[2] for name in names if "-log-" in name)
"""


def test_a_copy_back_that_fails_leaves_no_partial_file_and_is_made_at_the_next_check(path: str) -> None:
    """The copy of a removed segment fails part way (the disk full): the ack raises a SpoolError,
    no partial file is left at the path, and the next ack (space is back) makes the copy, which
    survives a kill."""
    code = SIZE_LIMITED.format(path=path) + f"""
    spool = SqliteSpool({path!r}, durable=True)
    pad = "x" * (LOG_SEGMENT_BYTES // 64)  # segment 0 is full after 64 items
    ids = [spool.append("k", {{"n": n, "pad": pad}}) for n in range(80)]
    assert files() == ["0", "1"], files()  # 0: retired, past LOG_SEGMENT_BYTES; 1: the current one, a quarter
    os.unlink(glob.glob({path!r} + "-log-*-0")[0])
    limit(LOG_SEGMENT_BYTES // 2)  # the current segment can take acks, a copy of segment 0 cannot be made
    try:
        spool.ack(ids[-1:])
    except SpoolError as exc:
        print(json.dumps(["raised", exc.kind, files()]), flush=True)  # flushed: SIGKILL follows
    else:
        print(json.dumps(["returned", None, files()]), flush=True)
    limit(soft)
    print(json.dumps([spool.ack(ids[-2:-1]), files()]), flush=True)  # copies it back
    os.kill(os.getpid(), signal.SIGKILL)
    """
    result = run_python(code)
    assert result.returncode == -signal.SIGKILL, result.stderr
    first, second = map(json.loads, result.stdout.splitlines())
    assert first == ["raised", "full", ["1"]]  # a SpoolError; no copy, partial or temporary, is left
    assert second == [1, ["0", "1"]]
    with SqliteSpool(path) as spool:
        assert sorted(item["n"] for _, _, item in spool.claim(100)) == list(range(78))


def test_at_close_a_removed_segment_is_read_through_its_descriptor(path: str) -> None:
    """At close, the records of a removed segment are read through the descriptor, not copied
    back first: a copy the disk has no room for does not stand in the way of the table."""
    code = SIZE_LIMITED.format(path=path) + f"""
    spool = SqliteSpool({path!r}, durable=True)
    ids = [spool.append("k", {{"n": n, "pad": "x" * 1000}}) for n in range(2000)]
    spool.ack(ids[:1990])  # 10 left; the segment holds about 2 MB
    os.unlink(glob.glob({path!r} + "-log-*")[0])
    limit(256 * 1024)  # room for 10 rows in the table, not for a copy of the segment
    spool.close(timeout=10)
    limit(soft)
    print(json.dumps(files()))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == []
    with SqliteSpool(path) as spool:
        assert sorted(item["n"] for _, _, item in spool.claim(3000)) == list(range(1990, 2000))


def test_when_close_cannot_write_the_table_a_removed_segment_is_put_back_for_a_claim(path: str) -> None:
    spool = SqliteSpool(path, durable=True)
    ids = [spool.append("k", n) for n in range(10)]
    spool.ack(ids[:2])
    assert spool.count() == 8  # (makes the file, for the other process to lock)
    directory = os.path.dirname(path)
    [segment] = [name for name in os.listdir(directory) if "-log-" in name]
    os.unlink(os.path.join(directory, segment))
    with locked_by_another_process(path):
        with pytest.raises(SpoolError, match="its files stay for a claim") as info:
            spool.close(timeout=0.5)
        assert info.value.kind == "locked"
        assert os.path.exists(os.path.join(directory, segment))  # put back at its path
    with SqliteSpool(path) as again:  # this process's spool is closed: its owner lock is gone
        assert sorted((item for _, _, item in again.claim(100)), key=str) == [2, 3, 4, 5, 6, 7, 8, 9, "other"]
    assert not [name for name in os.listdir(directory) if "-log-" in name]
