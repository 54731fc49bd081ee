"""The servers the sink tests need answer, and the private ones can be stopped and started again.

These run in CI with BATCHDISPATCH_REQUIRE_SERVICES=1: a server that does
not answer there fails the run rather than skipping every test that needs it.
"""

from __future__ import annotations

from typing import Any

import pytest

from .services import PostgresServer, RedisServer, unique_name

redis = pytest.importorskip("redis")
psycopg = pytest.importorskip("psycopg")
pika = pytest.importorskip("pika")


def test_the_shared_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = unique_name()
    try:
        client.set(key, "x", ex=60)
        assert client.get(key) == b"x"
    finally:
        client.delete(key)
        client.close()


def test_each_test_gets_a_postgres_schema_of_its_own(postgres_conninfo: str) -> None:
    with psycopg.connect(postgres_conninfo) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (1)")
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        assert schema.startswith("test_")
        assert conn.execute("SELECT n FROM t").fetchall() == [(1,)]


def test_the_shared_rabbitmq_answers(rabbitmq_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        queue = unique_name()
        channel.queue_declare(queue, auto_delete=True)
        channel.basic_publish("", queue, b"hello")
        _, _, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"hello"
        channel.queue_delete(queue)
    finally:
        connection.close()


def test_a_private_redis_can_be_killed_and_started_again() -> None:
    with RedisServer() as server:
        client: Any = redis.Redis.from_url(server.url, socket_timeout=5)
        client.set("k", "v")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        server.start()
        assert client.get("k") is None  # nothing kept on disk
        client.close()


def test_a_private_postgres_can_be_stopped_and_started_again() -> None:
    with PostgresServer() as server:
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (7)")
        server.stop("immediate")  # as a crash
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.conninfo, connect_timeout=2)
        server.start()
        with psycopg.connect(server.conninfo) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]
