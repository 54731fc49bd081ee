"""The PostgreSQL page's sink, and its exactly-once variant: ``python docs/snippets/postgres_sink.py``.

It uses the shared server on 127.0.0.1, in a schema of its own (PGOPTIONS
sets the search_path of every connection), dropped at the end.
postgres_sink.out is what it prints.
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
os.environ.update(DATABASE_URL=server, PGOPTIONS=f"-c search_path={schema}")


@atexit.register
def drop_schema():  # even when a check below fails
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


with psycopg.connect(server, autocommit=True) as conn:
    conn.execute("CREATE TABLE page_views (path text, user_id bigint, at timestamptz)")
    conn.execute("CREATE TABLE events (id uuid PRIMARY KEY, kind text, at timestamptz)")

# [start postgres-sink]
import os
from datetime import datetime, timezone

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.postgres import PostgresSink

sink = PostgresSink(os.environ["DATABASE_URL"], "page_views",   # postgresql://app:secret@db.internal/app
                    ["path", "user_id", "at"])
page_views = BackgroundDispatcher(sink, delay=1.0, max_batch_size=1000,
                                  retry=RetryPolicy(max_attempts=10, backoff=0.5, max_backoff=30))

now = datetime.now(timezone.utc)
page_views.enqueue({"path": "/pricing", "user_id": 42, "at": now})   # any thread, at once
...
page_views.shutdown(timeout=10)   # writes what is left
sink.close()                      # the pool
# [end postgres-sink]

with psycopg.connect(server) as conn:
    print(f"page_views: {conn.execute('SELECT path, user_id, at = %s FROM page_views', [now]).fetchall()}")

# [start postgres-once]
import uuid

dsn = os.environ["DATABASE_URL"]
sink = PostgresSink(dsn, "events", ["id", "kind", "at"], method="executemany", ignore_conflicts=True)
events = BackgroundDispatcher(sink, delay=1.0)
events.enqueue({"id": uuid.uuid4(), "kind": "signup", "at": now})
# [end postgres-once]

assert events.flush(timeout=10)
with psycopg.connect(server) as conn:
    (written,) = conn.execute("SELECT id FROM events").fetchone()
# The same event again, as a retry after a lost answer would write it:
events.enqueue({"id": written, "kind": "signup", "at": now})
assert events.shutdown(timeout=10)
sink.close()
with psycopg.connect(server) as conn:
    print(f"events: {conn.execute('SELECT count(*), min(kind) FROM events').fetchone()}")
