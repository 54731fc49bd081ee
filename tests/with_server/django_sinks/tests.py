"""ModelSink under Django's test runner, with the PostgreSQL backend and the app's migration.

TransactionTestCase, not TestCase: the sink writes on the dispatcher's
worker thread, through that thread's own connection, which could not see
a test's uncommitted transaction (and whose commits no test rollback would
undo). Each test shuts its dispatchers down before it ends.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from typing import Any, Callable, List

import pytest
from django.db import connection, connections, transaction
from django.db.backends.signals import connection_created
from django.test import TransactionTestCase

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, PartialFailure
from batchdispatch.sinks.django import ModelSink, RowsRejected, WriteError

from .. import django_sinks as app
from ..sql_sinks import REFUSE_TWICE, Events, fast_retry, item, patient_retry, three_bad
from .models import Base, Event, Missing, Place, Restaurant

#: THREE_BAD as Django reports it: its names for the table and the constraints, and
#: the value that is not a number refused by the field before the database sees it.
DJANGO_THREE_BAD = [
    (17, "23514", 'new row for relation "django_sinks_event" violates check constraint "event_n_gte_0"'),
    (500, None, "ValueError: Field 'n' expected a number but got 'five hundred'."),
    (999, "23505", 'duplicate key value violates unique constraint "django_sinks_event_s_key"'),
]


class SinkTestCase(TransactionTestCase):
    databases = {"default"}  # noqa: RUF012 - Django's own shape

    def setUp(self) -> None:
        self.made: List[Any] = []

    def tearDown(self) -> None:
        for dispatcher in self.made:
            assert dispatcher.shutdown(timeout=30)

    def dispatcher(self, sink: Callable[..., Any], keyed: bool = False, **options: Any) -> Any:
        made = (KeyedDispatcher if keyed else BackgroundDispatcher)(sink, **options)
        self.made.append(made)
        return made

    def ns(self, using: str = "default", **where: Any) -> List[int]:
        return list(Event.objects.using(using).filter(**where).order_by("seq").values_list("n", flat=True))


class ModelSinkTests(SinkTestCase):
    def test_1000_rows_with_3_bad_commit_997_in_one_transaction_and_give_up_the_3(self) -> None:
        d = self.dispatcher(ModelSink(Event), delay=3600, max_batch_size=1000, retry=fast_retry())
        recorded = Events(d, "items_exhausted")
        items = [item(n) for n in range(1000)]
        bad = three_bad(items)
        for each in items:
            d.enqueue(each)
        assert d.flush(timeout=60)
        assert self.ns() == [n for n in range(1000) if n not in (17, 500, 999)]
        assert transactions() == 1
        (exhausted,) = recorded.seen["items_exhausted"]
        assert (list(exhausted.items), exhausted.attempts) == (bad, 1)
        assert isinstance(exhausted.error, PartialFailure)
        cause = exhausted.error.cause
        assert isinstance(cause, RowsRejected)
        assert [(row.index, row.sqlstate, row.message) for row in cause.rejected] == DJANGO_THREE_BAD
        assert "Key (s)" not in str(exhausted.error)
        assert (d.stats().dispatched, d.stats().failed, d.stats().retried) == (997, 3, 0)

    def test_every_row_arrives_once_in_order_per_key(self) -> None:
        sink = ModelSink(Event)
        d = self.dispatcher(sink.deliver, keyed=True, delay=0.01, max_batch_size=40, max_concurrent_batches=3,
                            retry=fast_retry())
        keys = ["a", "b", "c", "d"]
        for n in range(200):
            for k in keys:
                d.enqueue(k, item(n, k))
        assert d.flush(timeout=60)
        for k in keys:
            assert self.ns(k=k) == list(range(200)), k
        assert Event.objects.count() == 800

    def test_a_value_django_cannot_convert_rejects_its_item_alone(self) -> None:
        sink = ModelSink(Event)
        with pytest.raises(PartialFailure) as raised:
            sink([item(1), {"n": "abc", "s": "x"}, {"n": 3, "nope": 1}, "a string", item(4)])
        rejected = raised.value.cause.rejected  # type: ignore[union-attr]
        assert [row.index for row in rejected] == [1, 2, 3]
        assert rejected[0].message == "ValueError: Field 'n' expected a number but got 'abc'."
        assert rejected[1].message.startswith("Event(**item) raised TypeError: Event() got unexpected")
        assert rejected[2].message == "item is a str, not a Event or a dict of its fields"
        assert self.ns() == [1, 4]

    def test_an_enqueued_instance_is_copied_and_left_as_it_was(self) -> None:
        mine = Event(n=5, s="mine")
        d = self.dispatcher(ModelSink(Event), delay=3600)
        d.enqueue(mine)
        d.enqueue(Event(n=6, s="other"))
        assert d.flush(timeout=30)
        assert mine.pk is None
        assert mine._state.adding  # Django documents Model._state (adding, db): not the sink's internals
        assert self.ns() == [5, 6]

    def test_a_failed_attempt_leaves_no_primary_keys_behind_for_the_split(self) -> None:
        # batch_size=2: bulk_create's first INSERT succeeds and gives its objects
        # primary keys, the second fails; the split must insert them anew, in order.
        sink = ModelSink(Event, row=lambda n: Event(n=n, s=f"s{n}"), batch_size=2)
        with pytest.raises(PartialFailure) as raised:
            sink([1, 2, 3, -4, 5])
        assert raised.value.failed_items == [-4]
        assert self.ns() == [1, 2, 3, 5]
        assert transactions() == 1

    def test_inside_a_callers_atomic_block_the_rows_commit_or_roll_back_with_it(self) -> None:
        sink = ModelSink(Event)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            before = cursor.fetchone()[0]

        def in_the_callers_transaction() -> None:
            with transaction.atomic():
                with pytest.raises(PartialFailure):
                    sink([item(1), item(-2), item(3)])  # split in savepoints of the caller's transaction
                assert self.ns() == [1, 3]
                raise LookupError("the caller rolls back")

        with pytest.raises(LookupError, match="the caller rolls back"):
            in_the_callers_transaction()
        assert self.ns() == []
        with connection.cursor() as cursor:  # the caller's connection was left open
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] == before

    def test_ignore_conflicts_makes_the_retry_of_a_committed_batch_harmless(self) -> None:
        sink = ModelSink(Event, ignore_conflicts=True)
        sink([item(1), item(2)])
        sink([item(2), item(3)])
        assert self.ns() == [1, 2, 3]

    def test_a_missing_table_is_final_and_a_conflict_or_deadlock_is_retried(self) -> None:
        with pytest.raises(WriteError) as raised:
            ModelSink(Missing)([{"n": 1}])
        assert (raised.value.retryable, raised.value.sqlstate) == (False, "42P01")
        assert raised.value.table == "django_sinks.Missing (no_such_table)"

        with connection.cursor() as cursor:
            cursor.execute(REFUSE_TWICE.replace("ON events", "ON django_sinks_event"))
        try:
            d = self.dispatcher(ModelSink(Event), delay=3600, retry=fast_retry(),
                                on_error=lambda exc, batch: None)
            recorded = Events(d, "batch_failed")
            for n in range(10):
                d.enqueue(item(n))
            assert d.flush(timeout=30)
            failures = [(e.error.retryable, e.error.sqlstate) for e in recorded.seen["batch_failed"]]
            assert failures == [(True, "40001"), (True, "40P01")]
            assert self.ns() == list(range(10))
        finally:
            with connection.cursor() as cursor:
                cursor.execute("DROP TRIGGER refuse ON django_sinks_event; DROP FUNCTION refuse_twice;"
                               " DROP SEQUENCE faults")

    def test_connections_are_opened_and_closed_around_each_batch_as_around_requests(self) -> None:
        opened: List[int] = []

        def count(sender: Any, connection: Any, **kwargs: Any) -> None:
            opened.append(threading.get_ident())

        connection_created.connect(count)
        settings = connections["default"].settings_dict
        try:
            d = self.dispatcher(ModelSink(Event), delay=3600)
            for n in range(3):
                d.enqueue(item(n))
                assert d.flush(timeout=30)
            assert len(opened) == 3  # CONN_MAX_AGE 0: closed after each batch
            assert len(set(opened)) == 1  # all on the worker thread
            assert threading.get_ident() not in opened

            opened.clear()
            settings["CONN_MAX_AGE"] = 600
            for n in range(3, 6):
                d.enqueue(item(n))
                assert d.flush(timeout=30)
            assert len(opened) == 1  # kept between batches
        finally:
            settings["CONN_MAX_AGE"] = 0
            connection_created.disconnect(count)
        assert self.ns() == list(range(6))

    def test_bad_arguments_are_refused_naming_the_parameter(self) -> None:
        cases: List[Any] = [
            ((object,), {}, TypeError, "model must be a Django model class"),
            ((Base,), {}, ValueError, "model must not be abstract"),
            ((Restaurant,), {}, ValueError, "model must not be a multi-table inherited model"),
            ((Event,), {"using": "nope"}, ValueError, "using: no database 'nope' in DATABASES"),
            ((Event,), {"using": 1}, TypeError, "using must be a database alias"),
            ((Event,), {"ignore_conflicts": 1}, TypeError, "ignore_conflicts must be a bool"),
            ((Event,), {"batch_size": 0}, ValueError, "batch_size must be a positive int or None"),
            ((Event,), {"row": "x"}, TypeError, "row must be callable or None"),
        ]
        for args, options, error, message in cases:
            with pytest.raises(error, match=message):
                ModelSink(*args, **options)
        ModelSink(Place)  # the parent of a multi-table model is fine

    def test_the_password_shows_nowhere(self) -> None:
        sink = ModelSink(Missing)
        with pytest.raises(WriteError) as raised:
            sink([{"n": 1}])
        texts = [repr(sink), str(raised.value), repr(raised.value), repr(raised.value.__cause__)]
        assert "ModelSink django_sinks.Missing" in texts[0]
        for text in texts:
            assert app.SECRET not in text


class ForkTests(SinkTestCase):
    def test_a_forked_child_writes_through_its_own_connections_and_leaves_the_parents_alone(self) -> None:
        if not hasattr(os, "fork"):
            self.skipTest("needs os.fork")
        sink = ModelSink(Event)
        d = self.dispatcher(sink, delay=3600)
        d.enqueue(item(1, "parent"))
        assert d.flush(timeout=30)
        settings = connections["default"].settings_dict
        settings["CONN_MAX_AGE"] = None  # the main thread's connection stays open across the calls below
        try:
            with connection.cursor() as cursor:  # the main thread's connection, inherited by the child
                cursor.execute("SELECT pg_backend_pid()")
                before = cursor.fetchone()[0]
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    os.close(read_fd)
                    d.enqueue(item(2, "child"))  # the child's worker: a new thread, its own connection
                    flushed = d.flush(timeout=30)
                    sink([item(3, "child")])  # the thread that forked: its inherited connection is dropped
                    os.write(write_fd, json.dumps([flushed, d.shutdown(timeout=10)]).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_fd)
            assert wait_for_child(pid, read_fd) == [True, True]
            with connection.cursor() as cursor:  # still the parent's session: the child did not end it
                cursor.execute("SELECT pg_backend_pid()")
                assert cursor.fetchone()[0] == before
        finally:
            settings["CONN_MAX_AGE"] = 0
            connection.close()
        d.enqueue(item(4, "parent"))
        assert d.flush(timeout=30)
        rows = select("SELECT k, n, backend FROM django_sinks_event ORDER BY seq")
        assert [(k, n) for k, n, _ in rows] == [("parent", 1), ("child", 2), ("child", 3), ("parent", 4)]
        children = {rows[1][2], rows[2][2]}
        assert before not in children


class RestartTests(SinkTestCase):
    databases = {"default", "restart"}  # noqa: RUF012

    def test_nothing_is_lost_when_the_server_restarts(self) -> None:
        server = app.SERVER
        assert server is not None
        d = self.dispatcher(ModelSink(Event, using="restart"), delay=3600, max_batch_size=100,
                            retry=patient_retry(), on_error=lambda exc, batch: None)  # expected: no log
        recorded = Events(d, "batch_failed")
        for n in range(500):
            d.enqueue(item(n))
        assert d.flush(timeout=30)
        server.stop("immediate")
        try:
            for n in range(500, 1000):
                d.enqueue(item(n))
            d.flush(timeout=0)
            assert recorded.wait("batch_failed")
        finally:
            server.start()
        assert d.flush(timeout=120)
        connections["restart"].close()  # the test's own connection died with the server
        assert self.ns("restart") == list(range(1000))
        assert all(event.error.retryable for event in recorded.seen["batch_failed"])


def select(statement: str) -> List[Any]:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return list(cursor.fetchall())


def transactions() -> int:
    """How many transactions wrote the rows of Event."""
    return len(select("SELECT DISTINCT tx FROM django_sinks_event"))


def wait_for_child(pid: int, read_fd: int, timeout: float = 60.0) -> Any:
    """The child's JSON result; a child still running after *timeout* is killed and fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} hung")
        threading.Event().wait(0.01)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0, status
    return json.loads(data)

