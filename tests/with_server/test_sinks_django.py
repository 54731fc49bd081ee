"""ModelSink under Django's own test runner, with the PostgreSQL backend and a real migration.

Django's settings are configured once per process, and this suite's other
Django tests configure them without a database; so the ModelSink tests
(``tests/with_server/django_sinks/tests.py``) run in a subprocess,
``python -m tests.with_server.django_sinks.run``: Django's DiscoverRunner
creates test databases with names of their own on the shared server and on
a private one, runs the app's migration on each, runs the tests and drops
the databases. This test checks that every one of them ran and passed.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from typing import Any, List

import pytest

pytest.importorskip("django")
pytest.importorskip("psycopg")

from ..conftest import ROOT
from ..services import POSTGRES_PORT, need

APP = os.path.join(ROOT, "tests", "with_server", "django_sinks")


def django_tests() -> List[str]:
    """The id of every test in the app's tests.py."""
    with open(os.path.join(APP, "tests.py"), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    return [
        f"tests.with_server.django_sinks.tests.{node.name}.{method.name}"
        for node in tree.body if isinstance(node, ast.ClassDef)
        for method in node.body if isinstance(method, ast.FunctionDef) and method.name.startswith("test_")
    ]


@pytest.mark.timeout(300)
def test_model_sink_under_the_django_test_runner_with_postgresql_and_a_migration(tmp_path: Any) -> None:
    need("PostgreSQL", POSTGRES_PORT)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "tests.with_server.django_sinks.run", str(report)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=280,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    outcome = json.loads(report.read_text())
    expected = django_tests()
    assert len(expected) >= 10
    assert sorted(outcome["ran"]) == sorted(expected)
    assert outcome["tests_run"] == len(expected)
    assert (outcome["failures"], outcome["errors"], outcome["skipped"]) == ([], [], [])
    assert "Creating test database for alias 'default' ('test_bd_sinks_" in output
    assert "Creating test database for alias 'restart' ('test_bd_restart_" in output
    assert output.count("Applying django_sinks.0001_initial... OK") == 2  # on each server
