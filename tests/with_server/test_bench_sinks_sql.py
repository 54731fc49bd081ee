"""``python -m batchdispatch bench --only sinks``: the SQL part, run as a real subprocess.

Nothing here asserts on speed (see tests/test_cli.py): only that each row
is there, with figures, and that a server that does not answer is said so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Dict, Optional

import pytest

pytest.importorskip("psycopg")

from ..conftest import ROOT
from ..services import POSTGRES_PORT, free_port, need
from .sql_sinks import SECRET, query

SHARED = f"host=127.0.0.1 port={POSTGRES_PORT} dbname=test user=postgres"


def bench(env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchdispatch", "bench", "--quick", "--only", "sinks"],
        cwd=ROOT, env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_the_sql_part_measures_each_sink_against_its_per_item_way() -> None:
    need("PostgreSQL", POSTGRES_PORT)
    result = bench()
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (.+?) +\| +(.+?) \| +([\d,]+) \| +([\d,]+) \| +([\d.]+)x \|$", result.stdout,
                      re.MULTILINE)
    sql = ("PostgreSQL", "SQLAlchemy", "Django")  # the other parts' rows are tested with them
    assert [(engine, way) for engine, way, *_ in rows if engine.startswith(sql)] == [
        ("PostgreSQL: PostgresSink, COPY", "INSERT per item, autocommit"),
        ("PostgreSQL: PostgresSink, executemany", "INSERT per item, autocommit"),
        ("SQLAlchemy Core: TableSink", "execute per item, a transaction each"),
        ("Django ORM: ModelSink", "Model.objects.create per item"),
    ]
    assert "sinks_sql: not measured" not in result.stdout
    assert query(SHARED, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'") == []  # dropped


def test_a_server_that_does_not_answer_is_reported_and_the_bench_goes_on() -> None:
    conninfo = f"host=127.0.0.1 port={free_port()} dbname=test user=postgres password={SECRET}"
    result = bench({"BATCHDISPATCH_BENCH_POSTGRES": conninfo})
    assert result.returncode == 0, result.stderr
    assert re.search(r"^sinks_sql: not measured: PostgreSQL does not answer at postgres@127\.0\.0\.1:\d+/test"
                     r" \(set BATCHDISPATCH_BENCH_POSTGRES\): ", result.stdout, re.MULTILINE), result.stdout
    assert SECRET not in result.stdout + result.stderr
