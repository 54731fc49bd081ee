"""What RedisSpool and PostgresSpool add to the contract: leases, faults of their
server, deadlines, secrets and arguments. Real servers throughout: the shared ones,
and private ones on free ports where a test stops or pauses its server."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Iterator, List

import pytest

from batchdispatch import BackgroundDispatcher
from batchdispatch.exceptions import SpoolError

from .conftest import Recorder, run_python
from .services import POSTGRES_PORT, REDIS_PORT, PostgresServer, RedisServer, need, unique_name

redis = pytest.importorskip("redis")
psycopg = pytest.importorskip("psycopg")

PG = f"host=127.0.0.1 port={POSTGRES_PORT} dbname=test user=postgres"
REMOTE = "elsewhere:0123456789ab:4026531836:4242:feedfacecafe"  # an owner on another host


@pytest.fixture
def redis_spool_name() -> Iterator[str]:
    need("Redis", REDIS_PORT)
    name = unique_name("spool")
    yield name
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    keys = list(client.scan_iter(match=f"{{{name}}}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def pg_table() -> Iterator[str]:
    need("PostgreSQL", POSTGRES_PORT)
    table = unique_name("spool")
    yield table
    with psycopg.connect(PG, autocommit=True) as c:
        for suffix in ("", "_owners", "_dead"):
            c.execute(f"DROP TABLE IF EXISTS {table}{suffix}")



# -- connections: a closed spool holds none of its own ------------------------------------------


def _redis_client_ids(client: Any) -> set:
    return {entry["id"] for entry in client.client_list()}


def test_a_closed_redis_spool_leaves_no_connection_of_its_own_and_the_callers_alone(
    redis_spool_name: str,
) -> None:
    from batchdispatch.spool import RedisSpool

    url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    watcher = redis.Redis.from_url(url)
    given = redis.Redis.from_url(url)
    try:
        before = _redis_client_ids(watcher)
        for client in (url, given):
            spool = RedisSpool(client, redis_spool_name, durable=True)
            spool.append("k", 1)  # a lease, its heartbeat and a group-commit write
            spool.put([("k", 2)])
            spool.ack([row for row, _, _ in spool.claim(10, timeout=0.5)])  # a client of short timeouts too
            spool.close(timeout=0.5)
        given.ping()  # the caller's client still works ...
        left = _redis_client_ids(watcher) - before
        assert len(left) == 1  # ... and is all that is left: the spool made from the URL closed its own
    finally:
        given.close()
        watcher.close()


# -- leases: an owner elsewhere is dead only once its lease has run out -----------------------


def test_redis_frees_an_owner_elsewhere_once_its_lease_is_gone(redis_spool_name: str) -> None:
    from batchdispatch.spool import RedisSpool

    url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    client = redis.Redis.from_url(url)
    with RedisSpool(url, redis_spool_name) as spool:
        spool.put([(None, "held elsewhere")])
        q = f"{{{redis_spool_name}}}:q"
        entry = client.xpending_range(q, "batchdispatch", "-", "+", 1)[0]["message_id"]
        client.xclaim(q, "batchdispatch", REMOTE, 0, [entry], justid=True)  # a host elsewhere holds it
        lease = f"{{{redis_spool_name}}}:lease:{REMOTE}"
        client.set(lease, b"1", px=60_000)
        assert spool.claim(10) == []  # its lease runs: not ours to take
        client.delete(lease)  # it stopped renewing, and the lease ran out
        assert [item for _, _, item in spool.claim(10)] == ["held elsewhere"]
    client.close()


def test_postgres_frees_an_owner_elsewhere_once_its_lease_ran_out(pg_table: str) -> None:
    from batchdispatch.spool import PostgresSpool

    with PostgresSpool(PG, table=pg_table) as spool:
        spool.put([(None, "held elsewhere")])
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"UPDATE {pg_table} SET owner = %s", (REMOTE,))
            conn.execute(f"INSERT INTO {pg_table}_owners VALUES (%s, now() + interval '1 minute')", (REMOTE,))
            assert spool.claim(10) == []  # its lease runs: not ours to take
            conn.execute(f"UPDATE {pg_table}_owners SET expires = now() - interval '1 second'")
        assert [item for _, _, item in spool.claim(10)] == ["held elsewhere"]


def test_postgres_renews_its_lease_while_it_lives(pg_table: str) -> None:
    from batchdispatch.spool import PostgresSpool

    with PostgresSpool(PG, table=pg_table, lease=0.6) as spool:
        spool.put([(None, 1)], claim=True)  # an owner now: its lease is taken
        with psycopg.connect(PG, autocommit=True) as conn:
            def expires() -> Any:
                return conn.execute(f"SELECT expires FROM {pg_table}_owners").fetchone()[0]

            first = expires()
            deadline = time.monotonic() + 10
            while expires() == first:  # renewed every 0.2 s by its heartbeat
                assert time.monotonic() < deadline, "the lease was never renewed"
                time.sleep(0.05)


def test_redis_renews_its_lease_while_it_lives(redis_spool_name: str) -> None:
    from batchdispatch.spool import RedisSpool

    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    with RedisSpool(f"redis://127.0.0.1:{REDIS_PORT}/0", redis_spool_name, lease=0.6) as spool:
        spool.put([(None, 1)], claim=True)  # an owner now: its lease is taken
        leases = list(client.scan_iter(match=f"{{{redis_spool_name}}}:lease:*"))
        assert len(leases) == 1
        # Unrenewed, the key would expire 0.6 s after it was set: it must outlive three
        # leases, its time to live going back up at each renewal (every 0.2 s).
        ends = time.monotonic() + 1.8
        renewed, last = 0, client.pttl(leases[0])
        while time.monotonic() < ends:
            left = client.pttl(leases[0])
            assert left > 0, "the lease ran out while its owner lived"
            renewed += left > last
            last = left
            time.sleep(0.05)  # polling the server's view of the lease
        assert renewed >= 3
    client.close()


# -- the server fails: a fault, and the dispatcher goes on in memory ---------------------------------


def _spools_on(server: Any, kind: str, name: str) -> Any:
    from batchdispatch.spool import PostgresSpool, RedisSpool

    if kind == "redis":
        return RedisSpool(server.url, name, durable=True, timeout=2)
    return PostgresSpool(server.conninfo, table=name, durable=True, timeout=2)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_server_that_is_gone_is_an_unreachable_fault_and_delivery_goes_on(kind: str) -> None:
    server = RedisServer() if kind == "redis" else PostgresServer()
    with server:
        spool = _spools_on(server, kind, "gone")
        recorder = Recorder()
        d = BackgroundDispatcher(recorder, delay=0.01, spool=spool)
        try:
            d.enqueue("stored")
            assert d.flush(timeout=10)
            server.stop() if kind == "postgres" else server.kill()  # type: ignore[attr-defined]
            started = time.monotonic()
            for n in range(5):
                d.enqueue(n)  # each append fails fast: kept in memory
            assert d.flush(timeout=10)
            assert time.monotonic() - started < 10
            assert recorder.items == ["stored", 0, 1, 2, 3, 4]
            assert d.stats().spool_faults.get("unreachable", 0) >= 5
        finally:
            d.shutdown(timeout=10)
            spool.close()


def test_a_redis_that_does_not_answer_fails_by_the_deadline() -> None:
    from batchdispatch.spool import RedisSpool

    with RedisServer() as server:
        spool = RedisSpool(server.url, "paused", timeout=5)
        spool.put([(None, "before")])
        pauser = redis.Redis.from_url(server.url)
        pauser.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        try:
            started = time.monotonic()
            with pytest.raises(SpoolError) as info:
                spool.put([(None, "during")], timeout=0.3)
            assert info.value.kind == "unreachable"
            assert time.monotonic() - started < 2
        finally:
            pauser.execute_command("CLIENT", "UNPAUSE")
            pauser.close()
            spool.close()


@pytest.mark.parametrize("operation", ["put", "claim", "count", "durable append", "connect"])
def test_a_postgres_that_does_not_answer_fails_by_the_deadline(operation: str) -> None:
    # A paused server still takes connections and acknowledges what is sent, so
    # neither its own timeouts nor the kernel's end the wait: the spool must.
    from batchdispatch.spool import PostgresSpool

    with PostgresServer() as server:
        spool = PostgresSpool(server.conninfo, table="paused", durable=True, timeout=0.5)
        spool.put([(None, "before")])  # connected, the tables made, the lease taken
        if operation == "connect":
            server.stop()  # the connection is gone: the next operation makes a new one
            server.start()
        calls = {
            "put": lambda: spool.put([(None, "during")], timeout=0.3),
            "claim": lambda: spool.claim(10, timeout=0.3),
            "count": lambda: spool.count(timeout=0.3),
            "durable append": lambda: spool.append(None, "during"),  # bounded by the spool's timeout
            "connect": lambda: spool.count(timeout=0.3),
        }
        outcome: List[Any] = []

        def call() -> None:
            started = time.monotonic()
            try:
                calls[operation]()
            except SpoolError as exc:
                outcome.append((exc.kind, time.monotonic() - started))

        with server.paused():
            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            caller.join(30)
            assert not caller.is_alive(), "still waiting for a server that does not answer"
        kind, took = outcome[0]
        assert kind == "unreachable"
        assert took < 2  # 0.3 s (0.5 s for the append), with room for a loaded machine
        # Once the server answers again, the spool goes on, on a new connection.
        assert [item for _, _, item in spool.claim(10, timeout=10)][:1] == ["before"]
        spool.close(timeout=10)



AT_EXIT_PUT = """
import atexit, json, time
from batchdispatch.spool import PostgresSpool

spool = PostgresSpool({conninfo!r}, table={table!r})  # never used before exit: not connected

def at_exit():
    started = time.monotonic()
    try:
        spool.put([(None, "at exit")], timeout=0.5)
        outcome = "stored"
    except Exception as exc:
        outcome = getattr(exc, "kind", type(exc).__name__)
    print(json.dumps([outcome, time.monotonic() - started]))
    spool.close(timeout=0.5)

atexit.register(at_exit)
"""


def test_at_exit_a_postgres_spool_connects_by_a_deadline_under_two_seconds(pg_table: str) -> None:
    # From Python 3.12 no thread starts at exit, and psycopg's connect timeout is
    # 2 s at least: a spool not yet connected could not connect there with less
    # left (the exit hook's spill gets 1 s by default), and its spill was lost.
    # It now connects in place, by the deadline (on 3.9 to 3.11 a thread does it).
    result = run_python(AT_EXIT_PUT.format(conninfo=PG, table=pg_table))
    assert result.returncode == 0, result.stderr
    outcome, _ = json.loads(result.stdout)
    assert outcome == "stored", result.stderr
    with psycopg.connect(PG, autocommit=True) as c:
        rows = c.execute(f"SELECT item FROM {pg_table}").fetchall()
    assert rows == [('"at exit"',)]


def test_at_exit_a_postgres_that_does_not_answer_holds_the_connect_to_its_deadline() -> None:
    with PostgresServer() as server:
        with server.paused():
            result = run_python(AT_EXIT_PUT.format(conninfo=server.conninfo, table="paused_at_exit"))
        assert result.returncode == 0, result.stderr
        outcome, took = json.loads(result.stdout)
        assert outcome == "unreachable", result.stderr
        assert took < 1.5, f"the put at exit took {took:.2f} s for a 0.5 s timeout"  # 2 s at least before


# -- the breaker: a durable enqueue stops waiting for a server that does not answer ----------------


def test_a_durable_enqueue_stops_waiting_for_a_spool_server_that_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Redis stopped (SIGSTOP) still takes connections and what is sent, and answers
    # nothing: each append fails only at the spool's timeout (1 s here). After the
    # first, enqueue skips the spool for a while instead of waiting each time; every
    # item is still delivered, from memory, and once the server answers again,
    # durable writes resume.
    from batchdispatch.spool import RedisSpool

    with RedisServer() as server:
        assert server.proc is not None
        spool = RedisSpool(server.url, "breaker", durable=True, timeout=1.0)
        recorder = Recorder()
        d = BackgroundDispatcher(recorder, delay=0.01, spool=spool)
        try:
            d.enqueue("stored")
            assert d.flush(timeout=10)
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                for n in range(20):
                    assert d.enqueue(n)
                took = time.monotonic() - started
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            assert took < 8, f"20 enqueues took {took:.1f} s: each waited for the spool"  # 20 s without
            assert d.stats().spool_faults == {"unreachable": 20}  # one failed, 19 skipped
            opened = [r.getMessage() for r in caplog.records if "skips the spool for 1 s" in r.getMessage()]
            assert len(opened) == 1, opened
            # The server answers again: after the cooldown, a write is tried, stored,
            # and the breaker closes.
            deadline = time.monotonic() + 30
            after = 0
            while "the spool answers again" not in caplog.text:
                assert time.monotonic() < deadline, "durable writes never resumed"
                d.enqueue(f"after {after}")
                after += 1
                time.sleep(0.05)  # the pace of enqueues while the cooldown runs out
            assert d.stats().spool_faults == {"unreachable": 20 + after - 1}  # the last one was stored
            assert d.flush(timeout=10)
            assert recorder.items == ["stored", *range(20), *(f"after {n}" for n in range(after))]
            # The stored ones were acked. The write that timed out reached Redis once it
            # was resumed, and stays there, this owner's: sent again after this process
            # ends (at least once), never lost.
            client = redis.Redis.from_url(server.url)
            entries = client.xrange("{breaker}:q")
            client.close()
            assert [json.loads(fields[b"d"]) for _, fields in entries] == [0]
        finally:
            d.shutdown(timeout=10)
            spool.close()


# -- secrets and arguments ------------------------------------------------------------------------------


def test_passwords_never_show_in_reprs_or_errors() -> None:
    from batchdispatch.spool import PostgresSpool, RedisSpool

    with RedisServer() as server:
        url = server.url.replace("redis://", "redis://:hunter2-secret@")
        spool = RedisSpool(url, "secret")
        assert "hunter2" not in repr(spool)
        server.kill()
        with pytest.raises(SpoolError) as info:
            spool.put([(None, 1)])
        assert "hunter2" not in str(info.value)
        spool.close()
    with PostgresServer() as pg:
        conninfo = pg.conninfo + " password=hunter2-secret"
        spool = PostgresSpool(conninfo, table="t")
        assert "hunter2" not in repr(spool)
        pg.stop()
        with pytest.raises(SpoolError) as info:
            spool.put([(None, 1)])
        assert info.value.kind == "unreachable"
        assert "hunter2" not in str(info.value)
        spool.close()


def test_bad_arguments_are_named() -> None:
    from batchdispatch.spool import PostgresSpool, RedisSpool

    cases: List[Any] = [
        (lambda: RedisSpool(f"redis://127.0.0.1:{REDIS_PORT}/0", "has {braces}"), ValueError, "name"),
        (lambda: RedisSpool(42, "x"), TypeError, "client"),
        (lambda: RedisSpool(f"redis://127.0.0.1:{REDIS_PORT}/0", "x", lease=0), ValueError, "lease"),
        (lambda: PostgresSpool(PG, table="drop table; --"), ValueError, "table"),
        (lambda: PostgresSpool(b"host=x"), TypeError, "conninfo"),  # type: ignore[arg-type]
        (lambda: PostgresSpool(PG, lease=float("nan")), ValueError, "lease"),
    ]
    for make, error, name in cases:
        with pytest.raises(error, match=name):
            make()


def test_a_signal_handler_that_appends_inside_an_append_gets_locked_at_once(pg_table: str) -> None:
    """A real SIGUSR1 lands while the thread's append is in the group's write, waiting for the
    server (another connection holds the table locked: the server shows the INSERT waiting for a
    Lock). The handler's append on that thread gets "locked" at once; the outer append completes
    once the table is free. In a subprocess: without the check, the handler waits for its own
    thread forever, and the subprocess's deadline says so."""
    code = f"""
        import json, os, signal, threading, time
        import psycopg
        from batchdispatch.exceptions import SpoolError
        from batchdispatch.spool import PostgresSpool

        spool = PostgresSpool({PG!r}, table={pg_table!r}, durable=True)
        spool.count()  # the tables exist, the connection is open
        results = []

        def on_signal(signum, frame):
            started = time.monotonic()
            try:
                spool.append(None, "from the handler")
                results.append(["appended", time.monotonic() - started])
            except SpoolError as exc:
                results.append([exc.kind, time.monotonic() - started])

        signal.signal(signal.SIGUSR1, on_signal)
        blocker = psycopg.connect({PG!r})
        blocker.execute("LOCK TABLE {pg_table} IN ACCESS EXCLUSIVE MODE")

        def interrupt():
            try:
                deadline = time.monotonic() + 30
                with psycopg.connect({PG!r}, autocommit=True) as watcher:
                    while not watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND pid <> pg_backend_pid() AND query LIKE %s", ("%INSERT INTO %{pg_table}%",),
                    ).fetchone()[0]:
                        assert time.monotonic() < deadline, "the append never waited for the lock"
                        time.sleep(0.01)  # polls the server's view, with a deadline
                os.kill(os.getpid(), signal.SIGUSR1)  # handled by the main thread, inside its append
                deadline = time.monotonic() + 30
                while not results and time.monotonic() < deadline:
                    time.sleep(0.01)  # polls the handler's outcome, with a deadline
            finally:
                blocker.rollback()  # the outer append's write goes on

        thread = threading.Thread(target=interrupt)
        thread.start()
        outer = spool.append(None, "outer")
        thread.join(60)
        stored = spool.count()
        spool.close()
        blocker.close()
        print(json.dumps([outer < 0, results, stored]))
    """
    result = run_python(code, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    appended, results, stored = json.loads(result.stdout)
    assert appended
    assert [kind for kind, _ in results] == ["locked"]
    assert results[0][1] < 2  # at once, not after a wait for its own thread
    assert stored == 1  # the outer item; the handler's was refused


# -- a claim whose answer is lost: its rows are not stranded ------------------------------------------


def _through(proxy: Any, kind: str, name: str, **options: Any) -> Any:
    """A spool on *name* whose connections go through *proxy*, armed to drop every answer from
    its claim's on: on Redis, the claim script's EVALSHA (loaded here, so that it is the first
    call); on PostgreSQL, the COMMIT of the claim's transaction (the tables made here first)."""
    from batchdispatch.spool import PostgresSpool, RedisSpool
    from batchdispatch.spool._redis_scripts import CLAIM

    if kind == "redis":
        spool: Any = RedisSpool(f"redis://127.0.0.1:{proxy.port}/0", name, timeout=1, **options)
        loader = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
        trigger = loader.script_load(CLAIM).encode()
        loader.close()
    else:
        spool = PostgresSpool(f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres",
                              table=name, timeout=1, **options)
        trigger = b"COMMIT"
    spool.count()  # connected, and on PostgreSQL its tables are made: no COMMIT of theirs comes later
    proxy.swallow_after(trigger)
    return spool


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_rows_a_claim_took_before_its_answer_was_lost_go_to_the_next_claim(
    kind: str, redis_spool_name: str, pg_table: str,
) -> None:
    """The server takes the rows for this owner, then its answer never comes back (a proxy
    drops it): the claim fails as unreachable by its timeout. The owner lives on, so its lease
    would keep those rows from every other claim until it closed; the next claim takes them
    instead, in their place. Without the fix that claim finds nothing."""
    from .with_server.proxy import Proxy

    with Proxy(REDIS_PORT if kind == "redis" else POSTGRES_PORT) as proxy:
        spool = _through(proxy, kind, redis_spool_name if kind == "redis" else pg_table)
        try:
            spool.put([("k", n) for n in range(5)])
            with pytest.raises(SpoolError) as info:
                spool.claim(10)
            assert info.value.kind == "unreachable"
            assert proxy.broken.is_set()  # the server answered: it had taken the rows
            assert [item for _, _, item in spool.claim(10)] == [0, 1, 2, 3, 4]
            assert spool.claim(10) == []
        finally:
            spool.close()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_dispatcher_delivers_the_backlog_its_first_claim_lost_at_its_next_poll(
    kind: str, redis_spool_name: str, pg_table: str,
) -> None:
    """Another process's backlog waits in the spool; the dispatcher's first claim takes it but
    its answer is lost (a fault). The next poll, a lease's third later, delivers it."""
    from batchdispatch.spool import PostgresSpool, RedisSpool

    from .with_server.proxy import Proxy

    if kind == "redis":
        left: Any = RedisSpool(f"redis://127.0.0.1:{REDIS_PORT}/0", redis_spool_name)
    else:
        left = PostgresSpool(PG, table=pg_table)
    left.put([("k", n) for n in range(5)])  # what another process spilled and left
    left.close()
    with Proxy(REDIS_PORT if kind == "redis" else POSTGRES_PORT) as proxy:
        spool = _through(proxy, kind, redis_spool_name if kind == "redis" else pg_table, lease=3)
        recorder = Recorder()
        d = BackgroundDispatcher(recorder, delay=0.01, spool=spool)
        try:
            d.enqueue("new")
            assert recorder.wait_batches(2, timeout=30)  # the new item, then the backlog
            assert proxy.broken.is_set()
            assert d.stats().spool_faults.get("unreachable", 0) >= 1  # the claim whose answer was lost
            assert sorted(recorder.items, key=str) == [0, 1, 2, 3, 4, "new"]
        finally:
            d.shutdown(timeout=10)
            spool.close()
