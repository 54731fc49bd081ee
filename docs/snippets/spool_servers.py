"""The spool page's PostgresSpool and RedisSpool: ``python docs/snippets/spool_servers.py``.

It uses the shared servers on 127.0.0.1, in names of its own: a fresh
PostgreSQL schema (through search_path) and a fresh Redis spool name,
both removed at the end. spool_servers.out is what it prints.
"""
# needs: postgres, redis

import os
import uuid

import psycopg
import redis

base = "host=127.0.0.1 port=5432 dbname=test user=postgres"
schema = f"snippet_{uuid.uuid4().hex[:12]}"
with psycopg.connect(base, autocommit=True) as conn:
    conn.execute(f"CREATE SCHEMA {schema}")
os.environ.update(DATABASE_URL=f"{base} options='-c search_path={schema}'",
                  REDIS_URL="redis://127.0.0.1:6379/0", SPOOL_NAME=f"myapp-events-{uuid.uuid4().hex[:12]}")


def send(batch):
    print(f"sending {batch}")


# [start spool-servers]
import os

from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import PostgresSpool, RedisSpool

spool = PostgresSpool(os.environ["DATABASE_URL"], durable=True)   # postgresql://app@db.internal/app
# or, on Redis: redis://cache.internal:6379/0, and a name such as "myapp-events"
spool = RedisSpool(os.environ["REDIS_URL"], os.environ["SPOOL_NAME"], durable=True)
dispatcher = BackgroundDispatcher(send, spool=spool)
# [end spool-servers]

dispatcher.enqueue({"event": "signup"})
assert dispatcher.shutdown(timeout=10)
print(f"on Redis, left once delivered: {spool.count()}")
spool.purge()
spool.close()

with PostgresSpool(os.environ["DATABASE_URL"], durable=True) as spool:
    dispatcher = BackgroundDispatcher(send, spool=spool)
    dispatcher.enqueue({"event": "login"})
    assert dispatcher.shutdown(timeout=10)
    print(f"on PostgreSQL, left once delivered: {spool.count()}")

with psycopg.connect(base, autocommit=True) as conn:
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
client = redis.Redis.from_url(os.environ["REDIS_URL"])
leftover = list(client.scan_iter(f"*{os.environ['SPOOL_NAME']}*"))
if leftover:
    client.delete(*leftover)
client.close()
