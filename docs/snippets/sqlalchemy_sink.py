"""The SQLAlchemy page's TableSink, and its exactly-once variant: ``python docs/snippets/sqlalchemy_sink.py``.

It uses the shared PostgreSQL on 127.0.0.1, in a schema of its own
(PGOPTIONS sets the search_path of every connection), dropped at the end.
sqlalchemy_sink.out is what it prints.
"""
# needs: postgres

import atexit
import os
import uuid

import psycopg

server = "postgresql://postgres@127.0.0.1:5432/test"
schema = f"snippet_{uuid.uuid4().hex[:12]}"
with psycopg.connect(server, autocommit=True) as conn:
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.page_views (id serial PRIMARY KEY, path text NOT NULL, "
                 "at timestamptz)")
    conn.execute(f"CREATE TABLE {schema}.events (id text PRIMARY KEY, kind text)")
os.environ.update(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                  PGOPTIONS=f"-c search_path={schema}")


@atexit.register
def drop_schema():  # even when a check below fails
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


# [start sqlalchemy-sink]
import os
from datetime import datetime, timezone

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text, create_engine

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.sqlalchemy import TableSink

engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)  # postgresql+psycopg://app:...
page_views = Table("page_views", MetaData(),
                   Column("id", Integer, primary_key=True),
                   Column("path", Text, nullable=False),
                   Column("at", DateTime(timezone=True)))

views = BackgroundDispatcher(TableSink(engine, page_views), delay=1.0, max_batch_size=1000,
                             retry=RetryPolicy(max_attempts=10, backoff=0.5, max_backoff=30))
now = datetime.now(timezone.utc)
views.enqueue({"path": "/pricing", "at": now})
# [end sqlalchemy-sink]

assert views.shutdown(timeout=10)
with engine.connect() as conn:
    print(f"page_views: {[(i, path, at == now) for i, path, at in conn.execute(page_views.select())]}")

# [start sqlalchemy-once]
from sqlalchemy.dialects.postgresql import insert  # or sqlalchemy.dialects.sqlite

events = Table("events", MetaData(), Column("id", Text, primary_key=True), Column("kind", Text))
TableSink(engine, insert(events).on_conflict_do_nothing(index_elements=["id"]))
# [end sqlalchemy-once]

once = BackgroundDispatcher(TableSink(engine, insert(events).on_conflict_do_nothing(index_elements=["id"])))
once.enqueue({"id": "e-1", "kind": "signup"})
assert once.flush(timeout=10)
once.enqueue({"id": "e-1", "kind": "signup"})  # again, as a retry after a lost answer would write it
assert once.shutdown(timeout=10)
with engine.connect() as conn:
    print(f"events: {[tuple(row) for row in conn.execute(events.select())]}")
engine.dispose()
