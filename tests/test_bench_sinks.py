"""The bench's sinks section: each engine's part against its server, and a part whose server is away.

Nothing here asserts on speed: the figures belong to the bench's output.
"""

from __future__ import annotations

import io
import re

import pytest

from batchdispatch import _bench
from batchdispatch._bench import sinks, sinks_rabbitmq, sinks_redis

from .services import free_port
from .test_cli import run_cli


def test_the_parts_are_listed() -> None:
    assert {"sinks_redis", "sinks_rabbitmq"} <= set(sinks.PARTS)


def test_bench_only_sinks_measures_each_engine(redis_url: str, rabbitmq_url: str) -> None:
    pytest.importorskip("redis")
    pytest.importorskip("pika")
    result = run_cli("bench", "--quick", "--only", "sinks")
    assert result.returncode == 0, result.stderr
    row = r"^\| (.+?) +\| +(.+?) \| +([\d,]+) \| +([\d,]+) \| +([\d.]+)x \|$"
    rows = re.findall(row, result.stdout, re.MULTILINE)
    assert {(engine, way) for engine, way, *_ in rows} >= {
        ("Redis stream", "client.xadd() per item"),
        ("RabbitMQ, confirms", "basic_publish + confirm per item"),
    }
    assert "sinks_redis: not measured" not in result.stdout
    assert "sinks_rabbitmq: not measured" not in result.stdout
    assert "(a) deque.append" not in result.stdout


def test_a_part_whose_server_does_not_answer_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("redis")
    pytest.importorskip("pika")
    port = free_port()
    monkeypatch.setattr(sinks_redis, "URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setattr(sinks_rabbitmq, "URL", f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    monkeypatch.setattr(sinks, "PARTS", ("sinks_redis", "sinks_rabbitmq"))
    measured = sinks.measure(_bench.QUICK, io.StringIO())
    assert measured[0] == []
    assert measured[1] == [
        f"sinks_redis: not measured: Redis does not answer on redis://127.0.0.1:{port}/0: ConnectionError",
        f"sinks_rabbitmq: not measured: RabbitMQ does not answer on 127.0.0.1:{port}: AMQPConnectionError",
    ]
    report = sinks.report(_bench.QUICK, measured)
    assert report[0].startswith("Sinks: items/s delivered per item")
    assert report[1:] == measured[1]
