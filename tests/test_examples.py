"""The examples run as documented, against their own receiver on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Dict, Set

import pytest

from batchdispatch.testing import Receiver, Response

from .conftest import ROOT, run_python


def test_webhooks_per_endpoint_retries_the_flaky_endpoint_and_gives_up_rejections() -> None:
    path = os.path.join(ROOT, "examples", "webhooks_per_endpoint.py")
    result = run_python(f"import runpy; runpy.run_path({path!r}, run_name='__main__')")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    delivered: Dict[str, int] = {}
    for line in lines:
        match = re.fullmatch(r"(ep-\w+): (\d+) delivered \(attempt (\d)\)", line)
        if match:
            delivered[match[1]] = delivered.get(match[1], 0) + int(match[2])
    assert delivered == {"ep-ok": 31, "ep-flaky": 30}  # ep-strict: partly delivered, partly failed
    assert "ep-flaky: attempt 1 failed: HTTP Error 503: Service Unavailable" in lines
    assert "ep-strict: gave up 3 items" in lines
    assert lines[-1].startswith("shutdown complete: True; enqueued 91, dispatched 88, failed 3")


def run_example(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` from the checkout, with no BATCHDISPATCH_* variable of ours leaking in."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATCHDISPATCH_")}
    environ.update(PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def test_flask_app_demo_serves_requests_and_ships_every_event_once() -> None:
    result = run_example(os.path.join("examples", "flask_app.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "flush: delivered; 20 events"
    assert lines[1].startswith("the receiver got 20 events in ")  # the demo checked the ids: 0 to 19, once


def test_django_project_demo_serves_requests_and_ships_every_event_once() -> None:
    result = run_example(os.path.join("examples", "django_project", "manage.py"), "demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "flush: delivered; 20 events"
    assert lines[1].startswith("the receiver got 20 events in ")  # the demo checked the ids: 0 to 19, once


RECEIVED = [
    "/hooks: from an HttpSink signed with the old and the new key: delivered",
    "/hooks/standardwebhooks: from an HttpSink signed with the old and the new key: delivered",
    "/hooks: accepted 2 events; the same request again: duplicate, already processed",
    "/hooks: a tampered body: 401",
    "/hooks/standardwebhooks: accepted 2 events; the same request again: duplicate, already processed",
    "/hooks/standardwebhooks: a tampered body: 401",
]


def test_flask_receiver_verifies_with_verify_webhook_and_with_the_standard_library() -> None:
    result = run_example(os.path.join("examples", "flask_receiver.py"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == RECEIVED
    assert result.stderr == ""


def test_django_receiver_verifies_with_verify_webhook_and_with_the_standard_library() -> None:
    result = run_example(os.path.join("examples", "django_project", "manage.py"), "receive_demo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == RECEIVED
    assert result.stderr == ""


def test_django_project_check_names_the_missing_url() -> None:
    result = run_example(os.path.join("examples", "django_project", "manage.py"), "check")
    assert result.returncode == 1
    assert "(batchdispatch.E003) BATCHDISPATCH['default'] has no URL" in result.stderr


def test_cron_job_delivers_to_its_own_receiver_and_exits_0() -> None:
    result = run_example(os.path.join("examples", "cron_job.py"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "enqueued 5, delivered 5, failed 0, pending 0",
        "the receiver got rows [0, 1, 2, 3, 4] in 1 request(s)",
    ]


def test_cron_job_exits_1_when_the_collector_refuses_the_events() -> None:
    with Receiver() as receiver:
        receiver.respond(400)  # final: not retried
        result = run_example(os.path.join("examples", "cron_job.py"), "--url", receiver.url)
        assert receiver.request_count == 1
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("enqueued 5, delivered 0, failed 5, pending 0; last error: POST ")
    # The library's own report reaches stderr although the job configured no logging.
    assert "batchdispatch:cron: dispatch of 5 items failed" in result.stderr
    # The job's own report, then the library's at exit.
    assert result.stderr.endswith(
        "cron_job: 5 events were not delivered\n"
        "batchdispatch:cron: at exit, not delivered in this process: 5 failed; see stats()\n"
    )


def test_cron_job_exits_1_without_hanging_when_the_collector_does_not_answer() -> None:
    with Receiver() as receiver:
        receiver.respond(*[Response(200, delay=60)] * 10)  # Receiver.close() cuts the waits
        started = time.monotonic()
        result = run_example(
            os.path.join("examples", "cron_job.py"), "--url", receiver.url, "--timeout", "0.5")
        took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stdout == "enqueued 5, delivered 0, failed 0, pending 5\n"
    # The library's own report reaches stderr although the job configured no logging.
    assert "batchdispatch:cron: exit flush timed out with 5 items undelivered" in result.stderr
    assert "cron_job: 5 events were not delivered\n" in result.stderr
    # 0.5 s of flush, 1 s of grace at shutdown and 1 s at exit, plus start-up.
    assert took < 10


def files_in_checkout() -> Set[str]:
    """Every file of the checkout but those of hidden folders (.git, .venv, caches) and __pycache__."""
    found = set()
    for directory, folders, files in os.walk(ROOT):
        folders[:] = [name for name in folders if not name.startswith(".") and name != "__pycache__"]
        found.update(os.path.relpath(os.path.join(directory, name), ROOT) for name in files)
    return found


def test_celery_example_delivers_every_event_through_a_real_prefork_worker() -> None:
    pytest.importorskip("celery")
    before = files_in_checkout()
    result = run_example(os.path.join("examples", "celery_tasks.py"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # One flush per pool child at its shutdown: 2 children, so at most 2 requests.
    assert re.fullmatch(r"20 tasks done; the receiver got 20 events in [12] request\(s\)\n", result.stdout)
    # The broker's files (queue, control, results) stay in the run's temporary directory.
    assert files_in_checkout() - before == set()


def test_serverless_handler_delivers_before_each_invocation_returns_and_stays_bounded() -> None:
    result = run_example(os.path.join("examples", "serverless_handler.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "invocation 0: 200; arrived so far: [0]",
        "invocation 1: 200; arrived so far: [0, 1]",
        "invocation 2: 200; arrived so far: [0, 1, 2]",
    ]
    stalled = r"invocation 3, collector stalled: returned after [23] s; not yet delivered: 1"
    assert re.fullmatch(stalled, lines[3])
    assert "flush_after: flushing <BackgroundDispatcher name='lambda'" in result.stderr


def test_cron_job_exits_1_in_a_bounded_time_when_the_collector_is_down() -> None:
    with Receiver() as receiver:
        url = receiver.url  # closed at the end of the block: nothing listens there any more
    started = time.monotonic()
    result = run_example(os.path.join("examples", "cron_job.py"), "--url", url, "--timeout", "2")
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    # Failed, or still pending when the flush gave up (urllib3 was backing off): never delivered.
    assert result.stdout.startswith("enqueued 5, delivered 0, ")
    assert "cron_job: 5 events were not delivered\n" in result.stderr
    # 2 s of flush at most, then a shutdown and an exit hook of 1 s each, plus start-up.
    assert took < 10
