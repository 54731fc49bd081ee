"""DispatcherCollector behind prometheus_client's real exposition on 127.0.0.1.

Each test serves a registry with ``prometheus_client.make_wsgi_app`` under
wsgiref (or the documented Flask mount), scrapes it with a real HTTP GET,
and parses the text with prometheus_client's own parser. Figures are read
after ``flush()`` or ``shutdown()``, or at a fake clock's time.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.parser import text_string_to_metric_families

from batchdispatch import RetryPolicy
from batchdispatch.contrib.prometheus import DispatcherCollector

from ..conftest import FakeClock, KeyedRecorder, Recorder, worker_wait_timeout

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(app: Callable[..., Any]) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 on a thread of its own; yield its base URL."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def scrape(url: str) -> Samples:
    """GET the exposition and parse it: every sample by (name, labels)."""
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def named(samples: Samples, dispatcher: str) -> Samples:
    return {key: v for key, v in samples.items() if ("dispatcher", dispatcher) in key[1]}


@pytest.fixture
def registry() -> CollectorRegistry:
    """A private registry with a collector of every live dispatcher."""
    registry = CollectorRegistry()
    registry.register(DispatcherCollector())
    return registry


def test_a_scrape_reports_each_dispatcher_after_flush(make, make_keyed, registry: CollectorRegistry) -> None:
    recorder = Recorder()
    events = make(recorder, delay=60, max_batch_size=2, name="prom-events")
    hooks = make_keyed(KeyedRecorder(), delay=60, name="prom-hooks")
    for n in range(5):
        events.enqueue(n)
    for key in ("a", "b", "a"):
        hooks.enqueue(key, key)
    assert events.flush(timeout=10)
    with serving(make_wsgi_app(registry)) as base:
        samples = scrape(f"{base}/metrics")
    mine = named(samples, "prom-events")
    assert value(mine, "batchdispatch_items_enqueued_total", dispatcher="prom-events") == 5
    assert value(mine, "batchdispatch_items_dispatched_total", dispatcher="prom-events") == 5
    assert value(mine, "batchdispatch_batches_total", dispatcher="prom-events") == 3
    assert value(mine, "batchdispatch_items_pending", dispatcher="prom-events") == 0
    assert value(mine, "batchdispatch_oldest_pending_age_seconds", dispatcher="prom-events") == 0
    drops = "batchdispatch_items_dropped_total"
    assert value(mine, drops, dispatcher="prom-events", reason="queue_full") == 0
    # Batches of 2, 2 and 1, in the buckets le="1.0" and le="2.0".
    sizes = {dict(labels)["le"]: v for (name, labels), v in mine.items() if name.endswith("size_bucket")}
    assert (sizes["1.0"], sizes["2.0"], sizes["5.0"], sizes["+Inf"]) == (1, 3, 3, 3)
    assert value(mine, "batchdispatch_batch_size_sum", dispatcher="prom-events") == 5
    assert value(mine, "batchdispatch_batch_duration_seconds_count", dispatcher="prom-events") == 3
    assert ("batchdispatch_keys_pending", frozenset({("dispatcher", "prom-events")})) not in mine
    theirs = named(samples, "prom-hooks")
    assert value(theirs, "batchdispatch_items_pending", dispatcher="prom-hooks") == 3
    assert value(theirs, "batchdispatch_keys_pending", dispatcher="prom-hooks") == 2
    assert value(theirs, "batchdispatch_batches_total", dispatcher="prom-hooks") == 0
    assert value(theirs, "batchdispatch_oldest_pending_age_seconds", dispatcher="prom-hooks") > 0
    # No per-key labels: only the dispatcher, a reason or kind, and le.
    assert {label for _, labels in samples for label, _ in labels} <= {"dispatcher", "reason", "kind", "le"}
    assert recorder.items == [0, 1, 2, 3, 4]


def test_failures_retries_and_drops_by_reason(make, registry: CollectorRegistry) -> None:
    def down(batch: List[Any]) -> None:
        raise ConnectionError("down")

    failing = make(
        down, delay=60, name="prom-failing", on_error=lambda exc, batch: None,
        retry=RetryPolicy(max_attempts=2, backoff=0.001, jitter=False),
    )
    for n in range(3):
        failing.enqueue(n)
    assert failing.shutdown(timeout=10)
    assert not failing.enqueue("late")  # a "closed" drop
    with serving(make_wsgi_app(registry)) as base:
        mine = named(scrape(f"{base}/metrics"), "prom-failing")
    assert value(mine, "batchdispatch_items_failed_total", dispatcher="prom-failing") == 3
    assert value(mine, "batchdispatch_retries_total", dispatcher="prom-failing") == 3
    assert value(mine, "batchdispatch_batches_total", dispatcher="prom-failing") == 2
    drops = "batchdispatch_items_dropped_total"
    assert value(mine, drops, dispatcher="prom-failing", reason="closed") == 1
    assert value(mine, drops, dispatcher="prom-failing", reason="queue_full") == 0
    assert value(mine, "batchdispatch_items_spilled_total", dispatcher="prom-failing") == 0
    assert value(mine, "batchdispatch_items_dead_lettered_total", dispatcher="prom-failing") == 0


def test_the_oldest_pending_age_is_read_at_scrape_time(make, clock: FakeClock) -> None:
    waiting = make(Recorder(), delay=600, clock=clock, name="prom-waiting")
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(dispatchers=[waiting]))
    waiting.enqueue("a")
    worker_wait_timeout(waiting)  # seen by the worker: its wait counts from here
    clock.advance(42)
    with serving(make_wsgi_app(registry)) as base:
        samples = scrape(f"{base}/metrics")
        assert value(samples, "batchdispatch_oldest_pending_age_seconds", dispatcher="prom-waiting") == 42
        clock.advance(8)
        samples = scrape(f"{base}/metrics")
        assert value(samples, "batchdispatch_oldest_pending_age_seconds", dispatcher="prom-waiting") == 50
        assert waiting.flush(timeout=10)
        samples = scrape(f"{base}/metrics")
    assert value(samples, "batchdispatch_oldest_pending_age_seconds", dispatcher="prom-waiting") == 0


def test_explicit_dispatchers_only_and_the_same_name_adds_up(make) -> None:
    one = make(Recorder(), delay=60, name="prom-shared")
    two = make(Recorder(), delay=60, name="prom-shared")
    other = make(Recorder(), delay=60, name="prom-other")
    for dispatcher, count in ((one, 2), (two, 3), (other, 1)):
        for n in range(count):
            dispatcher.enqueue(n)
    assert one.flush(timeout=10)
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(dispatchers=[one, two]))
    with serving(make_wsgi_app(registry)) as base:
        samples = scrape(base)
    assert {dict(labels)["dispatcher"] for _, labels in samples} == {"prom-shared"}
    assert value(samples, "batchdispatch_items_enqueued_total", dispatcher="prom-shared") == 5
    assert value(samples, "batchdispatch_items_dispatched_total", dispatcher="prom-shared") == 2
    assert value(samples, "batchdispatch_items_pending", dispatcher="prom-shared") == 3
    assert value(samples, "batchdispatch_batch_size_count", dispatcher="prom-shared") == 1


def test_bad_dispatchers_are_refused_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match="dispatchers must hold BackgroundDispatcher or KeyedDispatcher"):
        DispatcherCollector(dispatchers=[object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="dispatchers must be an iterable"):
        DispatcherCollector(dispatchers="events")  # type: ignore[arg-type]


def test_describe_lets_a_registry_refuse_a_second_collector() -> None:
    registry = CollectorRegistry()
    registry.register(DispatcherCollector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(DispatcherCollector())


def test_the_default_registry_exposes_every_live_dispatcher(make) -> None:
    live = make(Recorder(), delay=60, name="prom-default")
    live.enqueue("a")
    collector = DispatcherCollector()
    REGISTRY.register(collector)
    try:
        with serving(make_wsgi_app()) as base:
            samples = scrape(base)
        text = generate_latest().decode()
    finally:
        REGISTRY.unregister(collector)
    assert value(samples, "batchdispatch_items_pending", dispatcher="prom-default") == 1
    assert 'batchdispatch_items_pending{dispatcher="prom-default"} 1.0' in text
    assert "process_cpu_seconds_total" in text or "python_info" in text  # the default collectors stay


def test_the_documented_flask_mount_serves_the_metrics(make) -> None:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask(__name__)
    shop = make(Recorder(), delay=60, name="prom-flask")

    @app.route("/order")
    def order() -> str:
        shop.enqueue({"order": 1})
        return "ok"

    registry = CollectorRegistry()
    registry.register(DispatcherCollector())
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app(registry)})  # type: ignore[method-assign]
    with serving(app) as base:
        assert requests.get(f"{base}/order", timeout=10).text == "ok"
        samples = scrape(f"{base}/metrics")
    assert value(samples, "batchdispatch_items_enqueued_total", dispatcher="prom-flask") == 1
    assert not math.isnan(value(samples, "batchdispatch_oldest_pending_age_seconds", dispatcher="prom-flask"))
