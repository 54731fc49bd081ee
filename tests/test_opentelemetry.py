"""batchdispatch.contrib.opentelemetry against the real OpenTelemetry SDK.

A ``MeterProvider`` with an ``InMemoryMetricReader`` collects on demand;
figures are read after ``flush()`` or ``shutdown()``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from batchdispatch import RetryPolicy
from batchdispatch.contrib import opentelemetry as bd_otel
from batchdispatch.contrib.opentelemetry import instrument

from .conftest import FakeClock, KeyedRecorder, Recorder, worker_wait_timeout

Points = Dict[Tuple[str, Tuple[Tuple[str, Any], ...]], Any]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Any:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> Tuple[Points, Dict[str, str]]:
    """One collection: every data point by (instrument, sorted attributes), and each instrument's unit."""
    points: Points = {}
    units: Dict[str, str] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            if scope.scope.name != "batchdispatch":
                continue
            for metric in scope.metrics:
                units[metric.name] = metric.unit
                for point in metric.data.data_points:
                    points[metric.name, tuple(sorted(point.attributes.items()))] = point.value
    return points, units


def at(points: Points, name: str, **attributes: str) -> Any:
    return points[name, tuple(sorted(attributes.items()))]


def test_the_instruments_report_each_dispatcher(make, make_keyed, reader, provider) -> None:
    events = make(Recorder(), delay=60, max_batch_size=2, name="otel-events")
    hooks = make_keyed(KeyedRecorder(), delay=60, name="otel-hooks")
    for n in range(5):
        events.enqueue(n)
    for key in ("a", "b", "a"):
        hooks.enqueue(key, key)
    assert events.flush(timeout=10)
    # Only these two: dispatchers of other tests, still alive, may have spool faults.
    instrumentation = instrument(provider, dispatchers=[events, hooks])
    try:
        points, units = collect(reader)
    finally:
        instrumentation.uninstrument()
    assert at(points, "batchdispatch.items.enqueued", dispatcher="otel-events") == 5
    assert at(points, "batchdispatch.items.dispatched", dispatcher="otel-events") == 5
    assert at(points, "batchdispatch.batches", dispatcher="otel-events") == 3
    assert at(points, "batchdispatch.batches.items", dispatcher="otel-events") == 5
    assert at(points, "batchdispatch.batches.duration", dispatcher="otel-events") > 0
    assert at(points, "batchdispatch.items.pending", dispatcher="otel-events") == 0
    assert at(points, "batchdispatch.items.dropped", dispatcher="otel-events", reason="queue_full") == 0
    assert at(points, "batchdispatch.items.pending", dispatcher="otel-hooks") == 3
    assert at(points, "batchdispatch.keys.pending", dispatcher="otel-hooks") == 2
    assert ("batchdispatch.keys.pending", (("dispatcher", "otel-events"),)) not in points
    assert at(points, "batchdispatch.items.oldest_pending_age", dispatcher="otel-hooks") > 0
    expected = {
        "batchdispatch.items.enqueued": "{item}",
        "batchdispatch.items.dispatched": "{item}",
        "batchdispatch.items.failed": "{item}",
        "batchdispatch.items.dropped": "{item}",
        "batchdispatch.items.dead_lettered": "{item}",
        "batchdispatch.items.spilled": "{item}",
        "batchdispatch.items.replayed": "{item}",
        "batchdispatch.items.retried": "{item}",
        "batchdispatch.spool.faults": "{fault}",
        "batchdispatch.batches": "{batch}",
        "batchdispatch.batches.duration": "s",
        "batchdispatch.batches.items": "{item}",
        "batchdispatch.items.pending": "{item}",
        "batchdispatch.items.oldest_pending_age": "s",
        "batchdispatch.keys.pending": "{key}",
    }
    assert units.items() <= expected.items()
    assert set(expected) - set(units) == {"batchdispatch.spool.faults"}  # no spool: no fault observed


def test_the_kinds_of_instrument(make, reader, provider) -> None:
    from opentelemetry.sdk.metrics.export import Gauge, Sum

    make(Recorder(), delay=60, name="otel-kinds").enqueue(1)
    instrumentation = instrument(provider)
    try:
        data = reader.get_metrics_data()
    finally:
        instrumentation.uninstrument()
    kinds = {
        metric.name: (type(metric.data).__name__, getattr(metric.data, "is_monotonic", None))
        for resource in data.resource_metrics for scope in resource.scope_metrics for metric in scope.metrics
    }
    assert kinds["batchdispatch.items.enqueued"] == (Sum.__name__, True)
    assert kinds["batchdispatch.items.pending"] == (Sum.__name__, False)  # an up-down counter
    assert kinds["batchdispatch.items.oldest_pending_age"] == (Gauge.__name__, None)


def test_each_collection_reads_each_dispatcher_once_and_afresh(make, reader, provider) -> None:
    counted = make(Recorder(), delay=60, name="otel-counted")
    reads: List[Any] = []
    real = counted.stats
    counted.stats = lambda: reads.append(1) or real()  # type: ignore[method-assign]
    instrumentation = instrument(provider, dispatchers=[counted])
    try:
        counted.enqueue("a")
        points, _ = collect(reader)
        assert len(reads) == 1  # fifteen instruments, one read: their figures agree
        assert at(points, "batchdispatch.items.pending", dispatcher="otel-counted") == 1
        assert counted.flush(timeout=10)
        points, _ = collect(reader)
        assert len(reads) == 2
        assert at(points, "batchdispatch.items.pending", dispatcher="otel-counted") == 0
        assert at(points, "batchdispatch.items.dispatched", dispatcher="otel-counted") == 1
        others = {name for name, attributes in points if ("dispatcher", "otel-counted") not in attributes}
        assert others == set()  # only the dispatchers given
    finally:
        instrumentation.uninstrument()


def test_failures_retries_and_drops(make, reader, provider) -> None:
    def down(batch: List[Any]) -> None:
        raise ConnectionError("down")

    failing = make(
        down, delay=60, name="otel-failing", on_error=lambda exc, batch: None,
        retry=RetryPolicy(max_attempts=2, backoff=0.001, jitter=False),
    )
    failing.enqueue(1)
    failing.enqueue(2)
    assert failing.shutdown(timeout=10)
    assert not failing.enqueue(3)
    instrumentation = instrument(provider, dispatchers=[failing])
    try:
        points, _ = collect(reader)
    finally:
        instrumentation.uninstrument()
    assert at(points, "batchdispatch.items.failed", dispatcher="otel-failing") == 2
    assert at(points, "batchdispatch.items.retried", dispatcher="otel-failing") == 2
    assert at(points, "batchdispatch.items.dropped", dispatcher="otel-failing", reason="closed") == 1


def test_the_oldest_pending_age_follows_the_clock(make, reader, provider, clock: FakeClock) -> None:
    waiting = make(Recorder(), delay=600, clock=clock, name="otel-waiting")
    waiting.enqueue("a")
    worker_wait_timeout(waiting)
    clock.advance(30)
    instrumentation = instrument(provider, dispatchers=[waiting])
    try:
        points, _ = collect(reader)
    finally:
        instrumentation.uninstrument()
    assert at(points, "batchdispatch.items.oldest_pending_age", dispatcher="otel-waiting") == 30


def test_uninstrument_silences_them_and_instrument_brings_them_back(make, reader, provider) -> None:
    make(Recorder(), delay=60, name="otel-again").enqueue(1)
    first = instrument(provider)
    with pytest.raises(RuntimeError, match="instrumented on this meter provider already"):
        instrument(provider)
    first.uninstrument()
    first.uninstrument()  # idempotent
    points, _ = collect(reader)
    assert points == {}
    second = instrument(provider)
    try:
        first.uninstrument()  # an old handle does not stop the new one
        points, _ = collect(reader)
        assert at(points, "batchdispatch.items.pending", dispatcher="otel-again") == 1
        assert "active" in repr(second)
    finally:
        second.uninstrument()
    assert "stopped" in repr(second)


def test_the_global_meter_provider_is_the_default(make, reader, provider, monkeypatch) -> None:
    monkeypatch.setattr(bd_otel.metrics, "get_meter_provider", lambda: provider)
    make(Recorder(), delay=60, name="otel-global").enqueue(1)
    instrumentation = instrument()
    try:
        points, _ = collect(reader)
    finally:
        instrumentation.uninstrument()
    assert at(points, "batchdispatch.items.enqueued", dispatcher="otel-global") == 1


def test_bad_dispatchers_are_refused_naming_the_parameter(provider) -> None:
    with pytest.raises(TypeError, match="dispatchers must hold"):
        instrument(provider, dispatchers=[42])  # type: ignore[list-item]
