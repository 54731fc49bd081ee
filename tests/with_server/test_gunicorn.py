"""A real gunicorn serves the example Flask app and the example Django project on 127.0.0.1.

Each test starts gunicorn with two workers, sends numbered requests that
each enqueue one event, then sends SIGTERM to the master. The dispatchers'
delay is a minute, so nothing is delivered while serving: the events reach
the receiver only through each worker's exit flush, which must deliver
every one of them exactly once, and the master must exit 0 well within
gunicorn's graceful timeout. The time is the check that no worker hung:
at the graceful timeout gunicorn SIGKILLs the workers left, silently, and
still exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import requests

from batchdispatch.testing import Receiver

from ..conftest import ROOT
from .conftest import free_port

gunicorn = pytest.importorskip("gunicorn")

#: Requests sent to each server, one event each.
REQUESTS = 200
#: Seconds gunicorn gives its workers to exit after SIGTERM before it kills them.
GRACEFUL_TIMEOUT = 20
#: Seconds each worker's exit hook may spend delivering; below GRACEFUL_TIMEOUT.
EXIT_TIMEOUT = 5
#: Seconds the master may take to exit after SIGTERM: a worker that hangs overruns it.
EXIT_BUDGET = 10
#: Seconds to wait for gunicorn to answer its first request.
BOOT_TIMEOUT = 30

APPS: Dict[str, List[str]] = {
    "flask": ["examples.flask_app:app"],
    "django": ["--chdir", os.path.join("examples", "django_project"), "project.wsgi"],
}
#: gunicorn 25.1 and later open a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn: not in tests.
NO_CONTROL_SOCKET = ["--no-control-socket"] if tuple(gunicorn.version_info) >= (25, 1) else []
WORKERS: Dict[str, List[str]] = {
    "sync": ["--worker-class", "sync"],
    "gthread": ["--worker-class", "gthread", "--threads", "4"],
}


def wait_until_serving(http: requests.Session, base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until gunicorn answers any request (a 404 will do) and has spawned both
    workers, at most BOOT_TIMEOUT seconds.

    gunicorn spawns its workers one after the other: a SIGTERM that arrives
    while it is still spawning them starts one more worker after the signal,
    which the master then waits for until the graceful timeout.
    """
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            http.get(f"{base}/not-an-event", timeout=BOOT_TIMEOUT)
            if log.read_text().count("Booting worker with pid") >= 2:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not serve with 2 workers within {BOOT_TIMEOUT} s:\n{log.read_text()}")
        try:  # doubles as the pause between attempts
            server.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"gunicorn exited with {server.returncode} before serving:\n{log.read_text()}")


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
@pytest.mark.parametrize("worker", sorted(WORKERS))
@pytest.mark.parametrize("app", sorted(APPS))
def test_sigterm_delivers_every_event_exactly_once(
    app: str, worker: str, preload: bool, receiver: Receiver, tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The Django example reads BATCHDISPATCH_*; Flask's from_prefixed_env(), FLASK_BATCHDISPATCH_*.
    settings = dict(BATCHDISPATCH_URL=receiver.url, BATCHDISPATCH_DELAY="60",
                    BATCHDISPATCH_EXIT_TIMEOUT=str(EXIT_TIMEOUT))
    env = dict(os.environ, PYTHONPATH=ROOT, **settings, **{f"FLASK_{k}": v for k, v in settings.items()})
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
        "--graceful-timeout", str(GRACEFUL_TIMEOUT), "--timeout", "30", "--log-level", "info",
        *WORKERS[worker], *(["--preload"] if preload else []), *NO_CONTROL_SOCKET, *APPS[app],
    ]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output, subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
    ) as server:
        try:
            with requests.Session() as http:
                wait_until_serving(http, base, server, log)
                # A new connection per request, so that both workers get some (gthread keeps
                # connections alive, and a kept-alive connection stays with one worker).
                http.headers["Connection"] = "close"
                for n in range(REQUESTS):
                    answer = http.get(f"{base}/view", params={"id": n}, timeout=10)
                    assert (answer.status_code, answer.json()) == (202, {"accepted": True}), log.read_text()
            # A minute's delay: nothing may have gone out while serving.
            assert receiver.request_count == 0
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            returncode = server.wait(timeout=GRACEFUL_TIMEOUT + 10)
            took = time.monotonic() - stopping
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    output_text = log.read_text()
    assert returncode == 0, output_text
    assert took < EXIT_BUDGET, f"gunicorn took {took:.1f} s to exit:\n{output_text}"
    # The master exited after its workers, and each worker after its exit flush
    # had its answer: everything is recorded by now.
    events = receiver.items
    assert sorted(int(event["id"]) for event in events) == list(range(REQUESTS)), output_text
    assert server.pid not in {event["pid"] for event in events}  # workers enqueued, not the master
    assert receiver.request_count <= 2  # one exit flush, one batch, per worker
