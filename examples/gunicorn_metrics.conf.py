"""gunicorn settings that give each worker its own batchdispatch metrics endpoint.

Run with ``gunicorn -c examples/gunicorn_metrics.conf.py app:app``. Each
worker process has its own dispatchers, and a Prometheus custom collector
reports the process it runs in: so each worker serves its dispatchers'
figures on a port of its own, the first free one of ``METRICS_PORTS``, and
Prometheus scrapes every port of the range as a target. A port that no
worker holds (fewer workers, or one restarting) fails its scrape, which
``up == 0`` shows for that target only.

Metrics of the app's own, made with prometheus_client's Counter, Gauge,
..., may still go through ``PROMETHEUS_MULTIPROC_DIR`` and one endpoint
(``child_exit`` below tells prometheus_client that a worker is gone).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from batchdispatch.contrib.prometheus import DispatcherCollector

workers = 2

#: One port per worker, "first-last"; at least as many as workers.
METRICS_PORTS = os.environ.get("METRICS_PORTS", "9101-9108")
METRICS_ADDR = os.environ.get("METRICS_ADDR", "0.0.0.0")


def post_fork(server: Any, worker: Any) -> None:
    """In each new worker: serve its dispatchers on the first free port of the range."""
    registry = CollectorRegistry()  # only the dispatchers: not the app's multiprocess metrics
    registry.register(DispatcherCollector())
    first, last = (int(port) for port in METRICS_PORTS.split("-"))
    for port in range(first, last + 1):
        try:
            start_http_server(port, addr=METRICS_ADDR, registry=registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        worker.log.info("batchdispatch metrics of worker %d on port %d", worker.pid, port)
        return
    worker.log.warning("no free port in %s for the batchdispatch metrics of worker %d", METRICS_PORTS,
                       worker.pid)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: prometheus_client drops its live gauges (app metrics only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
