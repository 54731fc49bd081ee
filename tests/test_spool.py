"""SqliteSpool: real files in tmp_path, real processes, real faults."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from typing import Any, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchdispatch._deadlines import monotonic
from batchdispatch.exceptions import BatchDispatchError, SpoolError
from batchdispatch.spool import LOG_SEGMENT_BYTES, QUARANTINED, SqliteSpool

from .conftest import ROOT, run_python


def spawn(code: str) -> subprocess.Popen[str]:
    """Start *code* in a fresh interpreter, stdin and stdout piped, to talk to it line by line."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def kill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL *proc*, reap it; return what is left of its stdout."""
    proc.kill()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return out


def raw_rows(path: str) -> List[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, key, item, owner FROM spool ORDER BY id").fetchall()
    finally:
        conn.close()


# -- storage ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(json_values, min_size=1, max_size=5))
def test_json_values_come_back_equal_and_in_order(path: str, items: List[Any]) -> None:
    with SqliteSpool(path) as spool:
        ids = spool.put([(None, item) for item in items])
        rows = spool.claim(len(items) + 10)
        assert [row_id for row_id, _, _ in rows] == ids
        assert [item for _, _, item in rows] == items
        assert [key for _, key, _ in rows] == [None] * len(items)
        assert spool.ack(ids) == len(items)
        assert spool.count() == 0


def test_keys_are_json_and_tuples_come_back_as_tuples(spool: SqliteSpool) -> None:
    keys = [None, "endpoint-1", 7, 2.5, True, ("tenant", 3), ("a", ("b", None))]
    spool.put([(key, n) for n, key in enumerate(keys)])
    assert [key for _, key, _ in spool.claim(100)] == keys


def test_items_are_stored_as_compact_utf8_json(spool: SqliteSpool, path: str) -> None:
    spool.put([("k", {"text": "héllo", "n": [1, 2]})])
    assert raw_rows(path) == [(1, '"k"', '{"text":"héllo","n":[1,2]}', None)]


def test_custom_dumps_and_loads_get_back_the_same_type(tmp_path: Any) -> None:
    def loads(data: bytes) -> Any:
        return ("bytes", data)

    with SqliteSpool(str(tmp_path / "b.db"), dumps=lambda x: repr(x).encode(), loads=loads) as s:
        s.put([(None, {1, 2})])
        assert s.claim(5)[0][2] == ("bytes", b"{1, 2}")
    with SqliteSpool(str(tmp_path / "s.db"), dumps=str, loads=lambda text: ("str", text)) as s:
        s.put([(None, 42)])
        assert s.claim(5)[0][2] == ("str", "42")


@pytest.mark.parametrize("given_", ["dumps", "loads"])
def test_dumps_and_loads_go_together(path: str, given_: str) -> None:
    missing = "loads" if given_ == "dumps" else "dumps"
    with pytest.raises(TypeError, match=f"{missing} is missing"):
        SqliteSpool(path, **{given_: json.dumps})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"name": 3}, TypeError, "name"),
        ({"dumps": 1, "loads": json.loads}, TypeError, "dumps must be callable"),
    ],
)
def test_bad_arguments_name_the_parameter(path: str, kwargs: Any, error: Any, match: str) -> None:
    with pytest.raises(error, match=match):
        SqliteSpool(path, **kwargs)


def test_path_must_name_a_file_in_an_existing_directory(tmp_path: Any) -> None:
    missing = tmp_path / "nowhere" / "events.db"
    with pytest.raises(SpoolError, match=f"{tmp_path / 'nowhere'} does not exist") as info:
        SqliteSpool(missing)
    assert info.value.path == str(missing)
    assert info.value.kind == "io"
    for bad in (":memory:", "", "file:x.db?mode=memory"):
        with pytest.raises(ValueError, match="path must name a file"):
            SqliteSpool(bad)
    with pytest.raises(TypeError, match="path"):
        SqliteSpool(b"/tmp/x.db")  # type: ignore[arg-type]


def test_an_item_json_cannot_represent_is_refused_by_type_and_others_are_written(spool: SqliteSpool) -> None:
    import datetime

    with pytest.raises(SpoolError, match=r"item 1 is not JSON serializable: datetime") as info:
        spool.put([(None, 1), (None, {"at": datetime.datetime(2024, 1, 1)}), (None, 3)])
    assert info.value.kind == "encode"
    assert isinstance(info.value, BatchDispatchError)
    assert isinstance(info.value.__cause__, TypeError)
    assert "2024" not in str(info.value)
    assert info.value.refused == [1]
    assert info.value.rows is not None
    assert info.value.rows[1] == 0
    with pytest.raises(SpoolError, match="not JSON serializable: Out of range float"):
        spool.append(None, float("nan"))
    with pytest.raises(SpoolError, match="the key of the item is not JSON serializable: frozenset"):
        spool.append(frozenset(), 1)
    assert [item for _, _, item in spool.claim(10)] == [1, 3]


def test_a_failing_or_wrong_dumps_is_an_encode_error(path: str) -> None:
    def broken(item: Any) -> bytes:
        raise RuntimeError("secret detail")

    with SqliteSpool(path, dumps=broken, loads=json.loads) as s:
        with pytest.raises(SpoolError, match="dumps failed on item 0: RuntimeError") as info:
            s.put([(None, 1)])
        assert info.value.kind == "encode"
        assert "secret" not in str(info.value)
    with SqliteSpool(path, dumps=lambda item: 5, loads=json.loads) as s, pytest.raises(  # type: ignore[arg-type]
        SpoolError, match="dumps must return bytes or str, got int",
    ):
        s.append(None, 1)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))  # unpickling creates the marker file


@pytest.mark.parametrize("as_text", [False, True])
def test_a_pickle_payload_is_never_unpickled(
    spool: SqliteSpool, path: str, tmp_path: Any, as_text: bool,
) -> None:
    marker = tmp_path / "unpickled"
    spool.put([(None, "before")])
    payload: Any = pickle.dumps(_Payload(str(marker)))
    if as_text:
        payload = payload.decode("latin-1")
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("INSERT INTO spool (key, item) VALUES ('null', ?)", (payload,))
    finally:
        conn.close()
    spool.put([(None, "after")])
    assert [item for _, _, item in spool.claim(10)] == ["before", "after"]
    assert not marker.exists()
    assert spool.claim(10) == []  # the bad row is set aside, not handed out again
    assert spool.count() == 3
    assert [owner for _, _, _, owner in raw_rows(path)][1] == QUARANTINED


def test_the_file_and_its_companions_are_created_with_mode_0600(path: str) -> None:
    old = os.umask(0o002)  # a permissive umask must not widen the modes
    try:
        with SqliteSpool(path, durable=True) as spool:
            spool.append("k", 1)  # opens the owner file and the log
            names = sorted(os.listdir(os.path.dirname(path)))
            assert len(names) == 2, names
            assert names[1].startswith(f"events.db-owner-{os.getpid()}-"), names
            token = names[1][len("events.db-owner-"):]  # this process's owner token: its pid and a nonce
            assert names[0] == f"events.db-log-{token}-0"
            spool.count()  # opens the file and its WAL
            names = sorted(os.listdir(os.path.dirname(path)))
            assert names[0] == "events.db"
            assert names[3:] == ["events.db-shm", "events.db-wal"]
            for name in names:
                assert os.stat(os.path.join(os.path.dirname(path), name)).st_mode & 0o777 == 0o600, name
    finally:
        os.umask(old)
    assert sorted(os.listdir(os.path.dirname(path))) == ["events.db"]  # close tidies up
    assert [item for _, _, item, _ in raw_rows(path)] == ["1"]  # the unacked append, copied at close


def test_an_existing_file_keeps_its_mode(path: str) -> None:
    with open(path, "wb"):
        pass
    os.chmod(path, 0o640)
    with SqliteSpool(path) as spool:
        spool.put([(None, 1)])
    assert os.stat(path).st_mode & 0o777 == 0o640


# -- claiming ----------------------------------------------------------------------


def test_claim_ack_release_oldest_first(spool: SqliteSpool) -> None:
    ids = spool.put([(None, n) for n in range(10)])
    assert ids == sorted(ids)
    first = spool.claim(4)
    assert [item for _, _, item in first] == [0, 1, 2, 3]
    second = spool.claim(4)
    assert [item for _, _, item in second] == [4, 5, 6, 7]
    assert spool.release([row_id for row_id, _, _ in first]) == 4
    assert [item for _, _, item in spool.claim(100)] == [0, 1, 2, 3, 8, 9]
    assert spool.ack([row_id for row_id, _, _ in second]) == 4
    assert spool.ack([row_id for row_id, _, _ in second]) == 0  # already gone
    assert spool.count() == 6
    assert spool.ack([]) == 0
    with pytest.raises(ValueError, match="limit"):
        spool.claim(0)


def test_a_spool_can_ack_and_release_only_its_own_rows(path: str) -> None:
    with SqliteSpool(path) as one, SqliteSpool(path) as two:
        ids = one.put([(None, n) for n in range(6)])
        assert two.ack(ids) == 0  # two never claimed anything
        mine = [row_id for row_id, _, _ in one.claim(3)]
        theirs = [row_id for row_id, _, _ in two.claim(10)]
        assert mine + theirs == ids  # no row to both
        assert two.ack(mine) == 0
        assert two.release(mine) == 0
        assert one.claim(10) == []
        one.close()  # frees what it held
        assert [row_id for row_id, _, _ in two.claim(10)] == mine
        assert two.count() == 6


CLAIMER = """
    import sys
    from batchdispatch.spool import SqliteSpool
    with SqliteSpool({path!r}) as spool:
        sys.stdin.readline()
        rows = spool.claim(7)
        print(" ".join(str(row_id) for row_id, _, _ in rows), flush=True)
        sys.stdin.readline()  # "" once the parent closes stdin: both go on at once
        while rows:
            spool.ack([row_id for row_id, _, _ in rows])
            rows = spool.claim(7)
            print(" ".join(str(row_id) for row_id, _, _ in rows), flush=True)
"""


def test_two_processes_claiming_from_one_file_get_each_row_once(spool: SqliteSpool, path: str) -> None:
    ids = spool.put([(n % 5, {"n": n}) for n in range(3000)])
    children = [spawn(CLAIMER.format(path=path)) for _ in range(2)]
    firsts = []
    for child in children:  # each holds its first claim while the other claims: no row to both
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        firsts.append(child.stdout.readline())
    for child in children:
        assert child.stdin is not None
        child.stdin.close()  # from now on both claim as fast as they can
    outs = []
    for child, first in zip(children, firsts):
        assert child.stdout is not None
        assert child.stderr is not None
        out = child.stdout.read()
        err = child.stderr.read()
        assert child.wait(timeout=60) == 0, err
        child.stdout.close()
        child.stderr.close()
        outs.append([int(word) for word in (first + out).split()])
    assert all(outs)
    claimed = outs[0] + outs[1]
    assert sorted(claimed) == ids
    assert len(set(claimed)) == len(claimed)
    assert spool.count() == 0


HOLDER = """
    import sys
    from batchdispatch.spool import SqliteSpool
    spool = SqliteSpool({path!r})
    rows = spool.claim(10)
    print(" ".join(str(row_id) for row_id, _, _ in rows), flush=True)
    sys.stdin.readline()  # hold the claims until killed
"""


def test_the_claims_of_a_killed_process_are_handed_out_again(spool: SqliteSpool, path: str) -> None:
    ids = spool.put([(None, n) for n in range(15)])
    holder = spawn(HOLDER.format(path=path))
    assert holder.stdout is not None
    held = [int(word) for word in holder.stdout.readline().split()]
    assert held == ids[:10]
    try:
        # Alive: its rows are not ours.
        assert [row_id for row_id, _, _ in spool.claim(100)] == ids[10:]
    finally:
        kill(holder)
    rows = spool.claim(100)
    assert [row_id for row_id, _, _ in rows] == held
    assert [item for _, _, item in rows] == list(range(10))
    # The dead holder's owner file is gone; this process's (its token starts with the pid) stays.
    owners = [name for name in os.listdir(os.path.dirname(path)) if "-owner-" in name]
    assert len(owners) == 1, owners
    assert owners[0].startswith(f"events.db-owner-{os.getpid()}-"), owners


def test_rows_of_an_owner_whose_file_is_gone_are_freed(spool: SqliteSpool, path: str) -> None:
    spool.put([(None, 1)])
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE spool SET owner = '99999-0123456789abcdef'")
    finally:
        conn.close()
    assert [item for _, _, item in spool.claim(5)] == [1]


# -- durable appends -------------------------------------------------------------


def test_appends_from_8_threads_are_logged_once_each_and_copied_in_order_at_close(path: str) -> None:
    per_thread = 300
    results: List[List[int]] = [[] for _ in range(8)]
    errors: List[BaseException] = []
    with SqliteSpool(path, durable=True) as spool:
        barrier = threading.Barrier(8)

        def produce(t: int) -> None:
            try:
                barrier.wait()
                for n in range(per_thread):
                    results[t].append(spool.append(f"t{t}", [t, n]))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        all_ids = [row_id for ids in results for row_id in ids]
        assert len(set(all_ids)) == 8 * per_thread
        assert all(row_id < 0 for row_id in all_ids)  # log records, not rows
        assert spool.count() == 8 * per_thread
        # The appends are this spool's: nobody else may claim them while it lives.
        with SqliteSpool(path) as other:
            assert other.claim(10) == []
        # Even threads' items were delivered; the odd ones are left at close.
        delivered = [row_id for t in range(0, 8, 2) for row_id in results[t]]
        assert spool.ack(delivered) == len(delivered)
        assert spool.ack(delivered) == 0  # acked once only
        assert spool.count() == 4 * per_thread
    rows = raw_rows_decoded(path)
    assert len(rows) == 4 * per_thread
    for t in range(1, 8, 2):
        assert [item for _, key, item in rows if key == f"t{t}"] == [[t, n] for n in range(per_thread)]


def test_a_record_cut_short_by_a_kill_costs_only_itself(path: str) -> None:
    """A kill may cut the record being written; another thread's whole record then follows it.
    A real log, of a process killed after four appends and an ack, is cut here as such kills cut
    it (each record starts with the record separator, 0x1e); the next claim takes what is whole."""
    result = run_python(f"""
        import os, signal
        from batchdispatch.spool import SqliteSpool
        spool = SqliteSpool({path!r}, durable=True)
        ids = [spool.append("k", n) for n in range(4)]
        assert spool.ack(ids[:1]) == 1
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert result.returncode == -signal.SIGKILL, result.stderr
    directory = os.path.dirname(path)
    [segment] = [os.path.join(directory, name) for name in os.listdir(directory) if "-log-" in name]
    with open(segment, "rb") as f:
        records = [b"\x1e" + part for part in f.read().split(b"\x1e")[1:]]
    assert len(records) == 5  # four items, then the ack of the first
    whole, ack = records[:4], records[4]
    with open(segment, "wb") as f:
        f.write(whole[0] + whole[1][:-7] + whole[2] + ack + whole[3][:-1])
    with SqliteSpool(path) as spool:  # the dead process's log is copied into the table
        assert [(key, item) for _, key, item in spool.claim(10)] == [("k", 2)]  # 0 acked, 1 and 3 cut short
    assert [item for _, _, item, _ in raw_rows(path)] == ["2"]  # nothing else was copied, not even set aside


def test_append_after_close_raises_closed_and_leaves_no_log(path: str) -> None:
    spool = SqliteSpool(path, durable=True)
    spool.append("k", 1)
    spool.close()
    with pytest.raises(SpoolError) as info:
        spool.append("k", 2)
    assert info.value.kind == "closed"
    assert sorted(os.listdir(os.path.dirname(path))) == ["events.db"]
    assert [item for _, _, item, _ in raw_rows(path)] == ["1"]


def test_log_segments_rotate_and_go_once_every_record_is_acked(path: str) -> None:
    directory = os.path.dirname(path)
    pad = "x" * (LOG_SEGMENT_BYTES // 15)  # a segment is full after 15 items: 90 fill six

    def logs() -> List[str]:
        return sorted(name for name in os.listdir(directory) if "-log-" in name)

    with SqliteSpool(path, durable=True) as spool:
        ids = [spool.append("k", {"n": n, "pad": pad}) for n in range(100)]
        assert len(logs()) > 3
        assert spool.ack(ids[:90]) == 90
        assert len(logs()) == 1  # the retired segments held only acked records
        assert spool.count() == 10
    assert logs() == []
    assert [json.loads(item)["n"] for _, _, item, _ in raw_rows(path)] == list(range(90, 100))


def raw_rows_decoded(path: str) -> List[Any]:
    return [(row_id, json.loads(key), json.loads(item)) for row_id, key, item, _ in raw_rows(path)]


APPENDER = """
    import sys
    from batchdispatch.spool import SqliteSpool
    spool = SqliteSpool({path!r}, durable=True)
    n = 0
    while True:
        row_id = spool.append("k", n)
        sys.stdout.write(f"{{row_id}} {{n}}\\n")
        sys.stdout.flush()
        n += 1
"""


@pytest.mark.parametrize("round_", range(3))
def test_every_append_that_returned_before_a_sigkill_is_claimed_after_it(path: str, round_: int) -> None:
    child = spawn(APPENDER.format(path=path))
    assert child.stdout is not None
    wanted = random.randint(20, 800)
    lines = [child.stdout.readline() for _ in range(wanted)]
    lines.append(kill(child))
    returned = {}
    for line in "".join(lines).splitlines():
        parts = line.split()
        if len(parts) == 2:  # the last line may be cut by the kill
            returned[int(parts[0])] = int(parts[1])
    assert len(returned) >= wanted
    with SqliteSpool(path) as spool:
        rows = spool.claim(1_000_000)  # the dead appender's log is copied into the table
        assert spool.claim(10) == []  # once
    found = [item for _, _, item in rows]
    assert found == list(range(len(found)))  # in order, nothing else, no gap
    assert set(returned.values()) <= set(found)
    assert not [name for name in os.listdir(os.path.dirname(path)) if "-log-" in name]  # tidied up


def test_append_after_fork_uses_a_fresh_connection_in_the_child(path: str) -> None:
    result = run_python(f"""
        import os, sys, threading, traceback, warnings
        from batchdispatch.spool import SqliteSpool

        def open_files():  # {{descriptor: the spool's file it is open on}}, from /proc/self/fd
            found = {{}}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{{fd}}")
                except OSError:  # the listing's own descriptor, closed meanwhile
                    continue
                if os.path.dirname(target) == os.path.dirname({path!r}):
                    found[int(fd)] = os.path.basename(target)
            return found

        def named(files, prefix):
            return [name for name in files.values() if name.startswith(prefix)]

        spool = SqliteSpool({path!r}, durable=True)
        spool.append("parent", 1)
        spool.count()
        # The parent has the file and its own log open (named by its token, which starts with its pid).
        assert named(open_files(), "events.db-log-" + str(os.getpid()) + "-"), open_files()
        assert "events.db" in open_files().values()
        # A thread of the parent keeps appending while the process forks.
        stop = threading.Event()
        def busy():
            while not stop.is_set():
                spool.append("thread", 0)
        thread = threading.Thread(target=busy)
        thread.start()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking a threaded process
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                at_fork = open_files()
                # The fork hook closed the parent's idle connection: no SQLite state is inherited.
                assert "events.db" not in at_fork.values(), at_fork
                row_id = spool.append("child", 2)
                # The child appends to a log of its own, under an owner token of its own (its pid);
                # the parent's log is not open here.
                files = open_files()
                mine = "events.db-log-" + str(os.getpid()) + "-"
                assert [name for name in files.values() if "-log-" in name] == named(files, mine), files
                assert len(named(files, mine)) == 1, files
                assert named(files, "events.db-owner-" + str(os.getpid()) + "-"), files
                spool.count()
                # ... and a connection of its own: the file open on descriptors it did not inherit.
                assert [fd for fd, name in open_files().items() if name == "events.db" and fd not in at_fork]
                spool.close()
                code = 0 if row_id < 0 else 1
            except BaseException:
                traceback.print_exc()  # to the test's stderr, before the exit that skips it
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        stop.set()
        thread.join()
        spool.append("parent", 3)
        spool.close()
        import json, sqlite3
        conn = sqlite3.connect({path!r})
        keys = [json.loads(key) for (key,) in conn.execute("SELECT key FROM spool ORDER BY id")]
        conn.close()
        print(os.waitstatus_to_exitcode(status), keys.count("parent"), keys.count("child"), keys[-1])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "2", "1", "parent"], result.stderr


# -- faults ------------------------------------------------------------------------


def assert_fault(info: Any, path: str, kind: str) -> None:
    error = info.value
    assert error.kind == kind, (error.kind, str(error))
    assert error.path == path
    assert path in str(error)
    assert error.__cause__ is not None


def test_random_bytes_over_the_file_are_a_corrupt_fault(path: str) -> None:
    with SqliteSpool(path) as spool:
        spool.put([(None, n) for n in range(100)])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(random.Random(6).randbytes(size) if hasattr(random, "randbytes") else os.urandom(size))
    with SqliteSpool(path) as spool:
        with pytest.raises(SpoolError) as info:
            spool.claim(10)
        assert_fault(info, path, "corrupt")
        with pytest.raises(SpoolError):
            spool.put([(None, 1)])  # still refused, never written over
    with open(path, "rb") as f:
        assert len(f.read()) == size


def test_a_file_that_is_not_sqlite_is_a_corrupt_fault(path: str) -> None:
    with open(path, "w") as f:
        f.write("this is a log file, not a database\n" * 200)
    with SqliteSpool(path) as spool, pytest.raises(SpoolError) as info:
        spool.count()
    assert_fault(info, path, "corrupt")
    with open(path) as f:
        assert f.read().startswith("this is a log file")


def test_another_applications_database_is_refused(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with SqliteSpool(path) as spool, pytest.raises(SpoolError, match="not a batchdispatch spool") as info:
        spool.put([(None, 1)])
    assert info.value.kind == "corrupt"


def test_a_full_database_is_a_full_fault_and_loses_nothing(path: str, monkeypatch: Any) -> None:
    """SQLite's own size limit (PRAGMA max_page_count), set on the spool's connection as it is
    opened: the file is full two pages past what it holds."""
    with SqliteSpool(path) as spool:
        spool.put([(None, "kept")])
    conn = sqlite3.connect(path)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    real_connect = sqlite3.connect

    def limited(database: str, **kwargs: Any) -> sqlite3.Connection:
        opened = real_connect(database, **kwargs)
        opened.execute(f"PRAGMA max_page_count = {pages + 2}")
        return opened

    monkeypatch.setattr(sqlite3, "connect", limited)
    with SqliteSpool(path) as spool:
        with pytest.raises(SpoolError, match="full") as info:
            spool.put([(None, "x" * 5000) for _ in range(20)])
        assert_fault(info, path, "full")
        assert spool.count() == 1
        assert [item for _, _, item in spool.claim(5)] == ["kept"]


@pytest.fixture
def tiny_fs(tmp_path: Any) -> Iterator[str]:
    """A 256 KiB tmpfs, mounted for the test (root only)."""
    where = tmp_path / "mnt"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(where)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        pytest.skip("needs root and a mountable tmpfs")
    try:
        yield str(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_file_system_is_a_full_fault_and_loses_nothing(tiny_fs: str) -> None:
    path = os.path.join(tiny_fs, "events.db")
    with SqliteSpool(path) as spool:
        spool.put([(None, "kept")])

        def fill() -> None:
            for _ in range(100):
                spool.put([(None, "x" * 4000) for _ in range(10)])

        with pytest.raises(SpoolError) as info:
            fill()
        assert_fault(info, path, "full")
        count = spool.count()
        assert count >= 1
    with SqliteSpool(path) as spool:  # reopened: every committed row is there
        assert spool.count() == count
    rows = raw_rows(path)
    assert len(rows) == count
    assert rows[0][2] == '"kept"'


def test_a_read_only_place_is_a_read_only_fault(tiny_fs: str) -> None:
    path = os.path.join(tiny_fs, "events.db")
    with SqliteSpool(path) as spool:
        spool.put([(None, "kept")])
    subprocess.run(["mount", "-o", "remount,ro", tiny_fs], check=True)
    with SqliteSpool(path) as spool:
        with pytest.raises(SpoolError) as info:
            spool.put([(None, "new")])
        assert_fault(info, path, "read_only")
    fresh = os.path.join(tiny_fs, "fresh.db")
    with SqliteSpool(fresh) as spool, pytest.raises(SpoolError) as info:
        spool.put([(None, 1)])
    assert_fault(info, fresh, "read_only")


def test_a_read_only_file_is_a_read_only_fault(path: str, monkeypatch: Any) -> None:
    """Without root's mounts: SQLite opens the file read-only, as it does when it may not write it."""
    with SqliteSpool(path) as spool:
        spool.put([(None, "kept")])
    real_connect = sqlite3.connect

    def read_only(database: str, **kwargs: Any) -> sqlite3.Connection:
        return real_connect(f"file:{database}?mode=ro", uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with SqliteSpool(path) as spool:
        assert spool.count() == 1
        with pytest.raises(SpoolError) as info:
            spool.put([(None, "new")])
        assert_fault(info, path, "read_only")
    monkeypatch.undo()
    with SqliteSpool(path) as spool:
        assert [item for _, _, item in spool.claim(5)] == ["kept"]


def test_a_lock_held_past_the_timeout_is_a_locked_fault(path: str) -> None:
    with SqliteSpool(path, timeout=0.2) as spool:
        spool.put([(None, 1)])
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            for operation in (lambda: spool.put([(None, 2)]), lambda: spool.claim(1)):
                started = monotonic()
                with pytest.raises(SpoolError) as info:
                    operation()
                assert monotonic() - started < 3
                assert_fault(info, path, "locked")
            started = monotonic()
            assert spool.append(None, 3) < 0  # the log does not wait for SQLite's lock
            assert monotonic() - started < 0.2
            other.execute("COMMIT")
        finally:
            other.close()
        assert spool.put([(None, 4)])
        assert [item for _, _, item in spool.claim(10)] == [1, 4]


# -- lifecycle -----------------------------------------------------------------------


def test_close_is_idempotent_and_later_calls_raise_closed(path: str) -> None:
    spool = SqliteSpool(path)
    spool.put([(None, 1)])
    spool.close()
    spool.close()
    for operation in (spool.count, lambda: spool.put([(None, 2)]), lambda: spool.append(None, 2),
                      lambda: spool.claim(1)):
        with pytest.raises(SpoolError, match="closed") as info:
            operation()
        assert info.value.kind == "closed"


def test_repr_shows_path_and_mode_never_items(path: str) -> None:
    with SqliteSpool(path, durable=True) as spool:
        spool.append(None, {"secret": "hunter2"})
        assert repr(spool) == f"<SqliteSpool {path!r} mode=durable>"
    assert repr(spool) == f"<SqliteSpool {path!r} mode=durable, closed>"
    assert repr(SqliteSpool(path)) == f"<SqliteSpool {path!r} mode=spill>"


def test_a_spool_never_opened_leaves_no_file(path: str) -> None:
    SqliteSpool(path).close()
    assert not os.path.exists(path)
