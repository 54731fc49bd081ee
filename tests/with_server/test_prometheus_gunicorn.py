"""A real gunicorn with two workers, each serving its own dispatchers' metrics.

gunicorn runs tests/with_server/prometheus_app.py with the settings of
examples/gunicorn_metrics.conf.py, as the docs show them: each worker
serves its dispatchers on the first free port of a range, while the app's
own metrics go through ``PROMETHEUS_MULTIPROC_DIR`` and one endpoint. The
test sends numbered requests, each answered with the pid of the worker that
enqueued it, then scrapes every worker's port and the app's endpoint.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Set

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import ROOT
from .conftest import free_port
from .test_gunicorn import BOOT_TIMEOUT, NO_CONTROL_SOCKET, wait_until_serving

#: Requests sent, one order each.
REQUESTS = 40


def free_range(count: int) -> List[int]:
    """*count* consecutive ports nothing listens on right now."""
    for _ in range(50):
        first = free_port()
        ports = list(range(first, first + count))
        try:
            for port in ports[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ports
    raise AssertionError("no range of free ports found")


def wait_for_metrics_ports(server: subprocess.Popen[bytes], log: Path) -> Set[int]:
    """The ports the two workers' metrics servers bound, as their log lines say, once both have."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        lines = re.findall(r"batchdispatch metrics of worker \d+ on port (\d+)", log.read_text())
        bound = {int(port) for port in lines}
        if len(bound) >= 2:
            return bound
        assert time.monotonic() < deadline, f"the workers' metrics servers did not start:\n{log.read_text()}"
        try:  # doubles as the pause between looks at the log
            server.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"gunicorn exited with {server.returncode}:\n{log.read_text()}")


def figure(text: str, name: str, **labels: str) -> float:
    """The value of the sample *name* with exactly *labels* in an exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_each_worker_serves_its_own_dispatchers(preload: bool, tmp_path: Path) -> None:
    ports = free_range(3)  # one more than the workers
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = dict(
        os.environ, PYTHONPATH=ROOT, METRICS_PORTS=f"{ports[0]}-{ports[-1]}", METRICS_ADDR="127.0.0.1",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    command = [
        sys.executable, "-m", "gunicorn", "-c", os.path.join("examples", "gunicorn_metrics.conf.py"),
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--graceful-timeout", "20", "--log-level", "info",
        *(["--preload"] if preload else []), *NO_CONTROL_SOCKET, "tests.with_server.prometheus_app:app",
    ]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output, subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
    ) as server:
        try:
            with requests.Session() as http:
                wait_until_serving(http, base, server, log)
                bound = wait_for_metrics_ports(server, log)
                assert len(bound) == 2, log.read_text()
                assert bound <= set(ports)
                http.headers["Connection"] = "close"  # so that both workers get some
                served = collections.Counter(
                    int(http.get(f"{base}/order", params={"n": n}, timeout=10).text) for n in range(REQUESTS)
                )
                per_worker = [
                    figure(requests.get(f"http://127.0.0.1:{p}/", timeout=10).text,
                           "batchdispatch_items_enqueued_total", dispatcher="orders")
                    for p in sorted(bound)
                ]
                app_metrics = http.get(f"{base}/metrics", timeout=10).text
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                returncode = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                raise
    assert returncode == 0, log.read_text()
    # Each worker reports the orders it took, and only those.
    assert sorted(per_worker) == sorted([*served.values(), *[0] * (2 - len(served))]), log.read_text()
    assert sum(per_worker) == REQUESTS
    # The app's own counter, through PROMETHEUS_MULTIPROC_DIR, adds the workers up.
    assert figure(app_metrics, "app_orders_total") == REQUESTS
