"""The PostgreSQL page's Flask app: ``python docs/snippets/postgres_flask.py``.

It uses the shared server on 127.0.0.1, in a schema of its own (PGOPTIONS
sets the search_path of every connection), dropped at the end.
postgres_flask.out is what it prints.
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
os.environ.update(FLASK_DATABASE_URL=server, PGOPTIONS=f"-c search_path={schema}")


@atexit.register
def drop_schema():  # even when a check below fails
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


with psycopg.connect(server, autocommit=True) as conn:
    conn.execute("CREATE TABLE page_views (path text, user_id bigint)")

# [start postgres-flask]
from flask import Flask, current_app

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.postgres import PostgresSink


def create_app():
    app = Flask(__name__)
    app.config.from_prefixed_env()        # FLASK_DATABASE_URL=postgresql://...
    sink = PostgresSink(app.config["DATABASE_URL"], "page_views", ["path", "user_id"])
    app.extensions["page_views"] = BackgroundDispatcher(
        sink, delay=1.0, max_batch_size=1000, retry=RetryPolicy(max_attempts=10, max_backoff=30),
    )

    @app.get("/<path:path>")
    def page(path):
        current_app.extensions["page_views"].enqueue({"path": path, "user_id": None})
        return f"page {path}"

    return app
# [end postgres-flask]


app = create_app()
client = app.test_client()
print(f"GET /pricing: {client.get('/pricing').text}; GET /docs/install: {client.get('/docs/install').text}")
assert app.extensions["page_views"].shutdown(timeout=10)  # a sync point: both rows written
app.extensions["page_views"].dispatch.close()
with psycopg.connect(server) as conn:
    print(f"page_views: {conn.execute('SELECT path, user_id FROM page_views ORDER BY path').fetchall()}")
