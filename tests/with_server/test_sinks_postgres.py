"""PostgresSink against the shared PostgreSQL (a schema per test), and private servers stopped and started."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

from batchdispatch import PartialFailure, RetryPolicy  # noqa: E402
from batchdispatch.sinks.postgres import PostgresSink, RowsRejected, WriteError  # noqa: E402

from ..conftest import run_python  # noqa: E402
from ..services import PostgresServer, free_port, unique_name  # noqa: E402
from ..test_fork import collect, fork  # noqa: E402
from .conftest import wait_for  # noqa: E402
from .sql_sinks import (  # noqa: E402
    COLUMNS,
    REFUSE_TWICE,
    SECRET,
    TABLE,
    THREE_BAD,
    Events,
    fast_retry,
    item,
    patient_retry,
    private_server,
    query,
    three_bad,
)

METHODS = ["copy", "executemany"]


@pytest.fixture
def conninfo(postgres_conninfo: str) -> str:
    """The test's schema on the shared server, with the table ``events``."""
    query(postgres_conninfo, TABLE)
    return postgres_conninfo


@pytest.fixture
def sinks() -> Iterator[Callable[..., PostgresSink]]:
    """Build sinks that are always closed (their pools' threads stopped) after the test."""
    made: List[PostgresSink] = []

    def factory(*args: Any, **options: Any) -> PostgresSink:
        sink = PostgresSink(*args, **options)
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        sink.close()


def with_application_name(conninfo: str) -> Tuple[str, str]:
    """*conninfo* with a unique ``application_name``, and that name: the server lists the
    sessions of a sink made with it in ``pg_stat_activity``, apart from everyone else's."""
    name = unique_name("sink")
    return f"{conninfo} application_name={name}", name


def sessions(conninfo: str, name: str) -> Set[int]:
    """The backend pids of the server's sessions named *name* (queried on a session of its own)."""
    return {pid for (pid,) in query(conninfo, "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                    name)}



# -- batches and their transactions --------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_batch_is_one_transaction_and_rows_keep_their_order(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], conninfo: str, method: str,
) -> None:
    sink = sinks(conninfo, "events", COLUMNS, method=method)
    d = make(sink, delay=3600, max_batch_size=100)
    for n in range(250):
        d.enqueue(item(n))
    assert d.shutdown(timeout=30)
    assert [n for (n,) in query(conninfo, "SELECT n FROM events ORDER BY seq")] == list(range(250))
    sizes = query(conninfo, "SELECT count(*) FROM events GROUP BY tx ORDER BY min(seq)")
    assert [size for (size,) in sizes] == [100, 100, 50]
    assert d.stats().dispatched == 250


@pytest.mark.parametrize("method", METHODS)
def test_1000_rows_with_3_bad_commit_the_997_at_once_and_give_up_the_3_with_the_database_message(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], conninfo: str, method: str,
) -> None:
    sink = sinks(conninfo, "events", COLUMNS, method=method)
    d = make(sink, delay=3600, max_batch_size=1000, retry=fast_retry())
    events = Events(d, "items_exhausted", "batch_retry_scheduled")
    items = [item(n) for n in range(1000)]
    bad = three_bad(items)
    for each in items:
        d.enqueue(each)
    assert d.flush(timeout=30)

    good = [n for n in range(1000) if n not in (17, 500, 999)]
    assert [n for (n,) in query(conninfo, "SELECT n FROM events ORDER BY seq")] == good
    assert len(query(conninfo, "SELECT DISTINCT tx FROM events")) == 1  # the 997 in one transaction
    (exhausted,) = events.seen["items_exhausted"]
    assert list(exhausted.items) == bad
    assert exhausted.attempts == 1  # not retryable: given up at once
    assert events.seen["batch_retry_scheduled"] == []
    assert isinstance(exhausted.error, PartialFailure)
    assert exhausted.error.retryable is False
    cause = exhausted.error.cause
    assert isinstance(cause, RowsRejected)
    assert [(row.index, row.sqlstate, row.message) for row in cause.rejected] == THREE_BAD
    assert [row.item for row in cause.rejected] == bad
    text = str(exhausted.error)
    assert text.startswith('3 items of the batch failed: RowsRejected: 3 of 1000 rows rejected by "events": '
                           'item 17: new row for relation')
    # The DETAIL and CONTEXT lines quote the rows' values: left out.
    assert "Key (s)" not in text
    assert "Failing row" not in text
    assert "COPY" not in text
    stats = d.stats()
    assert (stats.dispatched, stats.failed, stats.retried) == (997, 3, 0)


def test_a_batch_of_bad_rows_only_commits_nothing_and_a_single_bad_row_is_found_without_splitting(
    sinks: Callable[..., PostgresSink], conninfo: str,
) -> None:
    sink = sinks(conninfo, "events", COLUMNS)
    with pytest.raises(PartialFailure) as raised:
        sink([item(-1), item(-2), item(-3)])
    assert [row.index for row in raised.value.cause.rejected] == [0, 1, 2]  # type: ignore[union-attr]
    with pytest.raises(PartialFailure) as raised:
        sink([item(-4)])
    assert raised.value.failed_items == [item(-4)]
    assert query(conninfo, "SELECT count(*) FROM events") == [(0,)]


def test_row_turns_items_into_tuples_and_an_item_it_refuses_is_rejected_alone(
    sinks: Callable[..., PostgresSink], conninfo: str,
) -> None:
    def row(event: Any) -> Any:
        if event == "boom":
            raise LookupError("no such event")
        if event == "short":
            return ("x",)
        return ("k", event, f"s{event}")

    sink = sinks(conninfo, "events", COLUMNS, row=row)
    with pytest.raises(PartialFailure) as raised:
        sink([1, "boom", 2, "short", 3])
    assert raised.value.failed_items == ["boom", "short"]
    assert [row.message for row in raised.value.cause.rejected] == [  # type: ignore[union-attr]
        "row() raised LookupError: no such event", "row() returned 1 values for 3 columns",
    ]
    assert query(conninfo, "SELECT n FROM events ORDER BY seq") == [(1,), (2,), (3,)]

    plain = sinks(conninfo, "events", COLUMNS)
    with pytest.raises(PartialFailure) as raised:
        plain([["a", 4, "x"], {"k": "a", "n": 5}, item(6)])
    assert [row.message for row in raised.value.cause.rejected] == [  # type: ignore[union-attr]
        "item is a list, not a mapping: pass row= to make a tuple",
        "item has no key 's' (columns: k, n, s)",
    ]
    assert query(conninfo, "SELECT n FROM events ORDER BY seq")[-1] == (6,)


def test_a_value_psycopg_cannot_send_is_a_bad_row(sinks: Callable[..., PostgresSink], conninfo: str) -> None:
    sink = sinks(conninfo, "events", COLUMNS)
    with pytest.raises(PartialFailure) as raised:
        sink([item(1), {"k": object(), "n": 2, "s": "x"}, {"k": "nul\x00", "n": 3, "s": "y"}, item(4)])
    cause = raised.value.cause
    assert isinstance(cause, RowsRejected)
    assert [(row.index, row.sqlstate) for row in cause.rejected] == [(1, None), (2, None)]
    assert cause.rejected[0].message.startswith("ProgrammingError: cannot adapt type 'object'")
    assert cause.rejected[1].message.startswith("DataError: PostgreSQL text fields cannot contain NUL")
    assert query(conninfo, "SELECT n FROM events ORDER BY seq") == [(1,), (4,)]


def test_ignore_conflicts_skips_rows_already_there(sinks: Callable[..., PostgresSink], conninfo: str) -> None:
    sink = sinks(conninfo, "events", COLUMNS, method="executemany", ignore_conflicts=True)
    sink([item(1), item(2)])
    sink([item(2), item(3), item(3)])  # a retry of a committed batch, and a duplicate within one
    assert query(conninfo, "SELECT n FROM events ORDER BY seq") == [(1,), (2,), (3,)]


def test_names_are_quoted_as_identifiers_never_formatted_into_sql(
    sinks: Callable[..., PostgresSink], conninfo: str,
) -> None:
    schema = query(conninfo, "SELECT current_schema()")[0][0]
    table = 'odd "name"; DROP TABLE events; --'
    query(conninfo, 'CREATE TABLE "odd ""name""; DROP TABLE events; --" ("select" int, "a""b" text)')
    for method in METHODS:
        sink = sinks(conninfo, (schema, table), ["select", 'a"b'], method=method)
        sink([{"select": 1, 'a"b': method}])
        assert "odd" in repr(sink)
    rows = query(conninfo, 'SELECT "select", "a""b" FROM "odd ""name""; DROP TABLE events; --"')
    assert rows == [(1, "copy"), (1, "executemany")]
    assert query(conninfo, "SELECT count(*) FROM events") == [(0,)]  # still there


# -- what is retried, and what is not ----------------------------------------------------------


def test_a_missing_table_is_given_up_at_once(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], conninfo: str,
) -> None:
    sink = sinks(conninfo, "no_such_table", COLUMNS)
    d = make(sink, delay=3600, retry=fast_retry())
    events = Events(d, "items_exhausted")
    d.enqueue(item(1))
    assert d.flush(timeout=30)
    (exhausted,) = events.seen["items_exhausted"]
    assert exhausted.attempts == 1
    error = exhausted.error
    assert isinstance(error, WriteError)
    assert (error.retryable, error.sqlstate, error.table) == (False, "42P01", '"no_such_table"')
    assert str(error) == 'batch not written to "no_such_table": relation "no_such_table" does not exist'
    assert isinstance(error.__cause__, psycopg.errors.UndefinedTable)


@pytest.mark.parametrize("method", METHODS)
def test_a_serialization_failure_and_a_deadlock_are_retried_and_the_rows_arrive_once(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], conninfo: str, method: str,
) -> None:
    query(conninfo, REFUSE_TWICE)
    sink = sinks(conninfo, "events", COLUMNS, method=method)
    d = make(sink, delay=3600, retry=fast_retry())
    events = Events(d, "batch_failed")
    for n in range(10):
        d.enqueue(item(n))
    assert d.flush(timeout=30)
    errors = [event.error for event in events.seen["batch_failed"]]
    assert [(type(e), e.retryable, e.sqlstate) for e in errors] == [
        (WriteError, True, "40001"), (WriteError, True, "40P01"),
    ]
    assert [n for (n,) in query(conninfo, "SELECT n FROM events ORDER BY seq")] == list(range(10))
    assert d.stats().dispatched == 10


def test_a_refused_connection_says_why_though_the_pool_only_timed_out(
    sinks: Callable[..., PostgresSink], postgres_conninfo: str,
) -> None:
    sink = sinks(postgres_conninfo.replace("dbname=test", "dbname=no_such_database_bd"), "events", COLUMNS,
                 timeout=1)
    with pytest.raises(WriteError) as raised:
        sink([item(1)])
    # libpq gives no SQLSTATE for a refused connection: retryable, like any connection failure.
    assert (raised.value.retryable, raised.value.sqlstate) == (True, None)
    assert str(raised.value).startswith('batch not written to "events": OperationalError: connection failed:')
    assert 'database "no_such_database_bd" does not exist' in str(raised.value)


def test_a_dead_server_cannot_hold_shutdown_past_its_timeout(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any],
) -> None:
    port = free_port()  # nothing listens there
    sink = sinks(f"host=127.0.0.1 port={port} dbname=x user=postgres connect_timeout=2", "events", COLUMNS,
                 timeout=60)
    d = make(sink, delay=3600, retry=RetryPolicy(max_attempts=100))
    events = Events(d, "batch_failed")
    d.enqueue(item(1))
    started = time.monotonic()
    d.shutdown(timeout=1.0)
    assert time.monotonic() - started < 10  # not the sink's 60 s wait for a connection
    assert events.wait("batch_failed")
    error = events.seen["batch_failed"][0].error
    assert isinstance(error, WriteError)
    assert error.retryable


def test_a_closed_sink_fails_batches_for_good_and_close_is_idempotent(conninfo: str) -> None:
    sink = PostgresSink(conninfo, "events", COLUMNS)
    sink([item(1)])
    sink.close()
    sink.close()
    with pytest.raises(WriteError, match="is closed") as raised:
        sink([item(2)])
    assert raised.value.retryable is False
    assert "closed" in repr(sink)
    assert query(conninfo, "SELECT n FROM events") == [(1,)]


def test_the_pool_is_made_on_the_first_batch_and_its_threads_end_with_close(conninfo: str) -> None:
    named, name = with_application_name(conninfo)
    before = set(threading.enumerate())
    with PostgresSink(named, "events", COLUMNS) as sink:
        assert set(threading.enumerate()) == before  # nothing started by the constructor
        assert sessions(conninfo, name) == set()  # and no connection opened
        sink([item(1)])
        assert set(threading.enumerate()) - before  # the pool's threads
        assert sessions(conninfo, name)  # and its connection
    assert set(threading.enumerate()) <= before
    assert wait_for(lambda: sessions(conninfo, name) == set())  # closed with the pool


# -- a restart of the server ------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    yield from private_server()


def test_nothing_is_lost_when_the_server_restarts_between_batches(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], server: PostgresServer,
) -> None:
    sink = sinks(server.conninfo, "events", COLUMNS, timeout=2)
    d = make(sink, delay=3600, max_batch_size=100, retry=patient_retry())
    events = Events(d, "batch_failed")
    for n in range(500):
        d.enqueue(item(n))
    assert d.flush(timeout=30)
    server.stop("immediate")  # as a crash: the pool's connections are cut
    for n in range(500, 1000):
        d.enqueue(item(n))
    d.flush(timeout=0)  # the first batch goes now
    assert events.wait("batch_failed")  # ... and fails: the server is down
    server.start()
    assert d.flush(timeout=120)
    rows = query(server.conninfo, "SELECT n FROM events ORDER BY seq")
    assert [n for (n,) in rows] == list(range(1000))  # every row, once, in order
    assert all(event.error.retryable for event in events.seen["batch_failed"])


def test_a_restart_while_keys_are_written_loses_nothing_and_a_unique_key_makes_it_exactly_once(
    sinks: Callable[..., PostgresSink], make_keyed: Callable[..., Any], server: PostgresServer,
) -> None:
    sink = sinks(server.conninfo, "events", COLUMNS, method="executemany", ignore_conflicts=True, timeout=2)
    d = make_keyed(sink.deliver, delay=0.005, max_batch_size=50, max_concurrent_batches=3,
                   retry=patient_retry())
    events = Events(d, "batch_succeeded", "batch_failed")
    keys, per_key, after_stop = ["a", "b", "c"], 400, 100
    for n in range(per_key - after_stop):
        for k in keys:
            d.enqueue(k, item(n, k))
    assert events.wait("batch_succeeded")
    server.stop("immediate")  # while the three workers write batches: a COMMIT may be cut unanswered
    for n in range(per_key - after_stop, per_key):  # work that certainly meets the server down
        for k in keys:
            d.enqueue(k, item(n, k))
    assert events.wait("batch_failed")
    server.start()
    assert d.flush(timeout=120)
    for k in keys:
        rows = query(server.conninfo, "SELECT n FROM events WHERE k = %s ORDER BY seq", k)
        assert [n for (n,) in rows] == list(range(per_key)), k  # once each, in order per key
    stats = d.stats()
    assert (stats.dispatched, stats.failed) == (len(keys) * per_key, 0)


# -- fork ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_through_its_own_connection_and_leaves_the_parents_alone(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], conninfo: str,
) -> None:
    named, name = with_application_name(conninfo)
    sink = sinks(named, "events", COLUMNS, max_connections=1)
    d = make(sink, delay=3600)
    d.enqueue(item(1, "parent"))
    assert d.flush(timeout=30)
    parent_sessions = sessions(conninfo, name)
    assert len(parent_sessions) == 1

    def child() -> Any:
        d.enqueue(item(2, "child"))
        flushed = d.flush(timeout=30)
        sink([item(3, "child")])  # on the thread that forked, too
        seen = sessions(conninfo, name)  # the parent's session, and the child's pool's
        shut = d.shutdown(timeout=10)
        sink.close()  # the child's pool; the parent's is never closed here
        return [flushed, shut, sorted(seen)]

    flushed, shut, seen = collect(fork(child))
    assert (flushed, shut) == (True, True)
    assert parent_sessions < set(seen)  # the child opened its own, and left the parent's open
    d.enqueue(item(4, "parent"))
    assert d.flush(timeout=30)  # the parent's connection still works: the child did not end its session
    rows = query(conninfo, "SELECT k, n, backend FROM events ORDER BY seq")
    assert [(k, n) for k, n, _ in rows] == [("parent", 1), ("child", 2), ("child", 3), ("parent", 4)]
    parent, child_backends = {rows[0][2], rows[3][2]}, {rows[1][2], rows[2][2]}
    assert parent == parent_sessions  # the same session before and after the fork
    assert child_backends <= set(seen) - parent  # the child wrote through its own sessions only
    assert wait_for(lambda: sessions(conninfo, name) == parent_sessions)  # the child's closed with it


# -- arguments and secrets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        ((42, "t", ["a"]), {}, TypeError, "conninfo must be a str"),
        (("host=x port", "t", ["a"]), {}, ValueError, "conninfo is not a valid"),
        (("host=x", "", ["a"]), {}, ValueError, "table must be a non-empty name"),
        (("host=x", ("s", "t", "u"), ["a"]), {}, ValueError, r"table must be a name or a \(schema, table\)"),
        (("host=x", 7, ["a"]), {}, TypeError, "table must be a str"),
        (("host=x", "t", "abc"), {}, TypeError, "columns must be a sequence of names"),
        (("host=x", "t", []), {}, ValueError, "columns must name at least one column"),
        (("host=x", "t", ["a", "a"]), {}, ValueError, "columns must not repeat a name"),
        (("host=x", "t", ["a", 1]), {}, TypeError, r"columns\[1\] must be a str"),
        (("host=x", "t", ["a"]), {"row": "x"}, TypeError, "row must be callable"),
        (("host=x", "t", ["a"]), {"method": "insert"}, ValueError, "method must be one of 'copy', 'exec"),
        (("host=x", "t", ["a"]), {"ignore_conflicts": 1}, TypeError, "ignore_conflicts must be a bool"),
        (("host=x", "t", ["a"]), {"ignore_conflicts": True}, ValueError, "ignore_conflicts=True needs"),
        (("host=x", "t", ["a"]), {"max_connections": 0}, ValueError, "max_connections must be at least 1"),
        (("host=x", "t", ["a"]), {"max_connections": 2.0}, TypeError, "max_connections must be an int"),
        (("host=x", "t", ["a"]), {"timeout": 0}, ValueError, "timeout must be a positive finite number"),
        (("host=x", "t", ["a"]), {"timeout": "5"}, TypeError, "timeout must be a number"),
    ],
)
def test_bad_arguments_are_refused_at_construction_naming_the_parameter(
    args: Tuple[Any, ...], options: Dict[str, Any], error: type, message: str,
) -> None:
    with pytest.raises(error, match=message):
        PostgresSink(*args, **options)


def test_a_password_never_reaches_a_repr_an_error_or_a_log_line(
    sinks: Callable[..., PostgresSink], make: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="conninfo is not a valid") as raised:
        PostgresSink(f"host=x password={SECRET} port", "t", ["a"])
    assert SECRET not in str(raised.value)
    # Trust authentication accepts any password: this one is sent, and must show nowhere.
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"
    keyword = f"host=127.0.0.1 port={free_port()} user=postgres password={SECRET} connect_timeout=2"
    ok, missing = sinks(url, "no_such_table", COLUMNS), sinks(keyword, "events", COLUMNS, timeout=1)
    d = make(ok, delay=3600, retry=fast_retry(1))
    events = Events(d, "items_exhausted")
    d.enqueue(item(1))
    assert d.flush(timeout=30)
    with pytest.raises(WriteError) as raised:
        missing([item(2)])
    texts = [repr(ok), repr(missing), str(events.seen["items_exhausted"][0].error), str(raised.value),
             repr(raised.value.__cause__), caplog.text]
    assert "postgres@127.0.0.1:5432/test" in texts[0]
    assert "Connection refused" in texts[3]  # the pool only timed out: the sink's own connection says why
    assert raised.value.retryable
    assert all(SECRET not in text for text in texts), texts


# -- exit ------------------------------------------------------------------------------------------


def test_what_is_pending_at_exit_is_written_by_the_exit_hook(conninfo: str) -> None:
    result = run_python(f"""
        from batchdispatch import BackgroundDispatcher
        from batchdispatch.sinks.postgres import PostgresSink
        d = BackgroundDispatcher(PostgresSink({conninfo!r}, "events", ["k", "n", "s"]), delay=3600)
        for n in range(100):
            d.enqueue({{"k": "exit", "n": n, "s": str(n)}})
        print("leaving")  # no flush, no shutdown, no close
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "leaving\n"
    assert [n for (n,) in query(conninfo, "SELECT n FROM events ORDER BY seq")] == list(range(100))


def test_with_the_server_down_at_exit_a_spool_keeps_the_rows_for_the_next_start(
    server: PostgresServer, tmp_path: Any,
) -> None:
    spool = str(tmp_path / "events.db")

    def program(rows: int, then: str = "") -> str:
        return f"""
            from batchdispatch import BackgroundDispatcher
            from batchdispatch.sinks.postgres import PostgresSink
            from batchdispatch.spool import SqliteSpool
            sink = PostgresSink({server.conninfo!r}, "events", ["k", "n", "s"], timeout=30)
            d = BackgroundDispatcher(sink, delay=3600, exit_timeout=2, spool=SqliteSpool({spool!r}))
            for n in range({rows}):
                d.enqueue({{"k": "exit", "n": n, "s": str(n)}})
            {then}
        """

    server.stop("immediate")
    started = time.monotonic()
    down = run_python(program(50))
    assert down.returncode == 0, down.stderr
    assert time.monotonic() - started < 25  # the exit deadline bounds the wait, not the sink's 30 s
    assert "at exit, not delivered in this process: 50 spilled to the spool for a later start" in down.stderr
    server.start()
    up = run_python(program(0, "assert d.flush(timeout=30); print(d.stats().replayed)"))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "50"
    rows = query(server.conninfo, "SELECT n FROM events ORDER BY seq")
    assert [n for (n,) in rows] == list(range(50))
