"""The servers the sink tests need answer, and the private ones can be stopped and started again.

These run in CI with BATCHDISPATCH_REQUIRE_SERVICES=1: a server that does
not answer there fails the run rather than skipping every test that needs
it, and so does a missing tool of a server that a test runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict

import pytest

from .conftest import ROOT
from .services import REQUIRE_ENV, PostgresServer, RedisServer, unique_name

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


RABBITMQ_RESTART_TEST = (
    "tests/with_server/test_sinks_rabbitmq.py::test_nothing_is_lost_when_the_broker_closes_the_connection_mid_run"
)


def run_without_programs(test: str, tmp_path: Any, require: bool) -> subprocess.CompletedProcess[str]:
    """Run *test* in a pytest of its own whose PATH is an empty directory: no server's tool is found."""
    env: Dict[str, str] = dict(os.environ, PATH=str(tmp_path), PYTHONPATH=ROOT)
    env.pop(REQUIRE_ENV, None)
    if require:
        env[REQUIRE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_missing_rabbitmqctl_fails_the_restart_test_where_services_are_required(tmp_path: Any) -> None:
    result = run_without_programs(RABBITMQ_RESTART_TEST, tmp_path, require=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout  # the fixture fails, before the test enqueues anything
    assert "rabbitmqctl is not installed" in result.stdout
    assert f"({REQUIRE_ENV}=1: a missing server fails the run)" in result.stdout


def test_a_missing_rabbitmqctl_skips_the_restart_test_elsewhere(tmp_path: Any) -> None:
    result = run_without_programs(RABBITMQ_RESTART_TEST, tmp_path, require=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "rabbitmqctl is not installed" in result.stdout
