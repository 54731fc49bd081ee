"""The PostgreSQL page's sink, built from Django's settings: ``python docs/snippets/postgres_django.py``.

It uses the shared server on 127.0.0.1, in a schema of its own (PGOPTIONS
sets the search_path of every connection), dropped at the end.
postgres_django.out is what it prints.
"""
# needs: postgres

import atexit
import os
import uuid
from types import SimpleNamespace

import django
import psycopg
from django.conf import settings

server = "postgresql://postgres@127.0.0.1:5432/test"
schema = f"snippet_{uuid.uuid4().hex[:12]}"
with psycopg.connect(server, autocommit=True) as conn:
    conn.execute(f"CREATE SCHEMA {schema}")
os.environ["PGOPTIONS"] = f"-c search_path={schema}"


@atexit.register
def drop_schema():  # even when a check below fails
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


with psycopg.connect(server, autocommit=True) as conn:
    conn.execute("CREATE TABLE analytics_pageview (path text, user_id bigint)")
settings.configure(DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": 5432, "NAME": "test",
    "USER": "postgres", "PASSWORD": "",
}})
django.setup()

# [start postgres-django]
# analytics/events.py
import functools

from django.conf import settings
from psycopg.conninfo import make_conninfo

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.postgres import PostgresSink


@functools.cache
def page_views():
    db = settings.DATABASES["default"]
    dsn = make_conninfo(host=db["HOST"], port=db["PORT"], dbname=db["NAME"],
                        user=db["USER"], password=db["PASSWORD"])
    return BackgroundDispatcher(PostgresSink(dsn, "analytics_pageview", ["path", "user_id"]),
                                delay=1.0, max_batch_size=1000,
                                retry=RetryPolicy(max_attempts=10, max_backoff=30))


# in a view
def pricing(request):
    page_views().enqueue({"path": request.path, "user_id": request.user.pk})
    ...
# [end postgres-django]


pricing(SimpleNamespace(path="/pricing", user=SimpleNamespace(pk=42)))  # as Django would call it
assert page_views().shutdown(timeout=10)  # a sync point: the row is written
page_views().dispatch.close()
with psycopg.connect(server) as conn:
    print(f"analytics_pageview: {conn.execute('SELECT path, user_id FROM analytics_pageview').fetchall()}")
