"""The metrics page's OpenTelemetry instrumentation: ``python docs/snippets/metrics_opentelemetry.py``.

The global meter provider is the SDK's, with an in-memory reader, so the
snippet can read what a collection reports (metrics_opentelemetry.out).
"""

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from batchdispatch import BackgroundDispatcher

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
events = BackgroundDispatcher(lambda batch: None, delay=60, name="events")  # one batch, at the flush


def reported():
    """Each metric of the meter ``batchdispatch``, by name: the points' values and attributes."""
    found = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [(dict(p.attributes), p.value) for p in metric.data.data_points]
    return found


# [start metrics-opentelemetry]
from batchdispatch.contrib.opentelemetry import instrument

instrumentation = instrument()  # the global meter provider; or instrument(meter_provider)
...
instrumentation.uninstrument()
# [end metrics-opentelemetry]

instrumentation = instrument()  # again, to see it report
for n in range(3):
    events.enqueue({"n": n})
assert events.flush(timeout=5)
figures = reported()
print(f"batchdispatch.batches: {figures['batchdispatch.batches']}")
print(f"batchdispatch.batches.items: {figures['batchdispatch.batches.items']}")
instrumentation.uninstrument()
assert events.shutdown(timeout=5)
