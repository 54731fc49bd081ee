"""TableSink: on the shared PostgreSQL (a schema per test), on a private one restarted, and on SQLite."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, List

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
psycopg = pytest.importorskip("psycopg")

from psycopg.conninfo import conninfo_to_dict  # noqa: E402
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, create_engine  # noqa: E402
from sqlalchemy.dialects import postgresql  # noqa: E402

from batchdispatch import PartialFailure  # noqa: E402
from batchdispatch.sinks.sqlalchemy import RowsRejected, TableSink, WriteError  # noqa: E402

from ..services import PostgresServer  # noqa: E402
from ..test_fork import collect, fork  # noqa: E402
from .sql_sinks import (  # noqa: E402
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

metadata = MetaData()
#: The columns of sql_sinks.TABLE the sink writes (the others have server defaults).
events = Table(
    "events", metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("k", Text), Column("n", Integer), Column("s", Text),
)


def engine_for(conninfo: str, password: str = "", **options: Any) -> Any:
    """An engine on *conninfo*'s server, database and search_path, through psycopg 3."""
    parts = conninfo_to_dict(conninfo)
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg", username=parts["user"], password=password or None, host=parts["host"],
        port=int(parts["port"]), database=parts["dbname"],
    )
    return create_engine(url, connect_args={"options": parts.get("options", "")}, **options)


@pytest.fixture
def engines() -> Iterator[Callable[..., Any]]:
    """Engines that are always disposed of after the test."""
    made: List[Any] = []

    def factory(*args: Any, **options: Any) -> Any:
        engine = engine_for(*args, **options)
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.dispose()


@pytest.fixture
def conninfo(postgres_conninfo: str) -> str:
    query(postgres_conninfo, TABLE)
    return postgres_conninfo


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    yield from private_server()


def ns(conninfo: str) -> List[int]:
    return [n for (n,) in query(conninfo, "SELECT n FROM events ORDER BY seq")]


def test_each_batch_is_one_executemany_in_one_transaction_in_order(
    engines: Callable[..., Any], make: Callable[..., Any], conninfo: str,
) -> None:
    d = make(TableSink(engines(conninfo), events), delay=3600, max_batch_size=100)
    for n in range(250):
        d.enqueue(item(n))
    assert d.shutdown(timeout=30)
    assert ns(conninfo) == list(range(250))
    sizes = query(conninfo, "SELECT count(*) FROM events GROUP BY tx ORDER BY min(seq)")
    assert [size for (size,) in sizes] == [100, 100, 50]


def test_1000_rows_with_3_bad_commit_997_and_give_up_the_3_with_the_database_message(
    engines: Callable[..., Any], make: Callable[..., Any], conninfo: str,
) -> None:
    d = make(TableSink(engines(conninfo), events), delay=3600, max_batch_size=1000, retry=fast_retry())
    recorded = Events(d, "items_exhausted")
    items = [item(n) for n in range(1000)]
    bad = three_bad(items)
    for each in items:
        d.enqueue(each)
    assert d.flush(timeout=30)
    assert ns(conninfo) == [n for n in range(1000) if n not in (17, 500, 999)]
    assert len(query(conninfo, "SELECT DISTINCT tx FROM events")) == 1
    (exhausted,) = recorded.seen["items_exhausted"]
    assert (list(exhausted.items), exhausted.attempts) == (bad, 1)
    cause = exhausted.error.cause
    assert isinstance(cause, RowsRejected)
    assert [(row.index, row.sqlstate, row.message) for row in cause.rejected] == THREE_BAD
    text = str(exhausted.error)
    assert "[parameters:" not in text  # SQLAlchemy's own text shows the values
    assert "Key (s)" not in text
    assert (d.stats().dispatched, d.stats().failed) == (997, 3)


def test_rows_may_leave_columns_to_their_defaults_and_an_unknown_key_rejects_its_item(
    engines: Callable[..., Any], conninfo: str,
) -> None:
    sink = TableSink(engines(conninfo), events)
    with pytest.raises(PartialFailure) as raised:
        sink([item(1), {"n": 2}, {"n": 3, "s": "x", "kind": "typo"}, {"n": 4, "k": "b"}, ["a", "list"]])
    cause = raised.value.cause
    assert isinstance(cause, RowsRejected)
    assert [(row.index, row.message) for row in cause.rejected] == [
        (2, """item has keys that are not columns of "events": 'kind'"""),
        (4, "item is a list, not a mapping: pass row= to make a dict"),
    ]
    assert query(conninfo, "SELECT k, n, s FROM events ORDER BY seq") == [
        ("", 1, "1"), ("", 2, None), ("b", 4, None),  # k's default is ''
    ]


def test_an_insert_with_on_conflict_do_nothing_makes_a_retry_harmless(
    engines: Callable[..., Any], conninfo: str,
) -> None:
    sink = TableSink(engines(conninfo), postgresql.insert(events).on_conflict_do_nothing(),
                     row=lambda n: {"n": n, "s": f"s{n}"})
    sink([1, 2])
    sink([2, 3])  # the retry of a batch whose COMMIT went through unanswered
    assert ns(conninfo) == [1, 2, 3]


def test_a_missing_table_is_final_and_a_conflict_or_deadlock_is_retried(
    engines: Callable[..., Any], make: Callable[..., Any], conninfo: str,
) -> None:
    missing = Table("no_such_table", MetaData(), Column("n", Integer))
    with pytest.raises(WriteError) as raised:
        TableSink(engines(conninfo), missing)([{"n": 1}])
    assert (raised.value.retryable, raised.value.sqlstate) == (False, "42P01")
    assert str(raised.value) == (
        'batch not written to "no_such_table": relation "no_such_table" does not exist'
    )

    query(conninfo, REFUSE_TWICE)
    d = make(TableSink(engines(conninfo), events), delay=3600, retry=fast_retry())
    recorded = Events(d, "batch_failed")
    for n in range(10):
        d.enqueue(item(n))
    assert d.flush(timeout=30)
    assert [(e.error.retryable, e.error.sqlstate) for e in recorded.seen["batch_failed"]] == [
        (True, "40001"), (True, "40P01"),
    ]
    assert ns(conninfo) == list(range(10))


def test_nothing_is_lost_when_the_server_restarts(
    engines: Callable[..., Any], make: Callable[..., Any], server: PostgresServer,
) -> None:
    engine = engines(server.conninfo, pool_pre_ping=True)
    d = make(TableSink(engine, events), delay=3600, max_batch_size=100, retry=patient_retry())
    recorded = Events(d, "batch_failed")
    for n in range(500):
        d.enqueue(item(n))
    assert d.flush(timeout=30)
    server.stop("immediate")
    for n in range(500, 1000):
        d.enqueue(item(n))
    d.flush(timeout=0)
    assert recorded.wait("batch_failed")
    server.start()
    assert d.flush(timeout=120)
    assert ns(server.conninfo) == list(range(1000))
    assert all(event.error.retryable for event in recorded.seen["batch_failed"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_connections_and_leaves_the_parents_alone(
    engines: Callable[..., Any], make: Callable[..., Any], conninfo: str,
) -> None:
    engine = engines(conninfo, pool_size=1, max_overflow=0)
    sink = TableSink(engine, events)
    d = make(sink, delay=3600)
    d.enqueue(item(1, "parent"))
    assert d.flush(timeout=30)
    parent_pool = engine.pool

    def child() -> Any:
        d.enqueue(item(2, "child"))
        flushed = d.flush(timeout=30)
        sink([item(3, "child")])
        fresh = engine.pool is not parent_pool
        shut = d.shutdown(timeout=10)
        engine.dispose()  # the child's own connections
        return [flushed, fresh, shut]

    assert collect(fork(child)) == [True, True, True]
    d.enqueue(item(4, "parent"))
    assert d.flush(timeout=30)
    rows = query(conninfo, "SELECT k, n, backend FROM events ORDER BY seq")
    assert [(k, n) for k, n, _ in rows] == [("parent", 1), ("child", 2), ("child", 3), ("parent", 4)]
    parent, child_backends = {rows[0][2], rows[3][2]}, {rows[1][2], rows[2][2]}
    assert len(parent) == 1  # the parent's session lived through the child's exit
    assert not parent & child_backends


def test_sqlite_works_too(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    table = Table("t", MetaData(), Column("n", Integer, sqlalchemy.CheckConstraint("n >= 0")),
                  Column("s", Text, unique=True))
    table.metadata.create_all(engine)
    try:
        with pytest.raises(PartialFailure) as raised:
            TableSink(engine, table)([{"n": 1, "s": "a"}, {"n": -1, "s": "b"}, {"n": 2, "s": "a"},
                                      {"n": 3, "s": "c"}])
        assert [(row.index, row.message) for row in raised.value.cause.rejected] == [  # type: ignore[union-attr]
            (1, "IntegrityError: CHECK constraint failed: n >= 0"),
            (2, "IntegrityError: UNIQUE constraint failed: t.s"),
        ]
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.select(table.c.n)).scalars().all() == [1, 3]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        (("sqlite://", events), {}, TypeError, "engine must be an sqlalchemy Engine, got str"),
        ((None, "events"), {}, TypeError, "table must be an sqlalchemy Table or an Insert, got str"),
        ((None, events), {"row": 3}, TypeError, "row must be callable or None"),
    ],
)
def test_bad_arguments_are_refused_at_construction_naming_the_parameter(
    args: Any, options: Any, error: type, message: str,
) -> None:
    engine = create_engine("sqlite://")
    try:
        with pytest.raises(error, match=message):
            TableSink(*(engine if arg is None else arg for arg in args), **options)
        with engine.connect() as connection, pytest.raises(TypeError, match="got Connection"):
            TableSink(connection, events)
    finally:
        engine.dispose()


def test_the_password_shows_nowhere(engines: Callable[..., Any], conninfo: str) -> None:
    engine = engines(conninfo, password=SECRET)
    missing = Table("no_such_table", MetaData(), Column("n", Integer))
    sink = TableSink(engine, missing)
    with pytest.raises(WriteError) as raised:
        sink([{"n": 1}])
    assert "postgres:***@127.0.0.1" in repr(sink)
    assert all(SECRET not in text for text in (repr(sink), str(raised.value), repr(raised.value)))
