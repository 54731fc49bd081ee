"""The sinks section's SQL part: one INSERT per item, as applications write it, against the SQL sinks.

On the PostgreSQL of :data:`ENV` (by default the machine's shared server,
database ``test``), in a schema of its own dropped at the end:

* ``INSERT`` per item on one autocommit connection, against
  :class:`~batchdispatch.sinks.postgres.PostgresSink` with ``COPY`` and
  with ``executemany``;
* SQLAlchemy's ``connection.execute(insert(table), item)`` per item, one
  transaction each, against :class:`~batchdispatch.sinks.sqlalchemy.TableSink`
  (when SQLAlchemy is installed);
* Django's ``Model.objects.create(**item)`` per item against
  :class:`~batchdispatch.sinks.django.ModelSink` (when Django is installed
  and not configured already in this process: the bench configures it,
  with one model whose table it makes itself).

Each per-item run writes ``http_posts`` rows (the HTTP section's sizes), each
sink run ``http_items`` through a BackgroundDispatcher with batches of
:data:`BATCH`; a run's figure counts from its first write (or enqueue) until
the last row is committed, and the table must then hold every row, or the
bench fails.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, TextIO

from .._dispatcher import BackgroundDispatcher
from .harness import DRAIN_TIMEOUT, BenchError
from .options import BenchOptions
from .output import status
from .sinks import Row, Unavailable

#: The environment variable that points the bench at a PostgreSQL (a conninfo or URL).
ENV = "BATCHDISPATCH_BENCH_POSTGRES"
#: Where the bench writes when ENV is not set: the machine's shared server (see the README).
DEFAULT_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
#: Rows per batch of the sinks, and their dispatcher's delay.
BATCH, DELAY = 1000, 0.01

TABLE = "CREATE TABLE {name} (seq bigserial PRIMARY KEY, k text NOT NULL, n int NOT NULL, s text NOT NULL)"
COLUMNS = ("k", "n", "s")


def row_for(n: int) -> Dict[str, Any]:
    return {"k": "page_view", "n": n, "s": f"/products/{n % 97}?ref=newsletter"}


def measure(options: BenchOptions, err: TextIO) -> List[Row]:
    try:
        import psycopg
        from psycopg.conninfo import make_conninfo
    except ImportError:
        raise Unavailable("psycopg is not installed: pip install '.[postgres]'") from None
    base = os.environ.get(ENV) or DEFAULT_CONNINFO
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        raise Unavailable(f"PostgreSQL does not answer at {_shown(base)} (set {ENV}): "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    conninfo = make_conninfo(base, options=f"-c search_path={schema}")
    try:
        return _measure_all(conninfo, options, err)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _measure_all(conninfo: str, options: BenchOptions, err: TextIO) -> List[Row]:
    import psycopg

    from ..sinks.postgres import PostgresSink

    per_item, batched = options.http_posts, options.http_items
    rows: List[Row] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(TABLE.format(name="bench_pg"))
        statement = "INSERT INTO bench_pg (k, n, s) VALUES (%(k)s, %(n)s, %(s)s)"
        status(err, f"bench: sinks, PostgreSQL, {per_item:,} INSERTs")
        conn.execute(statement, row_for(-1))  # warm-up
        slow = _timed(per_item, lambda n: conn.execute(statement, row_for(n)))
        _check(conn, "bench_pg", per_item + 1, "INSERT per item")
        for method in ("copy", "executemany"):
            conn.execute("TRUNCATE bench_pg")
            status(err, f"bench: sinks, PostgreSQL, {batched:,} items, PostgresSink {method}")
            with PostgresSink(conninfo, "bench_pg", COLUMNS, method=method) as sink:
                fast = _through_sink(sink, batched, f"PostgresSink {method}")
            _check(conn, "bench_pg", batched + 1, f"PostgresSink {method}")
            rows.append((f"PostgreSQL: PostgresSink, {'COPY' if method == 'copy' else method}",
                         "INSERT per item, autocommit", slow, fast))
        conn.execute(TABLE.format(name="bench_sa"))
        found = _sqlalchemy(conninfo, per_item, batched, err)
        if found is not None:
            _check(conn, "bench_sa", per_item + batched + 2, "SQLAlchemy")
            rows.append(found)
        found = _django(conninfo, per_item, batched, err)
        if found is not None:
            _check(conn, "bench_django", per_item + batched + 2, "Django")
            rows.append(found)
    return rows


def _sqlalchemy(conninfo: str, per_item: int, batched: int, err: TextIO) -> Optional[Row]:
    try:
        import sqlalchemy
    except ImportError:
        return None
    import psycopg

    from ..sinks.sqlalchemy import TableSink

    columns = (sqlalchemy.Column(name, sqlalchemy.Integer if name == "n" else sqlalchemy.Text)
               for name in COLUMNS)
    table = sqlalchemy.Table(
        "bench_sa", sqlalchemy.MetaData(), sqlalchemy.Column("seq", sqlalchemy.BigInteger, primary_key=True),
        *columns,
    )
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo))
    insert = sqlalchemy.insert(table)

    def one(n: int) -> None:
        with engine.begin() as connection:
            connection.execute(insert, row_for(n))

    try:
        status(err, f"bench: sinks, SQLAlchemy, {per_item:,} inserts")
        one(-1)
        slow = _timed(per_item, one)
        status(err, f"bench: sinks, SQLAlchemy, {batched:,} items, TableSink")
        fast = _through_sink(TableSink(engine, table), batched, "TableSink")
    finally:
        engine.dispose()
    return ("SQLAlchemy Core: TableSink", "execute per item, a transaction each", slow, fast)


#: The Django model of the bench, made once per process (Django keeps models for good).
_django_model: List[Any] = []


def _django(conninfo: str, per_item: int, batched: int, err: TextIO) -> Optional[Row]:
    try:
        import django  # type: ignore[import-untyped]
        from django.conf import settings  # type: ignore[import-untyped]
    except ImportError:
        return None
    from psycopg.conninfo import conninfo_to_dict

    if not _django_model:
        if settings.configured:
            return None  # this process's Django is someone else's: leave it be
        parts = conninfo_to_dict(conninfo)
        settings.configure(
            INSTALLED_APPS=["batchdispatch.contrib.django"], USE_TZ=True,
            DATABASES={"default": {
                "ENGINE": "django.db.backends.postgresql", "NAME": parts.get("dbname", ""),
                "HOST": parts.get("host", ""), "PORT": str(parts.get("port", "")),
                "USER": parts.get("user", ""), "PASSWORD": parts.get("password", ""),
                "OPTIONS": {"options": parts.get("options", "")},
                # What the docs advise for ModelSink: keep the worker's connection between batches.
                "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True,
            }},
        )
        django.setup()
        _django_model.append(_make_django_model())
    from django.db import connection, connections  # type: ignore[import-untyped]

    from ..sinks.django import ModelSink

    model = _django_model[0]
    with connection.schema_editor() as editor:
        editor.create_model(model)
    try:
        create = model.objects.create
        status(err, f"bench: sinks, Django, {per_item:,} Model.objects.create")
        create(**row_for(-1))
        slow = _timed(per_item, lambda n: create(**row_for(n)))
        status(err, f"bench: sinks, Django, {batched:,} items, ModelSink")
        fast = _through_sink(ModelSink(model), batched, "ModelSink")
    finally:
        connections.close_all()
    return ("Django ORM: ModelSink", "Model.objects.create per item", slow, fast)


def _make_django_model() -> Any:
    from django.db import models

    class Meta:
        app_label = "batchdispatch"
        db_table = "bench_django"

    attributes = {
        "__module__": __name__, "Meta": Meta, "seq": models.BigAutoField(primary_key=True),
        "k": models.TextField(), "n": models.IntegerField(), "s": models.TextField(),
    }
    return type("BenchItem", (models.Model,), attributes)


def _timed(count: int, write: Callable[[int], object]) -> float:
    """Items per second of *count* calls of *write*."""
    started = time.perf_counter()
    for n in range(count):
        write(n)
    return count / (time.perf_counter() - started)


def _through_sink(sink: Callable[[List[Any]], None], items: int, label: str) -> float:
    """Items per second through a BackgroundDispatcher over *sink*, from the first enqueue until flushed."""
    dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=BATCH, max_queue_size=None, name=f"bench-{label}",
    )
    try:
        dispatcher.enqueue(row_for(-1))  # warm-up: the worker runs, its connection is open
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{label}: the warm-up row was not written: {dispatcher.stats().last_error!r}")
        payloads = [row_for(n) for n in range(items)]
        enqueue = dispatcher.enqueue
        started = time.perf_counter()
        for payload in payloads:
            enqueue(payload)
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{label}: writing took more than {DRAIN_TIMEOUT:g} s")
        elapsed = time.perf_counter() - started
        stats = dispatcher.stats()
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
    if stats.failed or stats.dropped:
        raise BenchError(f"{label}: {stats.failed:,} rows failed, {stats.dropped:,} dropped,"
                         f" last error: {stats.last_error!r}")
    return items / elapsed


def _check(conn: Any, table: str, expected: int, label: str) -> None:
    (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    if count != expected:
        raise BenchError(f"{label}: the table holds {count:,} rows, not {expected:,}")


def _shown(conninfo: str) -> str:
    """*conninfo* without its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts: Dict[str, Any] = conninfo_to_dict(conninfo)
    except Exception:  # noqa: BLE001 - a conninfo psycopg cannot read: say so, without quoting it
        return "(a conninfo that cannot be read)"
    return f"{parts.get('user', '')}@{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/" \
           f"{parts.get('dbname', '')}"

