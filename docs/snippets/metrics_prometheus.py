"""The metrics page's Prometheus exporter for a script: ``python docs/snippets/metrics_prometheus.py``.

It serves on a free port (METRICS_PORT=0), scrapes itself once and prints
the series of its dispatcher (metrics_prometheus.out).
"""

import os
import urllib.request

from batchdispatch import BackgroundDispatcher

os.environ["METRICS_PORT"] = "0"  # any free port: 9100 may be taken on this machine
events = BackgroundDispatcher(lambda batch: None, delay=0.01, name="events")
for n in range(3):
    events.enqueue({"n": n})
assert events.flush(timeout=5)

# [start metrics-prometheus]
import os

from prometheus_client import REGISTRY, start_http_server

from batchdispatch.contrib.prometheus import DispatcherCollector

REGISTRY.register(DispatcherCollector())
port = int(os.environ.get("METRICS_PORT", "9100"))
server, thread = start_http_server(port)  # a script or worker: serves http://host:9100/metrics
# [end metrics-prometheus]

with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as answer:
    scraped = answer.read().decode()
shown = ("batchdispatch_items_enqueued", "batchdispatch_items_dispatched", "batchdispatch_items_pending")
for line in scraped.splitlines():
    if line.startswith(shown):
        print(line)
server.shutdown()
server.server_close()
thread.join(timeout=5)
assert events.shutdown(timeout=5)
