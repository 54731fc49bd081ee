"""A real uWSGI serving tests/with_server/uwsgi_app.py, shipping to a Receiver in this process.

Each request enqueues one numbered event. After the requests, uWSGI is
stopped with a signal and waited for; every event must then have arrived
exactly once. uWSGI runs Python's atexit in its workers when they stop
(through ``Py_Finalize``, unless ``--skip-atexit`` or
``--skip-atexit-teardown``), so the exit hook delivers what is left.

The binary is ``$BATCHDISPATCH_TEST_UWSGI`` (``{python}`` in it stands for
this interpreter's version, ``3.11`` say) or the ``uwsgi`` beside this
interpreter (``pip install uWSGI`` builds it against this Python); without
either, these tests are skipped. uWSGI 2.0.27 and later enable Python
threads by default, so only an older one shows the threadless mode:
``pip install --target DIR "uWSGI<2.0.27"`` and point the variable at
``DIR/bin/uwsgi``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from batchdispatch._deadlines import monotonic
from batchdispatch._threadless import INLINE_ENV
from batchdispatch.testing import Receiver

from ..conftest import ROOT
from .conftest import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REQUESTS = 60
BATCH = 5
WORKERS = 2
WARNING = re.compile(r"RuntimeWarning: batchdispatch: uWSGI runs this process \(pid (\d+)\) without")


def _binary() -> str:
    """``$BATCHDISPATCH_TEST_UWSGI``, with ``{python}`` replaced by this
    interpreter's version (a uWSGI embeds the Python it was built with), if
    it exists; else the ``uwsgi`` beside this interpreter."""
    beside = os.path.join(os.path.dirname(sys.executable), "uwsgi")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    chosen = os.environ.get("BATCHDISPATCH_TEST_UWSGI", "").replace("{python}", version)
    path = chosen if chosen and os.access(chosen, os.X_OK) else beside
    if not os.access(path, os.X_OK):
        pytest.skip(f"uWSGI is not installed ({path}); pip install uWSGI")
    return path


@pytest.fixture(scope="module")
def uwsgi_binary() -> Tuple[str, Tuple[int, ...]]:
    """The binary and its version, as a tuple of ints."""
    path = _binary()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return path, tuple(int(part) for part in re.findall(r"\d+", out)[:3])


class Server:
    """One uWSGI master with its workers, and what they answered and logged."""

    def __init__(
        self, binary: str, receiver: Receiver, log_path: str, *options: str, env: Dict[str, str],
    ) -> None:
        self.log_path = log_path
        self.env = dict(
            os.environ, PYTHONPATH=ROOT, BATCHDISPATCH_TEST_URL=receiver.url,
            BATCHDISPATCH_TEST_BATCH=str(BATCH), **env,
        )
        self.env.pop(INLINE_ENV, None)
        app = os.path.join(HERE, "uwsgi_app.py")
        self.args = [binary, "--wsgi-file", app, "--master", "--processes", str(WORKERS),
                     "--virtualenv", sys.prefix, *options]
        self._start()

    def _start(self) -> None:
        self.port, self.stats_port = free_port(), free_port()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.args, "--http", f"127.0.0.1:{self.port}", "--stats", f"127.0.0.1:{self.stats_port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until uWSGI's stats server shows every worker idle.

        A worker answers a request before it has finished with it, and
        uWSGI skips Python's atexit in a worker it stops while busy: the
        exit hook would not run, and what waits in the dispatcher would be
        lost (see docs/uwsgi.rst).
        """
        deadline = monotonic() + timeout
        while True:
            with socket.create_connection(("127.0.0.1", self.stats_port), timeout=10) as conn:
                chunks = []
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            statuses = [worker["status"] for worker in json.loads(b"".join(chunks))["workers"]]
            if all(status == "idle" for status in statuses):
                return
            assert monotonic() < deadline, f"uWSGI's workers are not idle: {statuses}\n{self.log()}"
            threading.Event().wait(0.01)  # polling uWSGI's stats, with a deadline

    def get(self, path: str) -> Dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            answer: Dict[str, Any] = json.loads(response.read())
            return answer

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = monotonic() + timeout
        retries = 3
        while True:
            try:
                self.get("/ready")
                return
            except OSError:
                if self.proc.poll() is not None and retries and "Address already in use" in self.log():
                    # free_port's port was taken before uWSGI bound it (by
                    # the local end of some connection): another port.
                    retries -= 1
                    self._start()
                    continue
                if self.proc.poll() is not None or monotonic() > deadline:
                    raise AssertionError(f"uWSGI did not start:\n{self.log()}") from None
                threading.Event().wait(0.1)  # polling a server that starts: nothing to wait on

    def stop(self, sig: int, timeout: float = 30.0) -> int:
        """Signal the master and wait for it to exit; return its exit code."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"uWSGI still ran {timeout} s after signal {sig}:\n{self.log()}") from None

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()


@pytest.fixture
def serve(uwsgi_binary: Tuple[str, Tuple[int, ...]], tmp_path: Any) -> Iterator[Any]:
    """Start uWSGI servers that are always stopped after the test."""
    started: List[Server] = []

    def factory(receiver: Receiver, *options: str, env: Optional[Dict[str, str]] = None) -> Server:
        log = str(tmp_path / f"uwsgi-{len(started)}.log")
        server = Server(uwsgi_binary[0], receiver, log, *options, env=env or {})
        started.append(server)
        server.wait_ready()
        return server

    yield factory
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def _run(server: Server, receiver: Receiver, sig: int) -> Tuple[List[Dict[str, Any]], str]:
    """Send the requests, check what arrived before the stop, stop, and return (answers, log)."""
    answers = [server.get(f"/?n={n}") for n in range(REQUESTS)]
    assert all(answer["accepted"] for answer in answers)
    # Full batches are due at once: all but the last partial batch of each
    # worker arrive while uWSGI still runs (in threadless mode, on the
    # request that filled them, before its response).
    assert receiver.wait_for_items(REQUESTS - WORKERS * (BATCH - 1), timeout=30), server.log()
    server.wait_idle()  # a worker stopped while busy would skip atexit (1 run in 15 to 25 lost items)
    started = monotonic()
    code = server.stop(sig)
    stopped = monotonic() - started
    log = server.log()
    assert code == 0, log
    assert stopped < 20, (stopped, log)  # the exit flush takes milliseconds; mercy is 60 s
    numbers = sorted(item["n"] for item in receiver.items if item["n"] >= 0)
    assert numbers == list(range(REQUESTS)), log  # every event, exactly once
    # Each event was sent by the worker that served its request.
    by_pid = {(item["n"], item["pid"]) for item in receiver.items if item["n"] >= 0}
    assert by_pid == {(n, answer["pid"]) for n, answer in enumerate(answers)}
    return answers, log


STOPS = [
    pytest.param(signal.SIGINT, (), id="SIGINT"),
    pytest.param(signal.SIGQUIT, (), id="SIGQUIT"),
    pytest.param(signal.SIGTERM, ("--die-on-term",), id="SIGTERM-die-on-term"),
]


@pytest.mark.parametrize(("sig", "options"), STOPS)
def test_without_threads_requests_deliver_and_each_worker_warns_once(
    serve: Any, receiver: Receiver, uwsgi_binary: Tuple[str, Tuple[int, ...]],
    sig: int, options: Tuple[str, ...],
) -> None:
    if uwsgi_binary[1] >= (2, 0, 27):
        pytest.skip(f"uWSGI {uwsgi_binary[1]} enables threads by default: see BATCHDISPATCH_TEST_UWSGI")
    server = serve(receiver, *options)
    answers, log = _run(server, receiver, sig)
    assert {answer["has_threads"] for answer in answers} == {0}
    warned = [int(pid) for pid in WARNING.findall(log)]
    # Once per worker that enqueued (each worker decides on its first enqueue).
    assert sorted(warned) == sorted({answer["pid"] for answer in answers}), log


def test_with_enable_threads_a_worker_thread_delivers_and_nothing_warns(
    serve: Any, receiver: Receiver,
) -> None:
    server = serve(receiver, "--enable-threads")
    answers, log = _run(server, receiver, signal.SIGINT)
    assert {answer["has_threads"] for answer in answers} == {1}
    assert not WARNING.search(log), log


def test_uwsgi_2_0_27_and_later_have_threads_without_the_option(
    serve: Any, receiver: Receiver, uwsgi_binary: Tuple[str, Tuple[int, ...]],
) -> None:
    if uwsgi_binary[1] < (2, 0, 27):
        pytest.skip(f"uWSGI {uwsgi_binary[1]} runs without threads unless told")
    server = serve(receiver)
    answers, log = _run(server, receiver, signal.SIGINT)
    assert {answer["has_threads"] for answer in answers} == {1}
    assert not WARNING.search(log), log


@pytest.mark.parametrize(
    "options", [(), ("--py-call-uwsgi-fork-hooks",)], ids=["plain", "py-call-uwsgi-fork-hooks"],
)
def test_an_item_enqueued_while_the_app_loads_in_the_master_stays_the_masters(
    serve: Any, receiver: Receiver, options: Tuple[str, ...],
) -> None:
    # The app enqueues while it loads, in the master. A worker thread
    # started there could hold the GIL when uWSGI forks the workers from C,
    # past os.register_at_fork, and every worker would wait for it forever
    # (they never answered before the fix). The master starts no thread and
    # delivers the item at once; each worker notices the new pid at its
    # first enqueue and starts fresh.
    server = serve(receiver, "--enable-threads", *options, env={"BATCHDISPATCH_TEST_AT_IMPORT": "1"})
    answers, log = _run(server, receiver, signal.SIGINT)
    workers = {answer["pid"] for answer in answers}
    loaded = [item["pid"] for item in receiver.items if item["n"] == -1]
    assert len(loaded) == 1, log  # delivered once, by the master as the app loaded
    assert loaded[0] not in workers, log
