"""The ModelSink tests under Django's runner: ``python -m tests.with_server.django_sinks.run [REPORT]``.

Django's DiscoverRunner creates a test database for each alias on its
server, runs the app's migration there, runs :mod:`.tests` and drops the
databases. ``default`` is the shared PostgreSQL, and ``restart`` a private
one on a free port that the tests stop and start (the package's
``SERVER``). The test databases' names carry a random part, so that runs
on the same machine at the same time cannot collide. Exits 0 when every
test passed; with *REPORT*, a path, writes there as JSON the ids of the
tests that ran and of those that failed, raised or were skipped.
"""

from __future__ import annotations

import gc
import json
import sys
import uuid
from typing import Any, Dict, Optional

from . import SECRET


def database(port: int, name: str, test_name: str) -> Dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "NAME": name,
        "USER": "postgres",
        "PASSWORD": SECRET,
        "TEST": {"NAME": test_name},
    }


def main(report: Optional[str] = None) -> int:
    import django
    from django.conf import settings

    from ...services import POSTGRES_PORT, PostgresServer
    from .. import django_sinks as app

    run = uuid.uuid4().hex[:12]
    with PostgresServer() as server:
        app.SERVER = server
        settings.configure(
            SECRET_KEY="batchdispatch-tests",
            INSTALLED_APPS=["tests.with_server.django_sinks"],
            DATABASES={
                "default": database(POSTGRES_PORT, "test", f"test_bd_sinks_{run}"),
                "restart": database(server.port, "postgres", f"test_bd_restart_{run}"),
            },
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        )
        django.setup()
        runner = _runner()(verbosity=2, interactive=False)
        failures = runner.run_tests(["tests.with_server.django_sinks.tests"])
    if report is not None:
        with open(report, "w", encoding="utf-8") as file:
            json.dump(runner.outcome, file)
    return 1 if failures else 0


def _runner() -> Any:
    from django.test.runner import DiscoverRunner, iter_test_cases

    class Runner(DiscoverRunner):  # type: ignore[misc]
        """DiscoverRunner that also keeps what became of each test."""

        outcome: Dict[str, Any] = {}  # noqa: RUF012

        def teardown_databases(self, old_config: Any, **kwargs: Any) -> Any:
            # A thread's Django connection (a DatabaseWrapper, in a reference
            # cycle with its helpers) outlives the thread until the garbage
            # collector runs: with CONN_MAX_AGE > 0, a worker that ended still
            # holds its session, and DROP DATABASE would find it in use. When
            # the collector last ran depends on allocations: run it now.
            gc.collect()
            return super().teardown_databases(old_config, **kwargs)

        def run_suite(self, suite: Any, **kwargs: Any) -> Any:
            ids = [test.id() for test in iter_test_cases(suite)]  # the suite forgets them as they run
            result = super().run_suite(suite, **kwargs)
            self.outcome = {
                "ran": ids,
                "failures": [test.id() for test, _ in result.failures],
                "errors": [test.id() for test, _ in result.errors],
                "skipped": [test.id() for test, _ in result.skipped],
                "tests_run": result.testsRun,
            }
            return result

    return Runner


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
