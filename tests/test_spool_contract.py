"""The Spool contract, run against every implementation through one fixture.

Each test uses the public protocol only (durable, append, put, claim, ack,
release), plus what every implementation offers beside it: opening another
owner on the same storage, and closing one. The docstring of
batchdispatch.spool.Spool is the contract; each test names the part it checks.
A new implementation joins by adding a Harness to IMPLEMENTATIONS.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sqlite3
import threading
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Union

import pytest

from batchdispatch import BackgroundDispatcher
from batchdispatch.exceptions import SpoolError
from batchdispatch.spool import Spool, SqliteSpool

from .services import POSTGRES_PORT, REDIS_PORT, need, unique_name
from .spools import MemorySpool, MemoryStore, busy


class Harness:
    """How the tests make and end owners of one storage of an implementation."""

    #: The storage outlives its owners: closed and opened again, it still holds what was free.
    persistent = False
    #: Owners in other processes share the storage (and an owner's death there frees its pairs).
    shared = False

    def __init__(self, durable: bool) -> None:
        self.durable = durable
        self.opened: List[Any] = []

    def open(self, **options: Any) -> Any:
        """A new owner of the storage, made with *options* (``dumps`` and ``loads``)."""
        spool = self._open(**options)
        self.opened.append(spool)
        return spool

    def close(self, spool: Any) -> None:
        spool.close()

    def busy(self) -> ContextManager[None]:
        """Hold the storage, for the time of a with block, so that a write must wait."""
        raise NotImplementedError

    def _open(self, **options: Any) -> Any:
        raise NotImplementedError

    def store_foreign(self, data: bytes) -> None:
        """Store a free pair whose item is *data*, written by another program than this
        spool (a pickle, say), as one with write access to the storage could."""
        pytest.skip(f"{type(self).__name__} keeps its pairs in this process only")

    def cleanup(self) -> None:
        for spool in self.opened:
            with contextlib.suppress(Exception):
                spool.close()


class SqliteHarness(Harness):
    persistent = True
    shared = True

    def __init__(self, durable: bool, directory: str) -> None:
        super().__init__(durable)
        self.path = os.path.join(directory, "contract.db")

    def _open(self, **options: Any) -> Any:
        return SqliteSpool(self.path, durable=self.durable, timeout=5.0, **options)

    def store_foreign(self, data: bytes) -> None:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                conn.execute("INSERT INTO spool (key, item) VALUES ('null', ?)", (data,))
        finally:
            conn.close()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        SqliteSpool(self.path).close()  # the file exists, with its table
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # another process's write transaction
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class MemoryHarness(Harness):
    def __init__(self, durable: bool, directory: str) -> None:
        super().__init__(durable)
        self.store = MemoryStore("contract")

    def _open(self, **options: Any) -> Any:
        if options:
            pytest.skip("MemorySpool keeps items as they are, with no dumps or loads")
        return MemorySpool(self.store, durable=self.durable)

    def busy(self) -> ContextManager[None]:
        return busy(self.store)


class PostgresHarness(Harness):
    """Owners of one table on the shared PostgreSQL (a table of the test's own, dropped after it)."""

    persistent = True
    shared = True

    def __init__(self, durable: bool, directory: str) -> None:
        super().__init__(durable)
        need("PostgreSQL", POSTGRES_PORT)
        self.psycopg = pytest.importorskip("psycopg")
        self.conninfo = f"host=127.0.0.1 port={POSTGRES_PORT} dbname=test user=postgres"
        self.table = unique_name("spool")

    def _open(self, **options: Any) -> Any:
        from batchdispatch.spool import PostgresSpool

        return PostgresSpool(self.conninfo, table=self.table, durable=self.durable, timeout=5.0, **options)

    def store_foreign(self, data: bytes) -> None:
        with self.psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {self.table} (key, item_bytes) VALUES ('null', %s)", (data,))

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._open().close()  # the tables exist
        with self.psycopg.connect(self.conninfo) as conn:
            conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")  # another host's transaction
            yield
            conn.rollback()

    def cleanup(self) -> None:
        super().cleanup()
        with self.psycopg.connect(self.conninfo, autocommit=True) as conn:
            for suffix in ("", "_owners", "_dead"):
                conn.execute(f"DROP TABLE IF EXISTS {self.table}{suffix}")


class RedisHarness(Harness):
    """Owners of one spool on the shared Redis (keys of the test's own, deleted after it)."""

    persistent = True
    shared = True

    def __init__(self, durable: bool, directory: str) -> None:
        super().__init__(durable)
        need("Redis", REDIS_PORT)
        self.redis = pytest.importorskip("redis")
        self.url = f"redis://127.0.0.1:{REDIS_PORT}/0"
        self.name = unique_name("spool")

    def _open(self, **options: Any) -> Any:
        from batchdispatch.spool import RedisSpool

        return RedisSpool(self.url, self.name, durable=self.durable, **options)

    def store_foreign(self, data: bytes) -> None:
        """The stream's group, and the consumer the spool keeps free entries pending to, are read
        from the server: those of the free pairs stored before (and only free pairs)."""
        client = self.redis.Redis.from_url(self.url)  # bytes: the data is not text
        queue = f"{{{self.name}}}:q"
        [group] = [each["name"] for each in client.xinfo_groups(queue)]
        [free] = {entry["consumer"] for entry in client.xpending_range(queue, group, "-", "+", 1000)}
        client.xadd(queue, {"k": "null", "d": data, "t": "b"})
        client.xreadgroup(group, free, {queue: ">"}, count=1)  # free, as the spool keeps its free entries
        client.close()

    def busy(self) -> ContextManager[None]:
        pytest.skip(
            "Redis has no lock a write waits for; a server that does not answer by the deadline fails the "
            "operation as 'unreachable' (tested in test_server_spools), and the write may still land"
        )

    def cleanup(self) -> None:
        super().cleanup()
        client = self.redis.Redis.from_url(self.url)
        keys = list(client.scan_iter(match=f"{{{self.name}}}:*"))
        if keys:
            client.delete(*keys)
        client.close()


#: name: (Harness class, durable).
IMPLEMENTATIONS: Dict[str, Any] = {
    "sqlite": (SqliteHarness, False),
    "sqlite-durable": (SqliteHarness, True),
    "memory": (MemoryHarness, False),
    "postgres": (PostgresHarness, False),
    "postgres-durable": (PostgresHarness, True),
    "redis": (RedisHarness, False),
    "redis-durable": (RedisHarness, True),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def harness(request: Any, tmp_path: Any) -> Iterator[Harness]:
    cls, durable = IMPLEMENTATIONS[request.param]
    made = cls(durable, str(tmp_path))
    yield made
    made.cleanup()


def items(rows: List[Any]) -> List[Any]:
    return [item for _, _, item in rows]


def ids(rows: List[Any]) -> List[int]:
    return [row_id for row_id, _, _ in rows]


# -- the members ----------------------------------------------------------------------


def test_it_is_a_spool_with_the_durable_flag_it_was_given(harness: Harness) -> None:
    spool = harness.open()
    assert isinstance(spool, Spool)
    assert spool.durable is harness.durable


# -- items, ids and order --------------------------------------------------------------


def test_put_pairs_come_back_from_claim_oldest_first_with_their_keys(harness: Harness) -> None:
    spool = harness.open()
    pairs = [(None, {"n": 0}), ("user-1", [1, "two"]), (7, "text"), (("tenant", 3), {"n": 3}), (True, 4.5)]
    put_ids = spool.put(pairs)
    assert len(set(put_ids)) == len(pairs)
    assert all(isinstance(row_id, int) and row_id > 0 for row_id in put_ids)
    rows = spool.claim(100)
    assert ids(rows) == put_ids
    assert [(key, item) for _, key, item in rows] == pairs  # a tuple key comes back a tuple
    assert spool.claim(100) == []
    assert spool.put([]) == []


def test_text_and_bytes_from_dumps_come_back_in_order_from_small_and_large_puts(harness: Harness) -> None:
    # A dumps may return text for some items and bytes for others. PostgresSpool
    # writes a few pairs as a VALUES list and many as arrays: both keep each
    # item's data and the order.
    def dumps(item: str) -> Union[str, bytes]:
        return item.encode() if item.startswith("b") else item

    def loads(data: Union[str, bytes]) -> str:
        return data.decode() if isinstance(data, bytes) else data

    spool = harness.open(dumps=dumps, loads=loads)
    few = [("k", "t0"), (None, "b1"), (("tenant", 2), "t2")]
    many = [(f"k{n % 3}", ("b" if n % 2 else "t") + str(n)) for n in range(3, 43)]
    put_ids = spool.put(few) + spool.put(many) + spool.put(few[:1])
    rows = spool.claim(1000)
    assert ids(rows) == put_ids
    assert [(key, item) for _, key, item in rows] == few + many + few[:1]


def test_claim_takes_at_most_limit_and_checks_it(harness: Harness) -> None:
    spool = harness.open()
    spool.put([(None, n) for n in range(5)])
    assert items(spool.claim(2)) == [0, 1]
    assert items(spool.claim(2)) == [2, 3]
    assert items(spool.claim(2)) == [4]
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="limit"):
            spool.claim(bad)


def test_order_per_key_holds_across_release_and_later_puts(harness: Harness) -> None:
    """Never a pair while an older free pair of its key stays free; a released pair keeps its place."""
    spool = harness.open()
    spool.put([("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")])
    first = spool.claim(1)
    assert items(first) == ["a1"]
    spool.put([("a", "a3"), ("b", "b3")])
    assert spool.release(ids(first)) == 1
    seen: Dict[Any, List[str]] = {}
    while True:
        rows = spool.claim(2)
        if not rows:
            break
        for _, key, item in rows:
            seen.setdefault(key, []).append(item)
    assert seen == {"a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"]}


def test_appended_ids_are_negative_and_put_ids_positive(harness: Harness) -> None:
    spool = harness.open()
    appended = [spool.append("k", n) for n in range(3)]
    assert all(row_id < 0 for row_id in appended)
    assert len(set(appended)) == 3
    assert all(row_id > 0 for row_id in spool.put([("k", 9)], claim=True))


# -- owners: claim, ack, release -----------------------------------------------------------


def test_a_held_pair_goes_to_no_other_owner_and_only_its_owner_acks_or_releases_it(harness: Harness) -> None:
    one, two = harness.open(), harness.open()
    one.put([(None, n) for n in range(3)])
    rows = one.claim(10)
    assert items(rows) == [0, 1, 2]
    assert two.claim(10) == []
    assert two.ack(ids(rows)) == 0  # not held by two: ignored, not counted
    assert two.release(ids(rows)) == 0
    assert one.ack(ids(rows[:1])) == 1
    assert one.ack(ids(rows[:1])) == 0  # twice is harmless
    assert one.ack([123456789]) == 0  # unknown
    assert one.release(ids(rows[1:])) == 2
    assert items(two.claim(10)) == [1, 2]


def test_acked_pairs_are_gone_for_every_owner_even_after_their_owner_ends(harness: Harness) -> None:
    one = harness.open()
    one.put([(None, "acked"), (None, "kept")])
    rows = one.claim(10)
    one.ack(ids(rows[:1]))
    harness.close(one)  # the pair it still held becomes free
    assert items(harness.open().claim(10)) == ["kept"]


def test_parked_pairs_are_held_by_their_owner_until_it_ends(harness: Harness) -> None:
    one, two = harness.open(), harness.open()
    parked = one.put([(None, "p1"), (None, "p2"), (None, "p3")], claim=True)
    assert two.claim(10) == []
    assert one.ack(parked[:1]) == 1
    assert one.release(parked[1:2]) == 1
    assert items(two.claim(10)) == ["p2"]
    harness.close(one)
    assert items(two.claim(10)) == ["p3"]


def test_appended_pairs_are_held_until_acked_and_freed_in_order_when_their_owner_ends(
    harness: Harness,
) -> None:
    one, two = harness.open(), harness.open()
    appended = [one.append(("k", n % 2), {"n": n}) for n in range(6)]
    assert two.claim(10) == []
    assert one.ack(appended[:2]) == 2
    assert one.ack(appended[:2]) == 0
    with pytest.raises(ValueError, match="append"):
        one.release(appended[2:])
    two.put([(("k", 0), {"n": -1})])  # free before the appended ones are: older than they
    harness.close(one)
    rows = two.claim(10)
    assert all(row_id > 0 for row_id in ids(rows))
    by_key: Dict[Any, List[int]] = {}
    for _, key, item in rows:
        by_key.setdefault(key, []).append(item["n"])
    assert by_key == {("k", 0): [-1, 2, 4], ("k", 1): [3, 5]}


# -- dead letters ------------------------------------------------------------------------


def dead(spool: Any, **where: Any) -> List[Any]:
    return [(letter.key, letter.item, letter.attempts) for letter in spool.dead_letters(**where)]


def test_buried_pairs_are_never_claimed_and_keep_their_error_attempts_and_time(harness: Harness) -> None:
    one, two = harness.open(), harness.open()
    one.put([("a", "claimed"), ("a", "kept")])
    claimed = one.claim(1)
    parked = one.put([("b", "parked")], claim=True)
    appended = one.append("c", "appended")
    before = time.time()
    error = ValueError("400 Bad Request: field 'x'")
    entries = [(ids(claimed)[0], "a", "claimed"), (parked[0], "b", "parked"), (appended, "c", "appended"),
               (0, ("d", 1), {"only": "in memory"})]
    assert one.bury(entries, error=error, attempts=3) == 4
    assert dead(one) == [("a", "claimed", 3), ("b", "parked", 3), ("c", "appended", 3),
                         (("d", 1), {"only": "in memory"}, 3)]
    letter = one.dead_letters()[0]
    assert letter.error == "ValueError: 400 Bad Request: field 'x'"
    assert before - 1 <= letter.at <= time.time() + 1
    assert one.ack(ids(claimed)) == 0  # no longer held: it is dead
    harness.close(one)  # ending the owner frees nothing that died
    assert items(two.claim(10)) == ["kept"]
    assert len(two.dead_letters()) == 4


def test_bury_ignores_pairs_this_owner_does_not_hold(harness: Harness) -> None:
    one, two = harness.open(), harness.open()
    one.put([(None, "x")])
    rows = one.claim(1)
    assert two.bury([(ids(rows)[0], None, "x")], error=RuntimeError("no"), attempts=1) == 0
    assert two.dead_letters() == []
    assert one.ack(ids(rows)) == 1  # still one's
    with pytest.raises(ValueError, match="attempts"):
        one.bury([], attempts=-1)


def test_bury_refuses_what_it_cannot_encode_and_keeps_the_rest(harness: Harness) -> None:
    spool = harness.open()
    with pytest.raises(SpoolError) as info:
        spool.bury([(0, None, "a"), (0, None, object()), (0, None, "b")], error=None, attempts=1)
    assert info.value.kind == "encode"
    assert info.value.refused == [1]
    assert [letter.item for letter in spool.dead_letters()] == ["a", "b"]


def test_requeued_dead_letters_are_free_again_after_the_waiting_pairs_in_the_order_they_died(
    harness: Harness,
) -> None:
    spool = harness.open()
    spool.bury([(0, "k", n) for n in range(3)] + [(0, "other", "o")], error=KeyError("x"), attempts=2)
    spool.put([("k", "waiting")])
    assert spool.requeue(key="k") == 3
    assert dead(spool) == [("other", "o", 2)]
    assert items(spool.claim(10)) == ["waiting", 0, 1, 2]
    assert dead(spool, key="other") == [("other", "o", 2)]
    assert dead(spool, key="k") == []


# -- errors ------------------------------------------------------------------------------


def test_put_writes_what_it_can_encode_and_names_the_rest(harness: Harness) -> None:
    spool = harness.open()
    with pytest.raises(SpoolError) as info:
        spool.put([(None, "a"), (None, object()), (object(), "b"), (None, "c")])
    error = info.value
    assert error.kind == "encode"
    assert error.refused == [1, 2]
    assert error.rows is not None
    assert len(error.rows) == 4
    assert error.rows[1] == error.rows[2] == 0
    assert all(row_id > 0 for row_id in (error.rows[0], error.rows[3]))
    assert "object" in str(error)
    rows = spool.claim(10)
    assert items(rows) == ["a", "c"]
    assert ids(rows) == [error.rows[0], error.rows[3]]


def test_an_append_that_cannot_be_encoded_stores_nothing(harness: Harness) -> None:
    one = harness.open()
    with pytest.raises(SpoolError) as info:
        one.append(None, {1, 2})
    assert info.value.kind == "encode"
    assert info.value.refused is None
    harness.close(one)
    assert harness.open().claim(10) == []


class _Payload:
    """Unpickling it creates the file at *marker*: what a pickle read back would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


def test_an_item_stored_by_another_program_is_never_unpickled_nor_handed_out(
    harness: Harness, tmp_path: Any,
) -> None:
    marker = tmp_path / "unpickled"
    spool = harness.open()
    spool.put([(None, "before")])
    harness.store_foreign(pickle.dumps(_Payload(str(marker))))
    spool.put([(None, "after")])
    assert items(spool.claim(10)) == ["before", "after"]
    assert not marker.exists()
    assert spool.claim(10) == []  # set aside: not handed out again, to this owner or another
    assert harness.open().claim(10) == []
    assert not marker.exists()


def test_a_closed_spool_raises_closed(harness: Harness) -> None:
    spool = harness.open()
    harness.close(spool)
    harness.close(spool)  # idempotent
    calls: List[Callable[[], object]] = [
        lambda: spool.append(None, 1), lambda: spool.put([(None, 1)]), lambda: spool.claim(1),
        lambda: spool.ack([1]), lambda: spool.release([1]),
    ]
    for call in calls:
        with pytest.raises(SpoolError) as info:
            call()
        assert info.value.kind == "closed"


def test_bad_timeouts_are_the_callers_mistake(harness: Harness) -> None:
    spool = harness.open()
    with pytest.raises(ValueError, match="timeout"):
        spool.put([(None, 1)], timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        spool.claim(1, timeout="soon")
    assert spool.put([(None, 1)], timeout=0) != []
    assert items(spool.claim(1, timeout=0)) == [1]


def test_an_operation_waits_no_longer_than_its_timeout_and_changes_nothing(harness: Harness) -> None:
    spool = harness.open()
    spool.put([(None, "before")])
    with harness.busy():
        started = time.monotonic()
        with pytest.raises(SpoolError) as info:
            spool.put([(None, "during")], timeout=0.3)
        assert info.value.kind == "locked"
        assert time.monotonic() - started < 3
    assert items(spool.claim(10)) == ["before"]


# -- threads ------------------------------------------------------------------------------


def test_threads_write_at_once_and_each_keys_order_holds(harness: Harness) -> None:
    one = harness.open()
    written: List[int] = []

    def produce(thread: int) -> None:
        for n in range(40):
            if n % 2:
                written.append(one.append(f"t{thread}", n))
            else:
                written.extend(one.put([(f"t{thread}", n)]))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(written)) == 160
    harness.close(one)  # the appended ones become free, after the put ones
    rows = harness.open().claim(1000)
    assert len(rows) == 160
    for t in range(4):
        mine = [item for _, key, item in rows if key == f"t{t}"]
        assert [n for n in mine if n % 2 == 0] == list(range(0, 40, 2))
        assert [n for n in mine if n % 2] == list(range(1, 40, 2))


# -- persistence and other processes ---------------------------------------------------------------


def test_what_was_stored_outlives_its_owners(harness: Harness) -> None:
    if not harness.persistent:
        pytest.skip("the storage lives as long as its owners")
    one = harness.open()
    one.put([(None, n) for n in range(4)])
    rows = one.claim(3)
    one.ack(ids(rows[:1]))
    appended = one.append(None, "logged")
    assert appended < 0
    harness.close(one)
    assert items(harness.open().claim(10)) == [1, 2, 3, "logged"]


def _in_child(work: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run *work* in a forked child that exits without closing anything; return what it reported."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read)
            os.write(write, json.dumps(work()).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        report = json.loads(f.read() or b"{}")
    _, status = os.waitpid(pid, 0)
    assert "error" not in report, report
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(report)


def test_after_fork_the_child_is_a_new_owner_and_the_parent_keeps_what_it_held(harness: Harness) -> None:
    spool = harness.open()
    spool.put([(None, "claimed-1"), (None, "claimed-2")])
    claimed = ids(spool.claim(2))
    parked = spool.put([(None, "parked")], claim=True)
    appended = [spool.append(None, "appended")]
    spool.put([(None, "free")])

    def child() -> Dict[str, Any]:
        return {
            "ack": spool.ack(claimed + parked + appended),
            "release": spool.release(claimed + parked),
            "claimed": items(spool.claim(10)),
            "put": len(spool.put([(None, "from the child")])),
        }

    report = _in_child(child)
    assert report == {"ack": 0, "release": 0, "claimed": ["free"], "put": 1}
    # The parent's use goes on undisturbed: what it held is still its own.
    assert spool.ack(claimed) == 2
    assert spool.ack(parked + appended) == 2
    left = items(spool.claim(10))
    if harness.shared:  # the child ended without closing: what it held is free again, and its put is there
        assert left == ["free", "from the child"]
    else:  # the child worked on its own copy
        assert left == ["free"]


def test_an_owner_whose_process_died_leaves_its_pairs_free_to_others(harness: Harness) -> None:
    if not harness.shared:
        pytest.skip("owners in other processes do not share this storage")
    harness.open().put([(None, "claimed"), (None, "free")])

    def child() -> Dict[str, Any]:
        dying = harness.open()  # opened in the child, never closed (it ends with os._exit): it dies holding
        claimed = items(dying.claim(1))
        dying.append(None, "appended")
        return {"claimed": claimed}

    assert _in_child(child) == {"claimed": ["claimed"]}
    survivor = harness.open()
    assert sorted(items(survivor.claim(10))) == ["appended", "claimed", "free"]


# -- a dispatcher on it ------------------------------------------------------------------------------


def test_a_dispatcher_delivers_through_any_spool_and_leaves_it_empty(harness: Harness) -> None:
    spool = harness.open()
    received: List[Any] = []
    failing = [True]

    def send(batch: List[Any]) -> None:
        if failing[0]:
            raise ConnectionError("the endpoint is down")
        received.extend(batch)

    dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(
        send, delay=0.01, spool=spool, spill_exhausted=True, name="contract",
    )
    try:
        for n in range(5):
            dispatcher.enqueue({"n": n})
        dispatcher.flush(timeout=10)
        assert received == []
        failing[0] = False
        dispatcher.shutdown(timeout=10)
    finally:
        dispatcher.shutdown(timeout=10)
    assert dispatcher.stats().spool_faults == {}
    harness.close(spool)  # given up, parked: free for the next owner
    later = harness.open()
    rows = later.claim(100)
    assert sorted(item["n"] for item in items(rows)) == list(range(5))
    received.clear()
    replaying: BackgroundDispatcher[Any] = BackgroundDispatcher(send, delay=0.01, spool=later, name="replay")
    try:
        later.release(ids(rows))
        replaying.flush(timeout=10)
    finally:
        replaying.shutdown(timeout=10)
    assert sorted(item["n"] for item in received) == list(range(5))
    assert harness.open().claim(100) == []
